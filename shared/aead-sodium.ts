/**
 * ChaCha20-Poly1305 through libsodium (the optional `sodium-native` addon,
 * prebuilt for the common platforms). Same bytes as the other backends; what
 * it adds is that it seals and opens into buffers we own. node:crypto returns
 * a fresh buffer from every update(), and those buffers, allocated outside the
 * JavaScript heap, drive V8 into back-to-back full collections during bulk
 * transfer (see record-buffers.ts).
 */
import { AEAD_KEY_BYTES, AEAD_NONCE_BYTES, AEAD_TAG_BYTES } from './constants.js';
import { checkSealOutput, type AeadBackend } from './aead.js';
import { sodiumNative as sodium, type SodiumNative } from './sodium.js';

/** libsodium throws a generic Error for bad sizes too: rule those out first, so a throw means a bad tag. */
function checkKeyAndNonce(key: Buffer, nonce: Buffer): void {
  if (key.length !== AEAD_KEY_BYTES || nonce.length !== AEAD_NONCE_BYTES) {
    throw new RangeError(`key must be ${AEAD_KEY_BYTES} and nonce ${AEAD_NONCE_BYTES} bytes, got ${key.length} and ${nonce.length}`);
  }
}

function makeSodiumAead(lib: SodiumNative): AeadBackend {
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
