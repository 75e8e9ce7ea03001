/**
 * The audit log (pino JSON lines) has one line for every authentication
 * success and failure (client, address as seen through trustProxy, reason)
 * and for every stream open and close (service, bytes each way, duration,
 * outcome), and never payload, keys or tokens.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import type { ReflectorServer } from '../../server/index.js';
import { AuthError } from '../../shared/errors.js';
import { generateIdentity, privateJwkOf, writeIdentityFiles } from '../../shared/keys.js';
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
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
  type MemoryLog,
} from '../helpers/fixtures.js';
import { nextEvent } from './support/operations.js';

const PAYLOAD = 'MAIL FROM:<the-secret-payload-4f1c9b@example.com>\r\n';

describe('audit log records auth and streams', () => {
  let keys: KeySet;
  let echo: Backend;
  let server: ReflectorServer;
  let client: ReflectorClient;
  let serverLog: MemoryLog;
  let clientLog: MemoryLog;
  let strangerFile: string;
  let strangerThumbprint: string;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    serverLog = memoryLogger('trace');
    clientLog = memoryLogger('trace');
    server = await startServerWith({ ...serverConfig(keys, { smtp: echo.target }), trustProxy: 'loopback' }, serverLog.logger);
    client = await startClientWith(
      clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'smtp' }], {
        headers: { 'X-Forwarded-For': '203.0.113.7' },
      }),
      clientLog.logger,
    );
    await waitConnected(client);
    const stranger = await generateIdentity();
    strangerThumbprint = stranger.thumbprint;
    strangerFile = `${keys.dir}/stranger.jwk`;
    await writeIdentityFiles(strangerFile, stranger);
  });

  after(async () => {
    await client?.close();
    await server?.close();
    await echo?.close();
    await keys?.cleanup();
  });

  const find = (event: string) => serverLog.entries().filter((entry) => entry.event === event);

  it('logs auth success with the client, its key and the address seen through trustProxy', async () => {
    await waitFor(() => find('auth.success').length === 1, 'the auth.success line');
    const [line] = find('auth.success');
    assert.equal(line!.client, 'tester');
    assert.equal(line!.thumbprint, keys.client.thumbprint);
    assert.equal(line!.address, '203.0.113.7', 'the X-Forwarded-For address from a trusted (loopback) proxy');
    assert.equal(typeof line!.session, 'string');
  });

  it('logs auth failure with the address, a stable code and the precise reason naming the key', async () => {
    const failed = nextEvent(server.events, 'auth.failure');
    await assert.rejects(
      startClientWith(
        clientOptions(keys, server, [], { identity: strangerFile, headers: { 'X-Forwarded-For': '198.51.100.9' } }),
        memoryLogger().logger,
      ),
      AuthError,
    );
    await failed;
    const [line] = find('auth.failure');
    assert.ok(line, 'an auth.failure line');
    assert.equal(line.address, '198.51.100.9');
    assert.equal(line.code, 'ERR_AUTH_UNKNOWN_KEY');
    assert.equal(line.kid, strangerThumbprint, 'the key the token named, as its own field');
    assert.equal((await failed).kid, strangerThumbprint);
    assert.match(String(line.reason), new RegExp(strangerThumbprint));
    assert.equal(line.level, 40, 'a warning');
  });

  it('logs stream open and close with service, bytes each way, duration and outcome', async () => {
    const port = client.listeners[0]!.address.port;
    const closed = nextEvent(server.events, 'stream.close');
    const socket = await connectLocal(port);
    const reply = readAll(socket);
    socket.end(PAYLOAD);
    assert.equal((await reply).toString(), PAYLOAD);
    await closed;

    const [open] = find('stream.open');
    assert.ok(open, 'a stream.open line');
    assert.equal(open.service, 'smtp');
    assert.equal(open.client, 'tester');
    assert.equal(open.address, '203.0.113.7');
    const [close] = find('stream.close');
    assert.ok(close, 'a stream.close line');
    assert.equal(close.service, 'smtp');
    assert.equal(close.client, 'tester');
    assert.equal(close.bytesToBackend, PAYLOAD.length);
    assert.equal(close.bytesFromBackend, PAYLOAD.length);
    assert.equal(typeof close.durationMs, 'number');
    assert.equal(close.outcome, 'fin');
  });

  it('never writes payload, private keys or tokens to either log', async () => {
    const secrets = [
      PAYLOAD.trim(),
      'the-secret-payload',
      privateJwkOf(keys.client).d,
      privateJwkOf(keys.host).d,
    ];
    for (const [side, log] of [['server', serverLog], ['client', clientLog]] as const) {
      assert.ok(log.lines.length > 0, `the ${side} logged something`);
      for (const line of log.lines) {
        for (const secret of secrets) assert.ok(!line.includes(secret), `the ${side} log holds a secret: ${line}`);
        assert.doesNotMatch(line, /eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./, `the ${side} log holds a JWT: ${line}`);
      }
    }
  });
});
