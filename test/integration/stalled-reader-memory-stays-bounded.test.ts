/**
 * The 1 GiB case: a sender tries to push 1 GiB into a stream whose backend
 * has stopped reading. Flow control must hold the excess where it came from
 * (the sender's socket), not in the reflectors' memory: while stalled, the
 * buffers held by client, server and backend together (all in this process)
 * grow by no more than the window plus socket and WebSocket buffers. When the
 * backend reads again, the whole 1 GiB arrives intact.
 *
 * Two bounds, against what a missing or leaky flow control would hold (up
 * to the 1 GiB itself):
 *
 * LIVE_BOUND, 24 MiB: growth of arrayBuffers + external after a full GC at
 * the end of the stall, i.e. what the reflectors really hold. Node counts every
 * Buffer in both figures, so each byte below appears twice:
 *   - the 1 MiB stream window in flight (DATA not yet acknowledged), held
 *     as records and then in the server's writable buffer to the backend, and
 *     once more on the client, kept for a resume until acknowledged;
 *   - up to 2 MiB of sealed records queued in ws before a session counts
 *     itself congested (CONGESTION_HIGH_BYTES), on each side, and the pooled
 *     record buffers;
 *   - the sender's 1 MiB chunk in hand (plus the 1 MiB template it is cut
 *     from) and Node's socket writable and readable buffers.
 *   Measured here about 16 MiB (13 MiB with a 256 KiB window: the window
 *   costs about 3.5 bytes of this figure per byte); a flow control that let
 *   the stalled stream run on would hold hundreds.
 *
 * RAW_BOUND, 96 MiB: peak growth of arrayBuffers + external over the samples
 * taken every 100 ms with no forced GC. On top of the live data it counts
 * garbage from the few MiB that moved before the stall (each byte exists as a
 * read chunk, a record plaintext, a sealed record, an opened record), which
 * V8 frees lazily, but at the latest when external memory grows by its 64 MiB
 * soft limit. Measured here about 28-36 MiB.
 */
import assert from 'node:assert/strict';
import type net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
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
  sleep,
  startBackend,
  startClient,
  startServer,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
  type PumpResult,
} from '../helpers/fixtures.js';

const MiB = 1024 * 1024;
const TOTAL_BYTES = 1024 * MiB;
const CHUNK_BYTES = MiB;
const LIVE_BOUND = 24 * MiB;
const RAW_BOUND = 96 * MiB;
const RSS_BOUND = 256 * MiB;
const STALL_MS = 3_000;
const SAMPLE_EVERY_MS = 100;

/**
 * Full GCs (V8's gc(), made reachable without --expose-gc), with pauses so
 * V8's concurrent sweeper returns freed ArrayBuffers before we look: what is
 * counted afterwards is live.
 */
async function collectGarbage(): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  for (let i = 0; i < 2; i++) {
    gc();
    await sleep(20);
  }
}

/** 1 MiB of seeded bytes, stamped with the chunk number at its start and end: cheap, and no two chunks alike. */
function chunkGenerator(): (n: number) => Buffer {
  const template = new SeededBytes('one GiB template').next(CHUNK_BYTES);
  let counter = 0;
  return (n) => {
    const chunk = Buffer.allocUnsafe(n);
    template.copy(chunk, 0, 0, n);
    counter += 1;
    if (n >= 8) {
      chunk.writeUInt32BE(counter, 0);
      chunk.writeUInt32BE(counter, n - 4);
    }
    return chunk;
  };
}

interface Sample {
  atMs: number;
  rss: number;
  buffers: number;
}

function sample(start: number): Sample {
  const usage = process.memoryUsage();
  return { atMs: Math.round(performance.now() - start), rss: usage.rss, buffers: usage.arrayBuffers + usage.external };
}

const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;

describe('stalled reader memory stays bounded', () => {
  let keys: KeySet;
  let backend: Backend;
  const backendSockets: net.Socket[] = [];
  let server: ReflectorServer;
  let client: ReflectorClient;

  before(async () => {
    keys = await makeKeys();
    backend = await startBackend((socket) => {
      // Stops reading at once; the test resumes it later.
      socket.pause();
      backendSockets.push(socket);
    });
    server = await startServer(serverConfig(keys, { sink: backend.target }));
    client = await startClient(clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'sink' }]));
    await waitConnected(client);
  }, { timeout: 30_000 });

  after(async () => {
    await client?.close();
    await server?.close();
    await backend?.close();
    await keys?.cleanup();
  }, { timeout: 30_000 });

  it(
    'keeps the buffers of client, server and backend bounded while 1 GiB waits on a stalled backend, then delivers all of it',
    { timeout: 180_000 },
    async (t) => {
      // The bound's arithmetic assumes the default 1 MiB window.
      assert.equal(server.limits.windowBytes, Defaults.windowBytes);
      assert.equal(Defaults.windowBytes, MiB);
      const sender = await connectLocal(client.listeners[0]!.address.port);
      sender.on('error', () => undefined);
      try {
        await collectGarbage();
        const start = performance.now();
        const baseline = sample(start);
        const samples: Sample[] = [];
        const sampler = setInterval(() => samples.push(sample(start)), SAMPLE_EVERY_MS);

        let written = 0;
        let pushedBack = 0;
        let finished = false;
        const sent: Promise<PumpResult> = pump(sender, TOTAL_BYTES, chunkGenerator(), {
          chunkBytes: CHUNK_BYTES,
          onProgress: (bytes, accepted) => {
            written = bytes;
            if (!accepted) pushedBack += 1;
          },
        });
        sent.then(
          () => (finished = true),
          () => undefined,
        );

        // The sender pushes as fast as back-pressure lets it, for a few seconds, into a backend that reads nothing.
        await sleep(STALL_MS);
        clearInterval(sampler);
        const writtenWhileStalled = written;
        assert.equal(backendSockets.length, 1, 'the backend should have exactly one connection');
        assert.equal(finished, false, 'the whole 1 GiB was taken while the backend read nothing');
        assert.ok(pushedBack > 0, 'the sender never saw back-pressure');
        assert.ok(
          writtenWhileStalled < RAW_BOUND,
          `the sender got ${mib(writtenWhileStalled)} into a stream whose backend reads nothing: nothing pushed back`,
        );

        const peak = samples.reduce((max, s) => (s.buffers > max.buffers ? s : max), baseline);
        const peakRss = samples.reduce((max, s) => Math.max(max, s.rss), baseline.rss);
        await collectGarbage();
        const live = sample(start);
        const growth = peak.buffers - baseline.buffers;
        const liveGrowth = live.buffers - baseline.buffers;
        const report =
          `stalled for ${STALL_MS} ms with ${mib(writtenWhileStalled)} of ${mib(TOTAL_BYTES)} taken by the sender's socket; ` +
          `arrayBuffers+external: baseline ${mib(baseline.buffers)}, peak ${mib(peak.buffers)} at ${peak.atMs} ms ` +
          `(growth ${mib(growth)}, bound ${mib(RAW_BOUND)}), after a full GC ${mib(live.buffers)} ` +
          `(live growth ${mib(liveGrowth)}, bound ${mib(LIVE_BOUND)}); rss: baseline ${mib(baseline.rss)}, peak ${mib(peakRss)} ` +
          `(growth ${mib(peakRss - baseline.rss)}, bound ${mib(RSS_BOUND)}); ${samples.length} samples`;
        console.log(report);
        t.diagnostic(report);
        assert.ok(samples.length >= STALL_MS / SAMPLE_EVERY_MS / 2, 'the sampler hardly ran: the event loop was blocked');
        assert.ok(
          growth < RAW_BOUND,
          `buffers grew by ${mib(growth)} while the backend was stalled (bound ${mib(RAW_BOUND)})`,
        );
        assert.ok(
          liveGrowth < LIVE_BOUND,
          `the reflectors hold ${mib(liveGrowth)} more live buffers while the backend is stalled (bound ${mib(LIVE_BOUND)})`,
        );
        // RSS also counts heap and allocator slack, so its bound is looser; a queue of the 1 GiB would still blow it.
        assert.ok(
          peakRss - baseline.rss < RSS_BOUND,
          `rss grew by ${mib(peakRss - baseline.rss)} while the backend was stalled (bound ${mib(RSS_BOUND)})`,
        );

        // The backend reads again: every byte of the 1 GiB arrives, in order.
        const backendSide = backendSockets[0]!;
        const received = digestAll(backendSide);
        backendSide.resume();
        const resumedAt = performance.now();
        const [sentResult, receivedResult] = await Promise.all([sent, received]);
        const seconds = (performance.now() - resumedAt) / 1000;
        t.diagnostic(`1 GiB delivered after the stall in ${seconds.toFixed(1)} s (${((TOTAL_BYTES - writtenWhileStalled) / MiB / seconds).toFixed(0)} MiB/s)`);
        assert.equal(sentResult.bytes, TOTAL_BYTES);
        assert.equal(receivedResult.bytes, TOTAL_BYTES, 'bytes were lost after the backend resumed');
        assert.equal(receivedResult.sha256, sentResult.sha256, 'the 1 GiB arrived changed or out of order');
        // The backend half-closes too, so the stream ends with FIN both ways and leaves the table.
        backendSide.end();
        await waitFor(() => server.listSessions().every((s) => s.streams === 0), 'the stream to close on the server');
      } finally {
        sender.destroy();
      }
    },
  );
});
