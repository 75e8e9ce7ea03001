/**
 * Ed25519 signatures and X25519 key agreement for the handshake, on libsodium
 * where the optional addon loads and on node:crypto otherwise. Same bytes
 * either way: Ed25519 signing is deterministic (RFC 8032) and X25519 is a
 * function (RFC 7748). libsodium is what makes a handshake cheap: here it
 * verifies in half the time OpenSSL 3.0 takes, signs and makes X25519 keys in
 * under half, and needs no KeyObject per ephemeral key.
 *
 * Verdicts can differ only for crafted input, and libsodium's are the safer:
 * it refuses small-order keys and non-canonical encodings, where OpenSSL 3.0
 * accepts, for instance, any message signed (R = identity, S = 0) under the
 * identity point as a public key. keys.ts refuses small-order keys anyway.
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { ED25519_SIGNATURE_BYTES } from './constants.js';
import { sodiumNative, type SodiumNative } from './sodium.js';

const CURVE25519_KEY_BYTES = 32;

// Encodings of the Ed25519 points of order 1, 2, 4 and 8, canonical or not (y = p - 1, p, p + 1), with the
// sign bit masked off: the list libsodium checks. A signature "verifies" under such a key without its secret.
const SMALL_ORDER_POINTS = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
].map((hex) => Buffer.from(hex, 'hex'));

/** Whether 32 bytes encode a small-order Ed25519 point: never a real key, and OpenSSL accepts forgeries under it. */
export function isSmallOrderEd25519(x: Uint8Array): boolean {
  if (x.length !== CURVE25519_KEY_BYTES) return false;
  const unsigned = Buffer.from(x);
  unsigned[31] = (unsigned[31] as number) & 0x7f;
  return SMALL_ORDER_POINTS.some((point) => point.equals(unsigned));
}

export interface X25519KeyPair {
  readonly publicKey: Buffer;
  readonly secretKey: Buffer;
}

export interface Curve25519Backend {
  readonly name: 'sodium' | 'node';
  /** A fresh key pair, or the pair of a given 32-byte secret key (known-answer tests). */
  x25519KeyPair(secretKey?: Uint8Array): X25519KeyPair;
  /** The shared secret; undefined when the peer's key is a low-order point (an all-zero result). */
  x25519(secretKey: Buffer, peerPublicKey: Buffer): Buffer | undefined;
  ed25519Sign(privateKey: KeyObject, message: Buffer): Buffer;
  /** Whether the signature verifies; false for a key that is not Ed25519 or a signature of the wrong length. */
  ed25519Verify(publicKey: KeyObject, message: Buffer, signature: Buffer): boolean;
}

// DER prefixes of an X25519 PKCS#8 private key and SubjectPublicKeyInfo (RFC 8410), followed by the raw 32 bytes.
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

const x25519PrivateKeyObject = (secretKey: Uint8Array): KeyObject =>
  createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, secretKey]), format: 'der', type: 'pkcs8' });
const x25519PublicKeyObject = (publicKey: Buffer): KeyObject =>
  createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });

function checkLength(name: string, value: Uint8Array, bytes: number): void {
  if (value.length !== bytes) throw new RangeError(`${name} must be ${bytes} bytes, got ${value.length}`);
}

function nodeVerify(publicKey: KeyObject, message: Buffer, signature: Buffer): boolean {
  try {
    return verify(null, message, publicKey, signature);
  } catch {
    return false;
  }
}

const nodeCurve: Curve25519Backend = {
  name: 'node',

  x25519KeyPair(secretKey) {
    if (secretKey === undefined) {
      // DER output skips building a KeyObject for each half.
      const pair = generateKeyPairSync('x25519', {
        privateKeyEncoding: { format: 'der', type: 'pkcs8' },
        publicKeyEncoding: { format: 'der', type: 'spki' },
      });
      return {
        secretKey: Buffer.from(pair.privateKey.subarray(X25519_PKCS8_PREFIX.length)),
        publicKey: Buffer.from(pair.publicKey.subarray(X25519_SPKI_PREFIX.length)),
      };
    }
    checkLength('X25519 secret key', secretKey, CURVE25519_KEY_BYTES);
    const publicDer = createPublicKey(x25519PrivateKeyObject(secretKey)).export({ format: 'der', type: 'spki' });
    return { secretKey: Buffer.from(secretKey), publicKey: Buffer.from(publicDer.subarray(X25519_SPKI_PREFIX.length)) };
  },

  x25519(secretKey, peerPublicKey) {
    checkLength('X25519 secret key', secretKey, CURVE25519_KEY_BYTES);
    checkLength('X25519 public key', peerPublicKey, CURVE25519_KEY_BYTES);
    try {
      return diffieHellman({ privateKey: x25519PrivateKeyObject(secretKey), publicKey: x25519PublicKeyObject(peerPublicKey) });
    } catch {
      return undefined;
    }
  },

  ed25519Sign: (privateKey, message) => sign(null, message, privateKey),
  ed25519Verify: nodeVerify,
};

function makeSodiumCurve(lib: SodiumNative): Curve25519Backend {
  // Raw key bytes per KeyObject: identities and authorized client keys live as long as the config.
  const signingKeys = new WeakMap<KeyObject, Buffer>();
  const verifyingKeys = new WeakMap<KeyObject, Buffer>();

  const signingKey = (privateKey: KeyObject): Buffer => {
    let secretKey = signingKeys.get(privateKey);
    if (secretKey === undefined) {
      const { d } = privateKey.export({ format: 'jwk' });
      if (privateKey.asymmetricKeyType !== 'ed25519' || typeof d !== 'string') throw new TypeError('an Ed25519 private key is needed to sign');
      const seed = Buffer.from(d, 'base64url');
      secretKey = Buffer.alloc(64);
      lib.crypto_sign_seed_keypair(Buffer.alloc(CURVE25519_KEY_BYTES), secretKey, seed);
      seed.fill(0);
      signingKeys.set(privateKey, secretKey);
    }
    return secretKey;
  };

  const verifyingKey = (publicKey: KeyObject): Buffer | undefined => {
    let raw = verifyingKeys.get(publicKey);
    if (raw === undefined) {
      if (publicKey.type !== 'public' || publicKey.asymmetricKeyType !== 'ed25519') return undefined;
      const { x } = publicKey.export({ format: 'jwk' });
      if (typeof x !== 'string') return undefined;
      raw = Buffer.from(x, 'base64url');
      verifyingKeys.set(publicKey, raw);
    }
    return raw;
  };

  return {
    name: 'sodium',

    x25519KeyPair(secretKey) {
      const raw = Buffer.alloc(CURVE25519_KEY_BYTES);
      if (secretKey === undefined) lib.randombytes_buf(raw);
      else {
        checkLength('X25519 secret key', secretKey, CURVE25519_KEY_BYTES);
        raw.set(secretKey);
      }
      const publicKey = Buffer.alloc(CURVE25519_KEY_BYTES);
      lib.crypto_scalarmult_base(publicKey, raw);
      return { secretKey: raw, publicKey };
    },

    x25519(secretKey, peerPublicKey) {
      checkLength('X25519 secret key', secretKey, CURVE25519_KEY_BYTES);
      checkLength('X25519 public key', peerPublicKey, CURVE25519_KEY_BYTES);
      const shared = Buffer.alloc(CURVE25519_KEY_BYTES);
      try {
        lib.crypto_scalarmult(shared, secretKey, peerPublicKey);
      } catch {
        return undefined;
      }
      return shared;
    },

    ed25519Sign(privateKey, message) {
      const signature = Buffer.alloc(ED25519_SIGNATURE_BYTES);
      lib.crypto_sign_detached(signature, message, signingKey(privateKey));
      return signature;
    },

    ed25519Verify(publicKey, message, signature) {
      const raw = verifyingKey(publicKey);
      return raw !== undefined && signature.length === ED25519_SIGNATURE_BYTES && lib.crypto_sign_verify_detached(signature, message, raw);
    },
  };
}

/** @internal every backend that works here, for tests that compare them */
export const curve25519Backends: readonly Curve25519Backend[] =
  sodiumNative === undefined ? [nodeCurve] : [makeSodiumCurve(sodiumNative), nodeCurve];

/** The backend the handshake uses: libsodium where it loads. */
export const curve25519: Curve25519Backend = curve25519Backends[0] as Curve25519Backend;
