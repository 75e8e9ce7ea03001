/**
 * One fuzz target in a worker thread: runs inputs [from, to) and reports.
 * The index of the input in hand is kept in shared memory, so the main
 * thread can name the input that hangs, and stop this worker.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { inputSeed, preview, Rng } from './mutate.js';
import { Slot, type WorkerJob, type WorkerMessage } from './protocol.js';
import { InvariantViolation, TARGETS } from './targets.js';

const MAX_REPORTED = 5;

async function main(): Promise<void> {
  // The YAML parser warns (process warnings) about odd keys it meets; with 10^4 odd inputs that is noise.
  process.removeAllListeners('warning');
  const job = workerData as WorkerJob;
  const target = TARGETS.find((t) => t.name === job.target);
  if (!target) throw new Error(`no fuzz target ${job.target}`);
  const progress = new Int32Array(job.progress);
  const prepared = await target.prepare();
  let rejected = 0;
  let accepted = 0;
  let crashes = 0;
  let invariants = 0;
  let slowestMs = 0;
  let slowestIndex = -1;
  const started = performance.now();
  for (let index = job.from; index < job.to; index++) {
    Atomics.store(progress, Slot.CURRENT, index);
    const rng = new Rng(inputSeed(job.seed, target.name, index));
    const input = prepared.input(rng);
    const t0 = performance.now();
    try {
      await prepared.run(input);
      accepted += 1;
      Atomics.add(progress, Slot.ACCEPTED, 1);
    } catch (error) {
      if (!(error instanceof InvariantViolation) && target.allowed(error)) {
        rejected += 1;
        Atomics.add(progress, Slot.REJECTED, 1);
      } else {
        if (error instanceof InvariantViolation) {
          invariants += 1;
          Atomics.add(progress, Slot.INVARIANTS, 1);
        } else {
          crashes += 1;
          Atomics.add(progress, Slot.CRASHES, 1);
        }
        if (crashes + invariants <= MAX_REPORTED) {
          const err = error as Error;
          parentPort!.postMessage({
            type: 'finding',
            finding: {
              kind: error instanceof InvariantViolation ? 'invariant' : 'crash',
              target: target.name,
              index,
              seed: job.seed,
              error: `${err?.name ?? typeof error}: ${err?.message ?? String(error)}\n${(err?.stack ?? '').split('\n').slice(1, 6).join('\n')}`,
              input: preview(input),
            },
          } satisfies WorkerMessage);
        }
      }
    }
    const ms = performance.now() - t0;
    if (ms > slowestMs) {
      slowestMs = ms;
      slowestIndex = index;
    }
    Atomics.add(progress, Slot.DONE, 1);
  }
  parentPort!.postMessage({
    type: 'done',
    target: target.name,
    runs: job.to - job.from,
    rejected,
    accepted,
    crashes,
    invariants,
    ms: performance.now() - started,
    slowestMs,
    slowestIndex,
  } satisfies WorkerMessage);
}

await main();
