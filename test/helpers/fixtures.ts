/**
 * In-process fixtures: keys in a temp dir, a TCP echo/sink backend, a server
 * reflector and a client reflector on loopback ports picked at run time.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { connect, type ReflectorClient } from '../../client/index.js';
import { createServer, type ReflectorServer } from '../../server/index.js';
import { Defaults } from '../../shared/constants.js';
import type { ClientOptions } from '../../shared/client-config.js';
import type { Limits, ServerConfig, ServiceTarget } from '../../shared/config-schema.js';
import type { ForwardSpec } from '../../shared/forward-spec.js';
import { generateIdentity, writeIdentityFiles, type Identity } from '../../shared/keys.js';
import { createLogger, silentLogger, type Logger } from '../../shared/logger.js';
import type { AeadName } from '../../shared/aead.js';

export interface KeySet {
  dir: string;
  host: Identity;
  hostFile: string;
  client: Identity;
  clientFile: string;
  cleanup: () => Promise<void>;
}

export async function makeKeys(): Promise<KeySet> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-test-'));
  const host = await generateIdentity();
  const client = await generateIdentity();
  const hostFile = path.join(dir, 'host.jwk');
  const clientFile = path.join(dir, 'client.jwk');
  await writeIdentityFiles(hostFile, host);
  await writeIdentityFiles(clientFile, client);
  return { dir, host, hostFile, client, clientFile, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Logs to stderr when REFLECTOR_TEST_LOG is set (e.g. =debug), silent otherwise. */
export function testLogger(): Logger {
  const level = process.env.REFLECTOR_TEST_LOG;
  return level ? createLogger({ level, format: 'json', destination: 'stderr' }) : silentLogger();
}

export function serverConfig(
  keys: KeySet,
  services: Record<string, ServiceTarget>,
  overrides: { limits?: Partial<Limits>; allowed?: string[]; aead?: AeadName; replica?: string } = {},
): ServerConfig {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    path: '/tunnel',
    hostKey: keys.hostFile,
    trustProxy: false,
    aead: overrides.aead ?? 'node',
    services,
    clients: [{ name: 'tester', publicKey: keys.client, services: overrides.allowed ?? Object.keys(services) }],
    limits: { ...Defaults, ...overrides.limits },
    log: { level: 'silent', format: 'json' },
    ...(overrides.replica ? { replica: overrides.replica } : {}),
  };
}

export function clientOptions(
  keys: KeySet,
  server: ReflectorServer,
  forwards: ForwardSpec[],
  overrides: Partial<ClientOptions> = {},
): ClientOptions {
  return {
    url: server.url,
    identity: keys.clientFile,
    serverKey: keys.host.thumbprint,
    knownServers: path.join(keys.dir, 'known_servers'),
    forwards,
    aead: 'node',
    reconnect: { initialDelayMs: 50, maxDelayMs: 500, maxAttempts: 0 },
    headers: {},
    log: { level: 'silent', format: 'json' },
    ...overrides,
  };
}

export async function startServer(config: ServerConfig): Promise<ReflectorServer> {
  return createServer(config, { logger: testLogger() });
}

export async function startClient(options: ClientOptions): Promise<ReflectorClient> {
  return connect(options, { logger: testLogger() });
}

/** Resolves once the client has a session (connect() may return while it retries). */
export async function waitConnected(client: ReflectorClient, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (client.state !== 'connected') {
    if (Date.now() > deadline) throw new Error(`client not connected after ${timeoutMs} ms (state ${client.state})`);
    await sleep(20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface Backend {
  port: number;
  target: ServiceTarget;
  server: net.Server;
  sockets: Set<net.Socket>;
  close: () => Promise<void>;
}

/** A TCP server on 127.0.0.1 that runs `onSocket` for every connection (half-open allowed). */
export async function startBackend(onSocket: (socket: net.Socket) => void): Promise<Backend> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    onSocket(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    target: { host: '127.0.0.1', port },
    server,
    sockets,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Echoes every byte back and half-closes when the peer does. */
export function startEchoBackend(): Promise<Backend> {
  return startBackend((socket) => socket.pipe(socket));
}

/** A port that nothing listens on (bound then released). */
export async function unusedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function connectLocal(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host, allowHalfOpen: true }, () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Reads everything until the peer's FIN; rejects on error or reset. */
export function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
    socket.once('close', (hadError) => {
      if (hadError) reject(new Error('socket closed with error'));
    });
  });
}

/** Resolves with how the socket ended: 'end' (FIN), 'reset' (error), or 'close'. */
export function socketOutcome(socket: net.Socket): Promise<{ how: 'end' | 'error'; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    socket.once('error', (error: NodeJS.ErrnoException) => resolve({ how: 'error', error }));
    socket.once('end', () => resolve({ how: 'end' }));
    socket.resume();
  });
}

// ---------------------------------------------------------------------------
// Helpers for the integration suite (test/integration/): captured logs,
// reproducible data, back-pressure-aware pumps and incremental hashing.

/** A logger whose JSON lines are kept in memory (and echoed to stderr when REFLECTOR_TEST_LOG is set). */
export interface MemoryLog {
  logger: Logger;
  /** Every log line, in order, as pino wrote it (one JSON object each). */
  readonly lines: string[];
  /** The lines parsed. */
  entries(): Array<Record<string, unknown> & { msg?: string }>;
}

export function memoryLogger(level = 'debug'): MemoryLog {
  const lines: string[] = [];
  const echo = process.env.REFLECTOR_TEST_LOG !== undefined;
  const destination = new Writable({
    decodeStrings: false,
    write(chunk: string | Buffer, _encoding, callback) {
      const text = chunk.toString();
      lines.push(text.trimEnd());
      if (echo) process.stderr.write(text);
      callback();
    },
  });
  return {
    logger: createLogger({ level, format: 'json', destination }),
    lines,
    entries: () => lines.map((line) => JSON.parse(line) as Record<string, unknown> & { msg?: string }),
  };
}

/** Like startServer(), with the caller's logger. */
export function startServerWith(config: ServerConfig, logger: Logger): Promise<ReflectorServer> {
  return createServer(config, { logger });
}

/** Like startClient(), with the caller's logger. */
export function startClientWith(options: ClientOptions, logger: Logger): Promise<ReflectorClient> {
  return connect(options, { logger });
}

/** mulberry32: a tiny seeded PRNG for reproducible sizes (not for data). Returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Reproducible pseudo-random bytes: the ChaCha20 keystream of a key derived from `seed` (fast, ~1 GB/s). */
export class SeededBytes {
  private readonly cipher: ReturnType<typeof createCipheriv>;
  private static readonly zeros = Buffer.alloc(256 * 1024);
  constructor(seed: string) {
    const key = createHash('sha256').update(`reflector-test-data ${seed}`).digest();
    this.cipher = createCipheriv('chacha20', key, Buffer.alloc(16));
  }
  /** The next `n` bytes of the stream, in a fresh buffer. */
  next(n: number): Buffer {
    if (n <= SeededBytes.zeros.length) return this.cipher.update(SeededBytes.zeros.subarray(0, n));
    const parts: Buffer[] = [];
    for (let left = n; left > 0; left -= SeededBytes.zeros.length) {
      parts.push(this.cipher.update(SeededBytes.zeros.subarray(0, Math.min(left, SeededBytes.zeros.length))));
    }
    return Buffer.concat(parts, n);
  }
}

export interface PumpResult {
  bytes: number;
  sha256: string;
  /** How many times write() returned false (the socket pushed back). */
  backpressureEvents: number;
}

/**
 * Writes `total` bytes made by `produce(n)` to `socket`, honouring
 * back-pressure (waits for 'drain' whenever write() returns false), hashing
 * what it wrote; ends the socket when `end` is true (the default).
 * `onProgress` sees the running byte count after each write.
 */
export function pump(
  socket: net.Socket,
  total: number,
  produce: (n: number) => Buffer,
  options: { chunkBytes?: number; end?: boolean; onProgress?: (bytes: number, accepted: boolean) => void } = {},
): Promise<PumpResult> {
  const chunkBytes = options.chunkBytes ?? 64 * 1024;
  const hash = createHash('sha256');
  return new Promise((resolve, reject) => {
    let bytes = 0;
    let backpressureEvents = 0;
    let settled = false;
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      reject(error);
    };
    socket.once('error', fail);
    socket.once('close', () => {
      if (bytes < total) fail(new Error(`socket closed after ${bytes} of ${total} bytes were written`));
    });
    const step = (): void => {
      while (bytes < total) {
        if (socket.destroyed) return;
        const chunk = produce(Math.min(chunkBytes, total - bytes));
        hash.update(chunk);
        bytes += chunk.length;
        const accepted = socket.write(chunk);
        options.onProgress?.(bytes, accepted);
        if (!accepted) {
          backpressureEvents += 1;
          socket.once('drain', step);
          return;
        }
      }
      const done = (): void => {
        if (settled) return;
        settled = true;
        socket.off('error', fail);
        resolve({ bytes, sha256: hash.digest('hex'), backpressureEvents });
      };
      if (options.end ?? true) socket.end(done);
      else done();
    };
    step();
  });
}

export interface DigestResult {
  bytes: number;
  sha256: string;
}

/** Reads until the peer's FIN, hashing incrementally (nothing is kept); rejects on error or reset. */
export function digestAll(socket: net.Socket, onData?: (chunk: Buffer) => void): Promise<DigestResult> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
      onData?.(chunk);
    });
    socket.once('end', () => resolve({ bytes, sha256: hash.digest('hex') }));
    socket.once('error', reject);
    socket.once('close', (hadError) => {
      if (hadError) reject(new Error(`socket closed with error after ${bytes} bytes`));
      else reject(new Error(`socket closed without FIN after ${bytes} bytes`));
    });
  });
}

/** Resolves when `check()` is true, polling every `intervalMs`; rejects after `timeoutMs`. */
export async function waitFor(check: () => boolean, what: string, timeoutMs = 10_000, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
