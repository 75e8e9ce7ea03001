/**
 * Child processes of the bench: started with their output in a log file (so
 * the harness never has to drain a pipe while it measures), waited for by a
 * line in that log, stopped by their own pid, and measured through /proc.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Every child the harness started and has not reaped yet: stopped on exit, by pid. */
const running = new Set<Child>();

export interface StartOptions {
  /** File that receives the child's stdout and stderr. */
  log: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Adds an IPC channel (for the in-process probes). */
  ipc?: boolean;
}

export class Child {
  readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(
    readonly name: string,
    readonly process: ChildProcess,
    readonly log: string,
  ) {
    running.add(this);
    this.exited = new Promise((resolve) => {
      process.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        running.delete(this);
        resolve(this.exitCode);
      });
      process.once('error', () => {
        this.exitCode = -1;
        running.delete(this);
        resolve(-1);
      });
    });
  }

  get pid(): number {
    if (this.process.pid === undefined) throw new Error(`${this.name} has no pid (did it start?)`);
    return this.process.pid;
  }

  get alive(): boolean {
    return this.exitCode === undefined;
  }

  /** Resolves once `match` is true for a line of the log; rejects if the child exits first or time runs out. */
  async waitForLog(match: (line: string) => boolean, what: string, timeoutMs = 15_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = await readFile(this.log, 'utf8').catch(() => '');
      const found = text.split('\n').find(match);
      if (found !== undefined) return found;
      if (!this.alive) throw new Error(`${this.name} exited (${this.exitCode}) before ${what}; log ${this.log}:\n${tail(text)}`);
      if (Date.now() > deadline) throw new Error(`${this.name}: no ${what} within ${timeoutMs} ms; log ${this.log}:\n${tail(text)}`);
      await sleep(25);
    }
  }

  /** SIGTERM (or `signal`), then SIGKILL after `graceMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<void> {
    if (!this.alive) return;
    this.process.kill(signal);
    const timer = setTimeout(() => this.alive && this.process.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export function tail(text: string, lines = 15): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Starts `command args` with stdout+stderr appended to `options.log`. */
export function start(name: string, command: string, args: string[], options: StartOptions): Child {
  const fd = openSync(options.log, 'a');
  const stdio: SpawnOptions['stdio'] = options.ipc ? ['ignore', fd, fd, 'ipc'] : ['ignore', fd, fd];
  const child = spawn(command, args, {
    stdio,
    env: options.env ?? process.env,
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  closeSync(fd);
  return new Child(name, child, options.log);
}

/** Stops every child still running (in reverse start order), each by its own pid. */
export async function stopAll(): Promise<void> {
  for (const child of [...running].reverse()) await child.stop('SIGTERM', 3_000);
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion and collects its output (for short tools: ssh-keygen, openssl, versions). */
export function run(command: string, args: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: stderr + String(error) });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------- /proc

export interface ProcMemory {
  /** Resident set size, bytes. */
  rss: number;
  /** Peak resident set size since start, bytes. */
  hwm: number;
}

export function readMemory(pid: number): ProcMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => {
    const match = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
    return match ? Number(match[1]) * 1024 : 0;
  };
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

const CLOCK_TICKS = 100; // USER_HZ; 100 on every Linux this runs on

/** User and system CPU seconds of one process (zeros if it is gone). */
export function cpuTimes(pid: number): { user: number; sys: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    return { user: Number(fields[11]) / CLOCK_TICKS, sys: Number(fields[12]) / CLOCK_TICKS };
  } catch {
    return { user: 0, sys: 0 };
  }
}

/** User + system CPU seconds of one process (0 if it is gone). */
export function cpuSeconds(pid: number): number {
  const { user, sys } = cpuTimes(pid);
  return user + sys;
}

/** `roots` and all their descendants now alive (sshd forks one process per connection, nginx its workers). */
export function processTree(roots: number[]): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(entry), ppid);
    } catch {
      // the process ended while we listed /proc
    }
  }
  const result = new Set(roots.filter((pid) => parent.has(pid)));
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parent) {
      if (!result.has(pid) && result.has(ppid)) {
        result.add(pid);
        grew = true;
      }
    }
  }
  return [...result];
}

/** CPU seconds of a process tree; call before and after, subtract. */
export function treeCpuSeconds(roots: number[]): Map<number, number> {
  return new Map(processTree(roots).map((pid) => [pid, cpuSeconds(pid)]));
}

/** CPU spent between two snapshots (processes that appeared count from 0, ones that vanished are lost). */
export function cpuBetween(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, seconds] of after) total += seconds - (before.get(pid) ?? 0);
  return total;
}
