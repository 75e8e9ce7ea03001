/** The server reflector's library API: what the CLI and the tests call. */
import type { ServerConfig, ServerConfigDefaults } from '../shared/config-schema.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { AdminListener } from './admin.js';
import { ConfigReloader } from './config-watch.js';
import { ServerMetrics } from './metrics.js';
import { ReflectorServer } from './server.js';

export { ReflectorServer, type ServerState, type SessionInfo } from './server.js';
export { AdminListener, type AdminStatus } from './admin.js';
export { ServerMetrics, type ServiceTotals } from './metrics.js';
export { ServerEvents, type ServerEventMap } from './server-events.js';

export interface CreateServerOptions {
  logger?: Logger;
  /** The defaults the config was loaded with; a reload reads the file with the same ones. */
  configDefaults?: ServerConfigDefaults;
}

/** What createServer() attaches to the server it starts: the operator's side. */
export interface ServerOperations {
  /** The admin listener (/metrics, /admin), when the config has `admin`. */
  readonly admin: AdminListener | undefined;
  /** This server's metrics (its own registry), when the config has `admin`. */
  readonly metrics: ServerMetrics | undefined;
  /**
   * Re-reads the config file the server was started from and applies its
   * clients and services (SIGHUP). Resolves false when the file was rejected
   * (the error is logged and the config in force stays) or there is no file.
   */
  reloadConfigFile(reason?: string): Promise<boolean>;
}

export type RunningServer = ReflectorServer & { readonly operations: ServerOperations };

/**
 * Loads the host key, starts listening, and resolves once the gateway accepts
 * connections; with `admin`, the admin listener is up too, and with `watch`,
 * changes of the config file reload it. close() and drain() also stop those.
 */
export async function createServer(config: ServerConfig, options: CreateServerOptions = {}): Promise<RunningServer> {
  const logger = options.logger ?? createLogger({ level: config.log.level, format: config.log.format });
  const server = await ReflectorServer.start(config, logger);
  let metrics: ServerMetrics | undefined;
  let admin: AdminListener | undefined;
  let reloader: ConfigReloader | undefined;
  try {
    if (config.admin) {
      metrics = new ServerMetrics(server, { services: Object.keys(config.services) });
      admin = await AdminListener.start(server, metrics, config.admin, logger);
    }
    if (config.configPath !== undefined) {
      reloader = new ConfigReloader(server, {
        configPath: config.configPath,
        initial: config,
        logger,
        ...(options.configDefaults ? { defaults: options.configDefaults } : {}),
        onResult: (ok, next) => {
          metrics?.recordReload(ok);
          if (next) metrics?.setServices(Object.keys(next.services));
        },
      });
      if (config.watch) await reloader.watch();
    }
  } catch (error) {
    reloader?.close();
    metrics?.detach();
    await server.close();
    throw error;
  }

  // drain() ends in close(), so this one hook covers both. The admin listener
  // closes last: metrics stay scrapeable while the server drains.
  const closeGateway = server.close.bind(server);
  server.close = async (): Promise<void> => {
    reloader?.close();
    await closeGateway();
    await admin?.close();
    metrics?.detach();
  };

  const operations: ServerOperations = {
    admin,
    metrics,
    reloadConfigFile: async (reason = 'SIGHUP') => {
      if (reloader) return reloader.reload(reason);
      logger.warn({ event: 'config.reload_failed', trigger: reason }, 'reload skipped: the server was not started from a config file');
      return false;
    },
  };
  Object.defineProperty(server, 'operations', { value: operations, enumerable: false });
  return server as RunningServer;
}
