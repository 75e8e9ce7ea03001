import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { describe, it } from 'node:test';
import { curve25519, curve25519Backends, isSmallOrderEd25519 } from '../../shared/curve25519.js';
import { sodiumNative } from '../../shared/sodium.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

// Same rule as the AEAD suite: CI installs sodium-native, so there its absence is a failure.
if (sodiumNative === undefined) {
  if (process.env.CI) throw new Error('sodium-native is not installed or its addon does not load; CI must test the sodium curve backend');
  process.stderr.write('SKIPPING the sodium Curve25519 backend: the optional package sodium-native is not installed\n');
}

/** RFC 8032 §7.1 TEST 2 (one-byte message). */
const RFC8032 = {
  seed: hex('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb'),
  publicKey: hex('3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c'),
  message: hex('72'),
  signature: hex(
    '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  ),
};

/** RFC 7748 §6.1. */
const RFC7748 = {
  alicePrivate: hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'),
  alicePublic: hex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a'),
  bobPrivate: hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb'),
  bobPublic: hex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f'),
  shared: hex('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742'),
};

const ed25519PrivateKey = (seed: Buffer, publicKey: Buffer) =>
  createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: seed.toString('base64url'), x: publicKey.toString('base64url') }, format: 'jwk' });
const ed25519PublicKey = (x: Buffer) => createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: x.toString('base64url') }, format: 'jwk' });

describe('curve25519', () => {
  it('uses libsodium when the addon loads', () => {
    assert.equal(curve25519.name, sodiumNative === undefined ? 'node' : 'sodium');
  });

  for (const backend of curve25519Backends) {
    describe(`${backend.name} backend`, () => {
      it('signs and verifies the RFC 8032 vector', () => {
        const signature = backend.ed25519Sign(ed25519PrivateKey(RFC8032.seed, RFC8032.publicKey), RFC8032.message);
        assert.deepEqual(signature, RFC8032.signature);
        assert.equal(backend.ed25519Verify(ed25519PublicKey(RFC8032.publicKey), RFC8032.message, RFC8032.signature), true);
      });

      it('signs exactly as node:crypto does, and refuses a changed message, signature or key', () => {
        const { privateKey, publicKey } = generateKeyPairSync('ed25519');
        const other = generateKeyPairSync('ed25519').publicKey;
        for (let i = 0; i < 20; i += 1) {
          const message = randomBytes(i * 13);
          const signature = backend.ed25519Sign(privateKey, message);
          assert.deepEqual(signature, sign(null, message, privateKey));
          assert.equal(backend.ed25519Verify(publicKey, message, signature), true);
          assert.equal(backend.ed25519Verify(other, message, signature), false);
          const flipped = Buffer.from(signature);
          flipped[i % 64] = (flipped[i % 64] as number) ^ 0x01;
          assert.equal(backend.ed25519Verify(publicKey, message, flipped), false);
          assert.equal(backend.ed25519Verify(publicKey, Buffer.concat([message, Buffer.of(0)]), signature), false);
        }
      });

      it('answers false, without throwing, for a short signature or a key of another type', () => {
        const { privateKey, publicKey } = generateKeyPairSync('ed25519');
        const signature = backend.ed25519Sign(privateKey, Buffer.from('m'));
        assert.equal(backend.ed25519Verify(publicKey, Buffer.from('m'), signature.subarray(0, 63)), false);
        assert.equal(backend.ed25519Verify(generateKeyPairSync('x25519').publicKey, Buffer.from('m'), signature), false);
      });

      it('agrees on the RFC 7748 shared secret from both sides', () => {
        const alice = backend.x25519KeyPair(RFC7748.alicePrivate);
        const bob = backend.x25519KeyPair(RFC7748.bobPrivate);
        assert.deepEqual(alice.publicKey, RFC7748.alicePublic);
        assert.deepEqual(bob.publicKey, RFC7748.bobPublic);
        assert.deepEqual(backend.x25519(alice.secretKey, bob.publicKey), RFC7748.shared);
        assert.deepEqual(backend.x25519(bob.secretKey, alice.publicKey), RFC7748.shared);
      });

      it('makes fresh key pairs whose shared secrets match node:crypto', () => {
        const ours = backend.x25519KeyPair();
        const theirs = generateKeyPairSync('x25519');
        const theirPublic = Buffer.from(theirs.publicKey.export({ format: 'jwk' }).x as string, 'base64url');
        const expected = diffieHellman({
          privateKey: theirs.privateKey,
          publicKey: createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: ours.publicKey.toString('base64url') }, format: 'jwk' }),
        });
        assert.deepEqual(backend.x25519(ours.secretKey, theirPublic), expected);
        assert.notDeepEqual(backend.x25519KeyPair().secretKey, ours.secretKey);
      });

      it('refuses a low-order peer key (an all-zero shared secret) with undefined', () => {
        const ours = backend.x25519KeyPair();
        assert.equal(backend.x25519(ours.secretKey, Buffer.alloc(32)), undefined);
        assert.equal(backend.x25519(ours.secretKey, hex('0100000000000000000000000000000000000000000000000000000000000000')), undefined);
      });
    });
  }

  it('knows the small-order Ed25519 points, with either sign bit, and nothing else', () => {
    const identity = hex('0100000000000000000000000000000000000000000000000000000000000000');
    assert.equal(isSmallOrderEd25519(identity), true);
    const negated = Buffer.from(identity);
    negated[31] = 0x80;
    assert.equal(isSmallOrderEd25519(negated), true);
    assert.equal(isSmallOrderEd25519(hex('ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f')), true);
    assert.equal(isSmallOrderEd25519(RFC8032.publicKey), false);
    assert.equal(isSmallOrderEd25519(Buffer.alloc(31)), false);
  });

  it('refuses a forgery OpenSSL would accept under the identity point (why keys.ts refuses such keys)', () => {
    const identity = ed25519PublicKey(hex('0100000000000000000000000000000000000000000000000000000000000000'));
    const forged = Buffer.alloc(64);
    forged[0] = 1; // R = identity, S = 0
    const sodiumBackend = curve25519Backends.find((backend) => backend.name === 'sodium');
    if (sodiumBackend !== undefined) assert.equal(sodiumBackend.ed25519Verify(identity, Buffer.from('any message'), forged), false);
  });
});
