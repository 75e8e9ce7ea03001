/**
 * The load generator (bench/load/client.ts --serve) as one long-lived process
 * of its own: the harness sends it one command at a time over IPC. It is
 * started on first use and started again if it dies or a command times out,
 * so one bad measurement never poisons the next.
 */
import path from 'node:path';
import type { BenchContext } from '../paths/types.js';
import { start, type Child } from './proc.js';

type Message = { ready: true } | { id: number; value: unknown } | { id: number; done: true } | { id: number; error: string };

/** One command in flight: its values in order, then done or an error. */
export class LoadRequest {
  private readonly values: unknown[] = [];
  private failure: Error | undefined;
  private finished = false;
  private wake: (() => void) | undefined;

  constructor(
    readonly id: number,
    private readonly worker: LoadWorker,
  ) {}

  /** @internal called by the worker */
  deliver(message: Message): void {
    if ('value' in message) this.values.push(message.value);
    else if ('error' in message) this.failure = new Error(message.error);
    else if ('done' in message) this.finished = true;
    this.wake?.();
  }

  /** @internal the worker died under this request */
  abort(error: Error): void {
    this.failure ??= error;
    this.wake?.();
  }

  private async until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (this.failure) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) {
        await this.worker.kill();
        throw new Error(`load generator: no ${what} within ${timeoutMs} ms`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** The command's next reported value (its result, or a hold's ready line). */
  async next<T>(timeoutMs: number): Promise<T> {
    await this.until(() => this.values.length > 0 || this.finished, timeoutMs, 'result');
    if (this.values.length === 0) throw this.failure ?? new Error('load generator finished without a result');
    return this.values.shift() as T;
  }

  /** Releases a hold (no-op otherwise) and waits for the command to finish. */
  async finish(timeoutMs = 30_000): Promise<void> {
    this.worker.release(this.id);
    await this.until(() => this.finished, timeoutMs, 'end of the command').catch((error: Error) => {
      if (!this.finished) throw error;
    });
  }
}

export class LoadWorker {
  private child: Child | undefined;
  private ready: Promise<void> | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, LoadRequest>();

  constructor(
    private readonly repo: string,
    private readonly logFile: string,
  ) {}

  private ensure(): Promise<void> {
    if (this.child?.alive && this.ready) return this.ready;
    const child = start('load generator', process.execPath, ['--import', 'tsx', path.join(this.repo, 'bench', 'load', 'client.ts'), '--serve'], {
      log: this.logFile,
      ipc: true,
    });
    this.child = child;
    this.ready = new Promise<void>((resolve, reject) => {
      child.process.on('message', (message: Message) => {
        if ('ready' in message) resolve();
        else this.pending.get(message.id)?.deliver(message);
      });
      void child.exited.then((code) => {
        const error = new Error(`load generator exited (${code}); log ${this.logFile}`);
        reject(error);
        for (const request of this.pending.values()) request.abort(error);
        this.pending.clear();
      });
    });
    return this.ready;
  }

  async request(command: string, args: Record<string, string | number>): Promise<LoadRequest> {
    await this.ensure();
    const id = this.nextId++;
    const request = new LoadRequest(id, this);
    this.pending.set(id, request);
    const stringArgs = Object.fromEntries(Object.entries(args).map(([k, v]) => [k, String(v)]));
    this.child!.process.send({ id, command, args: stringArgs });
    return request;
  }

  /** The worker's pid while it runs (its CPU is the bench's own, not noise). */
  get pid(): number | undefined {
    return this.child?.alive ? this.child.pid : undefined;
  }

  release(id: number): void {
    if (this.child?.process.connected) this.child.process.send({ release: id });
  }

  async kill(): Promise<void> {
    await this.child?.stop('SIGKILL');
  }

  async stop(): Promise<void> {
    if (this.child?.process.connected) this.child.process.disconnect();
    await this.child?.stop('SIGTERM', 3_000);
  }
}

/** Starts a command and returns at once: read its values with next(), end it with finish(). */
export function startLoad(ctx: BenchContext, command: string, args: Record<string, string | number>): Promise<LoadRequest> {
  return ctx.load.request(command, args);
}

/** Runs one measurement to its result. */
export async function runLoad<T>(ctx: BenchContext, command: string, args: Record<string, string | number>, timeoutMs: number): Promise<T> {
  const request = await ctx.load.request(command, args);
  const result = await request.next<T>(timeoutMs);
  await request.finish();
  return result;
}
