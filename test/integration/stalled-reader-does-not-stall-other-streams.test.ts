/**
 * Head-of-line isolation: one stream whose backend stops reading fills its
 * own window and then pushes back on its own local writer, while another
 * stream on the same session keeps moving at full speed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import type { ReflectorServer } from '../../server/index.js';
import { Defaults } from '../../shared/constants.js';
import {
  clientOptions,
  connectLocal,
  digestAll,
  makeKeys,
  pump,
  SeededBytes,
  serverConfig,
  startBackend,
  startClient,
  startEchoBackend,
  startServer,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
  type PumpResult,
} from '../helpers/fixtures.js';

const MiB = 1024 * 1024;
const STALLED_BYTES = 50 * MiB;
const ECHO_BYTES = 20 * MiB;

/** Field `index` of a Linux /proc/sys/net/ipv4/tcp_{r,w}mem triple, or `fallback` elsewhere. */
function tcpMem(name: 'tcp_rmem' | 'tcp_wmem', index: 0 | 1 | 2, fallback: number): number {
  try {
    const value = Number(readFileSync(`/proc/sys/net/ipv4/${name}`, 'utf8').trim().split(/\s+/)[index]);
    return Number.isFinite(value) && value > 0 ? value : fallback;
  } catch {
    return fallback;
  }
}

/**
 * How many bytes a local writer can get rid of into a stream whose backend
 * reads nothing: the stream's window, plus what the two loopback TCP
 * connections on the path hold (local → client reflector, server reflector →
 * backend: each a sender's send buffer, which autotunes up to tcp_wmem[2],
 * and a non-reading receiver's buffer, which stays near tcp_rmem[1]), plus
 * slack for Node's writable buffers and the chunks in hand.
 */
function stallBound(windowBytes: number): number {
  const sendBuffer = tcpMem('tcp_wmem', 2, 4 * MiB);
  const receiveBuffer = tcpMem('tcp_rmem', 1, 128 * 1024);
  return windowBytes + 2 * (sendBuffer + 2 * receiveBuffer) + 4 * MiB;
}

describe('stalled reader does not stall other streams', () => {
  let keys: KeySet;
  /** Accepts and never reads (until the test lets it). */
  let stalled: Backend;
  const stalledSockets: net.Socket[] = [];
  let echo: Backend;
  let server: ReflectorServer;
  let client: ReflectorClient;

  before(async () => {
    keys = await makeKeys();
    stalled = await startBackend((socket) => {
      socket.pause();
      stalledSockets.push(socket);
    });
    echo = await startEchoBackend();
    server = await startServer(serverConfig(keys, { stalled: stalled.target, echo: echo.target }));
    client = await startClient(
      clientOptions(keys, server, [
        { host: '127.0.0.1', port: 0, service: 'stalled' },
        { host: '127.0.0.1', port: 0, service: 'echo' },
      ]),
    );
    await waitConnected(client);
  }, { timeout: 30_000 });

  after(async () => {
    await client?.close();
    await server?.close();
    await stalled?.close();
    await echo?.close();
    await keys?.cleanup();
  }, { timeout: 30_000 });

  function listenerPort(service: string): number {
    const listener = client.listeners.find((l) => l.spec.service === service);
    assert.ok(listener, `no listener for ${service}`);
    return listener.address.port;
  }

  it(
    'back-pressures the writer of a stalled stream and still moves 20 MB intact on another stream meanwhile',
    { timeout: 120_000 },
    async (t) => {
      const windowBytes = Defaults.windowBytes;
      const bound = stallBound(windowBytes);

      // Stream A: 50 MB towards a backend that reads nothing.
      const a = await connectLocal(listenerPort('stalled'));
      a.on('error', () => undefined);
      let aWritten = 0;
      let aPushedBack = false;
      let aFinished = false;
      const aSource = new SeededBytes('stalled');
      const aPump: Promise<PumpResult> = pump(a, STALLED_BYTES, (n) => aSource.next(n), {
        onProgress: (bytes, accepted) => {
          aWritten = bytes;
          if (!accepted) aPushedBack = true;
        },
      });
      aPump.then(
        () => (aFinished = true),
        () => undefined,
      );

      try {
        // A stalls: write() said "stop", and no more bytes get in for a while.
        await waitFor(() => aPushedBack, 'the stalled stream to push back on its writer', 30_000);
        let last = -1;
        await waitFor(
          () => {
            const still = aWritten === last;
            last = aWritten;
            return still;
          },
          'the stalled stream to stop taking bytes',
          30_000,
          500,
        );
        const stalledAt = aWritten;
        t.diagnostic(
          `stalled stream took ${(stalledAt / MiB).toFixed(2)} MiB of ${STALLED_BYTES / MiB} MiB before pushing back (bound ${(bound / MiB).toFixed(2)} MiB = window ${windowBytes / 1024} KiB + socket buffers)`,
        );
        assert.equal(stalledSockets.length, 1, 'the stalled backend should have exactly one connection');
        assert.ok(stalledAt < STALLED_BYTES, 'the stalled stream swallowed everything: no back-pressure');
        assert.ok(stalledAt <= bound, `the stalled stream took ${stalledAt} bytes, more than window + socket buffers (${bound})`);

        // Stream B: 20 MB echoed through the same session while A stays stalled.
        const b = await connectLocal(listenerPort('echo'));
        try {
          const bSource = new SeededBytes('echo');
          const [sent, echoed] = await Promise.all([
            pump(b, ECHO_BYTES, (n) => bSource.next(n)),
            digestAll(b),
          ]);
          assert.equal(echoed.bytes, ECHO_BYTES, 'the echo stream was cut short');
          assert.equal(echoed.sha256, sent.sha256, 'the echo stream came back different');
        } finally {
          b.destroy();
        }

        // B is done and A is still where it was: stalled, not failed, not finished.
        assert.equal(aFinished, false, 'the stalled stream finished while its backend read nothing');
        assert.equal(a.destroyed, false, 'the stalled stream was torn down');
        assert.ok(aWritten <= bound, `the stalled stream took ${aWritten} bytes while stalled (bound ${bound})`);
        assert.equal(client.state, 'connected');

        // Finally the backend reads again, and all 50 MB arrive intact.
        const backendSide = stalledSockets[0]!;
        const received = digestAll(backendSide);
        backendSide.resume();
        const [sentA, receivedA] = await Promise.all([aPump, received]);
        assert.equal(receivedA.bytes, STALLED_BYTES);
        assert.equal(receivedA.sha256, sentA.sha256, 'the stalled stream lost or changed bytes once it resumed');
      } finally {
        a.destroy();
      }
    },
  );
});
