/**
 * The bench's load generator, a process of its own (separate from the
 * tunnel's processes and from the target). The harness starts it once with
 * --serve and sends it one command at a time over IPC (bench/lib/load.ts);
 * run by hand, it takes one command on the command line and prints its
 * result as a JSON line. "Hold" commands report {ready: true}, then keep
 * everything open until released (IPC) or until stdin closes (by hand).
 *
 *   bulk        --port P --bytes N [--streams K]      N bytes client → target over K streams; end-to-end time
 *   rtt         --port P [--count N] [--size B]       N sequential B-byte request/response exchanges
 *   ttfb        --port P [--count N]                  connect() → first byte of the target's banner, N times
 *   stall       --port P --bytes N                    asks the target for N bytes and never reads them (hold)
 *   streams     --port P --count N [--concurrency C]  N idle connections, each proven open by its banner (hold)
 *   sessions    --url U --identity F --server-key T --count N [--concurrency C]   N idle sessions (hold)
 *   handshakes  --url U --identity F --server-key T --seconds S [--concurrency C] full handshakes, each closed after WELCOME
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { EstablishedSession } from '../../client/session.js';
import type { Identity } from '../../shared/keys.js';
import { summarize } from '../lib/stats.js';

const CHUNK = randomBytes(256 * 1024);

function flags(argv: string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i]!;
    if (key.startsWith('--')) {
      map.set(key.slice(2), argv[i + 1] ?? '');
      i += 1;
    }
  }
  return map;
}

/** How a command reports results and learns that a hold is over. */
interface Io {
  emit(value: unknown): void;
  released: Promise<void>;
}

const now = (): number => Number(process.hrtime.bigint()) / 1e3; // microseconds

/** A connection whose banner byte arrived; `rest` holds anything that came with it. */
function open(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
    const onData = (chunk: Buffer): void => {
      socket.off('data', onData);
      socket.off('error', reject);
      socket.pause();
      if (chunk.length > 1) socket.unshift(chunk.subarray(1));
      resolve(socket);
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.once('close', () => reject(new Error('connection closed before the banner')));
  });
}

/** Writes `total` bytes, then ends; resolves when the target reported how many it got. */
function sink(socket: net.Socket, total: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const reply: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => reply.push(chunk));
    socket.once('end', () => {
      const answer = Buffer.concat(reply);
      if (answer.length !== 8) reject(new Error(`sink answered ${answer.length} bytes, not 8`));
      else resolve(Number(answer.readBigUInt64BE(0)));
    });
    socket.once('error', reject);
    socket.resume();
    socket.write('S');
    let left = total;
    const step = (): void => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!socket.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
          socket.once('drain', step);
          return;
        }
      }
      socket.end();
    };
    step();
  });
}

async function bulk(f: Map<string, string>, io: Io): Promise<void> {
  const port = Number(f.get('port'));
  const total = Number(f.get('bytes'));
  const streams = Number(f.get('streams') ?? 1);
  const sockets = await Promise.all(Array.from({ length: streams }, () => open(port)));
  const share = Math.floor(total / streams);
  const started = now();
  const counts = await Promise.all(sockets.map((s, i) => sink(s, i === streams - 1 ? total - share * (streams - 1) : share)));
  const seconds = (now() - started) / 1e6;
  const received = counts.reduce((a, b) => a + b, 0);
  if (received !== total) throw new Error(`the target received ${received} of ${total} bytes`);
  io.emit({ bytes: total, streams, seconds, mbPerS: total / seconds / 1e6 });
}

async function rtt(f: Map<string, string>, io: Io): Promise<void> {
  const port = Number(f.get('port'));
  const count = Number(f.get('count') ?? 5000);
  const size = Number(f.get('size') ?? 64);
  const warmup = Number(f.get('warmup') ?? 200);
  const socket = await open(port);
  socket.write('E');
  const request = randomBytes(size);
  const samples: number[] = [];
  let pending = 0;
  let started = 0;
  let done: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    pending -= chunk.length;
    if (pending === 0) done?.();
  });
  socket.resume();
  for (let i = 0; i < warmup + count; i += 1) {
    await new Promise<void>((resolve) => {
      done = resolve;
      pending = size;
      started = now();
      socket.write(request);
    });
    if (i >= warmup) samples.push(now() - started);
  }
  socket.end();
  io.emit({ exchanges: count, size, us: summarize(samples) });
}

async function ttfb(f: Map<string, string>, io: Io): Promise<void> {
  const port = Number(f.get('port'));
  const count = Number(f.get('count') ?? 200);
  const warmup = Number(f.get('warmup') ?? 10);
  const samples: number[] = [];
  for (let i = 0; i < warmup + count; i += 1) {
    const started = now();
    const socket = await open(port);
    const elapsed = now() - started;
    if (i >= warmup) samples.push(elapsed);
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.resume();
      socket.end();
    });
  }
  io.emit({ streams: count, us: summarize(samples) });
}

async function stall(f: Map<string, string>, io: Io): Promise<void> {
  const port = Number(f.get('port'));
  const bytes = BigInt(f.get('bytes') ?? 2 ** 30);
  const socket = await open(port);
  const request = Buffer.alloc(9);
  request.write('G');
  request.writeBigUInt64BE(bytes, 1);
  socket.write(request);
  // Never read: the socket stays paused, the kernel buffers fill, the tunnel must stop.
  io.emit({ ready: true });
  await io.released;
  socket.destroy();
}

async function inBatches<T>(count: number, concurrency: number, make: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      results[i] = await make(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return results;
}

async function streams(f: Map<string, string>, io: Io): Promise<void> {
  const port = Number(f.get('port'));
  const count = Number(f.get('count'));
  const concurrency = Number(f.get('concurrency') ?? 128);
  const started = now();
  const sockets = await inBatches(count, concurrency, () => open(port));
  for (const socket of sockets) socket.on('error', () => undefined);
  io.emit({ ready: true, open: sockets.length, seconds: (now() - started) / 1e6 });
  await io.released;
  for (const socket of sockets) socket.destroy();
}

interface SessionFlags {
  url: string;
  identity: Identity;
  serverKey: string;
}

// The product's client code is loaded only by the commands that need it: the
// byte-moving commands start faster without it.
let establishSession: (typeof import('../../client/session.js'))['establishSession'];

async function sessionFlags(f: Map<string, string>): Promise<SessionFlags> {
  ({ establishSession } = await import('../../client/session.js'));
  const { loadPrivateKeyFile } = await import('../../shared/keys.js');
  return { url: f.get('url')!, identity: await loadPrivateKeyFile(f.get('identity')!), serverKey: f.get('server-key')! };
}

/** One full handshake: WebSocket upgrade, hello, JWT auth with X25519 + ML-KEM-768, verified WELCOME. */
function handshake(s: SessionFlags): Promise<EstablishedSession> {
  return establishSession({
    url: s.url,
    identity: s.identity,
    headers: {},
    aead: 'node',
    handshakeTimeoutMs: 15_000,
    checkServerKey: async (thumbprint: string) => {
      if (thumbprint !== s.serverKey) throw new Error(`server key ${thumbprint} is not the pinned ${s.serverKey}`);
    },
    confirmServerKey: async () => undefined,
  });
}

async function sessions(f: Map<string, string>, io: Io): Promise<void> {
  const s = await sessionFlags(f);
  const count = Number(f.get('count'));
  const concurrency = Number(f.get('concurrency') ?? 8);
  const started = now();
  const held = await inBatches(count, concurrency, () => handshake(s));
  io.emit({ ready: true, open: held.length, seconds: (now() - started) / 1e6 });
  await io.released;
  for (const { session } of held) session.close(1000);
}

async function handshakes(f: Map<string, string>, io: Io): Promise<void> {
  const s = await sessionFlags(f);
  const seconds = Number(f.get('seconds') ?? 5);
  const concurrency = Number(f.get('concurrency') ?? 16);
  const latencies: number[] = [];
  let failures = 0;
  let firstError: string | undefined;
  const started = now();
  const deadline = started + seconds * 1e6;
  const worker = async (): Promise<void> => {
    while (now() < deadline) {
      const t0 = now();
      try {
        const { session } = await handshake(s);
        if (now() <= deadline) latencies.push(now() - t0);
        session.close(1000);
      } catch (error) {
        failures += 1;
        firstError ??= (error as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (now() - started) / 1e6;
  io.emit({
    completed: latencies.length,
    seconds: elapsed,
    perSecond: latencies.length / seconds,
    failures,
    ...(firstError ? { firstError } : {}),
    latencyUs: summarize(latencies),
  });
}

const commands: Record<string, (f: Map<string, string>, io: Io) => Promise<void>> = {
  bulk,
  rtt,
  ttfb,
  stall,
  streams,
  sessions,
  handshakes,
};

interface Request {
  id: number;
  command: string;
  args: Record<string, string>;
}

/** --serve: run the harness's requests one after another, results over IPC. */
function serve(): void {
  const releases = new Map<number, () => void>();
  const send = (message: unknown): void => void process.send?.(message);
  let queue = Promise.resolve();
  process.on('message', (message: Request | { release: number }) => {
    if ('release' in message) {
      releases.get(message.release)?.();
      return;
    }
    const { id, command, args } = message;
    queue = queue.then(async () => {
      const handler = commands[command];
      const released = new Promise<void>((resolve) => releases.set(id, resolve));
      try {
        if (handler === undefined) throw new Error(`unknown command ${JSON.stringify(command)}`);
        await handler(new Map(Object.entries(args)), { emit: (value) => send({ id, value }), released });
        send({ id, done: true });
      } catch (error) {
        send({ id, error: (error as Error)?.message ?? String(error) });
      } finally {
        releases.delete(id);
      }
    });
  });
  process.on('disconnect', () => process.exit(0));
  send({ ready: true });
}

/** By hand: one command from the command line, JSON lines on stdout, stdin's end releases a hold. */
function once(command: string | undefined, argv: string[]): void {
  const print = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value)}\n`);
  const handler = commands[command ?? ''];
  if (handler === undefined) {
    print({ error: `unknown command ${JSON.stringify(command)} (expected ${Object.keys(commands).join(', ')})` });
    process.exit(2);
  }
  const released = new Promise<void>((resolve) => {
    process.stdin.resume();
    process.stdin.once('end', resolve);
    process.stdin.once('close', resolve);
  });
  handler(flags(argv), { emit: print, released }).then(
    () => process.exit(0),
    (error: unknown) => {
      print({ error: (error as Error)?.message ?? String(error) });
      process.exit(1);
    },
  );
}

const [command, ...rest] = process.argv.slice(2);
if (command === '--serve') serve();
else once(command, rest);
