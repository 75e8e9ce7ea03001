/**
 * Child processes for the system tests: real daemons and the built
 * `reflector` command, each started in the foreground, watched through its
 * output, and stopped by its own PID (never by name, so a test never touches
 * a process it did not start). Loopback ports are picked at run time.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

/** How much of a child's output is kept for assertions and failure messages. */
const OUTPUT_TAIL_BYTES = 512 * 1024;

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Shown in errors and logs, e.g. "opensmtpd" or "reflector server". */
  name: string;
  command: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface StopOptions {
  /** First signal; default SIGTERM. */
  signal?: NodeJS.Signals;
  /** How long to wait for exit before SIGKILL; default 10 s. */
  timeoutMs?: number;
}

/** Every child still running, so that a crashing test file does not leave daemons behind. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) {
      // Best effort at process exit: the child may already be gone (ESRCH), nothing to handle.
      try {
        if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      } catch {
        /* already exited */
      }
    }
  });
}

/** A child process whose stdout and stderr are captured line by line. */
export class ServiceProcess {
  readonly name: string;
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  private readonly child: ChildProcess;
  private readonly chunks: { stream: 'stdout' | 'stderr'; text: string }[] = [];
  private keptBytes = 0;
  private readonly lineWaiters = new Set<() => void>();
  private readonly partial = { stdout: '', stderr: '' };
  private readonly completeLines: { stream: 'stdout' | 'stderr'; line: string }[] = [];
  private exitStatus: ExitStatus | undefined;

  constructor(options: SpawnOptions) {
    installExitHook();
    this.name = options.name;
    this.child = spawn(options.command, [...options.args], {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (this.child.pid === undefined) {
      // spawn() reports ENOENT asynchronously; surface it as a clear error right away.
      throw new Error(`${options.name}: could not start ${options.command}`);
    }
    this.pid = this.child.pid;
    live.add(this.child);
    for (const stream of ['stdout', 'stderr'] as const) {
      this.child[stream]!.setEncoding('utf8');
      this.child[stream]!.on('data', (text: string) => this.record(stream, text));
    }
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        live.delete(this.child);
        this.exitStatus = { code, signal };
        for (const wake of this.lineWaiters) wake();
        resolve(this.exitStatus);
      });
    });
    // An 'error' (e.g. ENOENT) is followed by 'exit' or leaves pid undefined, handled above.
    this.child.on('error', (error) => this.record('stderr', `[spawn error] ${error.message}\n`));
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** The kept output (the last ~512 KiB), stdout and stderr interleaved as they arrived. */
  output(): string {
    return this.chunks.map((chunk) => chunk.text).join('');
  }

  /** Complete lines seen so far on one stream (or both). */
  lines(stream?: 'stdout' | 'stderr'): string[] {
    return this.completeLines.filter((entry) => stream === undefined || entry.stream === stream).map((entry) => entry.line);
  }

  /**
   * Resolves with the first complete line (already seen or yet to come) that
   * `match` accepts; rejects if the process exits first or after `timeoutMs`.
   */
  waitForLine(match: (line: string) => boolean, what: string, timeoutMs = 20_000): Promise<string> {
    return new Promise((resolve, reject) => {
      let checked = 0;
      const check = (): void => {
        for (; checked < this.completeLines.length; checked += 1) {
          const { line } = this.completeLines[checked]!;
          if (match(line)) return finish(() => resolve(line));
        }
        if (this.exitStatus !== undefined) {
          finish(() => reject(this.failure(`exited (${describeExit(this.exitStatus!)}) before ${what}`)));
        }
      };
      const timer = setTimeout(() => finish(() => reject(this.failure(`no ${what} after ${timeoutMs} ms`))), timeoutMs);
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        this.lineWaiters.delete(check);
        settle();
      };
      this.lineWaiters.add(check);
      check();
    });
  }

  /** An Error that names the process and carries its recent output. */
  failure(message: string): Error {
    const tail = this.output().slice(-8_000);
    return new Error(`${this.name} (pid ${this.pid}): ${message}\n--- output (tail) ---\n${tail}`);
  }

  /** Sends a signal to this PID (no-op once it has exited). */
  signal(signal: NodeJS.Signals): void {
    if (this.exitStatus !== undefined) return;
    process.kill(this.pid, signal);
  }

  /**
   * Sends `signal` (SIGTERM) to this PID, waits up to `timeoutMs` for the exit,
   * then SIGKILLs it. Resolves with how it ended.
   */
  async stop(options: StopOptions = {}): Promise<ExitStatus> {
    if (this.exitStatus !== undefined) return this.exitStatus;
    this.signal(options.signal ?? 'SIGTERM');
    return this.waitForExit(options.timeoutMs ?? 10_000);
  }

  /** Waits for the exit; SIGKILLs the PID if it takes longer than `timeoutMs`. */
  async waitForExit(timeoutMs: number): Promise<ExitStatus> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeoutMs);
    });
    const first = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    if (first !== 'late') return first;
    this.signal('SIGKILL');
    return this.exited;
  }

  private record(stream: 'stdout' | 'stderr', text: string): void {
    this.chunks.push({ stream, text });
    this.keptBytes += text.length;
    while (this.keptBytes > OUTPUT_TAIL_BYTES && this.chunks.length > 1) {
      this.keptBytes -= this.chunks.shift()!.text.length;
    }
    const joined = this.partial[stream] + text;
    const parts = joined.split('\n');
    this.partial[stream] = parts.pop()!;
    for (const line of parts) this.completeLines.push({ stream, line: line.replace(/\r$/, '') });
    if (this.completeLines.length > 20_000) this.completeLines.splice(0, this.completeLines.length - 20_000);
    if (parts.length > 0) for (const wake of [...this.lineWaiters]) wake();
  }
}

export function describeExit(status: ExitStatus): string {
  return status.signal !== null ? `signal ${status.signal}` : `code ${String(status.code)}`;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (no shell); never rejects on a non-zero exit: the caller checks `code`. */
export function run(
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      command,
      [...args],
      {
        env: options.env ?? process.env,
        cwd: options.cwd,
        timeout: options.timeoutMs ?? 60_000,
        killSignal: 'SIGKILL',
        maxBuffer: 128 * 1024 * 1024,
        encoding: 'utf8',
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        const note = error !== null && typeof error.code !== 'number' ? `\n[run] ${error.message}` : '';
        resolve({ code, stdout, stderr: stderr + note });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
  });
}

/** Like run(), but rejects with the command's output when it exits non-zero. */
export async function runOk(
  command: string,
  args: readonly string[],
  options: Parameters<typeof run>[2] = {},
): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${result.code}\n${result.stdout}\n${result.stderr}`.trimEnd());
  }
  return result;
}

/** A loopback port nothing listens on right now (bound, read, released). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function canConnect(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Polls until `host:port` accepts a TCP connection; fails early (with its output) if `owner` exits. */
export async function waitForPort(port: number, owner: ServiceProcess, host = '127.0.0.1', timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!owner.running) throw owner.failure(`exited before listening on ${host}:${port}`);
    if (await canConnect(port, host)) return;
    if (Date.now() > deadline) throw owner.failure(`not listening on ${host}:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Is a process with this PID alive (and ours to signal)? */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
