/** ChaCha20-Poly1305 through node:crypto (OpenSSL). The hot path of every session. */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { AEAD_TAG_BYTES } from './constants.js';
import { checkSealOutput, type AeadBackend } from './aead.js';

const ALGORITHM = 'chacha20-poly1305';
const options = { authTagLength: AEAD_TAG_BYTES } as const;

export const nodeAead: AeadBackend = {
  name: 'node',

  seal(key, nonce, plaintext) {
    const sealed = Buffer.allocUnsafe(plaintext.length + AEAD_TAG_BYTES);
    nodeAead.sealInto(key, nonce, plaintext, sealed);
    return sealed;
  },

  sealInto(key, nonce, plaintext, output) {
    checkSealOutput(plaintext, output);
    const cipher = createCipheriv(ALGORITHM, key, nonce, options);
    // update() always returns a buffer of its own (node:crypto cannot write
    // into ours), so this costs one copy; the tag lands right behind it.
    cipher.update(plaintext).copy(output, 0);
    cipher.final();
    cipher.getAuthTag().copy(output, plaintext.length);
  },

  openInPlace(key, nonce, sealed) {
    return nodeAead.open(key, nonce, sealed);
  },

  open(key, nonce, sealed) {
    if (sealed.length < AEAD_TAG_BYTES) return null;
    const bodyLength = sealed.length - AEAD_TAG_BYTES;
    const decipher = createDecipheriv(ALGORITHM, key, nonce, options);
    decipher.setAuthTag(sealed.subarray(bodyLength));
    // update() decrypts before the tag is checked; the plaintext only leaves
    // this function once final() has verified it.
    const plaintext = decipher.update(sealed.subarray(0, bodyLength));
    try {
      decipher.final();
    } catch {
      // final() throws only on a tag mismatch here (key, nonce and tag length
      // were accepted above); the caller turns null into a ProtocolError.
      plaintext.fill(0);
      return null;
    }
    return plaintext;
  },
};
