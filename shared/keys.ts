/**
 * Identities: Ed25519 key pairs stored as JWKs (RFC 8037), named by their
 * RFC 7638 SHA-256 thumbprint (43 characters of base64url). A client's
 * identity signs its auth JWT; the server's host identity signs WELCOME.
 *
 * Key files are local input, so every problem is a ConfigError with code
 * KEY_FILE_INVALID and one sentence that starts with the file's name.
 */
import { constants as fsConstants } from 'node:fs';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { lstat, open, type FileHandle } from 'node:fs/promises';
import { isSmallOrderEd25519 } from './curve25519.js';
import { ConfigError, ErrorCode } from './errors.js';

export const ED25519_KEY_BYTES = 32;
/** A JWK file is a few hundred bytes; anything much larger is not one. */
const MAX_KEY_FILE_BYTES = 64 * 1024;
const THUMBPRINT_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export interface PublicJwk {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
}

export interface PrivateJwk extends PublicJwk {
  d: string;
}

export interface PublicIdentity {
  publicKey: KeyObject;
  publicJwk: PublicJwk;
  /** RFC 7638 SHA-256 thumbprint of publicJwk, base64url (43 characters). */
  thumbprint: string;
}

export interface Identity extends PublicIdentity {
  privateKey: KeyObject;
}

// ---------------------------------------------------------------------------
// base64url helpers (also used by the handshake)

/**
 * Decodes unpadded base64url that must encode exactly `bytes` bytes and be
 * canonical (re-encoding gives the same text, so one value has one spelling).
 * Returns undefined for anything else.
 */
export function decodeBase64UrlExact(text: unknown, bytes: number): Buffer | undefined {
  if (typeof text !== 'string' || text.length !== Math.ceil((bytes * 4) / 3)) return undefined;
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return undefined;
  const decoded = Buffer.from(text, 'base64url');
  if (decoded.length !== bytes || decoded.toString('base64url') !== text) return undefined;
  return decoded;
}

/** Unpadded base64url of `bytes` bytes is this many characters long. */
export function base64UrlLength(bytes: number): number {
  return Math.ceil((bytes * 4) / 3);
}

export function isThumbprint(value: unknown): value is string {
  return typeof value === 'string' && THUMBPRINT_PATTERN.test(value) && decodeBase64UrlExact(value, 32) !== undefined;
}

// ---------------------------------------------------------------------------
// Identities from keys

/**
 * RFC 7638 JWK thumbprint (SHA-256, base64url, 43 characters): the SHA-256 of
 * the required members in lexicographic order, without whitespace. Only those
 * members take part, so a private JWK gives the same answer. Synchronous (jose's
 * calculateJwkThumbprint goes through WebCrypto and costs ~8× more);
 * test/unit/keys.test.ts checks it against jose.
 */
export function thumbprintOfSync(jwk: PublicJwk): string {
  // `x` is canonical base64url (checked where it was parsed), so JSON.stringify adds no escapes.
  const canonical = `{"crv":${JSON.stringify(jwk.crv)},"kty":${JSON.stringify(jwk.kty)},"x":${JSON.stringify(jwk.x)}}`;
  return createHash('sha256').update(canonical, 'utf8').digest('base64url');
}

/** RFC 7638 JWK thumbprint (SHA-256, base64url, 43 characters). */
export async function thumbprintOf(jwk: PublicJwk): Promise<string> {
  return thumbprintOfSync(jwk);
}

export async function generateIdentity(): Promise<Identity> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return identityFromKeyPair(privateKey, publicKey);
}

async function identityFromKeyPair(privateKey: KeyObject, publicKey: KeyObject): Promise<Identity> {
  const publicJwk = publicJwkOf(publicKey);
  return { privateKey, publicKey, publicJwk, thumbprint: await thumbprintOf(publicJwk) };
}

function publicJwkOf(publicKey: KeyObject): PublicJwk {
  const { x } = publicKey.export({ format: 'jwk' });
  if (typeof x !== 'string') throw new TypeError('an Ed25519 public key exported without "x"');
  return { kty: 'OKP', crv: 'Ed25519', x };
}

/** The private JWK of an identity, as `writeIdentityFiles` stores it. */
export function privateJwkOf(identity: Identity): PrivateJwk {
  const { d } = identity.privateKey.export({ format: 'jwk' });
  if (typeof d !== 'string') throw new TypeError('an Ed25519 private key exported without "d"');
  return { ...identity.publicJwk, d };
}

/**
 * A public identity from 32 raw bytes of Ed25519 public key (the JWK's "x").
 * The caller has already checked the length. OpenSSL does not check the point,
 * so small-order points are refused here: OpenSSL would accept forged
 * signatures under them.
 */
export async function publicIdentityFromX(x: Buffer): Promise<PublicIdentity> {
  if (isSmallOrderEd25519(x)) throw new RangeError('a small-order point is not an Ed25519 public key anyone holds the secret of');
  const publicJwk: PublicJwk = { kty: 'OKP', crv: 'Ed25519', x: x.toString('base64url') };
  const publicKey = createPublicKey({ key: { ...publicJwk }, format: 'jwk' });
  return { publicKey, publicJwk, thumbprint: await thumbprintOf(publicJwk) };
}

// ---------------------------------------------------------------------------
// Parsing JWKs (local input)

function keyError(where: string, problem: string, cause?: unknown): ConfigError {
  return new ConfigError(`${where}: ${problem}`, { code: ErrorCode.KEY_FILE_INVALID, cause });
}

/** A JWK from file text, a Buffer, or an already-parsed value. */
function jwkObject(value: unknown, where: string): Record<string, unknown> {
  let parsed = value;
  if (typeof value === 'string' || Buffer.isBuffer(value)) {
    try {
      // Some editors start UTF-8 files with a byte-order mark; JSON.parse does not skip it.
      parsed = JSON.parse(value.toString().replace(/^\uFEFF/, ''));
    } catch (error) {
      throw keyError(where, 'not valid JSON', error);
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    const got = parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : `a ${typeof parsed}`;
    throw keyError(where, `not a JWK (expected a JSON object, got ${got})`);
  }
  return parsed as Record<string, unknown>;
}

function describeMember(name: string, value: unknown): string {
  return value === undefined ? `no "${name}"` : `"${name}": ${JSON.stringify(value) ?? String(value)}`;
}

/** Checks kty/crv/x and returns the decoded public key bytes. */
function checkEd25519Public(jwk: Record<string, unknown>, where: string): Buffer {
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519') {
    const got = jwk.kty === 'OKP' ? `${describeMember('kty', jwk.kty)}, ${describeMember('crv', jwk.crv)}` : describeMember('kty', jwk.kty);
    throw keyError(where, `not an Ed25519 JWK (expected "kty": "OKP" and "crv": "Ed25519", got ${got})`);
  }
  if (jwk.x === undefined) throw keyError(where, 'has no "x" (the public key)');
  const x = decodeBase64UrlExact(jwk.x, ED25519_KEY_BYTES);
  if (x === undefined) throw keyError(where, '"x" must be 32 bytes of base64url');
  if (isSmallOrderEd25519(x)) throw keyError(where, '"x" is a small-order point, under which forged signatures verify; not a usable public key');
  return x;
}

/** Parses a private Ed25519 JWK and checks that "d" and "x" are one key pair. */
export async function parsePrivateJwk(value: unknown, where: string): Promise<Identity> {
  const jwk = jwkObject(value, where);
  const x = checkEd25519Public(jwk, where);
  if (jwk.d === undefined) throw keyError(where, 'is a public key; a private key ("d") is needed here');
  if (decodeBase64UrlExact(jwk.d, ED25519_KEY_BYTES) === undefined) {
    throw keyError(where, '"d" must be 32 bytes of base64url');
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x as string, d: jwk.d as string }, format: 'jwk' });
  } catch (error) {
    throw keyError(where, 'not a usable Ed25519 private key', error);
  }
  // Node derives the public key from "d" and ignores "x"; compare them ourselves.
  const publicKey = createPublicKey(privateKey);
  const derived = publicJwkOf(publicKey);
  if (derived.x !== x.toString('base64url')) {
    throw keyError(where, '"x" is not the public key of "d" (the file mixes two different keys)');
  }
  return identityFromKeyPair(privateKey, publicKey);
}

/**
 * Parses a public Ed25519 JWK. A private JWK is accepted too; only its public
 * half ("x") is used and "d" is ignored.
 */
export async function parsePublicJwk(value: unknown, where: string): Promise<PublicIdentity> {
  const jwk = jwkObject(value, where);
  const x = checkEd25519Public(jwk, where);
  try {
    return await publicIdentityFromX(x);
  } catch (error) {
    throw keyError(where, 'not a usable Ed25519 public key', error);
  }
}

// ---------------------------------------------------------------------------
// Key files

function fileError(path: string, error: unknown): ConfigError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return keyError(path, 'no such file', error);
    case 'EACCES':
    case 'EPERM':
      return keyError(path, 'cannot be read (permission denied)', error);
    case 'EISDIR':
      return keyError(path, 'is a directory, not a key file', error);
    default:
      return keyError(path, `cannot be read (${code ?? String(error)})`, error);
  }
}

async function readKeyFile(path: string, checkPrivate: boolean): Promise<string> {
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a FIFO must not hang start-up waiting for a writer (it is refused below).
    handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (error) {
    throw fileError(path, error);
  }
  try {
    // fstat on the open handle: the mode we check is the mode of the file we read.
    const stat = await handle.stat();
    if (stat.isDirectory()) throw keyError(path, 'is a directory, not a key file');
    if (!stat.isFile()) throw keyError(path, 'is not a regular file (a device, FIFO or socket cannot hold a key)');
    if (checkPrivate && process.platform !== 'win32' && (stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
      throw keyError(path, `permissions ${mode} are too open; a private key must be readable by its owner only (chmod 600 ${path})`);
    }
    if (stat.size > MAX_KEY_FILE_BYTES) {
      throw keyError(path, `is ${stat.size} bytes, too large to be a JWK`);
    }
    // Read at most one byte past the limit: the file may grow after fstat.
    const buffer = Buffer.alloc(MAX_KEY_FILE_BYTES + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    if (bytesRead > MAX_KEY_FILE_BYTES) throw keyError(path, `is more than ${MAX_KEY_FILE_BYTES} bytes, too large to be a JWK`);
    return buffer.toString('utf8', 0, bytesRead);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw fileError(path, error);
  } finally {
    await handle.close();
  }
}

/** Loads a private JWK file; refuses one that group or others can access (as ssh does). */
export async function loadPrivateKeyFile(path: string): Promise<Identity> {
  return parsePrivateJwk(await readKeyFile(path, true), path);
}

/** Loads a public JWK file (a private one works too: only its public half is used). */
export async function loadPublicKeyFile(path: string): Promise<PublicIdentity> {
  return parsePublicJwk(await readKeyFile(path, false), path);
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw keyError(path, 'cannot be checked', error);
  }
}

async function writeKeyFile(path: string, text: string, mode: number, overwrite: boolean): Promise<void> {
  let handle: FileHandle;
  try {
    // 'wx' fails if the file appeared since we looked: never clobber by accident.
    handle = await open(path, overwrite ? 'w' : 'wx', mode);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw keyError(path, 'already exists; refusing to overwrite it');
    throw keyError(path, `cannot be written (${code ?? String(error)})`, error);
  }
  try {
    // The mode given to open() applies only to a new file and is reduced by the umask.
    await handle.chmod(mode);
    await handle.writeFile(text, 'utf8');
  } finally {
    await handle.close();
  }
}

/**
 * Writes the private JWK to `path` (mode 0600) and the public JWK to
 * `path + '.pub'` (mode 0644). Refuses to replace either file unless
 * `overwrite` is set.
 */
export async function writeIdentityFiles(path: string, identity: Identity, options: { overwrite?: boolean } = {}): Promise<void> {
  const overwrite = options.overwrite === true;
  const publicPath = `${path}.pub`;
  if (!overwrite) {
    for (const target of [path, publicPath]) {
      if (await exists(target)) throw keyError(target, 'already exists; refusing to overwrite it');
    }
  }
  const pretty = (value: unknown): string => `${JSON.stringify(value, null, 2)}\n`;
  await writeKeyFile(path, pretty(privateJwkOf(identity)), 0o600, overwrite);
  await writeKeyFile(publicPath, pretty(identity.publicJwk), 0o644, overwrite);
}
