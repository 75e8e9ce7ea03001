/**
 * The handshake messages of protocol v1 as they travel, and their strict
 * validators (the steps that build and check them are handshake.ts):
 *
 * hello:   {"type":"hello","version":1,"challenge":b64u(32),"x25519":b64u(32),
 *           "mlkem":b64u(1184),"hostKey":{"kty":"OKP","crv":"Ed25519","x":b64u(32)}}
 * auth:    {"type":"auth","token":JWS}  header {alg:EdDSA, typ:AUTH_JWT_TYPE, kid}
 *          claims {aud, nonce, epk:b64u(32), kem:b64u(1088), th:b64u(32), iat, exp}
 * WELCOME: {"sig":b64u(64),"sessionId":b64u(16),"window",…,"services":[…],"replica"?}
 *          sig = Ed25519(host key, utf8(Label.WELCOME_SIGNATURE) ‖ 0x00 ‖ T)
 *
 * Every binary value is canonical unpadded base64url of an exact length, and
 * every text message is at most MAX_HANDSHAKE_MESSAGE_BYTES. Nothing here
 * throws on its own: callers pass the error to build (parseJsonMessage) or
 * turn a zod issue into their message (describeIssue).
 */
import { z } from 'zod';
import {
  CHALLENGE_BYTES,
  ED25519_SIGNATURE_BYTES,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  MIN_RECORD_BYTES,
  MIN_REKEY_BYTES,
  MLKEM768_ENCAPSULATION_KEY_BYTES,
  PROTOCOL_MAX_RECORD_BYTES,
  PROTOCOL_VERSION,
  SERVICE_NAME_PATTERN,
  X25519_PUBLIC_KEY_BYTES,
} from './constants.js';
import { SESSION_ID_BYTES } from './key-schedule.js';
import { decodeBase64UrlExact, ED25519_KEY_BYTES } from './keys.js';

const MLKEM_Q = 3329;

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

export const HelloSchema = z.strictObject({
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

export const AuthSchema = z.strictObject({
  type: z.literal('auth'),
  // Compact JWS; the signature part may be empty so that "alg": "none" is reported as such.
  token: z.string().regex(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/, 'must be a compact JWS'),
});

export const AuthClaimsSchema = z.strictObject({
  aud: z.string(),
  nonce: z.string(),
  epk: z.string(),
  kem: z.string(),
  th: z.string(),
  iat: z.number().int().nonnegative(),
  exp: z.number().int().nonnegative(),
});

const int = (min: number, max: number) => z.number().int().min(min).max(max);
export const WelcomeBodySchema = z.strictObject({
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
export const WelcomeSchema = WelcomeBodySchema.extend({
  sig: b64u(ED25519_SIGNATURE_BYTES),
  sessionId: b64u(SESSION_ID_BYTES),
});

/** "<what>: <where>: <problem>" for the first problem zod found in `value`. */
export function describeIssue(what: string, error: z.ZodError, value: unknown): string {
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

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Size limit first, then JSON; `fail` builds the module's error for this message. */
export function parseJsonMessage<E extends Error>(text: unknown, what: string, fail: (m: string, cause?: unknown) => E): unknown {
  if (typeof text !== 'string') throw fail(`${what} is not a text message`);
  const size = Buffer.byteLength(text, 'utf8');
  if (size > MAX_HANDSHAKE_MESSAGE_BYTES) throw fail(`${what} is ${size} bytes, more than ${MAX_HANDSHAKE_MESSAGE_BYTES}`);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw fail(`${what} is not valid JSON`, error);
  }
}
