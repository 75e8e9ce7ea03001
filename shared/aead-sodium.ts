/**
 * ChaCha20-Poly1305 through libsodium (the optional `sodium-native` addon,
 * prebuilt for the common platforms). Same bytes as the other backends; what
 * it adds is that it seals and opens into buffers we own. node:crypto returns
 * a fresh buffer from every update(), and those buffers, allocated outside the
 * JavaScript heap, drive V8 into back-to-back full collections during bulk
 * transfer (see record-buffers.ts).
 */
import { createRequire } from 'node:module';
import { AEAD_KEY_BYTES, AEAD_NONCE_BYTES, AEAD_TAG_BYTES } from './constants.js';
import { checkSealOutput, type AeadBackend } from './aead.js';

interface SodiumAead {
  crypto_aead_chacha20poly1305_ietf_encrypt(c: Buffer, m: Buffer, ad: null, nsec: null, npub: Buffer, k: Buffer): number;
  crypto_aead_chacha20poly1305_ietf_decrypt(m: Buffer, nsec: null, c: Buffer, ad: null, npub: Buffer, k: Buffer): number;
}

function loadSodium(): SodiumAead | undefined {
  try {
    return createRequire(import.meta.url)('sodium-native') as SodiumAead;
  } catch {
    // Not installed (it is optional) or no prebuilt addon for this platform.
    return undefined;
  }
}

const sodium = loadSodium();

/** libsodium throws a generic Error for bad sizes too: rule those out first, so a throw means a bad tag. */
function checkKeyAndNonce(key: Buffer, nonce: Buffer): void {
  if (key.length !== AEAD_KEY_BYTES || nonce.length !== AEAD_NONCE_BYTES) {
    throw new RangeError(`key must be ${AEAD_KEY_BYTES} and nonce ${AEAD_NONCE_BYTES} bytes, got ${key.length} and ${nonce.length}`);
  }
}

function makeSodiumAead(lib: SodiumAead): AeadBackend {
  const backend: AeadBackend = {
    name: 'sodium',

    seal(key, nonce, plaintext) {
      const sealed = Buffer.allocUnsafe(plaintext.length + AEAD_TAG_BYTES);
      backend.sealInto(key, nonce, plaintext, sealed);
      return sealed;
    },

    sealInto(key, nonce, plaintext, output) {
      checkKeyAndNonce(key, nonce);
      checkSealOutput(plaintext, output);
      lib.crypto_aead_chacha20poly1305_ietf_encrypt(output, plaintext, null, null, nonce, key);
    },

    openInPlace(key, nonce, sealed) {
      checkKeyAndNonce(key, nonce);
      if (sealed.length < AEAD_TAG_BYTES) return null;
      const plaintext = sealed.subarray(0, sealed.length - AEAD_TAG_BYTES);
      try {
        // libsodium checks the tag first, then decrypts; it allows the plaintext to start where the ciphertext does.
        lib.crypto_aead_chacha20poly1305_ietf_decrypt(plaintext, null, sealed, null, nonce, key);
      } catch {
        return null;
      }
      return plaintext;
    },

    open(key, nonce, sealed) {
      checkKeyAndNonce(key, nonce);
      if (sealed.length < AEAD_TAG_BYTES) return null;
      const plaintext = Buffer.allocUnsafe(sealed.length - AEAD_TAG_BYTES);
      try {
        // libsodium verifies the tag before it writes any plaintext.
        lib.crypto_aead_chacha20poly1305_ietf_decrypt(plaintext, null, sealed, null, nonce, key);
      } catch {
        return null;
      }
      return plaintext;
    },
  };
  return backend;
}

/** The libsodium backend, or undefined where sodium-native is not installed or has no addon for this platform. */
export const sodiumAead: AeadBackend | undefined = sodium === undefined ? undefined : makeSodiumAead(sodium);
