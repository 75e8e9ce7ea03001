/**
 * Config for both sides: zod schemas for the shape, a semantic pass for what
 * zod cannot see (service references, duplicate keys), defaults from
 * constants.ts, and one sentence per error:
 *
 *   server.yaml: limits.windowBytes: expected an integer between 1024 and 1073741824, got -5
 *
 * Loaders return plain normalized objects; nothing here opens sockets or
 * reads the environment except the documented client defaults
 * (XDG_CONFIG_HOME, HOME), passed in as `env`.
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import type { AeadName } from './aead.js';
import {
  DEFAULT_TUNNEL_PATH,
  Defaults,
  MIN_RECORD_BYTES,
  MIN_REKEY_BYTES,
  PROTOCOL_MAX_RECORD_BYTES,
  SERVICE_NAME_PATTERN,
} from './constants.js';
import { ConfigError } from './errors.js';
import { isThumbprint, loadPublicKeyFile, parsePublicJwk, type PublicIdentity } from './keys.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export interface LogOptions {
  level: LogLevel;
  format: LogFormat;
}

export interface ServiceTarget {
  host: string;
  port: number;
}
export interface ClientEntry {
  name: string;
  publicKey: PublicIdentity;
  /** Absolute path of the public JWK file, when the key came from one (watched with `watch: true`). */
  keyFile?: string;
  /** Service names this client may open; "*" in the file is expanded to every configured service. */
  services: string[];
}
export interface Limits {
  handshakeTimeoutMs: number;
  windowBytes: number;
  maxRecordBytes: number;
  maxStreamsPerSession: number;
  rekeyBytes: number;
  pingIntervalMs: number;
  idleTimeoutMs: number;
  maxUnauthenticatedPerAddress: number;
  maxSessionsPerClient: number;
  backendConnectTimeoutMs: number;
  drainTimeoutMs: number;
  resumeWindowMs: number;
}
export interface ServerConfig {
  listen: { host: string; port: number };
  path: string;
  /** Absolute path of the host's private JWK. */
  hostKey: string;
  tls?: { cert: string; key: string };
  /** Express 'trust proxy' setting. */
  trustProxy: boolean | number | string;
  aead: AeadName;
  services: Record<string, ServiceTarget>;
  clients: ClientEntry[];
  limits: Limits;
  replica?: string;
  log: LogOptions;
  /**
   * The admin listener (/metrics, /admin status page, /admin/api/status): its
   * own HTTP server, never the public one. Absent: no admin listener.
   */
  admin?: AdminConfig;
  /** Reload clients and services when the config file or a client key file changes (as SIGHUP does). Parsed configs always set it. */
  watch?: boolean;
  /** Absolute path of the file this came from, when it came from a file (SIGHUP reloads it). */
  configPath?: string;
}
export interface AdminConfig {
  listen: { host: string; port: number };
  /** When set, every admin request needs `Authorization: Bearer TOKEN` (or Basic auth with TOKEN as the password). */
  token?: string;
}
/** Defaults that come from the environment, which this module never reads itself (the CLI passes them in). */
export interface ServerConfigDefaults {
  /** Log format when the file does not set `log.format`; the CLI picks "pretty" when stdout is a terminal. */
  logFormat?: LogFormat;
}
export interface ForwardSpec {
  host: string;
  port: number;
  service: string;
}
export interface ClientOptions {
  url: string;
  identity: string;
  serverKey?: string;
  knownServers: string;
  forwards: ForwardSpec[];
  stdio?: string;
  aead: AeadName;
  reconnect: { initialDelayMs: number; maxDelayMs: number; maxAttempts: number };
  headers: Record<string, string>;
  log: LogOptions;
  /** PEM file whose certificates replace the default trust store for wss:// (like curl --cacert). */
  ca?: string;
  /** Skip TLS certificate verification; a warning is logged on every connect. */
  insecure?: boolean;
  /** HTTP proxy for the WebSocket (CONNECT): `http://[USER:PASSWORD@]HOST[:PORT]`. Absent: connect directly. */
  proxy?: string;
  /** Hosts that skip the proxy, NO_PROXY syntax: comma list of names (suffix match), IPs, CIDRs, `host:port`, or `*`. */
  noProxy?: string;
  /** Proxy authentication other than Basic credentials in the proxy URL. */
  proxyAuth?: ProxyAuthOptions;
}
export const PROXY_AUTH_SCHEMES = ['basic', 'ntlm'] as const;
export type ProxyAuthScheme = (typeof PROXY_AUTH_SCHEMES)[number];
export interface ProxyAuthOptions {
  scheme: ProxyAuthScheme;
  /** The account name, without the domain. */
  user: string;
  /** NTLM domain (`CORP`); empty for a UPN user or Basic. */
  domain: string;
  /** The password, from REFLECTOR_PROXY_PASSWORD or the proxy URL; never from a flag. */
  password?: string;
  /** A file whose first line is the password, read at every connect; wins over `password`. */
  passwordFile?: string;
}
/** Client settings before defaults: what a client.yaml or the flags provide. Paths are absolute. */
export type ClientInput = Partial<Omit<ClientOptions, 'reconnect' | 'log' | 'proxyAuth'>> & {
  reconnect?: Partial<ClientOptions['reconnect']>;
  log?: Partial<LogOptions>;
  proxyAuth?: Partial<Omit<ProxyAuthOptions, 'password'>>;
};

// ---------------------------------------------------------------- messages

type Path = readonly PropertyKey[];

/** `clients[1].services[0]`, `services.smtp`, `headers["X Y"]`. */
export function formatConfigPath(keys: Path, head = ''): string {
  let out = head;
  for (const key of keys) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(String(key))) out += out === '' ? String(key) : `.${String(key)}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

/** One sentence: `SOURCE: PATH: MESSAGE`, leaving out an empty source or path. */
export function configError(source: string, keys: Path, message: string, cause?: unknown): ConfigError {
  const parts = [source, formatConfigPath(keys), message].filter((part) => part !== '');
  return new ConfigError(parts.join(': '), cause === undefined ? undefined : { cause });
}

/** How a value appears after "got": strings quoted, containers named, long text cut. */
function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  return String(value);
}

function expectedMessage(what: string, input: unknown): string {
  return input === undefined ? `missing (expected ${what})` : `expected ${what}, got ${show(input)}`;
}

/** zod `error` option: every issue of this schema reads "expected WHAT, got INPUT". */
function expect(what: string) {
  return { error: (issue: { input?: unknown }) => expectedMessage(what, issue.input) };
}

/** Turns the first zod issue into the one-sentence ConfigError. */
export function zodConfigError(error: z.ZodError, source: string, labels?: Record<string, string>): ConfigError {
  const issue = mostSpecific(error.issues[0]!);
  const keys: PropertyKey[] = [...issue.path];
  const label = typeof keys[0] === 'string' ? labels?.[keys[0]] : undefined;
  const shown = label === undefined ? formatConfigPath(keys) : formatConfigPath(keys.slice(1), label);
  return new ConfigError([source, shown, issue.message].filter((part) => part !== '').join(': '), { cause: error });
}

/**
 * A union reports "no branch matched". When exactly one branch got past the
 * type check (an object with a bad port), its issue says more than the union's.
 * A bad record key reports its own issue under the key's path.
 */
function mostSpecific(issue: z.core.$ZodIssue): z.core.$ZodIssue {
  if (issue.code === 'invalid_key' && issue.issues.length > 0) return { ...issue.issues[0]!, path: issue.path } as z.core.$ZodIssue;
  if (issue.code !== 'invalid_union' || issue.errors.length === 0) return issue;
  const deeper = issue.errors.filter(
    (branch) => branch.length > 0 && !(branch[0]!.code === 'invalid_type' && branch[0]!.path.length === 0),
  );
  if (deeper.length !== 1) return issue;
  const inner = deeper[0]![0]!;
  return mostSpecific({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue);
}

// ---------------------------------------------------------------- building blocks

/** A mapping that refuses unknown keys and names the known ones. */
function mapping<S extends z.ZodRawShape>(shape: S) {
  const known = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `unknown key ${JSON.stringify(issue.keys[0])} (expected one of: ${known})`
        : expectedMessage(`a mapping with keys ${known}`, issue.input),
  });
}

function integer(min: number, max: number) {
  const what =
    max === Number.MAX_SAFE_INTEGER ? `an integer of at least ${min}` : `an integer between ${min} and ${max}`;
  return z.number(expect(what)).int(expect(what)).min(min, expect(what)).max(max, expect(what));
}

const port = (min: number) => integer(min, 65535);
const text = (what: string) => z.string(expect(what)).min(1, expect(what));
const filePath = text('a file path');
const serviceName = z.string(expect('a service name')).regex(SERVICE_NAME_PATTERN, {
  error: (issue) => `invalid service name ${show(issue.input)} (expected lowercase letters, digits, ".", "_" or "-", at most 63 characters)`,
});
const aead = z.enum(['node', 'noble'], expect('"node" or "noble"'));
/** Server `log`: the format stays unset when the file has none, so the caller's default (a terminal: pretty) applies. */
const logOptions = mapping({
  level: z.enum(LOG_LEVELS, expect(`one of ${LOG_LEVELS.join(', ')}`)).default('info'),
  format: z.enum(LOG_FORMATS, expect('"json" or "pretty"')).optional(),
}).prefault({});

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
function isHost(host: string): boolean {
  return isIP(host) !== 0 || HOSTNAME.test(host);
}
const host = z.string(expect('a host name or IP address')).refine(isHost, expect('a host name or IP address'));

/** `host:port` or `[v6]:port`; the reason it is not, otherwise. */
function splitHostPort(input: string, minPort: number): ServiceTarget | string {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(input) ?? /^([^:[\]]+):(\d+)$/.exec(input);
  if (match === null) return input.split(':').length > 2 ? 'IPv6 addresses go in brackets, e.g. [::1]:25' : '';
  const [, hostPart, portPart] = match as unknown as [string, string, string];
  if (input.startsWith('[') && isIP(hostPart) !== 6) return `${JSON.stringify(hostPart)} is not an IPv6 address`;
  if (!isHost(hostPart)) return `${JSON.stringify(hostPart)} is not a host name or IP address`;
  const value = Number(portPart);
  if (value < minPort || value > 65535) return `port must be ${minPort}-65535`;
  return { host: hostPart, port: value };
}

const TARGET = 'a "host:port" string or { host, port }';
const serviceTarget = z.union(
  [
    z.string().transform((input, ctx) => {
      const target = splitHostPort(input, 1);
      if (typeof target !== 'string') return target;
      ctx.addIssue({ code: 'custom', input, message: `expected "host:port" or { host, port }, got ${show(input)}${target === '' ? '' : ` (${target})`}` });
      return z.NEVER;
    }),
    mapping({ host, port: port(1) }),
  ],
  expect(TARGET),
);

/** `[HOST:]PORT=SERVICE` → spec, or the reason it is not one. */
function forwardSpecOrReason(spec: string): ForwardSpec | string {
  const usage = 'expected [HOST:]PORT=SERVICE';
  const eq = spec.lastIndexOf('=');
  if (eq <= 0 || eq === spec.length - 1) return usage;
  const service = spec.slice(eq + 1);
  if (!SERVICE_NAME_PATTERN.test(service)) return `invalid service name ${JSON.stringify(service)}`;
  const address = spec.slice(0, eq);
  if (/^\d+$/.test(address)) {
    const value = Number(address);
    return value >= 1 && value <= 65535 ? { host: '127.0.0.1', port: value, service } : 'port must be 1-65535';
  }
  const target = splitHostPort(address, 1);
  return typeof target === 'string' ? target || usage : { ...target, service };
}

/** Parses one `-L` value: `2525=smtp`, `0.0.0.0:2525=smtp`, `[::1]:2525=smtp`. Host defaults to 127.0.0.1. */
export function parseForwardSpec(spec: string): ForwardSpec {
  const result = forwardSpecOrReason(spec);
  if (typeof result === 'string') throw new ConfigError(`-L ${spec}: ${result}`);
  return result;
}

const forwardEntry = z.union(
  [
    z.string().transform((input, ctx) => {
      const result = forwardSpecOrReason(input);
      if (typeof result !== 'string') return result;
      ctx.addIssue({ code: 'custom', input, message: `${result}, got ${show(input)}` });
      return z.NEVER;
    }),
    mapping({ host: host.default('127.0.0.1'), port: port(1), service: serviceName }),
  ],
  expect('"[HOST:]PORT=SERVICE" or { host, port, service }'),
);

// ---------------------------------------------------------------- server

const limitBounds: Record<keyof Limits, [number, number]> = {
  handshakeTimeoutMs: [10, 600_000],
  windowBytes: [1024, 1024 ** 3],
  maxRecordBytes: [MIN_RECORD_BYTES, PROTOCOL_MAX_RECORD_BYTES],
  maxStreamsPerSession: [1, 1_000_000],
  rekeyBytes: [MIN_REKEY_BYTES, Number.MAX_SAFE_INTEGER],
  pingIntervalMs: [10, 3_600_000],
  idleTimeoutMs: [10, 86_400_000],
  maxUnauthenticatedPerAddress: [1, 1_000_000],
  maxSessionsPerClient: [1, 1_000_000],
  backendConnectTimeoutMs: [10, 600_000],
  drainTimeoutMs: [0, 86_400_000],
  resumeWindowMs: [0, 86_400_000],
};
const limitsShape = Object.fromEntries(
  Object.entries(limitBounds).map(([key, [min, max]]) => [key, integer(min, max).default(Defaults[key as keyof Limits])]),
) as { [K in keyof Limits]: z.ZodDefault<ReturnType<typeof integer>> };

/** The admin listener's port when `admin.listen.port` is not given (the OpenTelemetry Prometheus exporter's). */
export const DEFAULT_ADMIN_PORT = 9464;
/** Shortest admin token accepted: long enough that guessing it over the network is hopeless. */
export const MIN_ADMIN_TOKEN_LENGTH = 16;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;
const serverSchema = mapping({
  listen: mapping({ host: host.default('127.0.0.1'), port: port(0).default(8080) }).prefault({}),
  path: z
    .string(expect('a URL path starting with "/"'))
    .regex(/^\/[^\s?#]*$/, expect('a URL path starting with "/"'))
    .default(DEFAULT_TUNNEL_PATH),
  hostKey: filePath,
  tls: mapping({ cert: filePath, key: filePath }).optional(),
  trustProxy: z
    .union(
      [z.boolean(), integer(0, 1000), text('an address list'), z.array(text('an address or subnet')).min(1)],
      expect('true, false, a hop count, or addresses/subnets'),
    )
    .default(false),
  aead: aead.default('node'),
  services: z.record(z.string(), serviceTarget, expect('a mapping of service names to targets')).default({}),
  clients: z
    .array(
      mapping({
        name: z.string(expect('a client name')).regex(NAME, expect('a client name (letters, digits, ".", "_", "@", "+", "-")')),
        keyFile: filePath.optional(),
        key: z.record(z.string(), z.unknown(), expect('an inline public JWK { kty, crv, x }')).optional(),
        services: z.array(text('a service name or "*"'), expect('a list of service names, or ["*"]')),
      }),
      expect('a list of clients'),
    )
    .default([]),
  limits: mapping(limitsShape).prefault({}),
  replica: z.string(expect('a replica name')).regex(/^[A-Za-z0-9._-]{1,64}$/, expect('a replica name (letters, digits, ".", "_", "-")')).optional(),
  log: logOptions,
  admin: mapping({
    listen: mapping({ host: host.default('127.0.0.1'), port: port(0).default(DEFAULT_ADMIN_PORT) }).prefault({}),
    token: z
      .string(expect(`a bearer token of at least ${MIN_ADMIN_TOKEN_LENGTH} characters`))
      .min(MIN_ADMIN_TOKEN_LENGTH, { error: (issue) => `expected a bearer token of at least ${MIN_ADMIN_TOKEN_LENGTH} characters, got ${String((issue.input as string).length)} characters` })
      .regex(/^[\x21-\x7e]+$/, { error: 'expected a bearer token of printable ASCII characters without spaces' })
      .optional(),
  }).optional(),
  watch: z.boolean(expect('true or false')).default(false),
});


export async function loadServerConfig(file: string, defaults: ServerConfigDefaults = {}): Promise<ServerConfig> {
  const raw = await readYamlFile(file);
  const config = await parseServerConfig(raw, file, path.dirname(path.resolve(file)), defaults);
  return { ...config, configPath: path.resolve(file) };
}

/** Validates a parsed document; relative paths are resolved against `baseDir`. */
export async function parseServerConfig(
  raw: unknown,
  source: string,
  baseDir: string,
  defaults: ServerConfigDefaults = {},
): Promise<ServerConfig> {
  const parsed = serverSchema.safeParse(raw);
  if (!parsed.success) throw zodConfigError(parsed.error, source);
  const input = parsed.data;
  const fail = (keys: Path, message: string) => configError(source, keys, message);

  const services: Record<string, ServiceTarget> = {};
  for (const [name, target] of Object.entries(input.services)) {
    if (!SERVICE_NAME_PATTERN.test(name)) {
      throw fail(['services', name], 'invalid service name (expected lowercase letters, digits, ".", "_" or "-", at most 63 characters)');
    }
    services[name] = target;
  }
  const serviceNames = Object.keys(services);

  const clients: ClientEntry[] = [];
  const byName = new Map<string, number>();
  const byThumbprint = new Map<string, number>();
  for (const [index, entry] of input.clients.entries()) {
    const at = ['clients', index];
    const previous = byName.get(entry.name);
    if (previous !== undefined) throw fail([...at, 'name'], `duplicate client name ${JSON.stringify(entry.name)} (also clients[${previous}])`);
    byName.set(entry.name, index);
    if ((entry.keyFile === undefined) === (entry.key === undefined)) {
      throw fail(at, 'expected exactly one of "keyFile" (a public JWK file) or "key" (an inline public JWK)');
    }
    const publicKey = await clientKey(entry, at, source, baseDir);
    const sameKey = byThumbprint.get(publicKey.thumbprint);
    if (sameKey !== undefined) {
      throw fail([...at, entry.keyFile === undefined ? 'key' : 'keyFile'], `same key as clients[${sameKey}] (${JSON.stringify(input.clients[sameKey]!.name)}); each client needs its own key`);
    }
    byThumbprint.set(publicKey.thumbprint, index);
    const allowed = new Set<string>();
    for (const [i, name] of entry.services.entries()) {
      if (name === '*') serviceNames.forEach((s) => allowed.add(s));
      else if (name in services) allowed.add(name);
      else throw fail([...at, 'services', i], `unknown service ${JSON.stringify(name)} (configured: ${serviceNames.join(', ') || 'none'})`);
    }
    clients.push({
      name: entry.name,
      publicKey,
      services: [...allowed],
      ...(entry.keyFile === undefined ? {} : { keyFile: path.resolve(baseDir, entry.keyFile) }),
    });
  }

  const { limits } = input;
  if (limits.idleTimeoutMs <= limits.pingIntervalMs) {
    throw fail(['limits', 'idleTimeoutMs'], `expected more than limits.pingIntervalMs (${limits.pingIntervalMs}), got ${limits.idleTimeoutMs}`);
  }
  const { admin } = input;
  if (admin !== undefined) {
    if (admin.token === undefined && !isLoopbackHost(admin.listen.host)) {
      throw fail(['admin', 'token'], `missing (expected a bearer token: admin.listen.host ${admin.listen.host} is not a loopback address, so the admin listener would be open to the network)`);
    }
    const sameHost = admin.listen.host === input.listen.host || isWildcard(admin.listen.host) || isWildcard(input.listen.host);
    if (sameHost && admin.listen.port !== 0 && admin.listen.port === input.listen.port) {
      throw fail(['admin', 'listen', 'port'], `expected a port other than listen.port (${input.listen.port}): the admin listener never shares the public one`);
    }
  }
  const absolute = (file: string) => path.resolve(baseDir, file);
  return {
    listen: input.listen,
    path: input.path,
    hostKey: absolute(input.hostKey),
    ...(input.tls === undefined ? {} : { tls: { cert: absolute(input.tls.cert), key: absolute(input.tls.key) } }),
    trustProxy: Array.isArray(input.trustProxy) ? input.trustProxy.join(', ') : input.trustProxy,
    aead: input.aead,
    services,
    clients,
    limits,
    ...(input.replica === undefined ? {} : { replica: input.replica }),
    log: { level: input.log.level, format: input.log.format ?? defaults.logFormat ?? 'json' },
    ...(admin === undefined
      ? {}
      : { admin: { listen: admin.listen, ...(admin.token === undefined ? {} : { token: admin.token }) } }),
    watch: input.watch,
  };
}

/** 127.0.0.0/8, ::1, and "localhost": addresses only this machine reaches. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1' || host === '0:0:0:0:0:0:0:1') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  return mapped !== null && mapped[1]!.startsWith('127.');
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

/**
 * Key helpers throw ConfigError themselves, naming the key file; add the
 * config location in front unless their message already names the config.
 */
async function clientKey(
  entry: { keyFile?: string | undefined; key?: Record<string, unknown> | undefined },
  at: Path,
  source: string,
  baseDir: string,
): Promise<PublicIdentity> {
  const where = [source, formatConfigPath([...at, entry.keyFile === undefined ? 'key' : 'keyFile'])]
    .filter((part) => part !== '')
    .join(': ');
  if (entry.keyFile === undefined) return parsePublicJwk(entry.key, where);
  try {
    return await loadPublicKeyFile(path.resolve(baseDir, entry.keyFile));
  } catch (error) {
    if (!(error instanceof ConfigError) || (source !== '' && error.message.includes(source))) throw error;
    throw new ConfigError(`${where}: ${error.message}`, { cause: error, code: error.code });
  }
}

// ---------------------------------------------------------------- client

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const PROXY_EXPECTED = 'an http:// proxy URL or "none"';
const RESERVED_HEADER = /^(connection|upgrade|host|sec-websocket-.*)$/i;
const clientSchema = mapping({
  url: z.string(expect('a ws:// or wss:// URL')).refine(isWebSocketUrl, expect('a ws:// or wss:// URL')),
  identity: filePath,
  serverKey: z.string(expect('a key thumbprint')).refine(isThumbprint, expect('a 43-character base64url key thumbprint (see `reflector fingerprint`)')),
  knownServers: filePath,
  forwards: z.array(forwardEntry, expect('a list of "[HOST:]PORT=SERVICE" forwards')),
  stdio: serviceName,
  aead,
  reconnect: mapping({
    initialDelayMs: integer(1, 3_600_000),
    maxDelayMs: integer(1, 86_400_000),
    maxAttempts: integer(0, 1_000_000_000),
  }).partial(),
  headers: z.record(
    z.string().regex(HEADER_NAME, expect('a header name')).refine((name) => !RESERVED_HEADER.test(name), {
      error: (issue) => `header ${show(issue.input)} is set by the WebSocket handshake and cannot be overridden`,
    }),
    z.string(expect('a header value')).regex(/^[^\r\n\0]*$/, expect('a header value on one line')),
    expect('a mapping of header names to values'),
  ),
  log: mapping({
    level: z.enum(LOG_LEVELS, expect(`one of ${LOG_LEVELS.join(', ')}`)),
    format: z.enum(LOG_FORMATS, expect('"json" or "pretty"')),
  }).partial(),
  ca: filePath,
  insecure: z.boolean(expect('true or false')),
  proxy: z.string(expect(PROXY_EXPECTED)).transform((input, ctx) => {
    if (input === 'none') return input;
    const proxy = parseProxyUrl(input);
    if (typeof proxy !== 'string') return proxy.href;
    ctx.addIssue({ code: 'custom', input, message: `expected ${PROXY_EXPECTED}, got ${show(redactUrl(input))}${proxy === '' ? '' : ` (${proxy})`}` });
    return z.NEVER;
  }),
  noProxy: z.string(expect('a comma-separated list of hosts')),
  proxyAuth: mapping({
    scheme: z.enum(PROXY_AUTH_SCHEMES, expect('"basic" or "ntlm"')),
    user: text('a user name'),
    domain: z.string(expect('a domain name')),
    passwordFile: filePath,
  }).partial(),
}).partial();

/** `proxy:3128` → `http://proxy:3128/`; or why it is not a proxy Reflector can use. */
export function parseProxyUrl(input: string): URL | string {
  let url: URL;
  try {
    url = new URL(/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(input) ? input : `http://${input}`);
  } catch {
    return '';
  }
  if (url.protocol === 'https:') return 'https:// proxies are not supported; the tunnel inside an http:// proxy is still TLS';
  if (url.protocol !== 'http:') return `${url.protocol}// proxies are not supported, only http://`;
  if (url.hostname === '') return 'no host';
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') return 'a proxy URL has no path';
  return url;
}

/** The URL with any password replaced by "***", for messages. */
function redactUrl(input: string): string {
  return input.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/, '$1:***@');
}

/**
 * The proxy the environment names for a ws:// or wss:// URL, like curl:
 * wss uses https_proxy, then HTTPS_PROXY; ws uses http_proxy (never
 * HTTP_PROXY, which a CGI request can set); both fall back to all_proxy,
 * ALL_PROXY. Empty values count as unset.
 */
export function proxyFromEnv(url: string, env: NodeJS.ProcessEnv): { variable: string; value: string } | undefined {
  const secure = url.startsWith('wss:');
  const names = secure ? ['https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'] : ['http_proxy', 'all_proxy', 'ALL_PROXY'];
  for (const variable of names) {
    const value = env[variable];
    if (value !== undefined && value.trim() !== '') return { variable, value: value.trim() };
  }
  return undefined;
}

function isWebSocketUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'ws:' || url.protocol === 'wss:';
  } catch {
    return false; // the caller reports it as "expected a ws:// or wss:// URL"
  }
}

/**
 * Validates client settings from one source (a file or the flags) without
 * requiring anything; relative paths are resolved against `baseDir`. `labels`
 * renames top-level keys in messages (`serverKey` → `--server-key`).
 */
export function parseClientInput(
  raw: unknown,
  source: string,
  options: { baseDir?: string; labels?: Record<string, string> } = {},
): ClientInput {
  const parsed = clientSchema.safeParse(raw);
  if (!parsed.success) throw zodConfigError(parsed.error, source, options.labels);
  const input: ClientInput = { ...parsed.data };
  const baseDir = options.baseDir ?? process.cwd();
  if (input.identity !== undefined) input.identity = path.resolve(baseDir, input.identity);
  if (input.knownServers !== undefined) input.knownServers = path.resolve(baseDir, input.knownServers);
  if (input.ca !== undefined) input.ca = path.resolve(baseDir, input.ca);
  if (input.proxyAuth?.passwordFile !== undefined) {
    input.proxyAuth = { ...input.proxyAuth, passwordFile: path.resolve(baseDir, input.proxyAuth.passwordFile) };
  }
  return input;
}

export async function loadClientConfig(file: string): Promise<ClientInput> {
  const raw = await readYamlFile(file);
  return parseClientInput(raw, file, { baseDir: path.dirname(path.resolve(file)) });
}

/** Later sources win; forwards add up (file first), headers merge by name. */
export function mergeClientInputs(...inputs: ClientInput[]): ClientInput {
  const merged: ClientInput = {};
  for (const input of inputs) {
    Object.assign(merged, defined(input), {
      forwards: [...(merged.forwards ?? []), ...(input.forwards ?? [])],
      headers: { ...merged.headers, ...defined(input.headers ?? {}) },
      reconnect: { ...merged.reconnect, ...defined(input.reconnect ?? {}) },
      log: { ...merged.log, ...defined(input.log ?? {}) },
      proxyAuth: { ...merged.proxyAuth, ...defined(input.proxyAuth ?? {}) },
    });
  }
  return merged;
}

/** The entries whose value is not undefined: `{ level: undefined }` must not hide a default. */
function defined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as Partial<T>;
}

/** Requires what a session needs and fills the defaults. `source` names where the settings came from. */
export function resolveClientOptions(input: ClientInput, source: string, env: NodeJS.ProcessEnv = process.env): ClientOptions {
  const checked = parseClientInput(input, source);
  const fail = (message: string) => configError(source, [], message);
  if (checked.url === undefined) throw fail('missing the server URL (give it as an argument, or as "url" in the config file)');
  if (checked.identity === undefined) throw fail('missing the client identity (--identity FILE, or "identity" in the config file)');
  const reconnect = { initialDelayMs: 200, maxDelayMs: 30_000, maxAttempts: 0, ...defined(checked.reconnect ?? {}) };
  if (reconnect.maxDelayMs < reconnect.initialDelayMs) {
    throw configError(source, ['reconnect', 'maxDelayMs'], `expected at least reconnect.initialDelayMs (${reconnect.initialDelayMs}), got ${reconnect.maxDelayMs}`);
  }
  return {
    url: checked.url,
    identity: checked.identity,
    ...(checked.serverKey === undefined ? {} : { serverKey: checked.serverKey }),
    knownServers: checked.knownServers ?? defaultKnownServers(env),
    forwards: checked.forwards ?? [],
    ...(checked.stdio === undefined ? {} : { stdio: checked.stdio }),
    aead: checked.aead ?? 'node',
    reconnect,
    headers: checked.headers ?? {},
    log: { level: 'info', format: 'json', ...defined(checked.log ?? {}) },
    ...(checked.ca === undefined ? {} : { ca: checked.ca }),
    ...(checked.insecure === true ? { insecure: true } : {}),
    ...resolveProxy(checked, source, env),
  };
}

/**
 * The proxy settings: `proxy` (or the environment when it is unset; "none"
 * means direct), `noProxy` (or NO_PROXY), and the proxy credentials, whose
 * password comes from a file, REFLECTOR_PROXY_PASSWORD, or the proxy URL.
 */
function resolveProxy(
  checked: ClientInput & { url?: string },
  source: string,
  env: NodeJS.ProcessEnv,
): Pick<ClientOptions, 'proxy' | 'noProxy' | 'proxyAuth'> {
  let proxy: URL | undefined;
  if (checked.proxy === undefined) {
    const fromEnv = proxyFromEnv(checked.url ?? '', env);
    if (fromEnv !== undefined) {
      const parsed = parseProxyUrl(fromEnv.value);
      if (typeof parsed === 'string') {
        throw new ConfigError(`${fromEnv.variable}: expected an http:// proxy URL, got ${show(redactUrl(fromEnv.value))}${parsed === '' ? '' : ` (${parsed})`}`);
      }
      proxy = parsed;
    }
  } else if (checked.proxy !== 'none') {
    proxy = new URL(checked.proxy);
  }
  const noProxy = checked.noProxy ?? (env.no_proxy || env.NO_PROXY || undefined);
  const auth = checked.proxyAuth ?? {};
  const fail = (message: string) => configError(source, ['proxyAuth'], message);
  if (auth.scheme === undefined) {
    if (auth.user !== undefined || auth.domain !== undefined || auth.passwordFile !== undefined) {
      throw fail('missing the scheme (--proxy-auth basic|ntlm, or "scheme" in the config file)');
    }
    return { ...(proxy === undefined ? {} : { proxy: proxy.href }), ...(noProxy === undefined ? {} : { noProxy }) };
  }
  let user = auth.user ?? (env.REFLECTOR_PROXY_USER || undefined) ?? (proxy?.username ? decodeURIComponent(proxy.username) : undefined);
  let domain = auth.domain ?? (env.REFLECTOR_PROXY_DOMAIN || undefined);
  const slash = user?.indexOf('\\') ?? -1;
  if (user !== undefined && slash >= 0) {
    domain ??= user.slice(0, slash);
    user = user.slice(slash + 1);
  }
  if (user === undefined || user === '') {
    throw fail('missing the proxy user (--proxy-user [DOMAIN\\]USER, REFLECTOR_PROXY_USER, or the user in the proxy URL)');
  }
  const password = (env.REFLECTOR_PROXY_PASSWORD || undefined) ?? (proxy?.password ? decodeURIComponent(proxy.password) : undefined);
  if (auth.passwordFile === undefined && password === undefined) {
    throw fail('missing the proxy password (--proxy-password-file FILE, REFLECTOR_PROXY_PASSWORD, or the password in the proxy URL)');
  }
  return {
    ...(proxy === undefined ? {} : { proxy: proxy.href }),
    ...(noProxy === undefined ? {} : { noProxy }),
    proxyAuth: {
      scheme: auth.scheme,
      user,
      domain: auth.scheme === 'ntlm' ? (domain ?? '') : '',
      ...(auth.passwordFile === undefined ? { password: password! } : { passwordFile: auth.passwordFile }),
    },
  };
}

/** `$XDG_CONFIG_HOME/reflector/known_servers`, else `~/.config/reflector/known_servers`. */
export function defaultKnownServers(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg !== undefined && path.isAbsolute(xdg) ? xdg : path.join(env.HOME || os.homedir(), '.config');
  return path.join(base, 'reflector', 'known_servers');
}

/** `--header 'Name: value'` → `[name, value]`. */
export function parseHeaderFlag(flag: string): [string, string] {
  const colon = flag.indexOf(':');
  const name = flag.slice(0, colon).trim();
  if (colon <= 0 || !HEADER_NAME.test(name)) throw new ConfigError(`--header ${flag}: expected "Name: value"`);
  return [name, flag.slice(colon + 1).trim()];
}

// ---------------------------------------------------------------- files

async function readYamlFile(file: string): Promise<unknown> {
  let source: string;
  try {
    source = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : String(code ?? error);
    throw new ConfigError(`${file}: cannot read the config file (${reason})`, { cause: error });
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(source, { prettyErrors: false, uniqueKeys: true, lineCounter });
  const problem = doc.errors[0];
  if (problem !== undefined) {
    const { line, col } = lineCounter.linePos(problem.pos[0]);
    throw new ConfigError(`${file}: line ${line}, column ${col}: ${problem.message.split('\n')[0]}`, { cause: problem });
  }
  try {
    return doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (error) {
    throw new ConfigError(`${file}: ${(error as Error).message.split('\n')[0]}`, { cause: error });
  }
}
