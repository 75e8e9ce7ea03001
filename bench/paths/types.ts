import type { LoadWorker } from '../lib/load.js';
import type { QuietGate } from '../lib/quiet.js';

/**
 * One way for bytes to get from the load generator to the target: direct TCP,
 * Reflector (optionally behind nginx), ssh -L. Every path ends at a loopback
 * port that reaches the same target process.
 */

export interface BenchContext {
  /** Repository root (holds dist/ and bench/). */
  repo: string;
  /** Scratch directory for keys, configs and logs; removed at the end. */
  dir: string;
  /** The target process's port (what every path forwards to). */
  targetPort: number;
  /** The target process (its CPU counts as the bench's own, not as noise). */
  targetPid: number;
  /** Extra node flags for the reflector children (e.g. --cpu-prof). */
  nodeFlags: string[];
  /** The load generator process. */
  load: LoadWorker;
  /** Waits for a quiet machine before each measurement. */
  quiet: QuietGate;
}

/** The bench's own live processes, whose CPU is not noise. */
export function benchPids(ctx: BenchContext, extra: number[] = []): number[] {
  return [ctx.targetPid, ...(ctx.load.pid === undefined ? [] : [ctx.load.pid]), ...extra];
}

export interface PathEndpoint {
  /** The loopback port the load generator connects to. */
  port: number;
}

export interface BenchPath {
  /** Short id used in results (e.g. "ssh-aes128-gcm"). */
  readonly id: string;
  /** What a reader sees in the tables. */
  readonly label: string;
  /** Why the path cannot run here ("<package> not installed"), or undefined if it can. */
  unavailable(): string | undefined;
  setup(ctx: BenchContext): Promise<PathEndpoint>;
  teardown(): Promise<void>;
  /** The tunnel's processes (roots; their children count too), for CPU and memory accounting. Empty for direct TCP. */
  processes(): Array<{ role: string; pid: number }>;
  /** What was negotiated or configured, once set up (cipher, TLS version), for the results. */
  details(): string;
}
