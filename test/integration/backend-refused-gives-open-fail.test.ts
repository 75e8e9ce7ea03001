/**
 * A service whose backend refuses the TCP connection: the server answers
 * OPEN_FAIL(BACKEND_REFUSED), the client closes the local connection without
 * sending it a byte and says so in one clear log line, nothing is left in the
 * stream tables, and the session goes on serving other streams.
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

/** How the local socket ended, and what it received first. Rejects if it is still open after `timeoutMs`. */
function closedWithoutData(socket: net.Socket, timeoutMs = 10_000): Promise<{ how: 'end' | 'reset'; bytes: number }> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    let how: 'end' | 'reset' | undefined;
    const timer = setTimeout(
      () => reject(new Error(`the local connection was still open ${timeoutMs} ms after the backend refused`)),
      timeoutMs,
    );
    socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
    socket.once('end', () => (how ??= 'end'));
    socket.once('error', () => (how ??= 'reset'));
    socket.once('close', (hadError) => {
      clearTimeout(timer);
      resolve({ how: how ?? (hadError ? 'reset' : 'end'), bytes });
    });
    socket.resume();
  });
}

describe('backend refused gives OPEN_FAIL', () => {
  let keys: KeySet;
  let echo: Backend;
  let server: ReflectorServer;
  let client: ReflectorClient;
  let clientLog: MemoryLog;
  let serverLog: MemoryLog;
  let refusedPort: number;
  let sessionId: string;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    refusedPort = await unusedPort();
    clientLog = memoryLogger();
    serverLog = memoryLogger();
    server = await startServerWith(
      serverConfig(keys, { svc: { host: '127.0.0.1', port: refusedPort }, echo: echo.target }),
      serverLog.logger,
    );
    client = await startClientWith(
      clientOptions(keys, server, [
        { host: '127.0.0.1', port: 0, service: 'svc' },
        { host: '127.0.0.1', port: 0, service: 'echo' },
      ]),
      clientLog.logger,
    );
    await waitConnected(client);
    const sessions = server.listSessions();
    assert.equal(sessions.length, 1);
    sessionId = sessions[0]!.id;
  }, { timeout: 30_000 });

  after(async () => {
    await client?.close();
    await server?.close();
    await echo?.close();
    await keys?.cleanup();
  }, { timeout: 30_000 });

  function listenerPort(service: string): number {
    const listener = client.listeners.find((l) => l.spec.service === service);
    assert.ok(listener, `no listener for ${service}`);
    return listener.address.port;
  }

  function serverStreams(): number {
    return server.listSessions().reduce((n, s) => n + s.streams, 0);
  }

  it('closes the local connection without sending it any data and leaves no stream on the server', { timeout: 30_000 }, async () => {
    const socket = await connectLocal(listenerPort('svc'));
    try {
      socket.write('EHLO client.example\r\n');
      const outcome = await closedWithoutData(socket);
      assert.equal(outcome.bytes, 0, 'the local connection received data from a refused backend');
      assert.ok(outcome.how === 'reset' || outcome.how === 'end');
    } finally {
      socket.destroy();
    }
    await waitFor(() => serverStreams() === 0, 'the server stream count to return to 0');
    await waitFor(() => client.status.streams === 0, 'the client stream count to return to 0');
  });

  it('logs one clear client line naming the service and the refusal', { timeout: 30_000 }, async () => {
    await waitFor(
      () => clientLog.entries().some((e) => e.event === 'stream.refused'),
      'the client to log the refused stream',
    );
    const lines = clientLog.entries().filter((e) => e.event === 'stream.refused');
    const line = lines[0]!;
    assert.match(line.msg ?? '', /\bsvc\b/, `the log line does not name the service: ${line.msg}`);
    assert.match(line.msg ?? '', /refused/, `the log line does not say "refused": ${line.msg}`);
    assert.equal(line.level, 40, 'a refused backend is a warning on the client');
    assert.equal(line.code, OpenFailCode.BACKEND_REFUSED);
    // The server's audit log says why, with the backend address (the peer only got the code).
    const audit = serverLog.entries().find((e) => e.event === 'stream.refused');
    assert.ok(audit, 'the server did not audit the refusal');
    assert.equal(audit.service, 'svc');
    assert.equal(audit.reason, 'ECONNREFUSED');
    assert.equal(audit.backend, `127.0.0.1:${refusedPort}`);
  });

  it('rejects openStream() with ERR_OPEN_FAILED and wire code BACKEND_REFUSED', { timeout: 30_000 }, async () => {
    await assert.rejects(client.openStream('svc'), (error: unknown) => {
      assert.ok(error instanceof StreamError, `expected a StreamError, got ${String(error)}`);
      assert.equal(error.code, ErrorCode.OPEN_FAILED);
      assert.equal(error.wireCode, OpenFailCode.BACKEND_REFUSED);
      assert.match(error.message, /svc/);
      return true;
    });
    await waitFor(() => serverStreams() === 0, 'the server stream count to return to 0');
    assert.equal(client.status.streams, 0);
  });

  it('keeps the session usable: an allowed service still works on the same session afterwards', { timeout: 30_000 }, async () => {
    const socket = await connectLocal(listenerPort('echo'));
    try {
      const reply = readAll(socket);
      socket.end('still here\r\n');
      assert.equal((await reply).toString(), 'still here\r\n');
    } finally {
      socket.destroy();
    }
    const stream = await client.openStream('echo');
    stream.reset();
    assert.equal(client.state, 'connected');
    assert.deepEqual(
      server.listSessions().map((s) => s.id),
      [sessionId],
      'the refusal cost the session: the client had to reconnect',
    );
    await waitFor(() => serverStreams() === 0, 'the server stream count to return to 0');
  });
});
