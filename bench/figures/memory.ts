/**
 * Memory per idle session (1,000 sessions on one server) and per idle open
 * stream (10,000 streams on one session, client and server each in one
 * process). The reflectors run as probes (bench/load/probe.ts: the library
 * the CLI calls, in a process of its own, with --expose-gc); the load
 * generator holds the sessions or connections from a third process.
 * RSS is read from /proc/<pid>/status; heap is V8's heapUsed after full GCs.
 * Per-item cost = (after − before) / count.
 */
import path from 'node:path';
import { startLoad } from '../lib/load.js';
import { freePort } from '../lib/net.js';
import { readMemory, sleep, start, type Child } from '../lib/proc.js';
import type { Results } from '../lib/results.js';
import { makeReflectorKeys, writeServerConfig, type ReflectorKeys } from '../paths/reflector.js';
import type { BenchContext } from '../paths/types.js';

export interface MemorySettings {
  reps: number;
  sessions: number;
  streams: number;
}

const KiB = 1024;

export function defineMemoryFigures(results: Results, s: MemorySettings): void {
  const sessions = s.sessions.toLocaleString('en-US');
  const streams = s.streams.toLocaleString('en-US');
  results.define({ id: 'session-rss', title: `RSS per idle session, ${sessions} sessions on one server`, unit: 'KiB', better: 'lower', digits: 1 });
  results.define({ id: 'session-heap', title: `V8 heap per idle session, ${sessions} sessions on one server`, unit: 'KiB', better: 'lower', digits: 1 });
  results.define({ id: 'stream-rss', title: `RSS per idle open stream, ${streams} streams on one session`, unit: 'KiB', better: 'lower', digits: 1 });
  results.define({ id: 'stream-heap', title: `V8 heap per idle open stream, ${streams} streams on one session`, unit: 'KiB', better: 'lower', digits: 1 });
  results.define({ id: 'streams-open', title: 'Streams open at once in one process (counted by the reflector)', unit: 'streams', better: 'higher', digits: 0 });
}

interface Memory {
  rss: number;
  heapUsed: number;
  external: number;
}

/** A probe child and its IPC request/response. */
class Probe {
  private constructor(readonly child: Child) {}

  static async start(ctx: BenchContext, name: string, args: string[]): Promise<Probe> {
    const child = start(name, process.execPath, ['--expose-gc', '--import', 'tsx', path.join(ctx.repo, 'bench', 'load', 'probe.ts'), ...args], {
      log: path.join(ctx.dir, `${name}.log`),
      ipc: true,
    });
    const probe = new Probe(child);
    await probe.reply<{ ready: true }>(20_000);
    return probe;
  }

  private reply<T>(timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.child.name}: no answer within ${timeoutMs} ms (log ${this.child.log})`)), timeoutMs);
      const onExit = (): void => reject(new Error(`${this.child.name} exited (log ${this.child.log})`));
      this.child.process.once('exit', onExit);
      this.child.process.once('message', (message: T & { error?: string }) => {
        clearTimeout(timer);
        this.child.process.off('exit', onExit);
        if (typeof message.error === 'string') reject(new Error(`${this.child.name}: ${message.error}`));
        else resolve(message);
      });
    });
  }

  async request<T>(message: unknown, timeoutMs = 30_000): Promise<T> {
    const answer = this.reply<T>(timeoutMs);
    this.child.process.send(message as object);
    return answer;
  }

  async memory(): Promise<Memory> {
    const { memory } = await this.request<{ memory: NodeJS.MemoryUsage }>({ cmd: 'mem' });
    return { rss: readMemory(this.child.pid).rss, heapUsed: memory.heapUsed, external: memory.external };
  }

  async status<T>(): Promise<T> {
    return (await this.request<{ status: T }>({ cmd: 'status' })).status;
  }

  async stop(): Promise<void> {
    if (this.child.process.connected) this.child.process.disconnect();
    await this.child.stop('SIGTERM', 3_000);
  }
}

function perItem(before: Memory, after: Memory, count: number): { rss: number; heap: number; external: number } {
  return {
    rss: (after.rss - before.rss) / count / KiB,
    heap: (after.heapUsed - before.heapUsed) / count / KiB,
    external: (after.external - before.external) / count / KiB,
  };
}

async function serverProbe(ctx: BenchContext, keys: ReflectorKeys, name: string, limits: Record<string, number>): Promise<{ probe: Probe; port: number }> {
  const port = await freePort();
  const config = await writeServerConfig(keys, { port, targetPort: ctx.targetPort, limits, name });
  return { probe: await Probe.start(ctx, name, ['server', config]), port };
}

export async function runMemoryFigures(ctx: BenchContext, results: Results, s: MemorySettings): Promise<void> {
  const keys = await makeReflectorKeys(path.join(ctx.dir, 'memory'));
  for (let rep = 0; rep < s.reps; rep += 1) {
    await ctx.quiet.wait();
    try {
      await sessionsOnce(ctx, keys, results, s.sessions);
    } catch (error) {
      results.fail('session-rss', 'reflector server', (error as Error).message);
    }
    await ctx.quiet.wait();
    try {
      await streamsOnce(ctx, keys, results, s.streams);
    } catch (error) {
      results.fail('stream-rss', 'reflector client', (error as Error).message);
    }
    process.stderr.write(`  memory rep ${rep + 1}/${s.reps} done\n`);
  }
}

async function sessionsOnce(ctx: BenchContext, keys: ReflectorKeys, results: Results, count: number): Promise<void> {
  const { probe, port } = await serverProbe(ctx, keys, 'memory-sessions-server', {
    maxUnauthenticatedPerAddress: 100_000,
    maxSessionsPerClient: 1_000_000,
  });
  try {
    const before = await probe.memory();
    const load = await startLoad(ctx, 'sessions', {
      url: `ws://127.0.0.1:${port}/tunnel`,
      identity: keys.clientFile,
      'server-key': keys.hostThumbprint,
      count,
      concurrency: 8,
    });
    try {
      await load.next(count * 50 + 60_000);
      await sleep(1_000);
      const after = await probe.memory();
      const status = await probe.status<{ sessions: number }>();
      if (status.sessions !== count) throw new Error(`the server counts ${status.sessions} sessions, not ${count}`);
      const each = perItem(before, after, count);
      results.add('session-rss', 'reflector server', each.rss, { before, after, sessions: status.sessions });
      results.add('session-heap', 'reflector server', each.heap, { externalKiBPerSession: each.external });
    } finally {
      await load.finish();
    }
  } finally {
    await probe.stop();
  }
}

async function streamsOnce(ctx: BenchContext, keys: ReflectorKeys, results: Results, count: number): Promise<void> {
  const server = await serverProbe(ctx, keys, 'memory-streams-server', { maxStreamsPerSession: count + 1024 });
  let client: Probe | undefined;
  try {
    const localPort = await freePort();
    client = await Probe.start(ctx, 'memory-streams-client', [
      'client',
      `ws://127.0.0.1:${server.port}/tunnel`,
      keys.clientFile,
      keys.hostThumbprint,
      String(localPort),
      path.join(keys.dir, 'known_servers'),
    ]);
    const before = { client: await client.memory(), server: await server.probe.memory() };
    const load = await startLoad(ctx, 'streams', { port: localPort, count, concurrency: 128 });
    try {
      await load.next(count * 20 + 60_000);
      await sleep(1_000);
      const after = { client: await client.memory(), server: await server.probe.memory() };
      const clientStatus = await client.status<{ streams: number }>();
      const serverStatus = await server.probe.status<{ streams: number }>();
      results.add('streams-open', 'reflector client', clientStatus.streams);
      results.add('streams-open', 'reflector server', serverStatus.streams);
      if (clientStatus.streams !== count || serverStatus.streams !== count) {
        throw new Error(`open streams: client ${clientStatus.streams}, server ${serverStatus.streams}, expected ${count}`);
      }
      for (const role of ['client', 'server'] as const) {
        const each = perItem(before[role], after[role], count);
        results.add('stream-rss', `reflector ${role}`, each.rss, { before: before[role], after: after[role] });
        results.add('stream-heap', `reflector ${role}`, each.heap, { externalKiBPerStream: each.external });
      }
    } finally {
      await load.finish();
    }
  } finally {
    await client?.stop();
    await server.probe.stop();
  }
}
