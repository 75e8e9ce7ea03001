/**
 * Many streams share one session and every byte of every stream arrives, in
 * order, on both sides: what the local client sent is what the backend
 * received (checked at the backend) and what the echo returned is what was
 * sent (checked at the local client), by length and SHA-256.
 *
 * Sizes are drawn from a seeded PRNG; the seed is printed, and
 * REFLECTOR_TEST_SEED=<n> replays a run.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { TestContext } from 'node:test';
import { describe, it } from 'node:test';
import type { AeadName } from '../../shared/aead.js';
import {
  clientOptions,
  connectLocal,
  digestAll,
  makeKeys,
  pump,
  SeededBytes,
  seededRandom,
  serverConfig,
  startBackend,
  startClient,
  startServer,
  waitConnected,
  type Backend,
  type DigestResult,
} from '../helpers/fixtures.js';
import type { ReflectorClient } from '../../client/index.js';
import type { ReflectorServer } from '../../server/index.js';

const MiB = 1024 * 1024;

/** An echo backend that also records the length and SHA-256 of what each connection received. */
async function startHashingEchoBackend(received: DigestResult[]): Promise<Backend> {
  return startBackend((socket) => {
    const hash = createHash('sha256');
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    socket.once('end', () => received.push({ bytes, sha256: hash.digest('hex') }));
    socket.pipe(socket);
  });
}

/**
 * `count` sizes in [0, maxBytes]: the first three are the edges (0, 1, max),
 * the rest skewed towards small (u² · max) and scaled down if their sum would
 * exceed `budgetBytes`.
 */
function streamSizes(seed: number, count: number, maxBytes: number, budgetBytes: number): number[] {
  const random = seededRandom(seed);
  const sizes = Array.from({ length: count }, () => Math.floor(random() ** 2 * (maxBytes + 1)));
  sizes[0] = 0;
  sizes[1] = 1;
  sizes[2] = maxBytes;
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total > budgetBytes) {
    const scale = (budgetBytes - maxBytes - 1) / (total - maxBytes - 1);
    for (let i = 3; i < count; i++) sizes[i] = Math.floor(sizes[i]! * scale);
  }
  return sizes;
}

interface RunSpec {
  aead: AeadName;
  streams: number;
  maxBytes: number;
  budgetBytes: number;
}

async function runConcurrentEcho(t: TestContext, spec: RunSpec): Promise<void> {
  const seed = Number(process.env.REFLECTOR_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const sizes = streamSizes(seed, spec.streams, spec.maxBytes, spec.budgetBytes);
  const total = sizes.reduce((a, b) => a + b, 0);
  t.diagnostic(
    `seed ${seed} (replay with REFLECTOR_TEST_SEED=${seed}): ${spec.streams} streams, ${(total / MiB).toFixed(1)} MiB each way, aead ${spec.aead}`,
  );

  const keys = await makeKeys();
  const received: DigestResult[] = [];
  let backend: Backend | undefined;
  let server: ReflectorServer | undefined;
  let client: ReflectorClient | undefined;
  try {
    backend = await startHashingEchoBackend(received);
    server = await startServer(serverConfig(keys, { echo: backend.target }, { aead: spec.aead }));
    client = await startClient(
      clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'echo' }], { aead: spec.aead }),
    );
    await waitConnected(client);
    const port = client.listeners[0]!.address.port;

    const started = performance.now();
    const settled = await Promise.allSettled(
      sizes.map(async (size, i) => {
        const socket = await connectLocal(port);
        let echoedSoFar = 0;
        try {
          const source = new SeededBytes(`${seed}/${i}`);
          const [sent, echoed] = await Promise.all([
            pump(socket, size, (n) => source.next(n)),
            digestAll(socket, (chunk) => (echoedSoFar += chunk.length)),
          ]);
          return { i, size, sent, echoed };
        } catch (error) {
          throw new Error(`stream ${i} of ${size} bytes: ${(error as Error).message} (${echoedSoFar} bytes had come back)`);
        } finally {
          socket.destroy();
        }
      }),
    );
    const failures = settled.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
    assert.deepEqual(failures, [], `seed ${seed}: ${failures.length} of ${spec.streams} streams failed`);
    const results = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const seconds = (performance.now() - started) / 1000;
    const throughput = (2 * total) / MiB / seconds;
    const line = `aead ${spec.aead}: ${spec.streams} streams, ${(total / MiB).toFixed(1)} MiB each way in ${seconds.toFixed(2)} s = ${throughput.toFixed(0)} MiB/s through the tunnel (both directions counted)`;
    t.diagnostic(line);

    for (const { i, size, sent, echoed } of results) {
      assert.equal(sent.bytes, size, `stream ${i}: the pump wrote ${sent.bytes} of ${size} bytes`);
      assert.equal(echoed.bytes, size, `stream ${i} (seed ${seed}): ${echoed.bytes} bytes came back, ${size} were sent`);
      assert.equal(echoed.sha256, sent.sha256, `stream ${i} (seed ${seed}): the echoed bytes differ from the sent bytes`);
    }
    // The backend saw exactly the sent streams: same lengths, same digests.
    const key = (d: DigestResult): string => `${d.bytes}:${d.sha256}`;
    assert.deepEqual(
      received.map(key).sort(),
      results.map((r) => key(r.sent)).sort(),
      `seed ${seed}: what the backend received is not what the local clients sent`,
    );
    // Every stream ended cleanly on the server too.
    await waitForNoStreams(server);
  } finally {
    await client?.close();
    await server?.close();
    await backend?.close();
    await keys.cleanup();
  }
}

async function waitForNoStreams(server: ReflectorServer): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (server.listSessions().some((s) => s.streams > 0)) {
    if (Date.now() > deadline) {
      assert.fail(`streams still open on the server: ${JSON.stringify(server.listSessions().map((s) => s.streams))}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('concurrent streams arrive intact', () => {
  it(
    'carries 100 concurrent streams of up to 8 MiB each through one session intact in both directions (node:crypto AEAD)',
    { timeout: 150_000 },
    (t) => runConcurrentEcho(t, { aead: 'node', streams: 100, maxBytes: 8 * MiB, budgetBytes: 300 * 1000 * 1000 }),
  );

  it(
    'carries 100 concurrent streams through one session intact with the @noble/ciphers AEAD on both ends',
    { timeout: 120_000 },
    (t) => runConcurrentEcho(t, { aead: 'noble', streams: 100, maxBytes: 512 * 1024, budgetBytes: 20 * 1000 * 1000 }),
  );
});
