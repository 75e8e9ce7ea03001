/**
 * The server's config (server.yaml): a zod schema for the shape, a semantic
 * pass for what zod cannot see (service references, duplicate names and keys,
 * an admin listener open to the network), defaults from constants.ts, and one
 * sentence per error (config-errors.ts):
 *
 *   server.yaml: limits.windowBytes: expected an integer between 1024 and 1073741824, got -5
 *
 * Loaders return plain normalized objects; nothing here opens sockets or
 * reads the environment (the CLI passes its defaults in). The client's
 * settings are client-config.ts.
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import type { AeadName } from './aead.js';
import { configError, expect, formatConfigPath, show, zodConfigError, type ConfigPath } from './config-errors.js';
import { aead, filePath, host, integer, logFormat, logLevel, mapping, port, splitHostPort, text, type LogFormat, type LogOptions } from './config-fields.js';
import {
  DEFAULT_TUNNEL_PATH,
  Defaults,
  MIN_RECORD_BYTES,
  MIN_REKEY_BYTES,
  PROTOCOL_MAX_RECORD_BYTES,
  SERVICE_NAME_PATTERN,
} from './constants.js';
import { ConfigError } from './errors.js';
import { loadPublicKeyFile, parsePublicJwk, type PublicIdentity } from './keys.js';
import { readYamlFile } from './yaml-file.js';

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
  maxUnauthenticated: number;
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

/** Server `log`: the format stays unset when the file has none, so the caller's default (a terminal: pretty) applies. */
const logOptions = mapping({
  level: logLevel.default('info'),
  format: logFormat.optional(),
}).prefault({});

/** WELCOME is at most MAX_HANDSHAKE_MESSAGE_BYTES; its fixed fields and signature take well under 1 KiB. */
const WELCOME_SERVICES_BUDGET_BYTES = 6 * 1024;

const limitBounds: Record<keyof Limits, [number, number]> = {
  handshakeTimeoutMs: [10, 600_000],
  windowBytes: [1024, 1024 ** 3],
  maxRecordBytes: [MIN_RECORD_BYTES, PROTOCOL_MAX_RECORD_BYTES],
  maxStreamsPerSession: [1, 1_000_000],
  rekeyBytes: [MIN_REKEY_BYTES, Number.MAX_SAFE_INTEGER],
  pingIntervalMs: [10, 3_600_000],
  idleTimeoutMs: [10, 86_400_000],
  maxUnauthenticatedPerAddress: [1, 1_000_000],
  maxUnauthenticated: [1, 1_000_000],
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
  aead: aead.default('auto'),
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
  const fail = (keys: ConfigPath, message: string) => configError(source, keys, message);

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
      else if (Object.hasOwn(services, name)) allowed.add(name);
      else throw fail([...at, 'services', i], `unknown service ${JSON.stringify(name)} (configured: ${serviceNames.join(', ') || 'none'})`);
    }
    // WELCOME lists them and must stay within the handshake size limit (with room for its other fields).
    const listed = JSON.stringify([...allowed]).length;
    if (listed > WELCOME_SERVICES_BUDGET_BYTES) {
      throw fail([...at, 'services'], `${allowed.size} services (${listed} bytes of names) do not fit in the handshake; at most ${WELCOME_SERVICES_BUDGET_BYTES} bytes of service names per client`);
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
  at: ConfigPath,
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
