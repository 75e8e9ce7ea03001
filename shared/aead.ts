/**
 * The AEAD the record layer seals with: ChaCha20-Poly1305 (RFC 8439), no AAD.
 * Three interchangeable implementations produce byte-identical output:
 * libsodium through the optional sodium-native addon (seals into our own
 * buffers: the fastest, and no garbage per record), node's OpenSSL binding,
 * and @noble/ciphers (pure JS, for runtimes whose OpenSSL lacks
 * chacha20-poly1305). Each side picks its own; the wire does not change.
 */
import { AEAD_TAG_BYTES } from './constants.js';
import { ConfigError } from './errors.js';
import { nodeAead } from './aead-node.js';
import { nobleAead } from './aead-noble.js';
import { sodiumAead } from './aead-sodium.js';

/** 'auto' is sodium where the addon loads, node otherwise. */
export type AeadName = 'auto' | 'sodium' | 'node' | 'noble';
export type AeadBackendName = Exclude<AeadName, 'auto'>;

export interface AeadBackend {
  readonly name: AeadBackendName;
  /** Returns ciphertext ‖ 16-byte tag in a new buffer. */
  seal(key: Buffer, nonce: Buffer, plaintext: Buffer): Buffer;
  /**
   * Writes ciphertext ‖ 16-byte tag into `output`, which must be exactly
   * plaintext.length + 16 bytes and must not overlap `plaintext`. The hot
   * path seals into reused buffers this way.
   */
  sealInto(key: Buffer, nonce: Buffer, plaintext: Buffer, output: Buffer): void;
  /** Returns the plaintext, or null if authentication fails or `sealed` is shorter than the tag. */
  open(key: Buffer, nonce: Buffer, sealed: Buffer): Buffer | null;
  /**
   * Like open(), but may decrypt into `sealed`'s own memory and return a view
   * of it (sodium does; the others allocate as open() does). The caller must
   * own `sealed` and read it no more. On failure `sealed` holds no plaintext
   * (unchanged, or zeroed by libsodium).
   */
  openInPlace(key: Buffer, nonce: Buffer, sealed: Buffer): Buffer | null;
}

/** A wrong output size would send a record the peer cannot open: fail here instead. */
export function checkSealOutput(plaintext: Buffer, output: Buffer): void {
  if (output.length !== plaintext.length + AEAD_TAG_BYTES) {
    throw new RangeError(`sealed output must be ${plaintext.length + AEAD_TAG_BYTES} bytes, got ${output.length}`);
  }
}

/** Whether `aead: sodium` can work here (sodium-native is installed and its addon loads). */
export const sodiumAvailable = sodiumAead !== undefined;

/** Throws ConfigError for 'sodium' where the addon is missing. */
export function aeadBackend(name: AeadName): AeadBackend {
  switch (name) {
    case 'auto':
      return sodiumAead ?? nodeAead;
    case 'sodium':
      if (sodiumAead === undefined) {
        throw new ConfigError('aead: "sodium" needs the optional package sodium-native, which is not installed or has no addon for this platform; use "auto" or "node"');
      }
      return sodiumAead;
    case 'node':
      return nodeAead;
    case 'noble':
      return nobleAead;
  }
}
