/**
 * The built `reflector` command as operators and users run it: `reflector
 * server --config FILE` and `reflector connect URL -L PORT=SERVICE`, each a
 * child process with generated keys and config in a temp dir, watched through
 * its JSON log lines and stopped by its PID.
 *
 * The pieces compose for longer chains: start several servers with the same
 * keys (replicas sharing one host key), put nginx or a proxy in front, and
 * point a client at that URL with extra flags (`--proxy`) or environment
 * (`NODE_EXTRA_CA_CERTS`, `HTTPS_PROXY`).
 */
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { freePort, runOk, ServiceProcess, sleep } from './child-process.js';
import type { ServiceTarget } from './mail-servers.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CLI = path.join(REPO_ROOT, 'dist', 'bin', 'reflector.js');
/** Everything `npm run build` compiles (tsconfig.build.json). */
const SOURCES = ['shared', 'server', 'client', 'bin', 'index.ts', 'tsconfig.json', 'tsconfig.build.json', 'package.json'];

async function newestMtime(entry: string): Promise<number> {
  const info = await stat(entry);
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const name of await readdir(entry)) newest = Math.max(newest, await newestMtime(path.join(entry, name)));
  return newest;
}

async function distIsFresh(): Promise<boolean> {
  if (!existsSync(CLI)) return false;
  const built = statSync(CLI).mtimeMs;
  for (const source of SOURCES) {
    const full = path.join(REPO_ROOT, source);
    if (existsSync(full) && (await newestMtime(full)) > built) return false;
  }
  return true;
}

/**
 * Runs `npm run build` when dist/ is missing or older than a source file
 * (npm test builds first; a single test file run by hand may not). Test
 * files running in parallel take turns through a lock directory.
 */
export async function ensureBuilt(): Promise<void> {
  if (await distIsFresh()) return;
  process.stderr.write('# dist/ is missing or older than the sources: running npm run build\n');
  const lock = path.join(os.tmpdir(), `reflector-build-${Buffer.from(REPO_ROOT).toString('base64url').slice(-40)}.lock`);
  const deadline = Date.now() + 180_000;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      if (Date.now() > deadline) throw new Error(`another build holds ${lock} for more than 180 s (remove it if no build is running)`);
      await sleep(250);
    }
  }
  try {
    if (await distIsFresh()) return;
    await runOk('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, timeoutMs: 170_000 });
  } finally {
    await rmdir(lock);
  }
}

// ---------------------------------------------------------------- keys

export interface ReflectorKeys {
  dir: string;
  /** The gateway's private host key (0600); replicas share it so one pin fits all. */
  hostFile: string;
  hostThumbprint: string;
  /** The client's private key (0600) and its public half (`.pub`) for the server's clients list. */
  clientFile: string;
  clientPublicFile: string;
  clientThumbprint: string;
}

async function keygen(file: string): Promise<string> {
  const { stdout } = await runOk(process.execPath, [CLI, 'keygen', '--out', file]);
  const thumbprint = /^thumbprint: ([A-Za-z0-9_-]{43})$/m.exec(stdout)?.[1];
  if (thumbprint === undefined) throw new Error(`reflector keygen printed no thumbprint:\n${stdout}`);
  return thumbprint;
}

/** A host key and a client key made with `reflector keygen` in `dir`. */
export async function makeReflectorKeys(dir: string): Promise<ReflectorKeys> {
  await mkdir(dir, { recursive: true });
  const hostFile = path.join(dir, 'host.jwk');
  const clientFile = path.join(dir, 'client.jwk');
  const hostThumbprint = await keygen(hostFile);
  const clientThumbprint = await keygen(clientFile);
  return { dir, hostFile, hostThumbprint, clientFile, clientPublicFile: `${clientFile}.pub`, clientThumbprint };
}

// ---------------------------------------------------------------- log lines

/**
 * The reflectors log JSON at info at least: readiness and the audit checks
 * read `server.listening`, `session.open` and `stream.*` lines.
 * REFLECTOR_TEST_LOG=debug (or trace) makes them chattier.
 */
const LOG_LEVEL = ['debug', 'trace'].includes(process.env.REFLECTOR_TEST_LOG ?? '') ? process.env.REFLECTOR_TEST_LOG! : 'info';

export type LogEntry = Record<string, unknown> & { event?: string; msg?: string };

/** A JSON log line from the reflector, or undefined for anything else. */
export function parseLogLine(line: string): LogEntry | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    return JSON.parse(line) as LogEntry;
  } catch {
    return undefined; // not one of ours (a partial line or another writer)
  }
}

function eventLine(event: string, extra: (entry: LogEntry) => boolean = () => true): (line: string) => boolean {
  return (line) => {
    const entry = parseLogLine(line);
    return entry?.event === event && extra(entry);
  };
}

/** The JSON log entries with this `event` a reflector process has written so far. */
export function logEvents(child: ServiceProcess, event: string): LogEntry[] {
  return child.lines().map(parseLogLine).filter((entry): entry is LogEntry => entry?.event === event);
}

/** Waits for a log entry with this `event` that `match` accepts (one already written counts). */
export async function waitForLogEvent(
  child: ServiceProcess,
  event: string,
  match: (entry: LogEntry) => boolean = () => true,
  timeoutMs = 20_000,
): Promise<LogEntry> {
  return parseLogLine(await child.waitForLine(eventLine(event, match), `a ${event} log entry`, timeoutMs))!;
}

/**
 * Waits until every stream the server logged as opened has also been logged
 * as closed (a client program may exit a moment before the gateway sees the
 * backend's FIN), then returns the `stream.close` entries.
 */
export async function settledStreamCloses(child: ServiceProcess, timeoutMs = 10_000): Promise<LogEntry[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const opened = logEvents(child, 'stream.open').length;
    const closes = logEvents(child, 'stream.close');
    if (closes.length >= opened) return closes;
    if (Date.now() > deadline) throw child.failure(`${opened} streams opened but only ${closes.length} closed after ${timeoutMs} ms`);
    await sleep(50);
  }
}

// ---------------------------------------------------------------- environment

/**
 * Every proxy variable the client reads, set empty (empty counts as unset), so
 * only what a test sets applies: a developer's own http_proxy or HTTPS_PROXY
 * never captures a test's tunnel. startClientProcess applies it under the
 * test's own `env`.
 */
export const NO_PROXY_ENV: Readonly<NodeJS.ProcessEnv> = Object.freeze({
  https_proxy: '',
  HTTPS_PROXY: '',
  http_proxy: '',
  all_proxy: '',
  ALL_PROXY: '',
  no_proxy: '',
  NO_PROXY: '',
  REFLECTOR_PROXY_USER: '',
  REFLECTOR_PROXY_DOMAIN: '',
  REFLECTOR_PROXY_PASSWORD: '',
});

// ---------------------------------------------------------------- server

export interface ServerProcessOptions {
  keys: ReflectorKeys;
  /** Service name → target, as in server.yaml. */
  services: Record<string, ServiceTarget>;
  /** Default: one client "tester" with keys.clientPublicFile, allowed every service. */
  clients?: Array<{ name: string; keyFile: string; services: string[] }>;
  /** Default 127.0.0.1 and a port the OS picks (read back from the log). */
  listen?: { host: string; port: number };
  path?: string;
  /** `replica:` in server.yaml (and the file's name). To share one file between replicas, pass `--replica NAME` in `args` instead. */
  replica?: string;
  /** Extra flags for `reflector server`, e.g. ['--replica', 'gw-1']. */
  args?: readonly string[];
  /** Extra environment, e.g. { REFLECTOR_REPLICA: 'gw-1' }. */
  env?: NodeJS.ProcessEnv;
  trustProxy?: boolean | number | string | string[];
  limits?: Record<string, number>;
  /** Any other top-level server.yaml keys (tls, admin, …). */
  extra?: Record<string, unknown>;
  /** Shown in errors; default "reflector server". */
  name?: string;
  /**
   * Where server.yaml goes; default keys.dir. Replicas started with the same
   * options (and no `replica`) share one file: it is written again with the
   * same content, and each replica listens on a port of its own (port 0).
   */
  dir?: string;
}

export interface ServerProcess {
  readonly process: ServiceProcess;
  /** The tunnel URL the server logged (ws://127.0.0.1:PORT/tunnel). */
  readonly url: string;
  readonly address: { host: string; port: number };
  readonly configPath: string;
  /** The gateway's HTTP status of GET `route` (e.g. /healthz, /readyz). */
  httpStatus(route: string): Promise<number>;
  /** SIGHUP: reload clients and services. */
  reload(): void;
  /** SIGTERM (drain) by PID and wait for the exit. */
  stop(): Promise<void>;
}

/** Writes server.yaml and starts `reflector server`; resolves once /healthz answers 200. */
export async function startServerProcess(options: ServerProcessOptions): Promise<ServerProcess> {
  await ensureBuilt();
  const name = options.name ?? 'reflector server';
  const dir = options.dir ?? options.keys.dir;
  await mkdir(dir, { recursive: true });
  const configPath = path.join(dir, `${(options.replica ?? 'server').replace(/[^\w.-]/g, '_')}.yaml`);
  const config = {
    listen: options.listen ?? { host: '127.0.0.1', port: 0 },
    path: options.path ?? '/tunnel',
    hostKey: options.keys.hostFile,
    ...(options.trustProxy === undefined ? {} : { trustProxy: options.trustProxy }),
    services: Object.fromEntries(Object.entries(options.services).map(([service, target]) => [service, { ...target }])),
    clients: options.clients ?? [
      { name: 'tester', keyFile: options.keys.clientPublicFile, services: ['*'] },
    ],
    ...(options.limits === undefined ? {} : { limits: options.limits }),
    ...(options.replica === undefined ? {} : { replica: options.replica }),
    log: { level: LOG_LEVEL, format: 'json' },
    ...options.extra,
  };
  await writeFile(configPath, stringify(config));
  const child = new ServiceProcess({
    name,
    command: process.execPath,
    args: [CLI, 'server', '--config', configPath, ...(options.args ?? [])],
    env: { ...process.env, ...options.env },
  });
  try {
    const line = await child.waitForLine(eventLine('server.listening'), 'server.listening log line');
    const url = String(parseLogLine(line)!.url);
    const parsed = new URL(url);
    const address = { host: parsed.hostname.replace(/^\[|\]$/g, ''), port: Number(parsed.port) };
    const server = new ServerProcessHandle(child, url, address, configPath);
    await server.waitHealthy();
    return server;
  } catch (error) {
    await child.stop();
    throw error;
  }
}

class ServerProcessHandle implements ServerProcess {
  constructor(
    readonly process: ServiceProcess,
    readonly url: string,
    readonly address: { host: string; port: number },
    readonly configPath: string,
  ) {}

  async httpStatus(route: string): Promise<number> {
    const scheme = this.url.startsWith('wss:') ? 'https' : 'http';
    const host = this.address.host.includes(':') ? `[${this.address.host}]` : this.address.host;
    const response = await fetch(`${scheme}://${host}:${this.address.port}${route}`);
    await response.arrayBuffer();
    return response.status;
  }

  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.process.running) throw this.process.failure('exited before /healthz answered');
      try {
        if ((await this.httpStatus('/healthz')) === 200) return;
      } catch {
        // not accepting yet: poll again
      }
      if (Date.now() > deadline) throw this.process.failure(`/healthz not 200 after ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  reload(): void {
    this.process.signal('SIGHUP');
  }

  async stop(): Promise<void> {
    await this.process.stop({ timeoutMs: 15_000 });
  }
}

// ---------------------------------------------------------------- client

export interface ForwardRequest {
  service: string;
  /** Default: a free loopback port picked now. */
  port?: number;
  host?: string;
}

export interface ClientProcessOptions {
  keys: ReflectorKeys;
  /** The URL to dial: the server's own, or a front (nginx, a proxy's target). */
  url: string;
  forwards: readonly ForwardRequest[];
  /** Extra flags, e.g. ['--proxy', 'http://127.0.0.1:3128']. */
  args?: readonly string[];
  /** Extra environment, e.g. { NODE_EXTRA_CA_CERTS: ca.pem }; applied over NO_PROXY_ENV. */
  env?: NodeJS.ProcessEnv;
  name?: string;
  /**
   * How long to wait for `session.open` once the listeners are bound; default 20 s. The client's
   * own deadline per attempt is 15 s, so 20 s leaves no room for a retry: a test that should
   * survive one lost attempt (a proxy dropping a CONNECT under load) passes more.
   */
  sessionTimeoutMs?: number;
}

export interface ClientProcess {
  readonly process: ServiceProcess;
  /** Service name → the local port `-L` listens on. */
  readonly ports: Readonly<Record<string, number>>;
  /** SIGTERM by PID and wait for the exit. */
  stop(): Promise<void>;
}

/**
 * Starts `reflector connect URL -L 127.0.0.1:PORT=SERVICE ...` pinned to the
 * host key; resolves once every listener is bound and a session is open
 * (the `listener.bound` and `session.open` log lines).
 */
export async function startClientProcess(options: ClientProcessOptions): Promise<ClientProcess> {
  await ensureBuilt();
  const ports: Record<string, number> = {};
  const specs: string[] = [];
  for (const forward of options.forwards) {
    const port = forward.port ?? (await freePort());
    const host = forward.host ?? '127.0.0.1';
    ports[forward.service] = port;
    specs.push('-L', `${host.includes(':') ? `[${host}]` : host}:${port}=${forward.service}`);
  }
  const args = [
    CLI,
    'connect',
    options.url,
    '--identity',
    options.keys.clientFile,
    '--server-key',
    options.keys.hostThumbprint,
    '--known-servers',
    path.join(options.keys.dir, 'known_servers'),
    ...specs,
    '--log-format',
    'json',
    '--log-level',
    LOG_LEVEL,
    ...(options.args ?? []),
  ];
  const child = new ServiceProcess({
    name: options.name ?? 'reflector connect',
    command: process.execPath,
    args,
    env: { ...process.env, ...NO_PROXY_ENV, ...options.env },
  });
  try {
    for (const forward of options.forwards) {
      const port = ports[forward.service]!;
      await child.waitForLine(
        eventLine('listener.bound', (entry) => (entry.address as { port?: number } | undefined)?.port === port),
        `listener.bound for ${forward.service} on port ${port}`,
      );
    }
    await child.waitForLine(eventLine('session.open'), 'session.open log line', options.sessionTimeoutMs);
  } catch (error) {
    await child.stop();
    throw error;
  }
  return {
    process: child,
    ports,
    stop: async () => {
      await child.stop({ timeoutMs: 10_000 });
    },
  };
}

// ---------------------------------------------------------------- a whole tunnel

export interface Tunnel {
  readonly keys: ReflectorKeys;
  readonly server: ServerProcess;
  readonly client: ClientProcess;
  /** The local port that reaches `service` through the tunnel. */
  port(service: string): number;
  /** Stops the client, then the server (both by PID), and removes the temp dir. */
  stop(): Promise<void>;
}

export interface TunnelOptions {
  services: Record<string, ServiceTarget>;
  limits?: Record<string, number>;
}

/** Keys, one `reflector server` for `services`, one `reflector connect` with an -L per service. */
export async function startTunnel(options: TunnelOptions): Promise<Tunnel> {
  await ensureBuilt();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-system-'));
  let server: ServerProcess | undefined;
  try {
    const keys = await makeReflectorKeys(dir);
    server = await startServerProcess({ keys, services: options.services, ...(options.limits ? { limits: options.limits } : {}) });
    const client = await startClientProcess({
      keys,
      url: server.url,
      forwards: Object.keys(options.services).map((service) => ({ service })),
    });
    const started = server;
    return {
      keys,
      server: started,
      client,
      port: (service) => {
        const port = client.ports[service];
        if (port === undefined) throw new Error(`no -L forward for service ${service}`);
        return port;
      },
      stop: async () => {
        try {
          await client.stop();
        } finally {
          try {
            await started.stop();
          } finally {
            await rm(dir, { recursive: true, force: true });
          }
        }
      },
    };
  } catch (error) {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
