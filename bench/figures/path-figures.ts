/**
 * The figures measured through every path, repetitions interleaved
 * (A B C …, then B C … A, rotating the order so no path always runs first):
 * connect → first byte of a new stream, 64-byte round trip, single-stream and
 * 16-stream bulk throughput, and RSS growth under a stalled reader.
 */
import { waitForBanner } from '../lib/net.js';
import { runLoad, startLoad } from '../lib/load.js';
import { cpuTimes, processTree, readMemory, sleep } from '../lib/proc.js';
import { startMeter } from '../lib/quiet.js';
import type { Results } from '../lib/results.js';
import type { SampleSummary } from '../lib/stats.js';
import { benchPids, type BenchContext, type BenchPath } from '../paths/types.js';

export interface ActivePath {
  path: BenchPath;
  port: number;
}

export interface PathFigureSettings {
  reps: number;
  /** Bytes pushed through each path once before anything is measured (JIT, TCP and TLS warm-up). */
  warmupBytes: number;
  bulkBytes: number;
  parallelBytes: number;
  parallelStreams: number;
  rttExchanges: number;
  ttfbStreams: number;
  stallSeconds: number;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export function definePathFigures(results: Results, s: PathFigureSettings): void {
  results.define({
    id: 'throughput-1',
    title: `Single-stream bulk throughput (${fmtBytes(s.bulkBytes)} client → target)`,
    unit: 'MB/s',
    better: 'higher',
    digits: 0,
  });
  results.define({
    id: 'cpu-per-gib-1',
    title: 'Tunnel CPU per GiB moved, single stream (all tunnel processes, user+sys)',
    unit: 'CPU-s/GiB',
    better: 'lower',
    digits: 2,
  });
  results.define({
    id: `throughput-${s.parallelStreams}`,
    title: `${s.parallelStreams} parallel streams, aggregate throughput (${fmtBytes(s.parallelBytes)} in total)`,
    unit: 'MB/s',
    better: 'higher',
    digits: 0,
  });
  results.define({
    id: `cpu-per-gib-${s.parallelStreams}`,
    title: `Tunnel CPU per GiB moved, ${s.parallelStreams} parallel streams`,
    unit: 'CPU-s/GiB',
    better: 'lower',
    digits: 2,
  });
  results.define({ id: 'rtt-median', title: `64-byte round trip, median of ${s.rttExchanges} sequential exchanges`, unit: 'µs', better: 'lower', digits: 0 });
  results.define({ id: 'rtt-p99', title: `64-byte round trip, p99 of ${s.rttExchanges} sequential exchanges`, unit: 'µs', better: 'lower', digits: 0 });
  results.define({
    id: 'ttfb-median',
    title: `connect() → first byte of a new stream on an established session, median of ${s.ttfbStreams}`,
    unit: 'µs',
    better: 'lower',
    digits: 0,
  });
  results.define({
    id: 'ttfb-p99',
    title: `connect() → first byte of a new stream on an established session, p99 of ${s.ttfbStreams}`,
    unit: 'µs',
    better: 'lower',
    digits: 0,
  });
  results.define({
    id: 'stall-peak',
    title: `RSS growth of the tunnel processes while a reader stalls for ${s.stallSeconds} s (peak − before)`,
    unit: 'MiB',
    better: 'lower',
    digits: 2,
  });
}

export function fmtBytes(n: number): string {
  if (n >= GiB && n % GiB === 0) return `${n / GiB} GiB`;
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  return `${n} B`;
}

function rotate<T>(list: readonly T[], by: number): T[] {
  const k = list.length === 0 ? 0 : by % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

/** A path whose processes died is out of the run from then on. */
function healthy(active: ActivePath, results: Results): boolean {
  return results.paths.get(active.path.id)?.status === 'ok';
}

async function checkAlive(active: ActivePath, results: Results): Promise<void> {
  const gone = active.path.processes().filter(({ pid }) => processTree([pid]).length === 0);
  if (gone.length > 0) {
    results.pathFailed(active.path.id, `process exited: ${gone.map((p) => `${p.role} (${p.pid})`).join(', ')}`);
    return;
  }
  try {
    await waitForBanner(active.port, 5_000);
  } catch (error) {
    results.pathFailed(active.path.id, `no longer carries bytes: ${(error as Error).message}`);
  }
}

type Measure = (active: ActivePath) => Promise<void>;

async function interleaved(
  ctx: BenchContext,
  paths: ActivePath[],
  results: Results,
  reps: number,
  figure: string,
  measure: Measure,
): Promise<void> {
  for (let rep = 0; rep < reps; rep += 1) {
    for (const active of rotate(paths, rep)) {
      if (!healthy(active, results)) continue;
      const quiet = await ctx.quiet.wait();
      const meter = startMeter(benchPids(ctx, active.path.processes().map((p) => p.pid)));
      try {
        await measure(active);
      } catch (error) {
        results.fail(figure, active.path.id, (error as Error).message);
        await checkAlive(active, results);
      }
      const reading = meter();
      results.noted({ figure, row: active.path.id, rep, quietBefore: quiet.quiet, waitedMs: quiet.waitedMs, ...reading });
      log(
        `${figure} rep ${rep + 1}/${reps} ${active.path.id}: ${reading.wallSeconds.toFixed(1)} s` +
          (reading.backgroundCores >= 0.2 ? ` (other processes used ${reading.backgroundCores.toFixed(2)} cores meanwhile)` : ''),
      );
    }
  }
}

function log(text: string): void {
  process.stderr.write(`  ${text}\n`);
}

interface BulkResult {
  bytes: number;
  seconds: number;
  mbPerS: number;
}

/**
 * A long-running tunnel is warm: its JavaScript is optimized, its TCP windows
 * have grown. Each path gets one unrecorded pass of every workload first.
 */
async function warmUp(ctx: BenchContext, paths: ActivePath[], results: Results, s: PathFigureSettings): Promise<void> {
  if (s.warmupBytes === 0) return;
  for (const active of paths) {
    if (!healthy(active, results)) continue;
    try {
      await runLoad(ctx, 'bulk', { port: active.port, bytes: s.warmupBytes, streams: 1 }, 120_000);
      await runLoad(ctx, 'bulk', { port: active.port, bytes: s.warmupBytes, streams: s.parallelStreams }, 120_000);
      await runLoad(ctx, 'rtt', { port: active.port, count: 1000, size: 64 }, 60_000);
      await runLoad(ctx, 'ttfb', { port: active.port, count: 50 }, 60_000);
    } catch (error) {
      results.pathFailed(active.path.id, `warm-up failed: ${(error as Error).message}`);
    }
  }
  log(`warm-up done (${fmtBytes(s.warmupBytes)} bulk, 1,000 round trips and 50 streams per path)`);
}

type RoleCpu = Record<string, { user: number; sys: number }>;

/** User and system CPU of each of the path's processes (with its children), by role. */
function cpuByRole(active: ActivePath): RoleCpu {
  const byRole: RoleCpu = {};
  for (const { role, pid } of active.path.processes()) {
    const sum = { user: 0, sys: 0 };
    for (const p of processTree([pid])) {
      const t = cpuTimes(p);
      sum.user += t.user;
      sum.sys += t.sys;
    }
    byRole[role] = sum;
  }
  return byRole;
}

/** CPU seconds the path used between two snapshots: the total and, per role, user/sys. */
function cpuSince(before: RoleCpu, active: ActivePath): { total: number; byRole: RoleCpu } {
  const after = cpuByRole(active);
  const byRole: RoleCpu = {};
  let total = 0;
  for (const [role, t] of Object.entries(after)) {
    const b = before[role] ?? { user: 0, sys: 0 };
    byRole[role] = { user: round(t.user - b.user), sys: round(t.sys - b.sys) };
    total += t.user - b.user + (t.sys - b.sys);
  }
  return { total, byRole };
}

const round = (n: number): number => Math.round(n * 100) / 100;

export async function runPathFigures(ctx: BenchContext, paths: ActivePath[], results: Results, s: PathFigureSettings): Promise<void> {
  await warmUp(ctx, paths, results, s);

  await interleaved(ctx, paths, results, s.reps, 'ttfb-median', async (active) => {
    const out = await runLoad<{ us: SampleSummary }>(ctx, 'ttfb', { port: active.port, count: s.ttfbStreams }, 120_000);
    results.add('ttfb-median', active.path.id, out.us.median, out.us);
    results.add('ttfb-p99', active.path.id, out.us.p99);
  });

  await interleaved(ctx, paths, results, s.reps, 'rtt-median', async (active) => {
    const out = await runLoad<{ us: SampleSummary }>(ctx, 'rtt', { port: active.port, count: s.rttExchanges, size: 64 }, 120_000);
    results.add('rtt-median', active.path.id, out.us.median, out.us);
    results.add('rtt-p99', active.path.id, out.us.p99);
  });

  const bulkTimeout = (bytes: number): number => 60_000 + (bytes / 10e6) * 1000; // even 10 MB/s finishes
  await interleaved(ctx, paths, results, s.reps, 'throughput-1', async (active) => {
    const before = cpuByRole(active);
    const out = await runLoad<BulkResult>(ctx, 'bulk', { port: active.port, bytes: s.bulkBytes, streams: 1 }, bulkTimeout(s.bulkBytes));
    const cpu = cpuSince(before, active);
    results.add('throughput-1', active.path.id, out.mbPerS, out);
    if (active.path.processes().length > 0) {
      results.add('cpu-per-gib-1', active.path.id, cpu.total / (out.bytes / GiB), { cpuSeconds: cpu.total, byRole: cpu.byRole, wallSeconds: out.seconds });
    }
  });

  const parallel = `throughput-${s.parallelStreams}`;
  await interleaved(ctx, paths, results, s.reps, parallel, async (active) => {
    const before = cpuByRole(active);
    const out = await runLoad<BulkResult>(
      ctx,
      'bulk',
      { port: active.port, bytes: s.parallelBytes, streams: s.parallelStreams },
      bulkTimeout(s.parallelBytes),
    );
    const cpu = cpuSince(before, active);
    results.add(parallel, active.path.id, out.mbPerS, out);
    if (active.path.processes().length > 0) {
      results.add(`cpu-per-gib-${s.parallelStreams}`, active.path.id, cpu.total / (out.bytes / GiB), {
        cpuSeconds: cpu.total,
        byRole: cpu.byRole,
        wallSeconds: out.seconds,
      });
    }
  });

  const tunnels = paths.filter((active) => active.path.processes().length > 0);
  await interleaved(ctx, tunnels, results, s.reps, 'stall-peak', (active) => stalledReader(ctx, active, results, s.stallSeconds));
}

/** Sum of VmRSS over the path's processes and their children, by role. */
function rssByRole(active: ActivePath): Record<string, number> {
  const byRole: Record<string, number> = {};
  for (const { role, pid } of active.path.processes()) {
    byRole[role] = processTree([pid]).reduce((sum, p) => {
      try {
        return sum + readMemory(p).rss;
      } catch {
        return sum; // a process that just ended
      }
    }, 0);
  }
  return byRole;
}

const total = (byRole: Record<string, number>): number => Object.values(byRole).reduce((a, b) => a + b, 0);

/**
 * A reader that asks for 1 GiB and never reads it: every tunnel must stop the
 * sender (flow control) instead of buffering. Samples RSS every 50 ms.
 */
async function stalledReader(ctx: BenchContext, active: ActivePath, results: Results, seconds: number): Promise<void> {
  const before = rssByRole(active);
  const load = await startLoad(ctx, 'stall', { port: active.port, bytes: GiB });
  const peak: Record<string, number> = { ...before };
  let peakTotal = total(before);
  try {
    await load.next(15_000);
    const until = Date.now() + seconds * 1000;
    while (Date.now() < until) {
      const now = rssByRole(active);
      for (const [role, rss] of Object.entries(now)) peak[role] = Math.max(peak[role] ?? 0, rss);
      peakTotal = Math.max(peakTotal, total(now));
      await sleep(50);
    }
  } finally {
    await load.finish();
  }
  const growth = Object.fromEntries(Object.entries(peak).map(([role, rss]) => [role, (rss - (before[role] ?? 0)) / MiB]));
  results.add('stall-peak', active.path.id, (peakTotal - total(before)) / MiB, { growthMiBByRole: growth, beforeMiB: total(before) / MiB });
  // The path must still work once the stalled stream is gone.
  await waitForBanner(active.port, 10_000);
}
