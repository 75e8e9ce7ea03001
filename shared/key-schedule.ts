/**
 * Key schedule of protocol v1: the hybrid X25519 + ML-KEM-768 secrets and the
 * handshake transcript become the session's directional keys.
 *
 *   T    = SHA-256(utf8(hello) ‖ utf8(auth))
 *   IKM  = x25519_secret ‖ mlkem_secret              (32 ‖ 32 bytes)
 *   key  = HKDF-SHA256(IKM, salt = T, info = label, L)
 *
 *   label                      L    use
 *   "reflector/1 c2s"          32   client → server records
 *   "reflector/1 s2c"          32   server → client records
 *   "reflector/1 resume"       32   proves possession of this session in a later RESUME
 *   "reflector/1 session id"   16   names the session (WELCOME, logs); not secret
 *
 * The session stays secret as long as either half of IKM does (the same
 * construction as OpenSSH's mlkem768x25519-sha256 and TLS's X25519MLKEM768).
 *
 * Every L is at most one SHA-256 block, so RFC 5869 reduces to one Extract
 * and one HMAC per label, computed here directly:
 *
 *   PRK  = HMAC-SHA256(key = T, IKM)
 *   key  = first L bytes of HMAC-SHA256(key = PRK, utf8(label) ‖ 0x01)
 *
 * (the same bytes as hkdfSync, which repeats the Extract for every label and
 * costs ~4× more; test/unit/key-schedule.test.ts checks both against RFC 5869).
 */
import { createHash, createHmac } from 'node:crypto';
import { AEAD_KEY_BYTES, Label } from './constants.js';
import { ErrorCode, ReflectorError } from './errors.js';

export const SESSION_ID_BYTES = 16;
export const SHARED_SECRET_BYTES = 32;

export interface SessionKeys {
  /** T, the transcript hash: SHA-256 of the exact hello and auth texts. */
  transcript: Buffer;
  /** Seals records from client to server. */
  c2s: Buffer;
  /** Seals records from server to client. */
  s2c: Buffer;
  /** Binds a later RESUME to this session. */
  resumption: Buffer;
  /** 16 bytes, public: the session's name in WELCOME and in logs. */
  sessionId: Buffer;
}

/** SHA-256 of the hello and auth texts, exactly as they crossed the wire (UTF-8). */
export function transcriptHash(helloText: string, authText: string): Buffer {
  return createHash('sha256').update(helloText, 'utf8').update(authText, 'utf8').digest();
}

export function deriveSessionKeys(
  x25519Secret: Uint8Array,
  mlkemSecret: Uint8Array,
  helloText: string,
  authText: string,
): SessionKeys {
  // Both halves have a fixed length, so their concatenation is unambiguous.
  if (x25519Secret.length !== SHARED_SECRET_BYTES || mlkemSecret.length !== SHARED_SECRET_BYTES) {
    throw new ReflectorError(
      ErrorCode.INTERNAL,
      `shared secrets must be ${SHARED_SECRET_BYTES} bytes each (got X25519 ${x25519Secret.length}, ML-KEM ${mlkemSecret.length})`,
    );
  }
  const transcript = transcriptHash(helloText, authText);
  const prk = createHmac('sha256', transcript).update(x25519Secret).update(mlkemSecret).digest();
  const keys: SessionKeys = {
    transcript,
    c2s: expandOneBlock(prk, Label.C2S, AEAD_KEY_BYTES),
    s2c: expandOneBlock(prk, Label.S2C, AEAD_KEY_BYTES),
    resumption: expandOneBlock(prk, Label.RESUME, 32),
    sessionId: expandOneBlock(prk, Label.SESSION_ID, SESSION_ID_BYTES),
  };
  prk.fill(0);
  return keys;
}

const SHA256_BYTES = 32;
const FIRST_BLOCK = Buffer.from([1]);

/** HKDF-Expand (RFC 5869 §2.3) for L ≤ 32: T(1) = HMAC(PRK, info ‖ 0x01), cut to L. */
function expandOneBlock(prk: Buffer, label: string, length: number): Buffer {
  if (length > SHA256_BYTES) throw new ReflectorError(ErrorCode.INTERNAL, `HKDF-Expand of ${length} bytes needs more than one block`);
  const block = createHmac('sha256', prk).update(label, 'utf8').update(FIRST_BLOCK).digest();
  // A copy of the first `length` bytes, so no key shares memory with the rest of its block.
  return length === SHA256_BYTES ? block : Buffer.from(block.subarray(0, length));
}
