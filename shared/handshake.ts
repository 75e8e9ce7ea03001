/**
 * The three handshake messages of protocol v1 and their strict validators.
 *
 *   server                                   client
 *   startServerHandshake ── hello (text) ──▶ parseHello, check the pin
 *                        ◀── auth (text) ─── respondToHello
 *   finishServerHandshake
 *   buildWelcome ── WELCOME (first record) ─▶ verifyWelcome
 *
 * hello:   {"type":"hello","version":1,"challenge":b64u(32),"x25519":b64u(32),
 *           "mlkem":b64u(1184),"hostKey":{"kty":"OKP","crv":"Ed25519","x":b64u(32)}}
 * auth:    {"type":"auth","token":JWS}  header {alg:EdDSA, typ:AUTH_JWT_TYPE, kid}
 *          claims {aud, nonce, epk:b64u(32), kem:b64u(1088), th:b64u(32), iat, exp}
 * WELCOME: {"sig":b64u(64),"sessionId":b64u(16),"window",…,"services":[…],"replica"?}
 *          sig = Ed25519(host key, utf8(Label.WELCOME_SIGNATURE) ‖ 0x00 ‖ T)
 *
 * Every binary value is canonical unpadded base64url of an exact length.
 * Malformed messages are ProtocolErrors; a bad auth is an AuthError whose
 * message is precise because only the server's audit log sees it; a bad
 * WELCOME is an IdentityError (the client cannot trust the server).
 */
import { createHash, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, sign, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { z } from 'zod';
import {
  AUTH_CLOCK_TOLERANCE_S,
  AUTH_JWT_MAX_LIFETIME_S,
  AUTH_JWT_TYPE,
  CHALLENGE_BYTES,
  Label,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  MIN_RECORD_BYTES,
  MIN_REKEY_BYTES,
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_ENCAPSULATION_KEY_BYTES,
  PROTOCOL_MAX_RECORD_BYTES,
  PROTOCOL_VERSION,
  SERVICE_NAME_PATTERN,
  X25519_PUBLIC_KEY_BYTES,
} from './constants.js';
import { AuthError, ErrorCode, IdentityError, ProtocolError, ReflectorError } from './errors.js';
import { deriveSessionKeys, SESSION_ID_BYTES, type SessionKeys } from './key-schedule.js';
import { decodeBase64UrlExact, ED25519_KEY_BYTES, isThumbprint, publicIdentityFromX, type Identity, type PublicIdentity } from './keys.js';

/** The client's auth JWT lives this long (exp = iat + 30 s). */
export const AUTH_JWT_LIFETIME_S = 30;
const ED25519_SIGNATURE_BYTES = 64;
const MLKEM_Q = 3329;

export interface Hello {
  version: 1;
  challenge: string;
  x25519: Buffer;
  mlkem: Uint8Array;
  hostKey: PublicIdentity;
}

export interface WelcomeBody {
  window: number;
  maxStreams: number;
  maxRecord: number;
  rekeyBytes: number;
  pingInterval: number;
  resume: number;
  services: string[];
  replica?: string;
}

export interface KemKeyPair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

// ---------------------------------------------------------------------------
// Wire schemas

/** Canonical unpadded base64url of exactly `bytes` bytes. */
const b64u = (bytes: number) =>
  z.string().refine((s) => decodeBase64UrlExact(s, bytes) !== undefined, `must be ${bytes} bytes of canonical unpadded base64url`);

/** FIPS 203 §7.2 modulus check: the 768 packed 12-bit coefficients before ρ are all < q. */
function isValidMlKemEncapsulationKey(ek: Uint8Array): boolean {
  for (let i = 0; i < 384 * 3; i += 3) {
    const c0 = ek[i] | ((ek[i + 1] & 0x0f) << 8);
    const c1 = (ek[i + 1] >> 4) | (ek[i + 2] << 4);
    if (c0 >= MLKEM_Q || c1 >= MLKEM_Q) return false;
  }
  return true;
}

const HelloSchema = z.strictObject({
  type: z.literal('hello'),
  version: z.literal(PROTOCOL_VERSION),
  challenge: b64u(CHALLENGE_BYTES),
  x25519: b64u(X25519_PUBLIC_KEY_BYTES),
  mlkem: b64u(MLKEM768_ENCAPSULATION_KEY_BYTES).refine(
    (s) => isValidMlKemEncapsulationKey(Buffer.from(s, 'base64url')),
    'not a valid ML-KEM-768 encapsulation key (a coefficient is not reduced mod q)',
  ),
  hostKey: z.strictObject({ kty: z.literal('OKP'), crv: z.literal('Ed25519'), x: b64u(ED25519_KEY_BYTES) }),
});

const AuthSchema = z.strictObject({
  type: z.literal('auth'),
  // Compact JWS; the signature part may be empty so that "alg": "none" is reported as such.
  token: z.string().regex(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/, 'must be a compact JWS'),
});

const AuthClaimsSchema = z.strictObject({
  aud: z.string(),
  nonce: z.string(),
  epk: z.string(),
  kem: z.string(),
  th: z.string(),
  iat: z.number().int().nonnegative(),
  exp: z.number().int().nonnegative(),
});

const int = (min: number, max: number) => z.number().int().min(min).max(max);
const WelcomeBodySchema = z.strictObject({
  window: int(1024, 2 ** 30),
  maxStreams: int(1, 2 ** 31),
  maxRecord: int(MIN_RECORD_BYTES, PROTOCOL_MAX_RECORD_BYTES),
  rekeyBytes: int(MIN_REKEY_BYTES, Number.MAX_SAFE_INTEGER),
  /** Milliseconds; from 1 ms (tests) to one day. */
  pingInterval: int(1, 86_400_000),
  /** Milliseconds the server keeps a dropped session's streams for a RESUME; 0: no resumption. */
  resume: int(0, 86_400_000),
  services: z
    .array(z.string().regex(SERVICE_NAME_PATTERN, 'not a valid service name'))
    .refine((list) => new Set(list).size === list.length, 'a service is listed twice'),
  replica: z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, 'must be 1-64 characters of [A-Za-z0-9._:-]').optional(),
});
const WelcomeSchema = WelcomeBodySchema.extend({
  sig: b64u(ED25519_SIGNATURE_BYTES),
  sessionId: b64u(SESSION_ID_BYTES),
});

/** "<what>: <where>: <problem>" for the first problem zod found in `value`. */
function describeIssue(what: string, error: z.ZodError, value: unknown): string {
  const issue = error.issues[0];
  if (issue === undefined) return `${what}: invalid`;
  const path = issue.path.map(String);
  const at = path.length > 0 ? ` "${path.join('.')}"` : '';
  if (issue.code === 'unrecognized_keys') return `${what}${at}: unexpected key ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
  const found = path.reduce<unknown>((node, key) => (isPlainObject(node) || Array.isArray(node) ? (node as Record<string, unknown>)[key] : undefined), value);
  if (issue.code === 'invalid_type' && found === undefined && path.length > 0) return `${what}${at} is missing`;
  const problem = issue.message.replace(/^Invalid input: /, '');
  return `${what}${at}: ${problem.charAt(0).toLowerCase()}${problem.slice(1)}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Size limit first, then JSON; `fail` builds the module's error for this message. */
function parseJsonMessage<E extends Error>(text: unknown, what: string, fail: (m: string, cause?: unknown) => E): unknown {
  if (typeof text !== 'string') throw fail(`${what} is not a text message`);
  const size = Buffer.byteLength(text, 'utf8');
  if (size > MAX_HANDSHAKE_MESSAGE_BYTES) throw fail(`${what} is ${size} bytes, more than ${MAX_HANDSHAKE_MESSAGE_BYTES}`);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw fail(`${what} is not valid JSON`, error);
  }
}

const malformed = (message: string, cause?: unknown) => new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, message, { cause });
const sha256 = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();
const x25519PublicKey = (raw: Buffer): KeyObject =>
  createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: raw.toString('base64url') }, format: 'jwk' });
const rawX25519 = (publicKey: KeyObject): string => publicKey.export({ format: 'jwk' }).x as string;

function welcomeSignedBytes(keys: SessionKeys): Buffer {
  return Buffer.concat([Buffer.from(Label.WELCOME_SIGNATURE, 'utf8'), Buffer.from([0]), keys.transcript]);
}

// ---------------------------------------------------------------------------
// Server side

/** Reuses one ML-KEM-768 key pair for at most `maxAgeMs`, then makes a new one (see DESIGN.md). */
export class KemKeyCache {
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  #pair: KemKeyPair | undefined;
  #createdAt = 0;

  constructor(maxAgeMs = 60_000, now: () => number = () => performance.now()) {
    this.#maxAgeMs = maxAgeMs;
    this.#now = now;
  }

  current(): KemKeyPair {
    const now = this.#now();
    // A clock that went backwards also retires the pair.
    if (this.#pair === undefined || now - this.#createdAt >= this.#maxAgeMs || now < this.#createdAt) {
      this.#pair = ml_kem768.keygen();
      this.#createdAt = now;
    }
    return this.#pair;
  }
}

export interface ServerHandshake {
  /** The exact hello text to send; the transcript hashes these bytes. */
  readonly helloText: string;
  /** This connection's challenge (base64url), single-use. */
  readonly challenge: string;
}

interface ServerSecrets {
  host: Identity;
  x25519: KeyObject;
  kemSecretKey: Uint8Array;
}

class ServerHandshakeState implements ServerHandshake {
  readonly helloText: string;
  readonly challenge: string;
  #secrets: ServerSecrets | undefined;

  constructor(helloText: string, challenge: string, secrets: ServerSecrets) {
    this.helloText = helloText;
    this.challenge = challenge;
    this.#secrets = secrets;
  }

  /** The secrets, once: whatever the outcome, a challenge answers one auth only. */
  take(): ServerSecrets | undefined {
    const secrets = this.#secrets;
    this.#secrets = undefined;
    return secrets;
  }
}

/**
 * Fixed randomness for known-answer tests and test vectors ONLY. A server that
 * passes it reuses its challenge and ephemeral key, which defeats replay protection.
 */
export interface HandshakeEntropy {
  challenge: Uint8Array;
  x25519PrivateKey: KeyObject;
}

export function startServerHandshake(host: Identity, kem: KemKeyPair, entropy?: HandshakeEntropy): ServerHandshake {
  const x25519 = entropy?.x25519PrivateKey ?? generateKeyPairSync('x25519').privateKey;
  const challenge = Buffer.from(entropy?.challenge ?? randomBytes(CHALLENGE_BYTES)).toString('base64url');
  const helloText = JSON.stringify({
    type: 'hello',
    version: PROTOCOL_VERSION,
    challenge,
    x25519: rawX25519(createPublicKey(x25519)),
    mlkem: Buffer.from(kem.publicKey).toString('base64url'),
    hostKey: { kty: 'OKP', crv: 'Ed25519', x: host.publicJwk.x },
  });
  return new ServerHandshakeState(helloText, challenge, { host, x25519, kemSecretKey: kem.secretKey });
}

export interface AuthResult {
  clientThumbprint: string;
  keys: SessionKeys;
}

const badToken = (message: string, cause?: unknown) => new AuthError(ErrorCode.AUTH_BAD_TOKEN, message, { cause });
const badClaims = (message: string, cause?: unknown) => new AuthError(ErrorCode.AUTH_BAD_CLAIMS, message, { cause });

/** The JWT header, checked before any key is looked up. */
function checkAuthHeader(token: string): string {
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(token) as Record<string, unknown>;
  } catch (error) {
    throw badToken('auth token header is not base64url JSON', error);
  }
  if (header.alg !== 'EdDSA') throw badToken(`auth token alg ${JSON.stringify(header.alg) ?? 'missing'} is not allowed (only "EdDSA")`);
  if (header.typ !== AUTH_JWT_TYPE) {
    throw badToken(`auth token typ ${JSON.stringify(header.typ) ?? 'missing'} is not ${JSON.stringify(AUTH_JWT_TYPE)}`);
  }
  const extra = Object.keys(header).filter((k) => k !== 'alg' && k !== 'typ' && k !== 'kid');
  if (extra.length > 0) throw badToken(`auth token header has unexpected parameter ${extra.map((k) => JSON.stringify(k)).join(', ')}`);
  if (!isThumbprint(header.kid)) throw badToken('auth token kid is not a JWK thumbprint (43 characters of base64url)');
  return header.kid;
}

/** Every jose failure becomes an AuthError; jose's own errors never escape. */
function joseFailure(error: unknown, kid: string, hostThumbprint: string, nowS: number): AuthError {
  if (error instanceof joseErrors.JWTExpired) {
    return badClaims(`auth token expired: "exp" ${String(error.payload.exp)} is more than ${AUTH_CLOCK_TOLERANCE_S} s before now (${nowS})`, error);
  }
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.reason === 'missing') return badClaims(`auth token claims "${error.claim}" is missing`, error);
    if (error.claim === 'aud') {
      return badClaims(`auth token "aud" ${JSON.stringify(error.payload.aud)} is not this server's host key thumbprint ${hostThumbprint}`, error);
    }
    return badClaims(`auth token claim "${error.claim}" rejected (${error.reason}): ${error.message}`, error);
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return badToken(`auth token signature does not verify with the authorized key ${kid}`, error);
  }
  if (error instanceof joseErrors.JOSEError) return badToken(`auth token rejected (${error.code}): ${error.message}`, error);
  return badToken('auth token could not be verified', error);
}

/** Checks the verified claims against this connection and returns the client's key shares. */
function checkAuthClaims(payload: unknown, hs: ServerHandshakeState, nowS: number): { epk: Buffer; kem: Buffer } {
  const parsed = AuthClaimsSchema.safeParse(payload);
  if (!parsed.success) throw badClaims(describeIssue('auth token claims', parsed.error, payload));
  const claims = parsed.data;
  if (claims.nonce !== hs.challenge) {
    throw badClaims("auth token nonce is not this connection's challenge (a token from another handshake, or a replay)");
  }
  if (claims.th !== sha256(hs.helloText).toString('base64url')) {
    throw badClaims('auth token th is not the SHA-256 of the hello this server sent (the hello was altered on the way)');
  }
  const lifetime = claims.exp - claims.iat;
  if (lifetime <= 0 || lifetime > AUTH_JWT_MAX_LIFETIME_S) {
    throw badClaims(`auth token lifetime exp - iat = ${lifetime} s is outside 1..${AUTH_JWT_MAX_LIFETIME_S} s`);
  }
  if (claims.iat > nowS + AUTH_CLOCK_TOLERANCE_S) {
    throw badClaims(`auth token "iat" ${claims.iat} is ${claims.iat - nowS} s in the future (tolerance ${AUTH_CLOCK_TOLERANCE_S} s)`);
  }
  const epk = decodeBase64UrlExact(claims.epk, X25519_PUBLIC_KEY_BYTES);
  if (epk === undefined) throw badClaims(`auth token epk must be ${X25519_PUBLIC_KEY_BYTES} bytes of canonical base64url`);
  const kem = decodeBase64UrlExact(claims.kem, MLKEM768_CIPHERTEXT_BYTES);
  if (kem === undefined) throw badClaims(`auth token kem must be ${MLKEM768_CIPHERTEXT_BYTES} bytes of canonical base64url`);
  return { epk, kem };
}

/**
 * Verifies the client's auth against this connection and derives the session
 * keys. The handshake is single-use: a second call fails whatever the first did.
 * Throws ProtocolError (malformed message) or AuthError (everything else).
 */
export async function finishServerHandshake(
  hs: ServerHandshake,
  authText: string,
  lookupClientKey: (thumbprint: string) => KeyObject | undefined,
  nowMs: number = Date.now(),
): Promise<AuthResult> {
  if (!(hs instanceof ServerHandshakeState)) throw new TypeError('finishServerHandshake needs a handshake from startServerHandshake');
  const secrets = hs.take();
  if (secrets === undefined) throw badClaims("this connection's challenge was already used; a handshake can be finished only once");

  const wire = parseJsonMessage(authText, 'auth', malformed);
  const message = AuthSchema.safeParse(wire);
  if (!message.success) throw malformed(describeIssue('auth', message.error, wire));
  const token = message.data.token;
  const kid = checkAuthHeader(token);

  const key = lookupClientKey(kid);
  if (key === undefined) throw new AuthError(ErrorCode.AUTH_UNKNOWN_KEY, `no authorized client key with thumbprint ${kid}`);

  const nowS = Math.floor(nowMs / 1000);
  const hostThumbprint = secrets.host.thumbprint;
  let payload: unknown;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ['EdDSA'],
      typ: AUTH_JWT_TYPE,
      audience: hostThumbprint,
      clockTolerance: AUTH_CLOCK_TOLERANCE_S,
      currentDate: new Date(nowMs),
    }));
  } catch (error) {
    throw joseFailure(error, kid, hostThumbprint, nowS);
  }
  const { epk, kem } = checkAuthClaims(payload, hs, nowS);

  let x25519Secret: Buffer;
  try {
    x25519Secret = diffieHellman({ privateKey: secrets.x25519, publicKey: x25519PublicKey(epk) });
  } catch (error) {
    throw badClaims('auth token epk is not a usable X25519 public key (a low-order point)', error);
  }
  let mlkemSecret: Uint8Array;
  try {
    mlkemSecret = ml_kem768.decapsulate(kem, secrets.kemSecretKey);
  } catch (error) {
    throw badClaims('auth token kem could not be decapsulated', error);
  }
  const keys = deriveSessionKeys(x25519Secret, mlkemSecret, hs.helloText, authText);
  x25519Secret.fill(0);
  mlkemSecret.fill(0);
  return { clientThumbprint: kid, keys };
}

/** The WELCOME frame's payload: limits, services and the host key's signature over T. */
export function buildWelcome(host: Identity, keys: SessionKeys, body: WelcomeBody): Buffer {
  const checked = WelcomeBodySchema.safeParse(body);
  if (!checked.success) throw new ReflectorError(ErrorCode.INTERNAL, describeIssue('welcome body', checked.error, body));
  const payload = Buffer.from(
    JSON.stringify({
      sig: sign(null, welcomeSignedBytes(keys), host.privateKey).toString('base64url'),
      sessionId: keys.sessionId.toString('base64url'),
      ...checked.data,
    }),
    'utf8',
  );
  if (payload.length > MAX_HANDSHAKE_MESSAGE_BYTES) {
    throw new ReflectorError(ErrorCode.INTERNAL, `welcome is ${payload.length} bytes, more than ${MAX_HANDSHAKE_MESSAGE_BYTES} (too many services?)`);
  }
  return payload;
}

// ---------------------------------------------------------------------------
// Client side

/**
 * Parses and validates the server's hello. Async because the host key's RFC
 * 7638 thumbprint is computed with jose. Throws ProtocolError only:
 * HANDSHAKE_VERSION for another protocol version, HANDSHAKE_MALFORMED otherwise.
 */
export async function parseHello(text: string): Promise<Hello> {
  const value = parseJsonMessage(text, 'hello', malformed);
  if (isPlainObject(value) && value.type === 'hello' && typeof value.version === 'number' && value.version !== PROTOCOL_VERSION) {
    throw new ProtocolError(ErrorCode.HANDSHAKE_VERSION, `hello speaks protocol version ${value.version}; this side speaks ${PROTOCOL_VERSION}`);
  }
  const parsed = HelloSchema.safeParse(value);
  if (!parsed.success) throw malformed(describeIssue('hello', parsed.error, value));
  const hello = parsed.data;
  let hostKey: PublicIdentity;
  try {
    hostKey = await publicIdentityFromX(Buffer.from(hello.hostKey.x, 'base64url'));
  } catch (error) {
    throw malformed('hello hostKey is not a usable Ed25519 public key', error);
  }
  return {
    version: PROTOCOL_VERSION,
    challenge: hello.challenge,
    x25519: Buffer.from(hello.x25519, 'base64url'),
    mlkem: new Uint8Array(Buffer.from(hello.mlkem, 'base64url')),
    hostKey,
  };
}

/**
 * Answers a parsed hello: the auth text to send and the session keys.
 * `helloText` must be the exact text `hello` was parsed from: it is hashed
 * into `th` and the transcript. Check the server's key (pin or known-servers)
 * before calling this.
 */
export async function respondToHello(
  hello: Hello,
  helloText: string,
  identity: Identity,
  nowMs: number = Date.now(),
): Promise<{ authText: string; keys: SessionKeys }> {
  const ephemeral = generateKeyPairSync('x25519');
  let x25519Secret: Buffer;
  try {
    x25519Secret = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: x25519PublicKey(hello.x25519) });
  } catch (error) {
    throw malformed('hello x25519 is not a usable X25519 public key (a low-order point)', error);
  }
  let encapsulated: { cipherText: Uint8Array; sharedSecret: Uint8Array };
  try {
    encapsulated = ml_kem768.encapsulate(hello.mlkem);
  } catch (error) {
    throw malformed('hello mlkem is not a valid ML-KEM-768 encapsulation key', error);
  }
  const iat = Math.floor(nowMs / 1000);
  const token = await new SignJWT({
    nonce: hello.challenge,
    epk: rawX25519(ephemeral.publicKey),
    kem: Buffer.from(encapsulated.cipherText).toString('base64url'),
    th: sha256(helloText).toString('base64url'),
  })
    .setProtectedHeader({ alg: 'EdDSA', typ: AUTH_JWT_TYPE, kid: identity.thumbprint })
    .setAudience(hello.hostKey.thumbprint)
    .setIssuedAt(iat)
    .setExpirationTime(iat + AUTH_JWT_LIFETIME_S)
    .sign(identity.privateKey);
  const authText = JSON.stringify({ type: 'auth', token });
  const keys = deriveSessionKeys(x25519Secret, encapsulated.sharedSecret, helloText, authText);
  x25519Secret.fill(0);
  encapsulated.sharedSecret.fill(0);
  return { authText, keys };
}

/**
 * Checks the WELCOME payload: the host key in `hello` signed this session's
 * transcript, the session id matches, and the limits are in range. Throws
 * IdentityError(WELCOME_INVALID) for anything else.
 */
export function verifyWelcome(payload: Buffer, hello: Hello, keys: SessionKeys): WelcomeBody {
  const invalid = (message: string, cause?: unknown) => new IdentityError(ErrorCode.WELCOME_INVALID, message, { cause });
  if (payload.length > MAX_HANDSHAKE_MESSAGE_BYTES) throw invalid(`welcome is ${payload.length} bytes, more than ${MAX_HANDSHAKE_MESSAGE_BYTES}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(payload);
  } catch (error) {
    throw invalid('welcome is not UTF-8', error);
  }
  const wire = parseJsonMessage(text, 'welcome', invalid);
  const parsed = WelcomeSchema.safeParse(wire);
  if (!parsed.success) throw invalid(describeIssue('welcome', parsed.error, wire));
  const { sig, sessionId, ...body } = parsed.data;
  if (!timingSafeEqual(Buffer.from(sessionId, 'base64url'), keys.sessionId)) {
    throw invalid(`welcome names session ${sessionId}, but this handshake derived ${keys.sessionId.toString('base64url')}`);
  }
  if (!verify(null, welcomeSignedBytes(keys), hello.hostKey.publicKey, Buffer.from(sig, 'base64url'))) {
    throw invalid(
      `welcome signature does not verify with host key ${hello.hostKey.thumbprint} over this session's transcript (a man in the middle, or another server's key)`,
    );
  }
  const result: WelcomeBody = { ...body };
  if (result.replica === undefined) delete result.replica;
  return result;
}
