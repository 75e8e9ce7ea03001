/**
 * The optional `sodium-native` addon (libsodium, prebuilt for the common
 * platforms), loaded once. Undefined where it is not installed or has no
 * addon for this platform; every user has a node:crypto fallback.
 */
import { createRequire } from 'node:module';

/** The libsodium calls Reflector makes; sodium-native throws where libsodium returns -1, except where noted. */
export interface SodiumNative {
  crypto_aead_chacha20poly1305_ietf_encrypt(c: Buffer, m: Buffer, ad: null, nsec: null, npub: Buffer, k: Buffer): number;
  crypto_aead_chacha20poly1305_ietf_decrypt(m: Buffer, nsec: null, c: Buffer, ad: null, npub: Buffer, k: Buffer): number;
  crypto_sign_seed_keypair(pk: Buffer, sk: Buffer, seed: Buffer): void;
  crypto_sign_detached(sig: Buffer, m: Buffer, sk: Buffer): void;
  /** Returns false for a bad signature instead of throwing. */
  crypto_sign_verify_detached(sig: Buffer, m: Buffer, pk: Buffer): boolean;
  crypto_scalarmult_base(q: Buffer, n: Buffer): void;
  /** Throws for a low-order point (an all-zero result). */
  crypto_scalarmult(q: Buffer, n: Buffer, p: Buffer): void;
  randombytes_buf(buffer: Buffer): void;
}

function loadSodium(): SodiumNative | undefined {
  try {
    return createRequire(import.meta.url)('sodium-native') as SodiumNative;
  } catch {
    return undefined;
  }
}

export const sodiumNative: SodiumNative | undefined = loadSodium();
