/**
 * Reloading the config file (what SIGHUP does) swaps clients and services
 * without dropping sessions. A removed key closes its sessions at once with
 * KEY_REVOKED (4005); a stream to a service its client lost is reset with
 * RST REVOKED; both leave an audit line. A file that fails validation is
 * rejected with its error logged, and the config in force stays.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import { createServer, type RunningServer } from '../../server/index.js';
import { loadServerConfig } from '../../shared/config-schema.js';
import { CloseCode, ResetCode } from '../../shared/constants.js';
import { AuthError } from '../../shared/errors.js';
import { generateIdentity, writeIdentityFiles } from '../../shared/keys.js';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  memoryLogger,
  readAll,
  socketOutcome,
  startClient,
  startEchoBackend,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
  type MemoryLog,
} from '../helpers/fixtures.js';
import { nextEvent } from './support/operations.js';

function yaml(echoPort: number, clients: string): string {
  return `listen: { host: 127.0.0.1, port: 0 }
hostKey: host.jwk
services:
  smtp: 127.0.0.1:${echoPort}
  pop3: 127.0.0.1:${echoPort}
clients:
${clients}
log: { level: info, format: json }
`;
}
const ALICE_BOTH = '  - { name: alice, keyFile: client.jwk.pub, services: [smtp, pop3] }\n';
const ALICE_SMTP = '  - { name: alice, keyFile: client.jwk.pub, services: [smtp] }\n';
const BOB = '  - { name: bob, keyFile: bob.jwk.pub, services: [smtp] }\n';

/** Writes `text`, waits for the bytes to come back, and keeps the socket open. */
async function roundTrip(socket: net.Socket, text: string): Promise<void> {
  const got = new Promise<string>((resolve) => {
    let seen = '';
    const onData = (chunk: Buffer): void => {
      seen += chunk.toString();
      if (seen.length >= text.length) {
        socket.off('data', onData);
        resolve(seen);
      }
    };
    socket.on('data', onData);
  });
  socket.write(text);
  assert.equal(await got, text);
}

describe('reload revokes a removed key', () => {
  let keys: KeySet;
  let echo: Backend;
  let configPath: string;
  let server: RunningServer;
  let log: MemoryLog;
  let alice: ReflectorClient;
  let bob: ReflectorClient;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    await writeIdentityFiles(path.join(keys.dir, 'bob.jwk'), await generateIdentity());
    configPath = path.join(keys.dir, 'server.yaml');
    await writeFile(configPath, yaml(echo.port, ALICE_BOTH + BOB));
    log = memoryLogger('info');
    server = await createServer(await loadServerConfig(configPath), { logger: log.logger });
    const forwards = [
      { host: '127.0.0.1', port: 0, service: 'smtp' },
      { host: '127.0.0.1', port: 0, service: 'pop3' },
    ];
    alice = await startClient(clientOptions(keys, server, forwards));
    bob = await startClient(clientOptions(keys, server, forwards.slice(0, 1), { identity: path.join(keys.dir, 'bob.jwk') }));
    await waitConnected(alice);
    await waitConnected(bob);
  });

  after(async () => {
    await alice?.close();
    await bob?.close();
    await server?.close();
    await echo?.close();
    await keys?.cleanup();
  });

  const port = (client: ReflectorClient, service: string): number =>
    client.listeners.find((l) => l.spec.service === service)!.address.port;
  const sessionOf = (name: string) => server.listSessions().find((s) => s.client === name);

  it('closes the removed key\'s session with 4005 and resets a stream to a lost service, keeping the rest', async () => {
    const aliceSmtp = await connectLocal(port(alice, 'smtp'));
    const alicePop3 = await connectLocal(port(alice, 'pop3'));
    const bobSmtp = await connectLocal(port(bob, 'smtp'));
    await roundTrip(aliceSmtp, 'EHLO alice\r\n');
    await roundTrip(alicePop3, 'USER alice\r\n');
    await roundTrip(bobSmtp, 'EHLO bob\r\n');
    const aliceSession = sessionOf('alice')!.id;
    const bobSession = sessionOf('bob')!.id;

    const bobClosed = nextEvent(server.events, 'session.close', (e) => e.id === bobSession);
    const popClosed = nextEvent(server.events, 'stream.close', (e) => e.service === 'pop3');
    const bobSocket = socketOutcome(bobSmtp);
    const popSocket = socketOutcome(alicePop3);
    await writeFile(configPath, yaml(echo.port, ALICE_SMTP));
    assert.equal(await server.operations.reloadConfigFile('test'), true);

    assert.equal((await bobClosed).code, CloseCode.KEY_REVOKED);
    assert.equal((await popClosed).outcome, 'reset-local');
    assert.equal((await bobSocket).how, 'error', "bob's local connection is reset");
    assert.equal((await popSocket).how, 'error', "alice's pop3 connection is reset");

    const revoked = log.entries().find((e) => e.event === 'session.revoked');
    assert.ok(revoked, 'an audit line for the revoked session');
    assert.equal(revoked.client, 'bob');
    assert.equal(revoked.session, bobSession);
    const streamRevoked = log.entries().find((e) => e.event === 'stream.revoked');
    assert.ok(streamRevoked, 'an audit line for the revoked stream');
    assert.equal(streamRevoked.client, 'alice');
    assert.equal(streamRevoked.service, 'pop3');
    const closeLine = log.entries().find((e) => e.event === 'session.close' && e.session === bobSession);
    assert.equal(closeLine?.code, CloseCode.KEY_REVOKED);

    // Alice's session and her smtp stream were never dropped.
    assert.equal(sessionOf('alice')?.id, aliceSession);
    await roundTrip(aliceSmtp, 'MAIL FROM:<alice@example.com>\r\n');
    const rest = readAll(aliceSmtp);
    aliceSmtp.end('QUIT\r\n');
    assert.equal((await rest).toString(), 'QUIT\r\n');
    assert.equal(ResetCode.REVOKED, 4, 'documented RST code');
  });

  it('refuses the removed key when it reconnects', async () => {
    await assert.rejects(bob.done, AuthError);
    await waitFor(() => sessionOf('bob') === undefined, 'no session for bob');
  });

  it('rejects a config that fails validation, logs why, and keeps the one in force', async () => {
    const good = await readFile(configPath, 'utf8');
    await writeFile(configPath, good.replace('services: [smtp]', 'services: [imap]'));
    assert.equal(await server.operations.reloadConfigFile('test'), false);
    const failed = log.entries().find((e) => e.event === 'config.reload_failed');
    assert.ok(failed, 'a config.reload_failed line');
    assert.equal(failed.level, 50, 'an error');
    assert.match(String(failed.err), /clients\[0\]\.services\[0\]: unknown service "imap"/);
    assert.match(String(failed.msg), /keeping the current configuration/);

    // Still alice with smtp: a new stream works, the session is the same.
    const socket = await connectLocal(port(alice, 'smtp'));
    const reply = readAll(socket);
    socket.end('NOOP\r\n');
    assert.equal((await reply).toString(), 'NOOP\r\n');
    await writeFile(configPath, good);
  });
});
