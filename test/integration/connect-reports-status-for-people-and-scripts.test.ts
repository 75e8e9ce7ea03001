/**
 * `reflector connect` tells what it is doing: on a terminal, one live status
 * line (state, server key, streams, bytes/s); with --status-json, one JSON
 * object per line on stdout for scripts; otherwise (not a terminal, --quiet)
 * log lines only, and nothing on stdout. Runs the built CLI (`npm run build`
 * first; `npm test` does it); the terminal case runs it under `script(1)`.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StatusSnapshot } from '../../client/status-line.js';
import type { ReflectorServer } from '../../server/index.js';
import {
  connectLocal,
  makeKeys,
  serverConfig,
  startEchoBackend,
  startServer,
  unusedPort,
  waitFor,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';
import { CLI } from './support/operations.js';

const HAS_SCRIPT = spawnSync('script', ['--version']).status === 0;

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | string>;
}

function run(command: string, args: string[], options: { detached?: boolean } = {}): Running {
  const child = spawn(command, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
    detached: options.detached ?? false,
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = once(child, 'exit').then(([code, signal]) => (code ?? signal) as number | string);
  return { child, stdout: () => out, stderr: () => err, exited };
}

function jsonLines(text: string): StatusSnapshot[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as StatusSnapshot);
}

describe('connect reports status for people and scripts', () => {
  let keys: KeySet;
  let echo: Backend;
  let server: ReflectorServer;
  const children: Running[] = [];

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    server = await startServer(serverConfig(keys, { smtp: echo.target }));
  });

  after(async () => {
    for (const { child } of children) {
      if (child.exitCode === null && child.signalCode === null) {
        if (child.spawnargs[0] === 'script' && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        else child.kill('SIGKILL');
      }
    }
    await server?.close();
    await echo?.close();
    await keys?.cleanup();
  });

  async function connectArgs(url: string): Promise<{ args: string[]; port: number }> {
    const port = await unusedPort();
    return {
      port,
      args: [
        'connect',
        url,
        '--identity',
        keys.clientFile,
        '--server-key',
        keys.host.thumbprint,
        '--known-servers',
        path.join(keys.dir, 'known_servers'),
        '-L',
        `127.0.0.1:${port}=smtp`,
      ],
    };
  }

  it('--status-json writes a JSON line per change: connected, a stream, reconnecting with the error, closed', { timeout: 30_000 }, async () => {
    const own = await startServer(serverConfig(keys, { smtp: echo.target }));
    const { args, port } = await connectArgs(own.url);
    const client = run(process.execPath, [CLI, ...args, '--status-json', '--max-retries', '0']);
    children.push(client);
    const { host, port: serverPort } = own.address;
    const lines = () => jsonLines(client.stdout());

    await waitFor(() => lines().some((l) => l.state === 'connected'), 'a connected line', 15_000);
    const connected = lines().find((l) => l.state === 'connected')!;
    assert.equal(connected.server, `${host}:${serverPort}`);
    assert.equal(connected.serverKey, keys.host.thumbprint);
    assert.equal(connected.streams, 0);

    const socket = await connectLocal(port);
    socket.write('EHLO status\r\n');
    await waitFor(() => lines().some((l) => l.streams === 1), 'a line with one stream');
    socket.destroy();

    await own.close();
    await waitFor(() => lines().some((l) => l.state === 'reconnecting'), 'a reconnecting line');
    const reconnecting = lines().find((l) => l.state === 'reconnecting')!;
    assert.equal(typeof reconnecting.retryInS, 'number', 'the countdown to the next attempt');
    assert.equal(typeof reconnecting.lastError, 'string', 'why the session was lost');

    client.child.kill('SIGTERM');
    assert.equal(await client.exited, 0, client.stderr());
    assert.equal(lines().at(-1)?.state, 'closed');
    assert.match(client.stderr(), /"event":"session.open"/, 'log lines still go to stderr');
  });

  it('writes nothing to stdout when it is not a terminal, and logs to stderr instead', { timeout: 30_000 }, async () => {
    const { args } = await connectArgs(server.url);
    const client = run(process.execPath, [CLI, ...args]);
    children.push(client);
    await waitFor(() => client.stderr().includes('"event":"session.open"'), 'the session.open log line', 15_000);
    client.child.kill('SIGTERM');
    assert.equal(await client.exited, 0, client.stderr());
    assert.equal(client.stdout(), '');
    for (const line of client.stderr().trim().split('\n')) JSON.parse(line); // JSON lines, not a status line
  });

  it('refuses --status-json with --stdio: both want stdout', async () => {
    const { args } = await connectArgs(server.url);
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [CLI, ...args.slice(0, -2), '--stdio', 'smtp', '--status-json'], (error, _stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stderr }),
      );
    });
    assert.equal(result.code, 2);
    assert.equal(result.stderr.trim().split('\n').length, 1);
    assert.match(result.stderr, /^reflector: --status-json: stdout carries the --stdio stream/);
  });

  it('keeps one live status line on a terminal, with the log lines above it', { timeout: 30_000, skip: HAS_SCRIPT ? false : 'script(1) from util-linux is not installed' }, async () => {
    const { args } = await connectArgs(server.url);
    const command = [process.execPath, CLI, ...args].map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(' ');
    // script(1) gives the command a pseudo-terminal and copies what it draws to our pipe.
    const client = run('script', ['-qfec', command, '/dev/null'], { detached: true });
    children.push(client);
    const statusLine = `\r\x1b[2K● connected to ${server.address.host}:${server.address.port} · server key ${keys.host.thumbprint.slice(0, 8)}… · 0 streams`;
    await waitFor(() => client.stdout().includes(statusLine), 'the live status line', 15_000);
    assert.match(client.stdout(), /connected to ws:\/\/127\.0\.0\.1:\d+\/tunnel \(server key/, 'a readable log line too');
    assert.doesNotMatch(client.stdout(), /\{"level":/, 'logs are not JSON on a terminal');
    process.kill(-client.child.pid!, 'SIGTERM');
    await client.exited;
  });
});
