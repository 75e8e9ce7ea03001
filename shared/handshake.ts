/**
 * The steps of the protocol v1 handshake, on both sides. The messages' wire
 * format and validators are handshake-wire.ts; the auth JWT is auth-token.ts.
 *
 *   server                                   client
 *   startServerHandshake ── hello (text) ──▶ parseHello, check the pin
 *                        ◀── auth (text) ─── respondToHello
 *   finishServerHandshake
 *   buildWelcome ── WELCOME (first record) ─▶ verifyWelcome
 *
 * Malformed messages are ProtocolErrors; a bad auth is an AuthError whose
 * message is precise because only the server's audit log sees it; a bad
 * WELCOME is an IdentityError (the client cannot trust the server).
 */
import { randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { badClaims, signAuthToken, verifyAuthToken } from './auth-token.js';
import { CHALLENGE_BYTES, Label, MAX_HANDSHAKE_MESSAGE_BYTES, PROTOCOL_VERSION } from './constants.js';
import { curve25519 } from './curve25519.js';
import { ErrorCode, IdentityError, ProtocolError, ReflectorError } from './errors.js';
import { AuthSchema, describeIssue, HelloSchema, isPlainObject, parseJsonMessage, WelcomeBodySchema, WelcomeSchema } from './handshake-wire.js';
import { deriveSessionKeys, type SessionKeys } from './key-schedule.js';
import { publicIdentityFromX, type Identity, type PublicIdentity } from './keys.js';
import { mlKem768 } from './ml-kem.js';

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

const malformed = (message: string, cause?: unknown) => new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, message, { cause });

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
      this.#pair = mlKem768().keygen();
      this.#createdAt = now;
    }
    return this.#pair;
  }
}

/** The hello's `mlkem` text, made once per key pair (the pair is shared for up to 60 s). */
const encapsulationKeyTexts = new WeakMap<KemKeyPair, string>();
function encapsulationKeyText(kem: KemKeyPair): string {
  let text = encapsulationKeyTexts.get(kem);
  if (text === undefined) {
    text = Buffer.from(kem.publicKey).toString('base64url');
    encapsulationKeyTexts.set(kem, text);
  }
  return text;
}

export interface ServerHandshake {
  /** The exact hello text to send; the transcript hashes these bytes. */
  readonly helloText: string;
  /** This connection's challenge (base64url), single-use. */
  readonly challenge: string;
}

interface ServerSecrets {
  host: Identity;
  x25519SecretKey: Buffer;
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
  x25519SecretKey: Uint8Array;
}

export function startServerHandshake(host: Identity, kem: KemKeyPair, entropy?: HandshakeEntropy): ServerHandshake {
  const x25519 = curve25519.x25519KeyPair(entropy?.x25519SecretKey);
  const challenge = Buffer.from(entropy?.challenge ?? randomBytes(CHALLENGE_BYTES)).toString('base64url');
  const helloText = JSON.stringify({
    type: 'hello',
    version: PROTOCOL_VERSION,
    challenge,
    x25519: x25519.publicKey.toString('base64url'),
    mlkem: encapsulationKeyText(kem),
    hostKey: { kty: 'OKP', crv: 'Ed25519', x: host.publicJwk.x },
  });
  return new ServerHandshakeState(helloText, challenge, { host, x25519SecretKey: x25519.secretKey, kemSecretKey: kem.secretKey });
}

export interface AuthResult {
  clientThumbprint: string;
  keys: SessionKeys;
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
  const { kid, epk, kem } = await verifyAuthToken(
    message.data.token,
    { challenge: hs.challenge, helloText: hs.helloText, hostThumbprint: secrets.host.thumbprint },
    lookupClientKey,
    nowMs,
  );

  const x25519Secret = curve25519.x25519(secrets.x25519SecretKey, epk);
  secrets.x25519SecretKey.fill(0);
  if (x25519Secret === undefined) throw badClaims('auth token epk is not a usable X25519 public key (a low-order point)');
  let mlkemSecret: Uint8Array;
  try {
    mlkemSecret = mlKem768().decapsulate(kem, secrets.kemSecretKey);
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
      sig: curve25519.ed25519Sign(host.privateKey, welcomeSignedBytes(keys)).toString('base64url'),
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
 * Host keys seen in recent hellos (by their `x`): a client reconnects to the
 * same few servers, so the key object and its thumbprint are made once.
 * Public values only; bounded, and cleared whole when full.
 */
const HOST_KEY_CACHE_ENTRIES = 32;
const hostKeys = new Map<string, PublicIdentity>();

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
  let hostKey = hostKeys.get(hello.hostKey.x);
  if (hostKey === undefined) {
    try {
      hostKey = await publicIdentityFromX(Buffer.from(hello.hostKey.x, 'base64url'));
    } catch (error) {
      throw malformed('hello hostKey is not a usable Ed25519 public key', error);
    }
    hostKey = Object.freeze({ ...hostKey, publicJwk: Object.freeze(hostKey.publicJwk) });
    if (hostKeys.size >= HOST_KEY_CACHE_ENTRIES) hostKeys.clear();
    hostKeys.set(hello.hostKey.x, hostKey);
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
  const ephemeral = curve25519.x25519KeyPair();
  const x25519Secret = curve25519.x25519(ephemeral.secretKey, hello.x25519);
  ephemeral.secretKey.fill(0);
  if (x25519Secret === undefined) throw malformed('hello x25519 is not a usable X25519 public key (a low-order point)');
  let encapsulated: { cipherText: Uint8Array; sharedSecret: Uint8Array };
  try {
    encapsulated = mlKem768().encapsulate(hello.mlkem);
  } catch (error) {
    throw malformed('hello mlkem is not a valid ML-KEM-768 encapsulation key', error);
  }
  const token = await signAuthToken(
    identity,
    {
      audience: hello.hostKey.thumbprint,
      challenge: hello.challenge,
      epk: ephemeral.publicKey.toString('base64url'),
      kem: Buffer.from(encapsulated.cipherText).toString('base64url'),
      helloText,
    },
    nowMs,
  );
  const authText = JSON.stringify({ type: 'auth', token });
  const keys = deriveSessionKeys(x25519Secret, encapsulated.sharedSecret, helloText, authText);
  x25519Secret.fill(0);
  encapsulated.sharedSecret.fill(0);
  return { authText, keys };
}

/** Throws on invalid UTF-8; stateless between calls (decode is never called with `stream`). */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

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
    text = strictUtf8.decode(payload);
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
  if (!curve25519.ed25519Verify(hello.hostKey.publicKey, welcomeSignedBytes(keys), Buffer.from(sig, 'base64url'))) {
    throw invalid(
      `welcome signature does not verify with host key ${hello.hostKey.thumbprint} over this session's transcript (a man in the middle, or another server's key)`,
    );
  }
  const result: WelcomeBody = { ...body };
  if (result.replica === undefined) delete result.replica;
  return result;
}
