/**
 * Full handshakes per second against a `reflector server` child: WebSocket
 * upgrade, hello, EdDSA JWT auth carrying X25519 + ML-KEM-768 shares, key
 * schedule, signed WELCOME verified by the client. The load process runs the
 * product's own client handshake (client/session.ts) at a fixed concurrency
 * for a fixed time and counts verified WELCOMEs; each session is closed right
 * after. The server's CPU time per handshake (from /proc) says what one core
 * of server can do, independent of how much CPU the load generator took; the
 * load generator's own CPU per handshake is reported too, since on a 2-core
 * machine the two together bound the rate. One unrecorded repetition of
 * handshakes first warms both up (and starts the load generator).
 */
import path from 'node:path';
import { runLoad } from '../lib/load.js';
import { cpuBetween, treeCpuSeconds } from '../lib/proc.js';
import { startMeter } from '../lib/quiet.js';
import type { Results } from '../lib/results.js';
import type { SampleSummary } from '../lib/stats.js';
import { makeReflectorKeys, startReflectorServer } from '../paths/reflector.js';
import { benchPids, type BenchContext } from '../paths/types.js';

export interface HandshakeSettings {
  reps: number;
  seconds: number;
  concurrency: number;
}

export const HANDSHAKE_ROW = 'reflector server';

export function defineHandshakeFigures(results: Results, s: HandshakeSettings): void {
  results.define({
    id: 'handshakes-per-s',
    title: `Full handshakes per second (WebSocket + JWT + X25519/ML-KEM-768 + WELCOME), ${s.concurrency} concurrent, ${s.seconds} s; server and load generator share the 2 cores`,
    unit: 'handshakes/s',
    better: 'higher',
    digits: 0,
  });
  results.define({
    id: 'handshake-server-cpu',
    title: 'Server CPU per handshake (user+sys)',
    unit: 'ms',
    better: 'lower',
    digits: 2,
  });
  results.define({
    id: 'handshake-load-cpu',
    title: 'Load generator CPU per handshake (the client side of each handshake, on the same 2 cores)',
    unit: 'ms',
    better: 'lower',
    digits: 2,
  });
  results.define({
    id: 'handshake-capacity',
    title: 'Handshakes per second one server core could do (1000 / server CPU ms per handshake)',
    unit: 'handshakes/s',
    better: 'higher',
    digits: 0,
  });
  results.define({
    id: 'handshake-latency',
    title: `Handshake latency under that load, median (client view, ${s.concurrency} concurrent)`,
    unit: 'ms',
    better: 'lower',
    digits: 1,
  });
}

interface HandshakeResult {
  completed: number;
  seconds: number;
  perSecond: number;
  failures: number;
  firstError?: string;
  latencyUs: SampleSummary;
}

export async function runHandshakeFigures(ctx: BenchContext, results: Results, s: HandshakeSettings): Promise<void> {
  const keys = await makeReflectorKeys(path.join(ctx.dir, 'handshakes'));
  // One address makes every handshake: lift the per-address and per-key limits that protect a real gateway.
  const server = await startReflectorServer(ctx, keys, 'handshake-server', {
    maxUnauthenticatedPerAddress: 100_000,
    maxSessionsPerClient: 1_000_000,
  });
  const url = `ws://127.0.0.1:${server.port}/tunnel`;
  const load = { url, identity: keys.clientFile, 'server-key': keys.hostThumbprint, concurrency: s.concurrency };
  try {
    // Warm-up, not recorded, as long as a repetition: starts the load generator, JIT-compiles both
    // sides' handshake code and lets both heaps grow to their working size. With one second of it,
    // the first repetition ran at 1.3 ms of server CPU per handshake and the next ones at 0.85.
    await runLoad<HandshakeResult>(ctx, 'handshakes', { ...load, seconds: s.seconds }, s.seconds * 1000 + 60_000).catch((error: Error) => {
      process.stderr.write(`  handshakes warm-up failed (the repetitions will say why): ${error.message}\n`);
    });
    for (let rep = 0; rep < s.reps; rep += 1) {
      const quiet = await ctx.quiet.wait();
      const meter = startMeter(benchPids(ctx, [server.child.pid]));
      try {
        const loadPids = ctx.load.pid === undefined ? [] : [ctx.load.pid];
        const before = treeCpuSeconds([server.child.pid]);
        const loadBefore = treeCpuSeconds(loadPids);
        const out = await runLoad<HandshakeResult>(ctx, 'handshakes', { ...load, seconds: s.seconds }, s.seconds * 1000 + 60_000);
        const cpu = cpuBetween(before, treeCpuSeconds([server.child.pid]));
        const loadCpu = cpuBetween(loadBefore, treeCpuSeconds(loadPids));
        if (out.failures > 0) results.fail('handshakes-per-s', HANDSHAKE_ROW, `${out.failures} handshakes failed: ${out.firstError}`);
        results.add('handshakes-per-s', HANDSHAKE_ROW, out.perSecond, out);
        const cpuMs = (cpu * 1000) / Math.max(1, out.completed);
        results.add('handshake-server-cpu', HANDSHAKE_ROW, cpuMs, { serverCpuSeconds: cpu });
        const loadCpuMs = (loadCpu * 1000) / Math.max(1, out.completed);
        if (loadPids.length > 0) results.add('handshake-load-cpu', HANDSHAKE_ROW, loadCpuMs, { loadCpuSeconds: loadCpu });
        results.add('handshake-capacity', HANDSHAKE_ROW, 1000 / cpuMs);
        results.add('handshake-latency', HANDSHAKE_ROW, out.latencyUs.median / 1000, out.latencyUs);
        process.stderr.write(`  handshakes rep ${rep + 1}/${s.reps}: ${out.perSecond.toFixed(0)}/s, server ${cpuMs.toFixed(2)} ms CPU each, load generator ${loadCpuMs.toFixed(2)} ms\n`);
      } catch (error) {
        results.fail('handshakes-per-s', HANDSHAKE_ROW, (error as Error).message);
      }
      results.noted({ figure: 'handshakes-per-s', row: HANDSHAKE_ROW, rep, quietBefore: quiet.quiet, waitedMs: quiet.waitedMs, ...meter() });
    }
  } finally {
    await server.child.stop('SIGINT', 3_000);
  }
}
