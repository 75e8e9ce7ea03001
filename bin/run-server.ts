/**
 * `reflector server`: loads the config, starts the gateway, and wires the
 * signals: SIGTERM or SIGINT drains (a second one closes at once), SIGHUP
 * reloads clients and services. It never exits the process: `stopped` says
 * when bin/reflector.ts should.
 */
import { createServer } from '../server/index.js';
import { loadServerConfig, type ServerConfig, type ServerConfigDefaults } from '../shared/config-schema.js';
import { ConfigError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import type { LogFlags } from './log-flags.js';

export interface ServerFlags extends LogFlags {
  replica?: string;
}

export interface RunningServer {
  config: ServerConfig;
  address: { host: string; port: number };
  url: string;
  /**
   * Resolves when a signal's drain (or, after a second signal, the close) is
   * done; rejects when that fails, or when a SIGHUP reload fails unexpectedly.
   */
  stopped: Promise<void>;
}

/** Starts the gateway from a config file; it runs until a signal. */
export async function runServer(
  configPath: string,
  flags: ServerFlags,
  portHint?: (port: number) => string,
): Promise<RunningServer> {
  // JSON lines for log collectors; a readable format when a person watches the terminal.
  const defaults: ServerConfigDefaults = { logFormat: process.stdout.isTTY ? 'pretty' : 'json' };
  const loaded = await loadServerConfig(configPath, defaults);
  // Replicas share one config file; each names itself (e.g. the pod name) so resumes route back to it.
  const replica = flags.replica ?? process.env.REFLECTOR_REPLICA;
  if (replica !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(replica)) {
    throw new ConfigError(`--replica: expected 1-64 characters of [A-Za-z0-9._-], got ${JSON.stringify(replica.slice(0, 80))}`);
  }
  const config = replica === undefined ? loaded : { ...loaded, replica };
  const logger = createLogger({
    level: flags.logLevel ?? config.log.level,
    format: flags.logFormat ?? config.log.format,
    name: 'reflector',
  });
  // Listen for signals before the gateway announces itself: a SIGTERM that lands
  // while createServer() finishes must drain, not kill with the default action.
  const early: NodeJS.Signals[] = [];
  let onSignal: (signal: NodeJS.Signals) => void = (signal) => early.push(signal);
  const handler = (signal: NodeJS.Signals): void => onSignal(signal);
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  let server;
  try {
    server = await createServer(config, { logger, configDefaults: defaults });
  } catch (error) {
    const cause = error instanceof Error ? (error.cause as NodeJS.ErrnoException | undefined) : undefined;
    if (portHint !== undefined && cause?.code === 'EADDRINUSE') {
      const { host, port } = config.listen;
      throw new ConfigError(`port ${port} on ${host} is already in use; ${portHint(port)}`, { cause: error });
    }
    throw error;
  }
  const running = server;
  let settle!: { resolve: () => void; reject: (error: unknown) => void };
  const stopped = new Promise<void>((resolve, reject) => {
    settle = { resolve, reject };
  });
  // Marks a rejection as handled while the caller is still busy (quickstart prints first); the caller awaits `stopped`.
  stopped.catch(() => undefined);
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ event: 'server.forced', signal }, `${signal} again: closing now`);
      running.close().then(settle.resolve, settle.reject);
      return;
    }
    stopping = true;
    logger.info({ event: 'server.signal', signal }, `${signal}: draining (send it again to close at once)`);
    running.drain().then(settle.resolve, settle.reject);
  };
  onSignal = stop;
  for (const signal of early) stop(signal);
  process.on('SIGHUP', () => {
    // Logs a rejected file itself and keeps the config in force.
    running.operations.reloadConfigFile('SIGHUP').catch(settle.reject);
  });
  return { config, address: running.address, url: running.url, stopped };
}
