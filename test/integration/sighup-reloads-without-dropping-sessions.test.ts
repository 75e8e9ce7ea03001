/**
 * `reflector server` on SIGHUP re-reads its config file: a service added to
 * the file is usable at once on the sessions already open, which are not
 * dropped (no new handshake), and the streams they carry go on. A file that
 * fails validation is logged and ignored. Runs the built CLI (`npm run build`
 * first; `npm test` does it).
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, type ReflectorClient } from '../../client/index.js';
import {
  connectLocal,
  makeKeys,
  memoryLogger,
  readAll,
  socketOutcome,
  startEchoBackend,
  waitFor,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';
import { listeningUrl, startServerProcess, type ServerProcess } from './support/operations.js';

function yaml(echoPort: number, services: string[]): string {
  return `listen: { host: 127.0.0.1, port: 0 }
hostKey: host.jwk
services:
${services.map((name) => `  ${name}: 127.0.0.1:${echoPort}`).join('\n')}
clients:
  - { name: alice, keyFile: client.jwk.pub, services: ["*"] }
`;
}

async function roundTrip(socket: net.Socket, text: string): Promise<void> {
  const got = new Promise<string>((resolve, reject) => {
    let seen = '';
    const onData = (chunk: Buffer): void => {
      seen += chunk.toString();
      if (seen.length >= text.length) {
        socket.off('data', onData);
        resolve(seen);
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
  socket.write(text);
  assert.equal(await got, text);
}

describe('SIGHUP reloads without dropping sessions', () => {
  let keys: KeySet;
  let echo: Backend;
  let configPath: string;
  let server: ServerProcess;
  let client: ReflectorClient;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    configPath = path.join(keys.dir, 'server.yaml');
    await writeFile(configPath, yaml(echo.port, ['smtp']));
    server = startServerProcess(configPath);
    const url = await listeningUrl(server);
    client = await connect(
      {
        url,
        identity: keys.clientFile,
        serverKey: keys.host.thumbprint,
        knownServers: path.join(keys.dir, 'known_servers'),
        forwards: [
          { host: '127.0.0.1', port: 0, service: 'smtp' },
          { host: '127.0.0.1', port: 0, service: 'pop3' },
        ],
        aead: 'node',
        reconnect: { initialDelayMs: 50, maxDelayMs: 200, maxAttempts: 0 },
        headers: {},
        log: { level: 'silent', format: 'json' },
      },
      { logger: memoryLogger('info').logger },
    );
    await waitFor(() => client.state === 'connected', 'the client to connect');
  });

  after(async () => {
    await client?.close();
    server?.kill();
    await echo?.close();
    await keys?.cleanup();
  });

  const port = (service: string): number => client.listeners.find((l) => l.spec.service === service)!.address.port;
  const count = (event: string): number => server.logs.filter((e) => e.event === event).length;

  it('adds a service to the open session, and the stream already open goes on', { timeout: 30_000 }, async () => {
    const refused = await connectLocal(port('pop3'));
    assert.equal((await socketOutcome(refused)).how, 'error', 'pop3 is not configured yet');

    const smtp = await connectLocal(port('smtp'));
    await roundTrip(smtp, 'EHLO before-reload\r\n');

    await writeFile(configPath, yaml(echo.port, ['smtp', 'pop3']));
    server.child.kill('SIGHUP');
    await server.waitForLog((e) => e.event === 'config.reloaded', 'the reload');

    await roundTrip(smtp, 'MAIL FROM:<after-reload@example.com>\r\n');
    const pop3 = await connectLocal(port('pop3'));
    const reply = readAll(pop3);
    pop3.end('USER alice\r\n');
    assert.equal((await reply).toString(), 'USER alice\r\n', 'pop3 works on the same session');
    const rest = readAll(smtp);
    smtp.end('QUIT\r\n');
    assert.equal((await rest).toString(), 'QUIT\r\n');

    assert.equal(count('auth.success'), 1, 'one handshake: the session was never dropped');
    assert.equal(count('session.close'), 0);
  });

  it('logs a config that fails validation and keeps the one in force', { timeout: 30_000 }, async () => {
    await writeFile(configPath, `${yaml(echo.port, ['smtp', 'pop3'])}listen: { port: 99999 }\n`);
    server.child.kill('SIGHUP');
    const failed = await server.waitForLog((e) => e.event === 'config.reload_failed', 'the failed reload');
    assert.equal(failed.level, 50);
    assert.match(String(failed.err), /line \d+, column \d+: Map keys must be unique/);

    const pop3 = await connectLocal(port('pop3'));
    const reply = readAll(pop3);
    pop3.end('STAT\r\n');
    assert.equal((await reply).toString(), 'STAT\r\n', 'the config in force still has pop3');
    assert.equal(server.child.exitCode, null, 'the server is still running');

    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0);
  });
});
