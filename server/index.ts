/** The server reflector's library API: what the CLI and the tests call. */
import type { ServerConfig } from '../shared/config-schema.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { ReflectorServer } from './server.js';

export { ReflectorServer, type ServerState, type SessionInfo } from './server.js';

export interface CreateServerOptions {
  logger?: Logger;
}

/** Loads the host key, starts listening, and resolves once the gateway accepts connections. */
export async function createServer(config: ServerConfig, options: CreateServerOptions = {}): Promise<ReflectorServer> {
  const logger = options.logger ?? createLogger({ level: config.log.level, format: config.log.format });
  return ReflectorServer.start(config, logger);
}
