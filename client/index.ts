/** The client reflector's library API: what the CLI and the tests call. */
import { aeadBackend } from '../shared/aead.js';
import type { ClientOptions } from '../shared/client-config.js';
import { loadPrivateKeyFile } from '../shared/keys.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { ReflectorClient } from './client.js';

export { ReflectorClient, type ClientState, type ClientStatus } from './client.js';
export { runStdio } from './stdio.js';

export interface ConnectDependencies {
  logger?: Logger;
}

/**
 * Loads the identity, binds the -L listeners and makes the first connection
 * attempt. Rejects on bad input or a fatal first attempt (server key mismatch,
 * client key refused); an unreachable server is retried in the background.
 */
export async function connect(options: ClientOptions, deps: ConnectDependencies = {}): Promise<ReflectorClient> {
  const logger =
    deps.logger ?? createLogger({ level: options.log.level, format: options.log.format, destination: 'stderr' });
  // An unavailable backend ('sodium' without the addon) is bad input: refuse it now, not at the first handshake.
  aeadBackend(options.aead);
  const identity = await loadPrivateKeyFile(options.identity);
  const client = new ReflectorClient(options, identity, logger);
  await client.start();
  return client;
}
