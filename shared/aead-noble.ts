/** ChaCha20-Poly1305 through @noble/ciphers: pure JS, for OpenSSL builds without it. */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { AEAD_TAG_BYTES } from './constants.js';
import { checkSealOutput, type AeadBackend } from './aead.js';

/** The message noble uses for a tag mismatch; it has no error class or code to test instead. */
const NOBLE_TAG_MISMATCH = 'invalid tag';

export const nobleAead: AeadBackend = {
  name: 'noble',

  seal(key, nonce, plaintext) {
    const sealed = Buffer.allocUnsafe(plaintext.length + AEAD_TAG_BYTES);
    nobleAead.sealInto(key, nonce, plaintext, sealed);
    return sealed;
  },

  sealInto(key, nonce, plaintext, output) {
    checkSealOutput(plaintext, output);
    // noble writes into a caller-supplied buffer: no copy.
    chacha20poly1305(key, nonce).encrypt(plaintext, output);
  },

  openInPlace(key, nonce, sealed) {
    return nobleAead.open(key, nonce, sealed);
  },

  open(key, nonce, sealed) {
    if (sealed.length < AEAD_TAG_BYTES) return null;
    const plaintext = Buffer.allocUnsafe(sealed.length - AEAD_TAG_BYTES);
    try {
      chacha20poly1305(key, nonce).decrypt(sealed, plaintext);
    } catch (error) {
      // Only a failed tag check means "not authentic"; anything else (bad key
      // or nonce length) is a bug in the caller and must surface.
      if (error instanceof Error && error.message === NOBLE_TAG_MISMATCH) return null;
      throw error;
    }
    return plaintext;
  },
};
