/**
 * ML-KEM-768 (FIPS 203) for the handshake, behind one small interface.
 *
 * Two implementations give the same bytes (test/unit/ml-kem.test.ts checks
 * both ways, implicit rejection included):
 *
 *   liboqs  @oqs/liboqs-js: liboqs compiled to WebAssembly, ~75 µs per
 *           keygen, encapsulation or decapsulation on the reference machine
 *   noble   @noble/post-quantum, pure JavaScript, ~500 µs per operation
 *
 * The WebAssembly module loads asynchronously on the first call (a few
 * milliseconds). Until it is ready, or if it fails to load or
 * fails its start-up self-test, every call uses noble, so callers never wait
 * and never see a difference other than speed. REFLECTOR_MLKEM=noble in the
 * environment keeps noble (for comparison, or if the WebAssembly is suspect).
 */
import { ml_kem768 as noble } from '@noble/post-quantum/ml-kem.js';
import { MLKEM768_CIPHERTEXT_BYTES, MLKEM768_ENCAPSULATION_KEY_BYTES } from './constants.js';

const MLKEM768_SECRET_KEY_BYTES = 2400;

export type MlKemName = 'liboqs' | 'noble';

export interface MlKem768 {
  readonly name: MlKemName;
  keygen(): { publicKey: Uint8Array; secretKey: Uint8Array };
  /** Throws for an encapsulation key that fails the FIPS 203 §7.2 checks. */
  encapsulate(publicKey: Uint8Array): { cipherText: Uint8Array; sharedSecret: Uint8Array };
  /** A wrong but well-formed ciphertext gives an unrelated secret (implicit rejection). */
  decapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array;
}

export const nobleMlKem768: MlKem768 = {
  name: 'noble',
  keygen: () => noble.keygen(),
  encapsulate: (publicKey) => noble.encapsulate(publicKey),
  decapsulate: (cipherText, secretKey) => noble.decapsulate(cipherText, secretKey),
};

/** liboqs-js checks `constructor.name === 'Uint8Array'`, which a Buffer fails: pass a plain view. */
const plain = (bytes: Uint8Array): Uint8Array =>
  bytes.constructor === Uint8Array ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);

function checkLength(what: string, bytes: Uint8Array, expected: number): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== expected) {
    throw new TypeError(`ML-KEM-768 ${what} must be ${expected} bytes, got ${bytes instanceof Uint8Array ? bytes.length : typeof bytes}`);
  }
}

/** Loads the liboqs WebAssembly build. Rejects if the package or its module cannot be loaded. */
export async function loadLiboqsMlKem768(): Promise<MlKem768> {
  const { createMLKEM768 } = await import('@oqs/liboqs-js/kem');
  const kem = await createMLKEM768();
  return {
    name: 'liboqs',
    keygen: () => kem.generateKeyPair(),
    encapsulate: (publicKey) => {
      checkLength('encapsulation key', publicKey, MLKEM768_ENCAPSULATION_KEY_BYTES);
      const { ciphertext, sharedSecret } = kem.encapsulate(plain(publicKey));
      return { cipherText: ciphertext, sharedSecret };
    },
    decapsulate: (cipherText, secretKey) => {
      checkLength('ciphertext', cipherText, MLKEM768_CIPHERTEXT_BYTES);
      checkLength('decapsulation key', secretKey, MLKEM768_SECRET_KEY_BYTES);
      return kem.decapsulate(plain(cipherText), plain(secretKey));
    },
  };
}

const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((byte, i) => byte === b[i]);

/**
 * Start-up self-test of a candidate against noble: each side decapsulates the
 * other's ciphertext to the same secret, and both reject a wrong ciphertext
 * the same way. Throws if anything differs.
 */
export function checkAgainstNoble(candidate: MlKem768): void {
  const theirs = candidate.keygen();
  const ours = noble.keygen();
  const toTheirs = noble.encapsulate(theirs.publicKey);
  const toOurs = candidate.encapsulate(ours.publicKey);
  const wrong = toTheirs.cipherText.slice();
  wrong[0] ^= 1;
  if (
    theirs.publicKey.length !== MLKEM768_ENCAPSULATION_KEY_BYTES ||
    theirs.secretKey.length !== MLKEM768_SECRET_KEY_BYTES ||
    !equal(candidate.decapsulate(toTheirs.cipherText, theirs.secretKey), toTheirs.sharedSecret) ||
    !equal(noble.decapsulate(toOurs.cipherText, ours.secretKey), toOurs.sharedSecret) ||
    !equal(candidate.decapsulate(wrong, theirs.secretKey), noble.decapsulate(wrong, theirs.secretKey))
  ) {
    throw new Error(`ML-KEM-768 implementation ${candidate.name} disagrees with noble`);
  }
}

let active: MlKem768 = nobleMlKem768;
let loadFailure: Error | undefined;
let loading: Promise<MlKem768> | undefined;

/** liboqs if it loads and agrees with noble; noble otherwise (the reason kept in loadFailure). */
async function chooseLiboqs(): Promise<MlKem768> {
  try {
    const candidate = await loadLiboqsMlKem768();
    checkAgainstNoble(candidate);
    active = candidate;
    return candidate;
  } catch (error) {
    loadFailure = error instanceof Error ? error : new Error(String(error));
    return nobleMlKem768;
  }
}

/** Starts the choice once, on first use: commands that never handshake never load the WebAssembly. */
function choose(): Promise<MlKem768> {
  loading ??= process.env.REFLECTOR_MLKEM === 'noble' ? Promise.resolve(nobleMlKem768) : chooseLiboqs();
  return loading;
}

/** The implementation every call uses right now (noble until the WebAssembly one is ready). */
export function mlKem768(): MlKem768 {
  void choose();
  return active;
}

/** Resolves once the choice is final: liboqs if it loaded and passed its self-test, noble otherwise. */
export async function mlKem768Ready(): Promise<{ name: MlKemName; failure?: Error }> {
  const chosen = await choose();
  return loadFailure === undefined ? { name: chosen.name } : { name: chosen.name, failure: loadFailure };
}
