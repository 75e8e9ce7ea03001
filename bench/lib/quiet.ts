/**
 * Noise control on a shared machine: before each measurement, wait (briefly)
 * until other processes leave the CPUs alone; during it, account for how much
 * CPU the rest of the machine used, so a noisy sample can be recognised.
 */
import { readFileSync } from 'node:fs';
import { cpuBetween, sleep, treeCpuSeconds } from './proc.js';

const CLOCK_TICKS = 100;

/** Busy CPU seconds of the whole machine since boot (all cores, everything but idle and iowait). */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number) as number[];
  return (user! + nice! + system! + irq! + softirq! + steal!) / CLOCK_TICKS;
}

/** CPU seconds of this harness and of every child it has already reaped (the load generators). */
function harnessCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  // fields[11..14] are utime, stime, cutime, cstime (fields 14-17 of stat).
  return (fields[11]! + fields[12]! + fields[13]! + fields[14]!) / CLOCK_TICKS;
}

export interface QuietResult {
  waitedMs: number;
  /** Cores other processes kept busy in the last window before we went ahead. */
  backgroundCores: number;
  quiet: boolean;
}

/**
 * Waits until the machine's busy CPU over a `windowMs` window stays under
 * `maxCores` (our own processes are idle between measurements), or until
 * `timeoutMs`. The waits of one run share a budget: on a machine that is never
 * quiet, waiting stops helping, so once the budget is spent the bench goes on
 * at once (and still records the noise of every measurement).
 */
export class QuietGate {
  private spentMs = 0;

  constructor(
    private readonly timeoutMs: number,
    private readonly budgetMs: number,
    private readonly maxCores = 0.3,
    private readonly windowMs = 400,
  ) {}

  async wait(): Promise<QuietResult> {
    const limit = Math.min(this.timeoutMs, this.budgetMs - this.spentMs);
    if (limit <= 0) return { waitedMs: 0, backgroundCores: Number.NaN, quiet: false };
    const started = Date.now();
    for (;;) {
      const before = machineBusySeconds();
      await sleep(this.windowMs);
      const cores = (machineBusySeconds() - before) / (this.windowMs / 1000);
      const waitedMs = Date.now() - started;
      if (cores <= this.maxCores || waitedMs >= limit) {
        this.spentMs += waitedMs;
        return { waitedMs, backgroundCores: cores, quiet: cores <= this.maxCores };
      }
    }
  }
}

export interface MeterReading {
  wallSeconds: number;
  /** Cores the bench's own processes (harness, load, target, tunnel) used on average. */
  benchCores: number;
  /** Cores everything else on the machine used on average: the noise. */
  backgroundCores: number;
}

/** Starts measuring; `roots` are the live processes of the bench (target, tunnel). */
export function startMeter(roots: number[]): () => MeterReading {
  const t0 = Date.now();
  const machine0 = machineBusySeconds();
  const harness0 = harnessCpuSeconds();
  const trees0 = treeCpuSeconds(roots);
  return () => {
    const wallSeconds = (Date.now() - t0) / 1000;
    const bench = harnessCpuSeconds() - harness0 + cpuBetween(trees0, treeCpuSeconds(roots));
    const machine = machineBusySeconds() - machine0;
    return {
      wallSeconds,
      benchCores: bench / wallSeconds,
      backgroundCores: Math.max(0, machine - bench) / wallSeconds,
    };
  };
}
