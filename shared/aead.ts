/**
 * The AEAD the record layer seals with: ChaCha20-Poly1305 (RFC 8439), no AAD.
 * Two interchangeable implementations produce byte-identical output: node's
 * OpenSSL binding (fast, the default) and @noble/ciphers (pure JS, for
 * runtimes whose OpenSSL lacks chacha20-poly1305).
 */
import { nodeAead } from './aead-node.js';
import { nobleAead } from './aead-noble.js';

export type AeadName = 'node' | 'noble';

export interface AeadBackend {
  readonly name: AeadName;
  /** Returns ciphertext ‖ 16-byte tag. */
  seal(key: Buffer, nonce: Buffer, plaintext: Buffer): Buffer;
  /** Returns the plaintext, or null if authentication fails or `sealed` is shorter than the tag. */
  open(key: Buffer, nonce: Buffer, sealed: Buffer): Buffer | null;
}

export function aeadBackend(name: AeadName): AeadBackend {
  return name === 'node' ? nodeAead : nobleAead;
}
