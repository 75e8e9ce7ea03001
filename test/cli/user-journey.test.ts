/**
 * The whole path a user walks, with the built command as child processes:
 * keygen → fingerprint → server → connect, then bytes through --stdio and -L,
 * and the exits a user sees when something is wrong.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../dist/bin/reflector.js', import.meta.url));

interface Result {
  code: number;
  stdout: Buffer;
  stderr: string;
}

function run(args: string[], cwd: string, input?: Buffer): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { cwd, timeout: 30_000, encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, env: { ...process.env, NO_PROXY: '*' } },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr: stderr.toString() });
      },
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts a long-running command and resolves once `ready` matches its stdout or stderr. */
function start(args: string[], cwd: string, ready: RegExp): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_PROXY: '*' } });
    let output = '';
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      if (ready.test(output)) resolve(child);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${args[0]} exited with ${code} before it was ready:\n${output}`)));
  });
}

function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

describe('reflector as a user runs it', () => {
  let dir: string;
  let echo: net.Server;
  let server: ChildProcess | undefined;
  let forwarder: ChildProcess | undefined;
  let url: string;
  let hostThumbprint: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-journey-'));
    echo = net.createServer({ allowHalfOpen: true }, (socket) => socket.pipe(socket));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    const echoPort = (echo.address() as net.AddressInfo).port;

    const host = await run(['keygen', '--out', 'host.jwk'], dir);
    assert.equal(host.code, 0, host.stderr);
    const alice = await run(['keygen', '--out', 'alice.jwk'], dir);
    assert.equal(alice.code, 0, alice.stderr);
    const fingerprint = await run(['fingerprint', 'host.jwk.pub'], dir);
    assert.equal(fingerprint.code, 0);
    hostThumbprint = fingerprint.stdout.toString().trim().split(/\s+/).pop()!;
    assert.match(hostThumbprint, /^[A-Za-z0-9_-]{43}$/);
    assert.ok(host.stdout.toString().includes(hostThumbprint), 'keygen printed the same thumbprint');

    const port = await freePort();
    url = `ws://127.0.0.1:${port}/tunnel`;
    await writeFile(
      path.join(dir, 'server.yaml'),
      [
        `listen: { host: 127.0.0.1, port: ${port} }`,
        'hostKey: host.jwk',
        `services: { echo: 127.0.0.1:${echoPort}, closed: 127.0.0.1:${await freePort()} }`,
        'clients:',
        '  - { name: alice, keyFile: alice.jwk.pub, services: [echo] }',
        'log: { level: info, format: json }',
      ].join('\n'),
    );
    server = await start(['server', '--config', 'server.yaml'], dir, /listening on/);
  });

  after(async () => {
    await stop(forwarder);
    await stop(server);
    await new Promise<void>((resolve) => echo.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it('carries bytes through --stdio and exits 0 when the stream ends', { timeout: 60_000 }, async () => {
    const payload = randomBytes(3 * 1024 * 1024);
    const result = await run(
      ['connect', url, '--identity', 'alice.jwk', '--server-key', hostThumbprint, '--stdio', 'echo', '--log-level', 'warn'],
      dir,
      payload,
    );
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.length, payload.length);
    assert.equal(createHash('sha256').update(result.stdout).digest('hex'), createHash('sha256').update(payload).digest('hex'));
  });

  it('forwards a local port with -L', { timeout: 60_000 }, async () => {
    const localPort = await freePort();
    forwarder = await start(
      ['connect', url, '--identity', 'alice.jwk', '--server-key', hostThumbprint, '-L', `127.0.0.1:${localPort}=echo`, '--quiet'],
      dir,
      /connected to/,
    );
    const socket = net.connect({ port: localPort, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    const ended = new Promise<void>((resolve, reject) => {
      socket.once('end', () => resolve());
      socket.once('error', reject);
    });
    socket.end('hello through -L');
    await ended;
    assert.equal(Buffer.concat(chunks).toString(), 'hello through -L');
    await stop(forwarder);
    assert.equal(forwarder.exitCode, 0, 'SIGTERM ends the client with exit 0');
  });

  it('refuses a server whose key is not the pinned one: exit 3, both thumbprints shown', async () => {
    const other = 'A'.repeat(43);
    const result = await run(['connect', url, '--identity', 'alice.jwk', '--server-key', other, '--stdio', 'echo'], dir, Buffer.alloc(0));
    assert.equal(result.code, 3, result.stderr);
    assert.ok(result.stderr.includes(other) && result.stderr.includes(hostThumbprint), result.stderr);
    assert.doesNotMatch(result.stderr, /\bat .+:\d+:\d+/, 'no stack trace');
  });

  it('names a service the client may not use: exit 6', async () => {
    const result = await run(
      ['connect', url, '--identity', 'alice.jwk', '--server-key', hostThumbprint, '--stdio', 'closed', '--log-level', 'warn'],
      dir,
      Buffer.alloc(0),
    );
    assert.equal(result.code, 6, result.stderr);
    assert.match(result.stderr, /service closed: this client may not use the service/);
  });

  it('refuses an unknown client key: exit 4', async () => {
    const mallory = await run(['keygen', '--out', 'mallory.jwk'], dir);
    assert.equal(mallory.code, 0);
    const result = await run(['connect', url, '--identity', 'mallory.jwk', '--server-key', hostThumbprint, '--stdio', 'echo'], dir, Buffer.alloc(0));
    assert.equal(result.code, 4, result.stderr);
    assert.match(result.stderr, /refused this client key/);
  });

  it('gives one sentence and exit 2 for a bad -L spec', async () => {
    const result = await run(['connect', url, '--identity', 'alice.jwk', '--server-key', hostThumbprint, '-L', '2525'], dir);
    assert.equal(result.code, 2);
    const lines = result.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0]!, /^reflector: -L 2525: expected \[HOST:\]PORT=SERVICE/);
  });
});
