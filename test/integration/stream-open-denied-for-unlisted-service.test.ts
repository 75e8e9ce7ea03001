/**
 * The per-client allow-list is enforced on every OPEN: a client allowed only
 * smtp cannot reach pop3 (configured, not listed for it) nor an unknown name,
 * and the server never even dials the refused backend.
 */
import assert from 'node:assert/strict';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import type { ReflectorServer } from '../../server/index.js';
import { OpenFailCode } from '../../shared/constants.js';
import { ErrorCode, StreamError } from '../../shared/errors.js';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  readAll,
  serverConfig,
  startBackend,
  startClient,
  startServer,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';

function assertOpenDenied(service: string) {
  return (error: unknown): true => {
    assert.ok(error instanceof StreamError, `expected a StreamError, got ${String(error)}`);
    assert.equal(error.code, ErrorCode.OPEN_FAILED);
    assert.equal(error.wireCode, OpenFailCode.SERVICE_NOT_ALLOWED);
    assert.match(error.message, new RegExp(`\\b${service}\\b`), 'the error does not name the service');
    return true;
  };
}

describe('stream open denied for unlisted service', () => {
  let keys: KeySet;
  let smtp: Backend;
  let pop3: Backend;
  /** Every connection each backend ever accepted (the fixture's `sockets` forgets closed ones). */
  const accepted = { smtp: 0, pop3: 0 };
  let server: ReflectorServer;
  let client: ReflectorClient;

  before(async () => {
    keys = await makeKeys();
    smtp = await startBackend((socket: net.Socket) => {
      accepted.smtp += 1;
      socket.pipe(socket);
    });
    pop3 = await startBackend((socket: net.Socket) => {
      accepted.pop3 += 1;
      socket.end('+OK\r\n');
    });
    server = await startServer(
      serverConfig(keys, { smtp: smtp.target, pop3: pop3.target }, { allowed: ['smtp'] }),
    );
    client = await startClient(
      clientOptions(keys, server, [
        { host: '127.0.0.1', port: 0, service: 'smtp' },
        { host: '127.0.0.1', port: 0, service: 'pop3' },
      ]),
    );
    await waitConnected(client);
  }, { timeout: 30_000 });

  after(async () => {
    await client?.close();
    await server?.close();
    await smtp?.close();
    await pop3?.close();
    await keys?.cleanup();
  }, { timeout: 30_000 });

  it('allows the listed service', { timeout: 30_000 }, async () => {
    const stream = await client.openStream('smtp');
    stream.reset();
    await waitFor(() => accepted.smtp === 1, 'the smtp backend to accept the connection');
  });

  it('rejects OPEN of a configured service the client is not allowed, with SERVICE_NOT_ALLOWED', { timeout: 30_000 }, async () => {
    await assert.rejects(client.openStream('pop3'), assertOpenDenied('pop3'));
  });

  it('rejects OPEN of a service that does not exist, with the same SERVICE_NOT_ALLOWED', { timeout: 30_000 }, async () => {
    await assert.rejects(client.openStream('nope'), assertOpenDenied('nope'));
  });

  it('closes a local connection on a -L listener for the unlisted service without data', { timeout: 30_000 }, async () => {
    const listener = client.listeners.find((l) => l.spec.service === 'pop3');
    assert.ok(listener);
    const socket = await connectLocal(listener.address.port);
    try {
      await assert.rejects(readAll(socket), 'the local connection should be reset, not served');
    } finally {
      socket.destroy();
    }
  });

  it('never connects to the backend of the unlisted service, and the session survives', { timeout: 30_000 }, async () => {
    assert.equal(accepted.pop3, 0, 'the server dialled the pop3 backend for a client not allowed to use it');
    assert.equal(client.state, 'connected');
    assert.equal(server.listSessions().length, 1);
    // The allowed service still works on the same session.
    const socket = await connectLocal(client.listeners.find((l) => l.spec.service === 'smtp')!.address.port);
    try {
      const reply = readAll(socket);
      socket.end('MAIL FROM:<a@example.org>\r\n');
      assert.equal((await reply).toString(), 'MAIL FROM:<a@example.org>\r\n');
    } finally {
      socket.destroy();
    }
    assert.equal(accepted.pop3, 0);
  });
});
