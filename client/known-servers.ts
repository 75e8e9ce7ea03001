/**
 * Server identities the client trusts: a pinned thumbprint (`--server-key`),
 * or a known-servers file with trust on first use, like ssh's known_hosts.
 *
 * File format, one server per line (host names compared case-insensitively):
 *
 *   # comment
 *   mail.example.com:443 sVjIm3wQmJNZJFo1xExNcA2lBtnj39OLpw2A0U9dWnw
 *
 * A line that is neither blank, a comment, nor `<host:port> <thumbprint>` is
 * an error rather than skipped: silently ignoring a damaged line would turn a
 * trusted server back into an unknown one and trust whatever answers next.
 */
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ConfigError, ErrorCode, IdentityError, ReflectorError } from '../shared/errors.js';
import { isThumbprint } from '../shared/keys.js';

const HOST_PORT_PATTERN = /^[^\s#]+:[0-9]{1,5}$/;

interface KnownServerLine {
  lineNumber: number;
  hostPort: string;
  thumbprint: string;
}

function normalizeHostPort(hostPort: string): string {
  return hostPort.toLowerCase();
}

function parseKnownServers(text: string, file: string): KnownServerLine[] {
  const entries: KnownServerLine[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const fields = line.split(/\s+/);
    const [hostPort, thumbprint] = fields;
    if (fields.length !== 2 || hostPort === undefined || !HOST_PORT_PATTERN.test(hostPort) || !isThumbprint(thumbprint)) {
      throw new ConfigError(
        `${file}:${index + 1}: expected "<host:port> <thumbprint>" (a 43-character base64url key thumbprint), got ${JSON.stringify(line.slice(0, 120))}`,
      );
    }
    entries.push({ lineNumber: index + 1, hostPort: normalizeHostPort(hostPort), thumbprint });
  });
  return entries;
}

async function readKnownServers(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`${file}: cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`, { cause: error });
  }
}

function checkArguments(hostPort: string, thumbprint: string): void {
  if (!HOST_PORT_PATTERN.test(hostPort)) {
    throw new ConfigError(`"${hostPort}" is not a host:port a known-servers file can record`);
  }
  if (!isThumbprint(thumbprint)) {
    throw new ReflectorError(ErrorCode.INTERNAL, `"${thumbprint}" is not a key thumbprint`);
  }
}

/**
 * Read-only check, made at `hello` before anything is sent to the server:
 * 'known' if the file lists this key for the host, 'unknown' if it lists no
 * key for the host; a different key throws IdentityError(SERVER_KEY_MISMATCH).
 */
export async function verifyKnownServer(file: string, hostPort: string, thumbprint: string): Promise<'known' | 'unknown'> {
  checkArguments(hostPort, thumbprint);
  const text = await readKnownServers(file);
  return matchKnownServer(text, file, hostPort, thumbprint);
}

function matchKnownServer(text: string | undefined, file: string, hostPort: string, thumbprint: string): 'known' | 'unknown' {
  const wanted = normalizeHostPort(hostPort);
  const entries = text === undefined ? [] : parseKnownServers(text, file).filter((e) => e.hostPort === wanted);
  // As ssh does, any matching line is enough; a host may legitimately be listed twice during a key rollover.
  if (entries.some((e) => e.thumbprint === thumbprint)) return 'known';
  const recorded = entries[0];
  if (recorded !== undefined) {
    throw new IdentityError(
      ErrorCode.SERVER_KEY_MISMATCH,
      `WARNING: SERVER IDENTIFICATION HAS CHANGED for ${hostPort}! It presented host key ${thumbprint}, ` +
        `but ${file} line ${recorded.lineNumber} records ${recorded.thumbprint}. Someone may be intercepting ` +
        `the connection (a man in the middle), or the server's host key was replaced; refusing to connect. ` +
        `If the change is expected, confirm the new thumbprint with the server's operator, delete line ` +
        `${recorded.lineNumber} from ${file}, and connect again to record the new key.`,
    );
  }
  return 'unknown';
}

/**
 * Trust on first use, once the server proved it holds the key (its WELCOME
 * verified): records an unknown host and returns 'added'; 'known' if listed;
 * a different recorded key throws IdentityError(SERVER_KEY_MISMATCH).
 */
export async function checkKnownServer(file: string, hostPort: string, thumbprint: string): Promise<'known' | 'added'> {
  checkArguments(hostPort, thumbprint);
  const text = await readKnownServers(file);
  if (matchKnownServer(text, file, hostPort, thumbprint) === 'known') return 'known';
  await appendKnownServer(file, text, `${normalizeHostPort(hostPort)} ${thumbprint}\n`);
  return 'added';
}

async function appendKnownServer(file: string, existing: string | undefined, line: string): Promise<void> {
  try {
    if (existing === undefined) await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    // A hand-edited file may lack its final newline; never glue two entries together.
    const separator = existing !== undefined && existing.length > 0 && !existing.endsWith('\n') ? '\n' : '';
    // O_APPEND: one short write per entry, so two clients adding servers at once do not interleave.
    await appendFile(file, separator + line, { encoding: 'utf8', mode: 0o600 });
  } catch (error) {
    throw new ConfigError(`${file}: cannot record the server's key (${(error as NodeJS.ErrnoException).code ?? String(error)})`, {
      cause: error,
    });
  }
}

/** Compares a pinned thumbprint (`--server-key`) with the one the server presented; whole strings only. */
export function checkPinnedServer(expected: string, actual: string, hostPort: string): void {
  if (expected === actual) return;
  throw new IdentityError(
    ErrorCode.SERVER_KEY_MISMATCH,
    `WARNING: SERVER IDENTIFICATION DOES NOT MATCH for ${hostPort}! It presented host key ${actual}, ` +
      `but the pinned key is ${expected}. Someone may be intercepting the connection (a man in the middle), ` +
      `or the pin is out of date; refusing to connect. If the server's key was replaced on purpose, ` +
      `confirm the new thumbprint with its operator and update the pin.`,
  );
}
