/** The library entry point: everything the CLI uses, for programs that embed Reflector. */
export { createServer, ReflectorServer, type CreateServerOptions, type ServerState, type SessionInfo } from './server/index.js';
export { connect, runStdio, ReflectorClient, type ClientState, type ClientStatus, type ConnectDependencies } from './client/index.js';
export {
  loadServerConfig,
  parseServerConfig,
  loadClientConfig,
  resolveClientOptions,
  parseForwardSpec,
  type ServerConfig,
  type ClientOptions,
  type ForwardSpec,
} from './shared/config-schema.js';
export { generateIdentity, loadPrivateKeyFile, loadPublicKeyFile, thumbprintOf, writeIdentityFiles, type Identity } from './shared/keys.js';
export { ReflectorError, ErrorCode, ExitCode, exitCodeFor } from './shared/errors.js';
export { CloseCode, OpenFailCode, ResetCode } from './shared/constants.js';
