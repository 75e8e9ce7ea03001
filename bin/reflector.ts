#!/usr/bin/env node
/**
 * The `reflector` command. Thin: parse flags, call the runners (run-server.ts,
 * run-connect.ts, quickstart.ts) and the library, map errors to exit codes.
 * This is the only file that calls process.exit.
 */
import { readFile } from 'node:fs/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ExitCode, exitCodeFor, ReflectorError } from '../shared/errors.js';
import { generateIdentity, loadPublicKeyFile, writeIdentityFiles } from '../shared/keys.js';
import { logOptions } from './log-flags.js';
import { quickstart, type QuickstartFlags } from './quickstart.js';
import { runConnect, type ConnectFlags } from './run-connect.js';
import { runServer, type ServerFlags } from './run-server.js';

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

/** Exits with OK once `done` resolves; a rejection goes to fail() through the program's catch. */
async function exitWhen(done: Promise<void>): Promise<void> {
  await done;
  process.exit(ExitCode.OK);
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
  ).action(async (flags: ServerFlags & { config: string }) => {
    await exitWhen((await runServer(flags.config, flags)).stopped);
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
      .addOption(new Option('--aead <backend>', 'record-layer cipher implementation (auto: sodium if installed, else node)').choices(['auto', 'sodium', 'node', 'noble']))
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
  ).action(async (url: string | undefined, flags: ConnectFlags) => {
    await exitWhen(runConnect(url, flags));
  });

  logOptions(
    program
      .command('quickstart')
      .description('create keys and a config in DIR on first run, then start a local gateway and print how to connect')
      .option('--dir <dir>', 'state folder (git-ignored)', '.reflector')
      .option('--port <port>', 'port of the local gateway (default 8080)', portNumber),
  ).action(async (flags: QuickstartFlags) => {
    await exitWhen((await quickstart(flags)).stopped);
  });

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
