/**
 * `npm run fuzz`: at least 10^6 generated inputs across the frame codec, the
 * record layer, the stream table, the handshake messages, config and key
 * files. Each target runs in worker threads (one per core); the input in hand
 * is kept in shared memory, so a hang (no progress for HANG_MS) or a worker
 * that dies (stack overflow, out of memory) is reported with the exact input
 * that caused it. Prints per-target counts and exits non-zero on any crash,
 * hang or invariant violation.
 *
 *   npm run fuzz                                  the full run, new random seed
 *   npm run fuzz -- --seed 1234                   the same inputs again
 *   npm run fuzz -- --scale 0.1                   a tenth of the inputs
 *   npm run fuzz -- --target frames.decode        one target
 *   npm run fuzz -- --target X --seed S --index N replay one input, with the whole error
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { inputSeed, preview, Rng } from './mutate.js';
import { InvariantViolation, TARGETS } from './targets.js';
import { Slot, type Finding, type WorkerJob, type WorkerMessage } from './protocol.js';

const HANG_MS = 15_000;
const CHUNK = 50_000;
const MIN_TOTAL = 1_000_000;

interface Options {
  seed: number;
  scale: number;
  targets: string[];
  index?: number;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { seed: Math.floor(Math.random() * 2 ** 31), scale: 1, targets: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    const number = (): number => {
      const n = Number(value);
      if (value === undefined || !Number.isFinite(n)) throw new Error(`${flag} needs a number`);
      i += 1;
      return n;
    };
    if (flag === '--seed') options.seed = number();
    else if (flag === '--scale') options.scale = number();
    else if (flag === '--index') options.index = number();
    else if (flag === '--target') {
      if (!TARGETS.some((t) => t.name === value)) throw new Error(`unknown target ${value}; targets: ${TARGETS.map((t) => t.name).join(', ')}`);
      options.targets.push(value!);
      i += 1;
    } else throw new Error(`unknown flag ${flag}`);
  }
  return options;
}

/** Runs one input in this thread and prints everything about it. */
async function replay(name: string, seed: number, index: number): Promise<number> {
  const target = TARGETS.find((t) => t.name === name)!;
  const prepared = await target.prepare();
  const input = prepared.input(new Rng(inputSeed(seed, name, index)));
  console.log(`${name} seed ${seed} index ${index}\ninput: ${preview(input, 2000)}`);
  try {
    await prepared.run(input);
    console.log('accepted');
    return 0;
  } catch (error) {
    const ok = !(error instanceof InvariantViolation) && target.allowed(error);
    console.log(ok ? 'rejected with the promised error:' : 'FINDING:', error);
    return ok ? 0 : 1;
  }
}

interface Totals {
  runs: number;
  rejected: number;
  accepted: number;
  crashes: number;
  invariants: number;
  hangs: number;
  ms: number;
  slowestMs: number;
  slowestIndex: number;
}

const BOOT = (workerUrl: string): URL => {
  // Workers do not inherit --import tsx: register the loader, then load the TypeScript worker.
  const api = import.meta.resolve('tsx/esm/api');
  const code = `import { register } from ${JSON.stringify(api)}; register(); await import(${JSON.stringify(workerUrl)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(code)}`);
};

async function main(): Promise<number> {
  const options = parseArgs(process.argv.slice(2));
  const selected = TARGETS.filter((t) => options.targets.length === 0 || options.targets.includes(t.name));
  if (options.index !== undefined) {
    if (selected.length !== 1) throw new Error('--index needs exactly one --target');
    return replay(selected[0]!.name, options.seed, options.index);
  }
  const workerUrl = new URL('./worker.ts', import.meta.url).href;
  const parallel = Math.max(1, os.availableParallelism());
  console.log(`fuzzing ${selected.length} targets with seed ${options.seed} on ${parallel} worker threads (replay: npm run fuzz -- --seed ${options.seed})`);

  const queue: Array<{ target: string; from: number; to: number }> = [];
  for (const target of selected) {
    const count = Math.max(1, Math.round(target.count * options.scale));
    for (let from = 0; from < count; from += CHUNK) queue.push({ target: target.name, from, to: Math.min(count, from + CHUNK) });
  }
  const totals = new Map<string, Totals>(
    selected.map((t) => [t.name, { runs: 0, rejected: 0, accepted: 0, crashes: 0, invariants: 0, hangs: 0, ms: 0, slowestMs: 0, slowestIndex: -1 }]),
  );
  const findings: Finding[] = [];
  const started = performance.now();

  const runChunk = (chunk: { target: string; from: number; to: number }): Promise<void> =>
    new Promise<void>((resolve) => {
      const progress = new SharedArrayBuffer(Slot.LENGTH * Int32Array.BYTES_PER_ELEMENT);
      const view = new Int32Array(progress);
      const job: WorkerJob = { target: chunk.target, seed: options.seed, from: chunk.from, to: chunk.to, progress };
      const worker = new Worker(BOOT(workerUrl), { workerData: job, resourceLimits: { maxOldGenerationSizeMb: 1024 } });
      const total = totals.get(chunk.target)!;
      let lastDone = -1;
      let lastChange = performance.now();
      let finished = false;
      /** The worker stopped at input `index`: record it and go on after it. */
      const abandon = (kind: 'hang' | 'died', detail: string): void => {
        if (finished) return;
        finished = true;
        clearInterval(watchdog);
        const index = Atomics.load(view, Slot.CURRENT);
        // The counts of the inputs before the one in hand survive in shared memory.
        total.runs += Atomics.load(view, Slot.DONE) + 1;
        total.rejected += Atomics.load(view, Slot.REJECTED);
        total.accepted += Atomics.load(view, Slot.ACCEPTED);
        total.crashes += Atomics.load(view, Slot.CRASHES);
        total.invariants += Atomics.load(view, Slot.INVARIANTS);
        if (kind === 'hang') total.hangs += 1;
        else total.crashes += 1;
        findings.push({
          kind: kind === 'hang' ? 'hang' : 'crash',
          target: chunk.target,
          index,
          seed: options.seed,
          error: `${kind === 'hang' ? `no progress for ${HANG_MS} ms` : 'the worker died'}: ${detail}`,
          input: '(replay with --index to see it)',
        });
        void worker.terminate();
        if (index + 1 < chunk.to) queue.unshift({ target: chunk.target, from: index + 1, to: chunk.to });
        resolve();
      };
      const watchdog = setInterval(() => {
        const done = Atomics.load(view, Slot.DONE);
        if (done !== lastDone) {
          lastDone = done;
          lastChange = performance.now();
        } else if (performance.now() - lastChange > HANG_MS) {
          abandon('hang', `input ${Atomics.load(view, Slot.CURRENT)} of ${chunk.target}`);
        }
      }, 1_000);
      worker.on('message', (message: WorkerMessage) => {
        if (message.type === 'finding') {
          findings.push(message.finding);
          return;
        }
        finished = true;
        clearInterval(watchdog);
        total.runs += message.runs;
        total.rejected += message.rejected;
        total.accepted += message.accepted;
        total.ms += message.ms;
        if (message.slowestMs > total.slowestMs) {
          total.slowestMs = message.slowestMs;
          total.slowestIndex = message.slowestIndex;
        }
        total.crashes += message.crashes;
        total.invariants += message.invariants;
        void worker.terminate();
        resolve();
      });
      worker.on('error', (error) => abandon('died', `${error.name}: ${error.message}`));
      worker.on('exit', (code) => {
        if (!finished) abandon('died', `exit code ${code}`);
      });
    });

  await Promise.all(
    Array.from({ length: parallel }, async () => {
      for (let chunk = queue.shift(); chunk !== undefined; chunk = queue.shift()) await runChunk(chunk);
    }),
  );

  const seconds = (performance.now() - started) / 1000;
  const rows = [...totals.entries()].map(([name, t]) => [
    name,
    t.runs.toLocaleString('en-US'),
    t.rejected.toLocaleString('en-US'),
    t.accepted.toLocaleString('en-US'),
    String(t.crashes),
    String(t.hangs),
    String(t.invariants),
    `${(t.ms / 1000).toFixed(1)} s`,
    `${t.slowestMs.toFixed(1)} ms (#${t.slowestIndex})`,
  ]);
  const header = ['target', 'inputs', 'rejected', 'accepted', 'crashes', 'hangs', 'invariant', 'cpu time', 'slowest input'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(`\n${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  for (const row of rows) console.log(line(row));
  const sum = [...totals.values()].reduce(
    (a, t) => ({ runs: a.runs + t.runs, crashes: a.crashes + t.crashes, hangs: a.hangs + t.hangs, invariants: a.invariants + t.invariants }),
    { runs: 0, crashes: 0, hangs: 0, invariants: 0 },
  );
  console.log(
    `\n${sum.runs.toLocaleString('en-US')} inputs in ${seconds.toFixed(1)} s (seed ${options.seed}): ` +
      `${sum.crashes} crashes, ${sum.hangs} hangs, ${sum.invariants} invariant violations`,
  );
  for (const finding of findings) {
    console.log(`\n[${finding.kind}] ${finding.target} #${finding.index} — replay: npm run fuzz -- --target ${finding.target} --seed ${finding.seed} --index ${finding.index}`);
    console.log(`  input: ${finding.input}`);
    console.log(`  ${finding.error.split('\n').join('\n  ')}`);
  }
  const enough = options.targets.length > 0 || options.scale < 1 || sum.runs >= MIN_TOTAL;
  if (!enough) console.log(`\nonly ${sum.runs} inputs: a full run needs at least ${MIN_TOTAL}`);
  return sum.crashes + sum.hangs + sum.invariants === 0 && enough ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('fuzz:', error instanceof Error ? error.message : error);
    process.exit(2);
  },
);
