/** What the fuzz runner (run.ts) and its worker threads (worker.ts) tell each other. */

export interface WorkerJob {
  target: string;
  seed: number;
  from: number;
  to: number;
  /**
   * Int32Array over a SharedArrayBuffer, kept current input by input so the
   * counts survive a worker that hangs or dies: see Slot.
   */
  progress: SharedArrayBuffer;
}

/** Slots of WorkerJob.progress. */
export const Slot = { CURRENT: 0, DONE: 1, REJECTED: 2, ACCEPTED: 3, CRASHES: 4, INVARIANTS: 5, LENGTH: 6 } as const;

export interface Finding {
  kind: 'crash' | 'hang' | 'invariant';
  target: string;
  index: number;
  seed: number;
  error: string;
  input: string;
}

export type WorkerMessage =
  | { type: 'finding'; finding: Finding }
  | {
      type: 'done';
      target: string;
      runs: number;
      rejected: number;
      accepted: number;
      crashes: number;
      invariants: number;
      ms: number;
      slowestMs: number;
      slowestIndex: number;
    };
