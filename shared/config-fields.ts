/**
 * The zod building blocks both config files are made of: mappings that name
 * their keys, bounded integers, hosts and ports, paths, service names, the
 * cipher backend and the log vocabulary. Each issue reads "expected WHAT, got
 * INPUT" (config-errors.ts).
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { expect, expectedMessage, show } from './config-errors.js';
import { SERVICE_NAME_PATTERN } from './constants.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export interface LogOptions {
  level: LogLevel;
  format: LogFormat;
}

/** A mapping that refuses unknown keys and names the known ones. */
export function mapping<S extends z.ZodRawShape>(shape: S) {
  const known = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `unknown key ${JSON.stringify(issue.keys[0])} (expected one of: ${known})`
        : expectedMessage(`a mapping with keys ${known}`, issue.input),
  });
}

export function integer(min: number, max: number) {
  const what =
    max === Number.MAX_SAFE_INTEGER ? `an integer of at least ${min}` : `an integer between ${min} and ${max}`;
  return z.number(expect(what)).int(expect(what)).min(min, expect(what)).max(max, expect(what));
}

export const port = (min: number) => integer(min, 65535);
export const text = (what: string) => z.string(expect(what)).min(1, expect(what));
export const filePath = text('a file path');
export const serviceName = z.string(expect('a service name')).regex(SERVICE_NAME_PATTERN, {
  error: (issue) => `invalid service name ${show(issue.input)} (expected lowercase letters, digits, ".", "_" or "-", at most 63 characters)`,
});
export const aead = z.enum(['auto', 'sodium', 'node', 'noble'], expect('"auto", "sodium", "node" or "noble"'));
export const logLevel = z.enum(LOG_LEVELS, expect(`one of ${LOG_LEVELS.join(', ')}`));
export const logFormat = z.enum(LOG_FORMATS, expect('"json" or "pretty"'));

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
function isHost(host: string): boolean {
  return isIP(host) !== 0 || HOSTNAME.test(host);
}
export const host = z.string(expect('a host name or IP address')).refine(isHost, expect('a host name or IP address'));

/** `host:port` or `[v6]:port`; the reason it is not, otherwise (empty when it is not even close). */
export function splitHostPort(input: string, minPort: number): { host: string; port: number } | string {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(input) ?? /^([^:[\]]+):(\d+)$/.exec(input);
  if (match === null) return input.split(':').length > 2 ? 'IPv6 addresses go in brackets, e.g. [::1]:25' : '';
  const [, hostPart, portPart] = match as unknown as [string, string, string];
  if (input.startsWith('[') && isIP(hostPart) !== 6) return `${JSON.stringify(hostPart)} is not an IPv6 address`;
  if (!isHost(hostPart)) return `${JSON.stringify(hostPart)} is not a host name or IP address`;
  const value = Number(portPart);
  if (value < minPort || value > 65535) return `port must be ${minPort}-65535`;
  return { host: hostPart, port: value };
}
