/**
 * `reflector connect` run to completion, for tests about why a connection
 * fails: the exit code, the one-line message it ends with, and its log lines.
 * Also the environment that keeps a developer's own proxy settings out of a
 * test.
 */
import path from 'node:path';
import { freePort, run } from './child-process.js';
import { CLI, ensureBuilt, NO_PROXY_ENV, parseLogLine, type ReflectorKeys } from './reflector-processes.js';

/** Re-exported: reflector-processes.ts defines it (startClientProcess applies it too). */
export { NO_PROXY_ENV };

export interface ConnectAttempt {
  code: number;
  stderr: string;
  /** The last stderr line that is not a JSON log line: `reflector: <one sentence>`. */
  message: string;
  logs: Array<Record<string, unknown>>;
}

export interface ConnectOnceOptions {
  keys: ReflectorKeys;
  url: string;
  /** Extra flags (--proxy, --ca, --header ...). */
  args?: readonly string[];
  /** Added to the environment after NO_PROXY_ENV. */
  env?: NodeJS.ProcessEnv;
  /** --max-retries; default 1 (two attempts), so a retryable failure ends quickly. */
  maxRetries?: number;
  timeoutMs?: number;
}

/** Runs `reflector connect URL -L PORT=echo --max-retries N ...` until it exits (it fails, or is killed at the timeout). */
export async function connectOnce(options: ConnectOnceOptions): Promise<ConnectAttempt> {
  await ensureBuilt();
  const port = await freePort();
  const result = await run(
    process.execPath,
    [
      CLI,
      'connect',
      options.url,
      '--identity',
      options.keys.clientFile,
      '--server-key',
      options.keys.hostThumbprint,
      '--known-servers',
      path.join(options.keys.dir, 'known_servers'),
      '-L',
      `127.0.0.1:${port}=echo`,
      '--max-retries',
      String(options.maxRetries ?? 1),
      '--log-format',
      'json',
      ...(options.args ?? []),
    ],
    { env: { ...process.env, ...NO_PROXY_ENV, ...options.env }, timeoutMs: options.timeoutMs ?? 30_000 },
  );
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
  const logs = lines.map(parseLogLine).filter((entry): entry is Record<string, unknown> => entry !== undefined);
  const message = lines.filter((line) => parseLogLine(line) === undefined).at(-1) ?? '';
  return { code: result.code, stderr: result.stderr, message, logs };
}
