/**
 * Key hygiene: private keys are written 0600 whatever the umask; a private
 * key file that group or others can read is refused with one clear sentence
 * (as ssh refuses), by the library, the server, the client and the CLI; and
 * the logs of a full run (server and client, at the most verbose level,
 * through honest sessions, refused attackers and a reload) never contain key
 * material, a JWT, session keys, the admin token or payload.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmod, stat, writeFile } from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { ReflectorServer } from '../../server/index.js';
import { ConfigError, ErrorCode } from '../../shared/errors.js';
import { generateIdentity, loadPrivateKeyFile, loadPublicKeyFile, privateJwkOf, writeIdentityFiles, type Identity } from '../../shared/keys.js';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  memoryLogger,
  readAll,
  serverConfig,
  startClientWith,
  startEchoBackend,
  startServerWith,
  unusedPort,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
  type MemoryLog,
} from '../helpers/fixtures.js';
import { authText, closeOf, dialRaw, forgeToken, honestClaims, honestHeader, rawHandshake, signEdDSA, unsigned } from '../helpers/hostile-client.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = path.join(ROOT, 'bin', 'reflector.ts');

const modeOf = async (file: string): Promise<number> => (await stat(file)).mode & 0o777;

/** Every spelling of `secret` that could end up in a log line. */
function spellings(secret: Buffer): string[] {
  return [secret.toString('base64url'), secret.toString('base64').replace(/=+$/, ''), secret.toString('hex')];
}

/** The private scalar of an identity (JWK "d"), in every spelling. */
const privateSpellings = (identity: Identity): string[] => spellings(Buffer.from(privateJwkOf(identity).d, 'base64url'));

const JWT_PATTERN = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/;

function assertClean(lines: readonly string[], secrets: Array<[string, string[]]>): void {
  assert.ok(lines.length > 0, 'no log lines to scan');
  for (const line of lines) {
    assert.doesNotMatch(line, JWT_PATTERN, `a JWT in a log line: ${line}`);
    for (const [what, forms] of secrets) {
      for (const form of forms) assert.ok(!line.includes(form), `${what} in a log line: ${line}`);
    }
  }
}

describe('key hygiene', () => {
  let keys: KeySet;

  before(async () => {
    keys = await makeKeys();
  });

  after(async () => {
    await keys?.cleanup();
  });

  describe('writing keys', () => {
    it('writes the private JWK 0600 and the public one 0644, even under umask 000', async () => {
      const previous = process.umask(0);
      try {
        const file = path.join(keys.dir, 'fresh.jwk');
        await writeIdentityFiles(file, await generateIdentity());
        assert.equal(await modeOf(file), 0o600);
        assert.equal(await modeOf(`${file}.pub`), 0o644);
      } finally {
        process.umask(previous);
      }
    });

    it('tightens a world-readable file it overwrites (--force) to 0600 before writing the key into it', async () => {
      const file = path.join(keys.dir, 'overwritten.jwk');
      await writeFile(file, '{}', { mode: 0o644 });
      await chmod(file, 0o644);
      await writeIdentityFiles(file, await generateIdentity(), { overwrite: true });
      assert.equal(await modeOf(file), 0o600);
      await loadPrivateKeyFile(file); // and it loads
    });

    it('keygen on the command line writes 0600', async () => {
      const file = path.join(keys.dir, 'cli.jwk');
      const result = await run(['keygen', '--out', file]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(await modeOf(file), 0o600);
    });
  });

  describe('loading keys', () => {
    for (const mode of [0o640, 0o604, 0o644, 0o660, 0o666, 0o607]) {
      const octal = mode.toString(8).padStart(4, '0');
      it(`refuses a private key file with mode ${octal}, naming the file and the fix`, async () => {
        const file = path.join(keys.dir, `mode-${octal}.jwk`);
        await writeIdentityFiles(file, await generateIdentity());
        await chmod(file, mode);
        await assert.rejects(loadPrivateKeyFile(file), (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.equal(error.code, ErrorCode.KEY_FILE_INVALID);
          assert.equal(
            error.message,
            `${file}: permissions ${octal} are too open; a private key must be readable by its owner only (chmod 600 ${file})`,
          );
          return true;
        });
      });
    }

    it('accepts 0600 and 0400', async () => {
      for (const mode of [0o600, 0o400]) {
        const file = path.join(keys.dir, `ok-${mode.toString(8)}.jwk`);
        await writeIdentityFiles(file, await generateIdentity());
        await chmod(file, mode);
        await loadPrivateKeyFile(file);
      }
    });

    it('refuses a key file that is not a regular file (/dev/zero) without reading it', async () => {
      // A client's keyFile in server.yaml, or `reflector fingerprint`, pointed at a device by mistake.
      const before = process.memoryUsage().rss;
      await assert.rejects(loadPublicKeyFile('/dev/zero'), (error: unknown) => {
        assert.ok(error instanceof ConfigError && error.code === ErrorCode.KEY_FILE_INVALID, String(error));
        return true;
      });
      const grew = process.memoryUsage().rss - before;
      assert.ok(grew < 64 * 1024 * 1024, `reading /dev/zero as a key file took ${Math.round(grew / 1024 / 1024)} MiB before it gave up (a JWK is at most 64 KiB)`);
    });

    it('refuses a group-readable host key: the server does not start', async () => {
      const file = path.join(keys.dir, 'host-open.jwk');
      await writeIdentityFiles(file, keys.host);
      await chmod(file, 0o640);
      const config = { ...serverConfig(keys, {}), hostKey: file };
      await assert.rejects(startServerWith(config, memoryLogger().logger), (error: unknown) => {
        assert.ok(error instanceof ConfigError && error.code === ErrorCode.KEY_FILE_INVALID);
        assert.match(error.message, /permissions 0640 are too open/);
        return true;
      });
    });

    it('refuses a world-readable identity: the client does not connect, the CLI exits 2 with one sentence', async () => {
      const file = path.join(keys.dir, 'client-open.jwk');
      await writeIdentityFiles(file, keys.client);
      await chmod(file, 0o644);
      const options = { ...clientOptions(keys, { url: 'ws://127.0.0.1:9/tunnel' } as ReflectorServer, []), identity: file };
      await assert.rejects(startClientWith(options, memoryLogger().logger), /permissions 0644 are too open/);
      const result = await run(['connect', 'ws://127.0.0.1:9/tunnel', '--identity', file, '--server-key', keys.host.thumbprint, '-L', `${await unusedPort()}=smtp`]);
      assert.equal(result.code, 2, `exit code (stderr: ${result.stderr})`);
      const lines = result.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${result.stderr}`);
      assert.match(lines[0]!, /permissions 0644 are too open; a private key must be readable by its owner only \(chmod 600 /);
    });
  });

  describe('logs of a full run', () => {
    const PAYLOAD = `MAIL FROM:<secret-${Date.now().toString(36)}@example.org>`;
    const ADMIN_TOKEN = 'admin-token-that-must-never-be-logged-0123456789';
    let echo: Backend;
    let serverLog: MemoryLog;
    let clientLog: MemoryLog;
    let server: ReflectorServer;
    let mallory: Identity;
    const secrets: Array<[string, string[]]> = [];

    before(async () => {
      echo = await startEchoBackend();
      mallory = await generateIdentity();
      serverLog = memoryLogger('trace');
      clientLog = memoryLogger('trace');
      const config = {
        ...serverConfig(keys, { echo: echo.target }),
        admin: { listen: { host: '127.0.0.1', port: 0 }, token: ADMIN_TOKEN },
      };
      server = await startServerWith(config, serverLog.logger);
      secrets.push(
        ['the host private key', privateSpellings(keys.host)],
        ['the client private key', privateSpellings(keys.client)],
        ['an attacker private key', privateSpellings(mallory)],
        ['the admin token', [ADMIN_TOKEN]],
        ['payload', [PAYLOAD, ...spellings(Buffer.from(PAYLOAD))]],
      );
    });

    after(async () => {
      await server?.close();
      await echo?.close();
    });

    it('never logs key material, a JWT, session keys, the admin token or payload (server and client, level trace)', { timeout: 60_000 }, async (t) => {
      // 1. An honest client moves payload both ways.
      const client = await startClientWith(clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'echo' }]), clientLog.logger);
      await waitConnected(client);
      const socket: net.Socket = await connectLocal(client.listeners[0]!.address.port);
      const reply = readAll(socket);
      socket.end(PAYLOAD);
      assert.equal((await reply).toString(), PAYLOAD);

      // 2. A session whose keys we know (to look for them in the logs), which then breaks a record.
      const raw = await dialRaw(server.url);
      const session = await rawHandshake(raw, keys.client);
      for (const [name, value] of Object.entries(session.keys)) {
        if (name !== 'sessionId' && name !== 'transcript') secrets.push([`session key ${name}`, spellings(value as Buffer)]);
      }
      secrets.push(['the auth token', [JSON.parse(session.authText).token as string]]);
      raw.send(Buffer.from('not a record'), { binary: true });
      await closeOf(raw);

      // 3. Attackers: alg none, a stranger's key, a replayed auth, an oversized token.
      const tokens: string[] = [];
      for (const make of [
        (c: Awaited<ReturnType<typeof dialRaw>>) => forgeToken({ ...honestHeader(keys.client), alg: 'none' }, honestClaims(c.hello, c.helloText).claims, unsigned),
        (c: Awaited<ReturnType<typeof dialRaw>>) => forgeToken(honestHeader(mallory), honestClaims(c.hello, c.helloText).claims, signEdDSA(mallory.privateKey)),
        () => JSON.parse(session.authText).token as string,
        (c: Awaited<ReturnType<typeof dialRaw>>) => forgeToken(honestHeader(keys.client), { ...honestClaims(c.hello, c.helloText).claims, sub: 'x' }, signEdDSA(keys.client.privateKey)),
      ]) {
        const attacker = await dialRaw(server.url);
        const token = make(attacker);
        tokens.push(token);
        attacker.send(authText(token));
        await closeOf(attacker);
      }
      secrets.push(['an attacker token', tokens.flatMap((t) => [t, t.split('.')[2]!].filter((part) => part.length > 20))]);

      // 4. A reload that removes the client: its session is closed.
      server.reload({ ...serverConfig(keys, { echo: echo.target }), clients: [] });
      await waitFor(() => server.listSessions().length === 0, 'the revoked session to close');
      await client.close();

      const lines = [...serverLog.lines, ...clientLog.lines];
      assert.ok(serverLog.entries().some((e) => e.event === 'auth.failure'), 'the run logged no auth failure: it scanned too little');
      assert.ok(serverLog.entries().some((e) => e.event === 'stream.close'), 'the run logged no stream: it scanned too little');
      // The scanner itself finds a planted secret (control).
      for (const [what, forms] of secrets) assert.throws(() => assertClean([`{"msg":"${forms[0]}"}`], secrets), assert.AssertionError, what);
      assert.throws(() => assertClean([`{"token":"${tokens[1]}"}`], []));
      assertClean(lines, secrets);
      t.diagnostic(`scanned ${lines.length} log lines for ${secrets.reduce((n, [, forms]) => n + forms.length, 0)} secret spellings`);
    });

    it('the reflector command, run for real (server and client processes at --log-level trace), logs none of it either', { timeout: 60_000 }, async (t) => {
      const dir = keys.dir;
      const configFile = path.join(dir, 'server.yaml');
      await writeIdentityFiles(path.join(dir, 'cli-client.jwk'), keys.client, { overwrite: true });
      await writeFile(
        configFile,
        [
          'listen: { host: 127.0.0.1, port: 0 }',
          `hostKey: ${keys.hostFile}`,
          `services: { echo: "127.0.0.1:${echo.port}" }`,
          'clients:',
          `  - { name: cli, keyFile: cli-client.jwk.pub, services: [echo] }`,
          `admin: { listen: { host: 127.0.0.1, port: 0 }, token: ${ADMIN_TOKEN} }`,
          'log: { level: trace, format: json }',
        ].join('\n'),
        { mode: 0o600 },
      );
      const serverProcess = start(['server', '--config', configFile, '--log-level', 'trace', '--log-format', 'json']);
      let clientProcess: Child | undefined;
      try {
        await waitFor(() => /"event":"server.listening"/.test(serverProcess.stdout), 'the server to listen', 20_000);
        const url = /"url":"(ws:[^"]+)"/.exec(serverProcess.stdout)![1]!;
        const localPort = await unusedPort();
        clientProcess = start([
          'connect', url, '--identity', path.join(dir, 'cli-client.jwk'), '--server-key', keys.host.thumbprint,
          '-L', `127.0.0.1:${localPort}=echo`, '--log-level', 'trace', '--log-format', 'json',
        ]);
        try {
          const output = clientProcess;
          await waitFor(() => /"event":"listener.bound"/.test(output.stderr), 'the client listener', 20_000);
          await waitFor(() => /"event":"session.open"/.test(output.stderr), 'the client session', 20_000);
          const socket = await connectLocal(localPort);
          const reply = readAll(socket);
          socket.end(PAYLOAD);
          assert.equal((await reply).toString(), PAYLOAD);
        } finally {
          await clientProcess.stop();
        }
      } finally {
        await serverProcess.stop();
      }
      const lines = [serverProcess, clientProcess]
        .filter((c): c is Child => c !== undefined)
        .flatMap((c) => `${c.stdout}\n${c.stderr}`.split('\n'));
      assert.ok(lines.some((l) => l.includes('stream.close')), 'the server logged no stream: the run scanned too little');
      assertClean(lines.filter((l) => l !== ''), secrets);
      t.diagnostic(`scanned ${lines.length} lines of the two processes' output`);
    });
  });
});

interface Child {
  stdout: string;
  stderr: string;
  stop(): Promise<void>;
}

/** Runs `reflector ARGS` from the sources (tsx) as a child process. */
function start(args: string[]): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const state: Child = {
    stdout: '',
    stderr: '',
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
      }),
  };
  child.stdout.on('data', (chunk: Buffer) => (state.stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (state.stderr += chunk.toString()));
  return state;
}

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}
