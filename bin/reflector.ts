#!/usr/bin/env node
/**
 * The `reflector` command. Thin: parse flags, load and validate config, build
 * the library objects, map errors to exit codes. This is the only file that
 * calls process.exit.
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { parseDocument } from 'yaml';
import { checkDialFiles } from '../client/dialer.js';
import { connect, runStdio } from '../client/index.js';
import { LiveStatusLine, StatusReporter, StatusTracker } from '../client/status-line.js';
import { createServer } from '../server/index.js';
import {
  LOG_FORMATS,
  LOG_LEVELS,
  loadClientConfig,
  loadServerConfig,
  mergeClientInputs,
  parseClientInput,
  parseForwardSpec,
  parseHeaderFlag,
  resolveClientOptions,
  type LogFormat,
  type LogLevel,
  type ServerConfig,
  type ServerConfigDefaults,
} from '../shared/config-schema.js';
import { ConfigError, ErrorCode, ExitCode, exitCodeFor, ReflectorError } from '../shared/errors.js';
import { generateIdentity, loadPrivateKeyFile, loadPublicKeyFile, writeIdentityFiles } from '../shared/keys.js';
import { createLogger, type Logger } from '../shared/logger.js';

const EXIT_CODE_HELP: Record<keyof typeof ExitCode, string> = {
  OK: 'success, or a clean shutdown on SIGINT/SIGTERM',
  INTERNAL: 'internal error (a bug: the stack trace is printed)',
  USAGE: 'bad flag, config file or key file',
  SERVER_IDENTITY: 'the server\'s host key does not match --server-key or known_servers',
  AUTH_REFUSED: 'the server refused this client\'s key',
  CONNECT_FAILED: 'could not reach the server, or gave up reconnecting',
  STREAM_FAILED: 'a stream failed (--stdio: the service refused or reset it)',
};
const EXIT_CODES_EPILOGUE = `\nExit codes:\n${Object.entries(EXIT_CODE_HELP)
  .map(([name, text]) => `  ${ExitCode[name as keyof typeof ExitCode]}  ${text}`)
  .join('\n')}\n`;

interface LogFlags {
  logLevel?: LogLevel;
  logFormat?: LogFormat;
}

function logOptions(command: Command): Command {
  return command
    .addOption(new Option('--log-level <level>', 'log level (overrides the config file)').choices(LOG_LEVELS))
    .addOption(new Option('--log-format <format>', 'log format (overrides the config file)').choices(LOG_FORMATS));
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function nonNegativeInteger(value: string): number {
  if (!/^\d{1,10}$/.test(value)) throw new InvalidArgumentError('expected a non-negative integer.');
  return Number(value);
}

function portNumber(value: string): number {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(port >= 1 && port <= 65534)) throw new InvalidArgumentError('expected a port between 1 and 65534.');
  return port;
}

function write(text: string): void {
  process.stdout.write(`${text}\n`);
}

// ---------------------------------------------------------------- keys

async function keygen(flags: { out: string; force?: boolean }): Promise<void> {
  const identity = await generateIdentity();
  await writeIdentityFiles(flags.out, identity, { overwrite: flags.force === true });
  write(`wrote ${flags.out} (private, mode 0600) and ${flags.out}.pub`);
  write(`thumbprint: ${identity.thumbprint}`);
}

async function fingerprint(file: string): Promise<void> {
  // A private JWK works too: only its public half is read, so no permission check.
  const identity = await loadPublicKeyFile(file);
  write(identity.thumbprint);
}

// ---------------------------------------------------------------- server

interface RunningServer {
  config: ServerConfig;
  address: { host: string; port: number };
  url: string;
}

/** Starts the gateway from a config file and keeps it running until a signal. */
async function runServer(
  configPath: string,
  flags: LogFlags & { replica?: string },
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
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ event: 'server.forced', signal }, `${signal} again: closing now`);
      running.close().then(() => process.exit(ExitCode.OK), fail);
      return;
    }
    stopping = true;
    logger.info({ event: 'server.signal', signal }, `${signal}: draining (send it again to close at once)`);
    running.drain().then(() => process.exit(ExitCode.OK), fail);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', () => {
    // Logs a rejected file itself and keeps the config in force.
    running.operations.reloadConfigFile('SIGHUP').catch(fail);
  });
  return { config, address: running.address, url: running.url };
}

// ---------------------------------------------------------------- client

interface ConnectFlags extends LogFlags {
  identity?: string;
  serverKey?: string;
  knownServers?: string;
  forward?: string[];
  stdio?: string;
  config?: string;
  aead?: 'node' | 'noble';
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

async function runConnect(url: string | undefined, flags: ConnectFlags): Promise<void> {
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
  const options = resolveClientOptions(merged, flags.config ?? '');
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
  const stop = (signal: NodeJS.Signals): void => {
    logger.info({ event: 'client.signal', signal }, `${signal}: closing`);
    running.close().then(() => {
      reporter?.stop();
      process.exit(ExitCode.OK);
    }, fail);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (options.stdio !== undefined) {
    // The stdio stream sets the process lifetime (inetd, ssh ProxyCommand): when it ends, so does the client.
    await Promise.race([client.done, runStdio(client, options.stdio)]);
    await client.close();
  } else {
    try {
      await client.done;
    } finally {
      reporter?.stop();
    }
  }
  process.exit(ExitCode.OK);
}

// ---------------------------------------------------------------- quickstart

const QUICKSTART_SERVICES = { smtp: 25, pop3: 110, nntp: 119 } as const;

function quickstartYaml(port: number): string {
  const services = Object.entries(QUICKSTART_SERVICES)
    .map(([name, servicePort]) => `  ${name}: 127.0.0.1:${servicePort}`)
    .join('\n');
  return `# Written by \`reflector quickstart\`: a local gateway to try Reflector.
# See deploy/server.example.yaml for every setting.
listen: { host: 127.0.0.1, port: ${port} }
path: /tunnel
hostKey: host.jwk
services:
${services}
  status: 127.0.0.1:${port}   # the gateway's own HTTP listener (/healthz)
clients:
  - name: dev
    keyFile: client.jwk.pub
    services: ["*"]
log: { level: info, format: pretty }
`;
}

/** Quotes a path for the printed command line when the shell would split or expand it. */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new ConfigError(`${file}: cannot be checked (${(error as NodeJS.ErrnoException).code})`, { cause: error });
  }
}

async function ensureIdentity(file: string): Promise<void> {
  if (!(await exists(file))) await writeIdentityFiles(file, await generateIdentity());
}

/** Writes server.yaml on the first run; later, only moves it to an explicitly requested port. */
async function ensureServerYaml(file: string, port: number | undefined): Promise<void> {
  if (!(await exists(file))) {
    await writeFile(file, quickstartYaml(port ?? 8080), { mode: 0o600 });
    return;
  }
  if (port === undefined) return;
  const doc = parseDocument(await readFile(file, 'utf8'));
  const previous: unknown = doc.getIn(['listen', 'port']);
  if (previous === port || doc.errors.length > 0) return; // a broken file is reported by loadServerConfig
  doc.setIn(['listen', 'port'], port);
  if (doc.getIn(['services', 'status']) === `127.0.0.1:${String(previous)}`) doc.setIn(['services', 'status'], `127.0.0.1:${port}`);
  await writeFile(file, doc.toString());
}

async function quickstart(flags: LogFlags & { dir: string; port?: number }): Promise<void> {
  const dir = flags.dir;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(path.join(dir, '.gitignore'), '*\n');
  await ensureIdentity(path.join(dir, 'host.jwk'));
  await ensureIdentity(path.join(dir, 'client.jwk'));
  const configPath = path.join(dir, 'server.yaml');
  await ensureServerYaml(configPath, flags.port);

  const hint = (port: number): string =>
    `pass --port to pick another, e.g. reflector quickstart --port ${port < 65000 ? port + 10 : 18080}`;
  const running = await runServer(configPath, flags, hint);
  const host = await loadPrivateKeyFile(running.config.hostKey);
  const { port } = running.address;
  const printableHost = running.address.host.includes(':') ? `[${running.address.host}]` : running.address.host;
  const tunnelUrl = `ws://${printableHost}:${port}${running.config.path}`;
  write(
    [
      '',
      `Reflector gateway listening on ${running.url}`,
      `host key thumbprint: ${host.thumbprint}`,
      '',
      'In another terminal, connect a client:',
      `  npx reflector connect ${tunnelUrl} --identity ${shellWord(path.join(dir, 'client.jwk'))} --server-key ${host.thumbprint} -L 127.0.0.1:${port + 1}=status -L 127.0.0.1:2525=smtp`,
      'then try the tunnel:',
      `  curl http://127.0.0.1:${port + 1}/healthz`,
      '',
    ].join('\n'),
  );
}

// ---------------------------------------------------------------- program

async function version(): Promise<string> {
  // dist/bin/reflector.js and bin/reflector.ts sit at different depths below package.json.
  for (const relative of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(await readFile(new URL(relative, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'reflector' && pkg.version) return pkg.version;
    } catch {
      // not at this depth; try the next one
    }
  }
  return 'unknown';
}

function buildProgram(versionText: string): Command {
  const program = new Command('reflector')
    .description('End-to-end encrypted WebSocket tunnel gateway for SMTP, POP3, NNTP and other TCP services')
    .version(versionText, '-V, --version')
    .exitOverride()
    .configureOutput({ outputError: () => undefined }) // fail() prints the one-line message
    .showSuggestionAfterError(true)
    .addHelpText('afterAll', EXIT_CODES_EPILOGUE);

  program
    .command('keygen')
    .description('create an identity: a private JWK (mode 0600) and FILE.pub; prints its thumbprint')
    .requiredOption('--out <file>', 'where to write the private key')
    .option('--force', 'overwrite existing files')
    .action(keygen);

  program
    .command('fingerprint')
    .description('print the thumbprint of a public or private JWK file')
    .argument('<file>', 'key file')
    .action(fingerprint);

  logOptions(
    program
      .command('server')
      .description('run the gateway (SIGTERM/SIGINT drain, SIGHUP reloads clients and services)')
      .requiredOption('--config <file>', 'server YAML config (see deploy/server.example.yaml)')
      .option('--replica <name>', 'name of this replica in WELCOME, for routing resumes back to it (default: REFLECTOR_REPLICA, or `replica` in the config)'),
  ).action(async (flags: LogFlags & { config: string; replica?: string }) => {
    await runServer(flags.config, flags);
  });

  logOptions(
    program
      .command('connect')
      .description('connect to a gateway and forward local ports (-L) or stdio to its services')
      .argument('[url]', 'gateway URL, ws:// or wss://')
      .option('--identity <file>', "this client's private JWK")
      .option('--server-key <thumbprint>', "pin the server's host key thumbprint")
      .option('--known-servers <file>', 'trust-on-first-use file (default ~/.config/reflector/known_servers)')
      .option('-L, --forward <spec>', 'listen on [HOST:]PORT and forward to SERVICE: [HOST:]PORT=SERVICE (repeatable)', collect)
      .option('--stdio <service>', 'join stdin/stdout to one stream to SERVICE')
      .option('--config <file>', 'client YAML config (see deploy/client.example.yaml); flags override it')
      .addOption(new Option('--aead <backend>', 'record-layer cipher implementation').choices(['node', 'noble']))
      .option('--header <header>', "extra request header 'Name: value' (repeatable)", collect)
      .option('--max-retries <n>', 'give up after N failed connection attempts in a row (0: never)', nonNegativeInteger)
      .option('--ca <file>', 'PEM certificates to trust for wss://, instead of the default store (like curl --cacert)')
      .option('--insecure', "do not verify the gateway's TLS certificate (warns on every connect)")
      .option('--proxy <url>', 'HTTP proxy http://[USER:PASSWORD@]HOST:PORT, or "none" (default: https_proxy/HTTPS_PROXY, honoring NO_PROXY)')
      .addOption(new Option('--proxy-auth <scheme>', 'proxy authentication; Basic needs no flag when the proxy URL has USER:PASSWORD').choices(['basic', 'ntlm']))
      .option('--proxy-user <user>', 'proxy user, [DOMAIN\\]USER (default: REFLECTOR_PROXY_USER, or the proxy URL)')
      .option('--proxy-domain <domain>', 'NTLM domain (default: REFLECTOR_PROXY_DOMAIN, or DOMAIN\\ in --proxy-user)')
      .option('--proxy-password-file <file>', 'file whose first line is the proxy password (or set REFLECTOR_PROXY_PASSWORD)')
      .option('--status-json', 'write the status to stdout as one JSON object per line (on changes, at most once a second)')
      .option('-q, --quiet', 'no live status line on a terminal: log lines only'),
  ).action(runConnect);

  logOptions(
    program
      .command('quickstart')
      .description('create keys and a config in DIR on first run, then start a local gateway and print how to connect')
      .option('--dir <dir>', 'state folder (git-ignored)', '.reflector')
      .option('--port <port>', 'port of the local gateway (default 8080)', portNumber),
  ).action(quickstart);

  return program;
}

/** Prints a user error as one line, a bug with its stack, and exits with the documented code. */
function fail(error: unknown): never {
  if (error instanceof CommanderError) {
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') process.exit(ExitCode.OK);
    if (error.code === 'commander.help') process.exit(error.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE);
    const message = error.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ').trim();
    process.stderr.write(`reflector: ${message}\n`);
    process.exit(ExitCode.USAGE);
  }
  if (error instanceof ReflectorError) {
    process.stderr.write(`reflector: ${error.message}\n`);
  } else {
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
    process.stderr.write(`reflector: internal error (please report this):\n${text}\n`);
  }
  process.exit(exitCodeFor(error));
}

buildProgram(await version())
  .parseAsync(process.argv)
  .catch(fail);
