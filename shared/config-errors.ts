/**
 * One sentence per config error, for both config files and the flags:
 *
 *   server.yaml: limits.windowBytes: expected an integer between 1024 and 1073741824, got -5
 *
 * `SOURCE: PATH: MESSAGE`, from the first zod issue (zodConfigError) or from a
 * check zod cannot make (configError). Schemas phrase their issues with
 * `expect`, so every one reads "expected WHAT, got INPUT".
 */
import type { z } from 'zod';
import { ConfigError } from './errors.js';

/** Where in a config a value sits: `['clients', 1, 'services', 0]`. */
export type ConfigPath = readonly PropertyKey[];

/** `clients[1].services[0]`, `services.smtp`, `headers["X Y"]`. */
export function formatConfigPath(keys: ConfigPath, head = ''): string {
  let out = head;
  for (const key of keys) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(String(key))) out += out === '' ? String(key) : `.${String(key)}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

/** One sentence: `SOURCE: PATH: MESSAGE`, leaving out an empty source or path. */
export function configError(source: string, keys: ConfigPath, message: string, cause?: unknown): ConfigError {
  const parts = [source, formatConfigPath(keys), message].filter((part) => part !== '');
  return new ConfigError(parts.join(': '), cause === undefined ? undefined : { cause });
}

/** How a value appears after "got": strings quoted, containers named, long text cut. */
export function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  return String(value);
}

export function expectedMessage(what: string, input: unknown): string {
  return input === undefined ? `missing (expected ${what})` : `expected ${what}, got ${show(input)}`;
}

/** zod `error` option: every issue of this schema reads "expected WHAT, got INPUT". */
export function expect(what: string) {
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
