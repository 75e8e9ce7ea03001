/**
 * The client's auth JWT, the `token` of the auth message: signed by the
 * client (respondToHello), verified by the server (finishServerHandshake).
 *
 *   header {alg: EdDSA, typ: AUTH_JWT_TYPE, kid: the client key's thumbprint}
 *   claims {aud: the host key's thumbprint, nonce: the challenge,
 *           epk, kem: the client's key shares, th: SHA-256 of the hello, iat, exp}
 *
 * Every failure is an AuthError whose message is precise, because only the
 * server's audit log sees it; jose's own errors never escape.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import { AUTH_CLOCK_TOLERANCE_S, AUTH_JWT_MAX_LIFETIME_S, AUTH_JWT_TYPE, ED25519_SIGNATURE_BYTES, MLKEM768_CIPHERTEXT_BYTES, X25519_PUBLIC_KEY_BYTES } from './constants.js';
import { curve25519 } from './curve25519.js';
import { AuthError, ErrorCode } from './errors.js';
import { AuthClaimsSchema, describeIssue } from './handshake-wire.js';
import { decodeBase64UrlExact, isThumbprint, type Identity } from './keys.js';

/** The client's auth JWT lives this long (exp = iat + 30 s). */
export const AUTH_JWT_LIFETIME_S = 30;

/** The `th` claim: the SHA-256 of the exact hello text, base64url. */
function helloHash(helloText: string): string {
  return createHash('sha256').update(helloText, 'utf8').digest().toString('base64url');
}

/** What the client puts in its token; `epk` and `kem` are base64url. */
export interface AuthTokenClaims {
  /** The host key thumbprint the token is for (`aud`). */
  audience: string;
  /** The hello's challenge (`nonce`). */
  challenge: string;
  epk: string;
  kem: string;
  /** The exact hello text, hashed into `th`. */
  helloText: string;
}

/**
 * Signs the token as a compact JWS (RFC 7515) directly with node:crypto's
 * one-shot Ed25519: the same bytes jose's SignJWT gives (same header and
 * claim order, and Ed25519 is deterministic; test/unit/auth-token.test.ts
 * compares them), at a third of the CPU, since jose goes through WebCrypto.
 */
export async function signAuthToken(identity: Identity, claims: AuthTokenClaims, nowMs: number): Promise<string> {
  if (identity.privateKey.asymmetricKeyType !== 'ed25519') throw new TypeError('an auth token is signed with an Ed25519 key only');
  const iat = Math.floor(nowMs / 1000);
  const header = { alg: 'EdDSA', typ: AUTH_JWT_TYPE, kid: identity.thumbprint };
  const payload = {
    nonce: claims.challenge,
    epk: claims.epk,
    kem: claims.kem,
    th: helloHash(claims.helloText),
    aud: claims.audience,
    iat,
    exp: iat + AUTH_JWT_LIFETIME_S,
  };
  const signingInput = `${b64uJson(header)}.${b64uJson(payload)}`;
  const signature = curve25519.ed25519Sign(identity.privateKey, Buffer.from(signingInput, 'ascii'));
  return `${signingInput}.${signature.toString('base64url')}`;
}

const b64uJson = (value: unknown): string => Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');

/** What the server expects of the token on this connection. */
export interface AuthTokenExpectations {
  /** This connection's challenge. */
  challenge: string;
  /** The exact hello text this server sent. */
  helloText: string;
  /** This server's host key thumbprint. */
  hostThumbprint: string;
}

/**
 * Verifies a token against this connection: the header, then the signature
 * with the authorized key its `kid` names, then the claims. Returns that
 * thumbprint and the client's key shares.
 */
export async function verifyAuthToken(
  token: string,
  expected: AuthTokenExpectations,
  lookupClientKey: (thumbprint: string) => KeyObject | undefined,
  nowMs: number,
): Promise<{ kid: string; epk: Buffer; kem: Buffer }> {
  const kid = checkAuthHeader(token);
  try {
    return await verifyNamedToken(token, kid, expected, lookupClientKey, nowMs);
  } catch (error) {
    // Every later failure concerns the key the token named: the audit log records which.
    if (error instanceof AuthError) error.kid ??= kid;
    throw error;
  }
}

async function verifyNamedToken(
  token: string,
  kid: string,
  expected: AuthTokenExpectations,
  lookupClientKey: (thumbprint: string) => KeyObject | undefined,
  nowMs: number,
): Promise<{ kid: string; epk: Buffer; kem: Buffer }> {
  const key = lookupClientKey(kid);
  if (key === undefined) throw new AuthError(ErrorCode.AUTH_UNKNOWN_KEY, `no authorized client key with thumbprint ${kid}`);

  const nowS = Math.floor(nowMs / 1000);
  let payload: unknown = verifiedPayloadFastPath(token, key, expected.hostThumbprint, nowS);
  if (payload !== undefined) return { kid, ...checkAuthClaims(payload, expected, nowS) };
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ['EdDSA'],
      typ: AUTH_JWT_TYPE,
      audience: expected.hostThumbprint,
      clockTolerance: AUTH_CLOCK_TOLERANCE_S,
      currentDate: new Date(nowMs),
    }));
  } catch (error) {
    throw joseFailure(error, kid, expected.hostThumbprint, nowS);
  }
  return { kid, ...checkAuthClaims(payload, expected, nowS) };
}

/**
 * The common case without jose: an honest token, checked with node:crypto's
 * one-shot Ed25519 verify (jose's WebCrypto path costs about twice the CPU).
 * It returns the payload only when jose's jwtVerify, with the options
 * verifyAuthToken gives it, would certainly accept the token too: the header
 * was already checked strictly (checkAuthHeader), the key is Ed25519, every
 * segment is canonical base64url, the signature verifies over the exact
 * signing input, the payload is a JSON object whose `aud` is this server's
 * thumbprint, `exp` is a number after now − tolerance, `iat` (if present) is
 * a number and there is no `nbf`. Anything else returns undefined and the
 * caller asks jose, so every failure still gets jose's verdict and its precise
 * message. The claims are then checked strictly by checkAuthClaims either way.
 */
/** @internal exported for tests */
export function verifiedPayloadFastPath(token: string, key: KeyObject, hostThumbprint: string, nowS: number): Record<string, unknown> | undefined {
  if (key.type !== 'public' || key.asymmetricKeyType !== 'ed25519') return undefined;
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const [header, body, signatureText] = parts as [string, string, string];
  const signature = decodeBase64UrlExact(signatureText, ED25519_SIGNATURE_BYTES);
  if (signature === undefined || !isCanonicalBase64Url(header) || !isCanonicalBase64Url(body)) return undefined;
  if (!curve25519.ed25519Verify(key, Buffer.from(`${header}.${body}`, 'ascii'), signature)) return undefined;
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return undefined;
  const claims = payload as Record<string, unknown>;
  if (claims.aud !== hostThumbprint) return undefined;
  if (typeof claims.exp !== 'number' || !(claims.exp > nowS - AUTH_CLOCK_TOLERANCE_S)) return undefined;
  if (claims.iat !== undefined && typeof claims.iat !== 'number') return undefined;
  if (claims.nbf !== undefined) return undefined;
  return claims;
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;
const isCanonicalBase64Url = (text: string): boolean =>
  BASE64URL.test(text) && Buffer.from(text, 'base64url').toString('base64url') === text;

const badToken = (message: string, cause?: unknown) => new AuthError(ErrorCode.AUTH_BAD_TOKEN, message, { cause });
export const badClaims = (message: string, cause?: unknown) => new AuthError(ErrorCode.AUTH_BAD_CLAIMS, message, { cause });

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
function checkAuthClaims(
  payload: unknown,
  hs: Pick<AuthTokenExpectations, 'challenge' | 'helloText'>,
  nowS: number,
): { epk: Buffer; kem: Buffer } {
  const parsed = AuthClaimsSchema.safeParse(payload);
  if (!parsed.success) throw badClaims(describeIssue('auth token claims', parsed.error, payload));
  const claims = parsed.data;
  if (claims.nonce !== hs.challenge) {
    throw badClaims("auth token nonce is not this connection's challenge (a token from another handshake, or a replay)");
  }
  if (claims.th !== helloHash(hs.helloText)) {
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
