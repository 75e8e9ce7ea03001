/**
 * A rolling restart behind a load balancer drops nothing: the old replica
 * drains (GOAWAY), the client opens new streams on a fresh session, which the
 * balancer sends to the new replica, while the streams already open on the
 * old one run to their normal end; then the old replica closes.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import type { ReflectorServer } from '../../server/index.js';
import {
  clientOptions,
  connectLocal,
  digestAll,
  makeKeys,
  memoryLogger,
  pump,
  SeededBytes,
  serverConfig,
  startClientWith,
  startEchoBackend,
  startServer,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
  type MemoryLog,
} from '../helpers/fixtures.js';

/** A TCP balancer (like an nginx upstream): each new connection goes to the upstream chosen now. */
async function startBalancer(initialPort: number) {
  let upstream = initialPort;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((downstream) => {
    const up = net.connect({ host: '127.0.0.1', port: upstream });
    for (const socket of [downstream, up]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {
        downstream.destroy();
        up.destroy();
      });
    }
    downstream.pipe(up);
    up.pipe(downstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    switchTo: (port: number) => (upstream = port),
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Echo round trip of `bytes` seeded bytes; resolves when every byte came back intact. */
async function echoStream(port: number, seed: string, bytes: number): Promise<void> {
  const socket = await connectLocal(port);
  const back = digestAll(socket);
  const data = new SeededBytes(seed);
  const sent = await pump(socket, bytes, (n) => data.next(n), { chunkBytes: 16 * 1024 });
  const received = await back;
  assert.equal(received.bytes, bytes, `${seed}: every byte came back`);
  assert.equal(received.sha256, sent.sha256, `${seed}: the bytes are intact`);
}

describe('rolling restart drops no streams', () => {
  let keys: KeySet;
  let echo: Backend;
  let oldReplica: ReflectorServer;
  let newReplica: ReflectorServer;
  let balancer: Awaited<ReturnType<typeof startBalancer>>;
  let client: ReflectorClient;
  let clientLog: MemoryLog;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    // Two replicas with the same host key and config, as a deployment runs them.
    oldReplica = await startServer(serverConfig(keys, { smtp: echo.target }, { replica: 'old' }));
    newReplica = await startServer(serverConfig(keys, { smtp: echo.target }, { replica: 'new' }));
    balancer = await startBalancer(oldReplica.address.port);
    clientLog = memoryLogger('info');
    client = await startClientWith(
      clientOptions(keys, oldReplica, [{ host: '127.0.0.1', port: 0, service: 'smtp' }], {
        url: `ws://127.0.0.1:${balancer.port}/tunnel`,
      }),
      clientLog.logger,
    );
    await waitConnected(client);
  });

  after(async () => {
    await client?.close();
    await oldReplica?.close();
    await newReplica?.close();
    await balancer?.close();
    await echo?.close();
    await keys?.cleanup();
  });

  it('finishes old streams on the draining replica and opens new ones on the new replica', { timeout: 60_000 }, async () => {
    const port = client.listeners[0]!.address.port;
    assert.equal(oldReplica.listSessions().length, 1);

    // A long stream on the old replica: half of it before the restart, half after.
    const long = await connectLocal(port);
    const longBack = digestAll(long);
    const longData = new SeededBytes('long').next(512 * 1024);
    const firstHalf = longData.subarray(0, 256 * 1024);
    long.write(firstHalf);
    await waitFor(() => oldReplica.listSessions()[0]?.streams === 1, 'the long stream to open on the old replica');

    // Restart: the balancer sends new connections to the new replica; the old one drains.
    balancer.switchTo(newReplica.address.port);
    const drained = oldReplica.drain();
    await waitFor(() => clientLog.entries().some((e) => e.event === 'session.goaway'), 'GOAWAY at the client');
    await waitFor(() => newReplica.listSessions().length === 1, 'a fresh session on the new replica');

    // New streams go to the new replica, and every one of them arrives whole.
    await Promise.all([0, 1, 2, 3].map((i) => echoStream(port, `new ${i}`, 200 * 1024 + i)));
    assert.equal(oldReplica.listSessions()[0]?.streams, 1, 'the old replica got no new stream');

    // The old stream goes on to its normal end, then the old replica closes.
    long.end(longData.subarray(256 * 1024));
    const longResult = await longBack;
    assert.equal(longResult.bytes, longData.length);
    assert.equal(longResult.sha256, sha256(longData));
    await drained;
    assert.equal(oldReplica.state, 'closed');
    assert.equal(client.state, 'connected', 'the client stays connected (to the new replica)');
    assert.equal(newReplica.listSessions().length, 1);
  });
});
