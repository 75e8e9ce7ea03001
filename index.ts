/** The library entry point: everything the CLI uses, for programs that embed Reflector. */
export { createServer, ReflectorServer, type CreateServerOptions, type ServerState, type SessionInfo } from './server/index.js';
export { connect, runStdio, ReflectorClient, type ClientState, type ClientStatus, type ConnectDependencies } from './client/index.js';
export { loadServerConfig, parseServerConfig, type ServerConfig } from './shared/config-schema.js';
export { loadClientConfig, resolveClientOptions, type ClientOptions } from './shared/client-config.js';
export { parseForwardSpec, type ForwardSpec } from './shared/forward-spec.js';
export { generateIdentity, loadPrivateKeyFile, loadPublicKeyFile, thumbprintOf, writeIdentityFiles, type Identity } from './shared/keys.js';
export { ReflectorError, ErrorCode, ExitCode, exitCodeFor } from './shared/errors.js';
export { CloseCode, OpenFailCode, ResetCode } from './shared/constants.js';
