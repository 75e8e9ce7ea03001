/**
 * The client's settings: client.yaml and the `connect` flags are each
 * validated on their own (parseClientInput), merged (flags win), then
 * completed with defaults (resolveClientOptions). Every error is one sentence
 * naming the file or the flag:
 *
 *   client.yaml: reconnect.maxDelayMs: expected at least reconnect.initialDelayMs (200), got 100
 *
 * Nothing here opens sockets. The environment is read only through the `env`
 * argument: XDG_CONFIG_HOME and HOME for the known-servers file, and the
 * proxy variables (proxy-config.ts).
 */
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import type { AeadName } from './aead.js';
import { configError, expect, show, zodConfigError } from './config-errors.js';
import { aead, filePath, integer, logFormat, logLevel, mapping, serviceName, text, type LogOptions } from './config-fields.js';
import { ConfigError } from './errors.js';
import { forwardEntry, type ForwardSpec } from './forward-spec.js';
import { isThumbprint } from './keys.js';
import { badProxyUrl, parseProxyUrl, PROXY_AUTH_SCHEMES, resolveProxy, type ProxyAuthInput, type ProxySettings } from './proxy-config.js';
import { readYamlFile } from './yaml-file.js';

export interface ClientOptions extends ProxySettings {
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
}
/** Client settings before defaults: what a client.yaml or the flags provide. Paths are absolute. */
export type ClientInput = Partial<Omit<ClientOptions, 'reconnect' | 'log' | 'proxyAuth'>> & {
  reconnect?: Partial<ClientOptions['reconnect']>;
  log?: Partial<LogOptions>;
  proxyAuth?: ProxyAuthInput;
};

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
  log: mapping({ level: logLevel, format: logFormat }).partial(),
  ca: filePath,
  insecure: z.boolean(expect('true or false')),
  proxy: z.string(expect(PROXY_EXPECTED)).transform((input, ctx) => {
    if (input === 'none') return input;
    const proxy = parseProxyUrl(input);
    if (typeof proxy !== 'string') return proxy.href;
    ctx.addIssue({ code: 'custom', input, message: badProxyUrl(PROXY_EXPECTED, input, proxy) });
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
    aead: checked.aead ?? 'auto',
    reconnect,
    headers: checked.headers ?? {},
    log: { level: 'info', format: 'json', ...defined(checked.log ?? {}) },
    ...(checked.ca === undefined ? {} : { ca: checked.ca }),
    ...(checked.insecure === true ? { insecure: true } : {}),
    ...resolveProxy(checked, source, env),
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
