/**
 * `reflector connect`: merges client.yaml with the flags, connects, shows
 * the status (a live line on a terminal, JSON lines with --status-json), and
 * closes on SIGTERM or SIGINT. It never exits the process: the promise it
 * returns settles when bin/reflector.ts should.
 */
import { checkDialFiles } from '../client/dialer.js';
import { connect, runStdio } from '../client/index.js';
import { LiveStatusLine, StatusReporter, StatusTracker } from '../client/status-line.js';
import { loadClientConfig, mergeClientInputs, parseClientInput, parseHeaderFlag, resolveClientOptions, type ClientOptions } from '../shared/client-config.js';
import type { AeadName } from '../shared/aead.js';
import { ConfigError, ErrorCode } from '../shared/errors.js';
import { parseForwardSpec } from '../shared/forward-spec.js';
import { createLogger, type Logger } from '../shared/logger.js';
import type { LogFlags } from './log-flags.js';

export interface ConnectFlags extends LogFlags {
  identity?: string;
  serverKey?: string;
  knownServers?: string;
  forward?: string[];
  stdio?: string;
  config?: string;
  aead?: AeadName;
  header?: string[];
  maxRetries?: number;
  ca?: string;
  insecure?: boolean;
  proxy?: string;
  proxyAuth?: 'basic' | 'ntlm';
  proxyUser?: string;
  proxyDomain?: string;
  proxyPasswordFile?: string;
  statusJson?: boolean;
  quiet?: boolean;
}

const FLAG_LABELS: Record<string, string> = {
  url: 'URL',
  identity: '--identity',
  serverKey: '--server-key',
  knownServers: '--known-servers',
  stdio: '--stdio',
  aead: '--aead',
  ca: '--ca',
  insecure: '--insecure',
  proxy: '--proxy',
};

/** The client options from the config file (if any) and the flags, which win. */
async function clientOptions(url: string | undefined, flags: ConnectFlags): Promise<ClientOptions> {
  const fromFile = flags.config === undefined ? {} : await loadClientConfig(flags.config);
  const fromFlags = parseClientInput(
    {
      url,
      identity: flags.identity,
      serverKey: flags.serverKey,
      knownServers: flags.knownServers,
      forwards: (flags.forward ?? []).map(parseForwardSpec),
      stdio: flags.stdio,
      aead: flags.aead,
      headers: Object.fromEntries((flags.header ?? []).map(parseHeaderFlag)),
      reconnect: flags.maxRetries === undefined ? {} : { maxAttempts: flags.maxRetries },
      log: { level: flags.logLevel, format: flags.logFormat },
      ca: flags.ca,
      insecure: flags.insecure,
      proxy: flags.proxy,
      proxyAuth: {
        scheme: flags.proxyAuth,
        user: flags.proxyUser,
        domain: flags.proxyDomain,
        passwordFile: flags.proxyPasswordFile,
      },
    },
    '',
    { labels: FLAG_LABELS },
  );
  const merged = mergeClientInputs(fromFile, fromFlags);
  // Logs go to stderr: readable when a person watches it, JSON lines otherwise, unless the file or a flag says.
  if (merged.log?.format === undefined && process.stderr.isTTY) merged.log = { ...merged.log, format: 'pretty' };
  return resolveClientOptions(merged, flags.config ?? '');
}

/**
 * Connects and runs until the client is closed: resolves after a signal's
 * close, or when the --stdio stream or the client ends cleanly; rejects with
 * what stopped it otherwise.
 */
export async function runConnect(url: string | undefined, flags: ConnectFlags): Promise<void> {
  const options = await clientOptions(url, flags);
  if (options.forwards.length === 0 && options.stdio === undefined) {
    throw new ConfigError('nothing to forward: pass at least one -L [HOST:]PORT=SERVICE or --stdio SERVICE', {
      code: ErrorCode.USAGE,
    });
  }
  await checkDialFiles(options);
  if (flags.statusJson && options.stdio !== undefined) {
    throw new ConfigError('--status-json: stdout carries the --stdio stream; use one or the other', { code: ErrorCode.USAGE });
  }
  // A live status line when a person watches stdout; --status-json for scripts; log lines only otherwise.
  const statusMode = flags.statusJson
    ? 'json'
    : flags.quiet !== true && options.stdio === undefined && process.stdout.isTTY
      ? 'line'
      : undefined;
  const line = statusMode === 'line' ? new LiveStatusLine(process.stdout) : undefined;
  // stdout may carry --stdio data: logs always go to stderr (through the live line, which keeps itself below them).
  const logger: Logger = createLogger({
    ...options.log,
    destination: line ? line.logDestination(process.stderr) : 'stderr',
    name: 'reflector',
  });
  const server = new URL(options.url);
  const serverName = `${server.hostname}:${server.port || (server.protocol === 'wss:' ? '443' : '80')}`;
  line?.render(`… connecting to ${serverName}`);
  // Listen for signals before connecting: one that arrives while connect() resolves
  // must close the client cleanly, not kill the process with the default action.
  let onSignal: (signal: NodeJS.Signals) => void = (signal) => {
    pendingSignal = signal;
  };
  let pendingSignal: NodeJS.Signals | undefined;
  const handler = (signal: NodeJS.Signals): void => onSignal(signal);
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  let client;
  try {
    client = await connect(options, { logger });
  } catch (error) {
    line?.finish(); // the error goes on a line of its own
    throw error;
  }
  const reporter =
    statusMode === undefined
      ? undefined
      : new StatusReporter(new StatusTracker(client, serverName), {
          mode: statusMode,
          out: process.stdout,
          ...(line ? { line } : {}),
        });
  const running = client;
  return new Promise<void>((resolve, reject) => {
    let signalled = false;
    const stop = (signal: NodeJS.Signals): void => {
      signalled = true;
      logger.info({ event: 'client.signal', signal }, `${signal}: closing`);
      running.close().then(() => {
        reporter?.stop();
        resolve();
      }, reject);
    };
    onSignal = stop;
    if (pendingSignal !== undefined) stop(pendingSignal);
    const run = async (): Promise<void> => {
      if (options.stdio !== undefined) {
        // The stdio stream sets the process lifetime (inetd, ssh ProxyCommand): when it ends, so does the client.
        await Promise.race([running.done, runStdio(running, options.stdio)]);
        await running.close();
      } else {
        try {
          await running.done;
        } finally {
          reporter?.stop();
        }
      }
    };
    // After a signal, its close decides the outcome: the --stdio stream that close resets is no failure.
    run().then(resolve, (error: unknown) => {
      if (!signalled) reject(error);
    });
  });
}
