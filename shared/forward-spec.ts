/**
 * `-L` forwards: `[HOST:]PORT=SERVICE` on the command line or in client.yaml
 * (`2525=smtp`, `0.0.0.0:2525=smtp`, `[::1]:2525=smtp`), or
 * `{ host, port, service }` in client.yaml. The host defaults to 127.0.0.1.
 */
import { z } from 'zod';
import { expect, show } from './config-errors.js';
import { host, mapping, port, serviceName, splitHostPort } from './config-fields.js';
import { SERVICE_NAME_PATTERN } from './constants.js';
import { ConfigError } from './errors.js';

export interface ForwardSpec {
  host: string;
  port: number;
  service: string;
}

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

/** One entry of client.yaml `forwards`: the `-L` string or a mapping. */
export const forwardEntry = z.union(
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
