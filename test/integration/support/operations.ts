/**
 * Helpers for the operability tests: Prometheus text parsing, event waits,
 * and the built `reflector server` as a child process (for signals).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServerEventMap, ServerEvents } from '../../../server/index.js';

export const CLI = fileURLToPath(new URL('../../../dist/bin/reflector.js', import.meta.url));

// ---------------------------------------------------------------- Prometheus text

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (comments skipped). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!.replace(/\\(.)/g, (_all, c: string) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample with this name whose labels include `labels`; undefined if none. */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter(
    (sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
  );
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

export async function scrape(url: string, init: RequestInit = {}): Promise<Sample[]> {
  const response = await fetch(url, init);
  if (response.status !== 200) throw new Error(`GET ${url}: HTTP ${response.status}`);
  return parseMetrics(await response.text());
}

// ---------------------------------------------------------------- events

/** Resolves with the next event `name` whose payload satisfies `match`. */
export function nextEvent<K extends keyof ServerEventMap>(
  events: ServerEvents,
  name: K,
  match: (event: ServerEventMap[K][0]) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<ServerEventMap[K][0]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      events.off(name, listener as never);
      reject(new Error(`no ${String(name)} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener = (event: ServerEventMap[K][0]): void => {
      if (!match(event)) return;
      clearTimeout(timer);
      events.off(name, listener as never);
      resolve(event);
    };
    events.on(name, listener as never);
  });
}

// ---------------------------------------------------------------- the CLI as a child process

export interface ServerProcess {
  child: ChildProcess;
  /** Every stdout line so far, parsed (the server logs JSON lines when stdout is not a terminal). */
  readonly logs: Array<Record<string, unknown>>;
  stderr(): string;
  /** Resolves with the first log line (now or later) that satisfies `match`. */
  waitForLog(match: (entry: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
  /** Sends SIGKILL if it is still running. */
  kill(): void;
}

export function startServerProcess(configPath: string): ServerProcess {
  const child = spawn(process.execPath, [CLI, 'server', '--config', configPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  const logs: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let buffered = '';
  let errors = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (process.env.REFLECTOR_TEST_LOG) process.stderr.write(`[server] ${line}\n`);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ unparsed: line });
      }
      for (const wake of [...waiters]) wake();
    }
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => (errors += chunk));
  const exited = once(child, 'exit').then(([code, signal]) => (code ?? signal) as number | string);
  return {
    child,
    logs,
    stderr: () => errors,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
    waitForLog: (match, what, timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const check = (): boolean => {
          const found = logs.find(match);
          if (!found) return false;
          cleanup();
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${what}; stderr: ${errors}; log: ${logs.map((l) => JSON.stringify(l)).join('\n')}`));
        }, timeoutMs);
        const onExit = (): void => {
          if (check()) return;
          cleanup();
          reject(new Error(`the server exited while waiting for ${what}; stderr: ${errors}`));
        };
        const cleanup = (): void => {
          clearTimeout(timer);
          waiters.delete(wake);
          child.off('exit', onExit);
        };
        const wake = (): void => void check();
        if (check()) return;
        waiters.add(wake);
        child.once('exit', onExit);
      }),
  };
}

/** The port from the server's `server.listening` log line. */
export async function listeningUrl(server: ServerProcess): Promise<string> {
  const entry = await server.waitForLog((e) => e.event === 'server.listening', 'the server to listen');
  return String(entry.url);
}

export async function adminUrl(server: ServerProcess): Promise<string> {
  const entry = await server.waitForLog((e) => e.event === 'admin.listening', 'the admin listener');
  return String(entry.url);
}

/** Writes a server.yaml in `dir` (keys as file names relative to it) and returns its path. */
export async function writeServerYaml(dir: string, text: string, name = 'server.yaml'): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, text);
  return file;
}
