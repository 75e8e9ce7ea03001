import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { checkAgainstNoble, loadLiboqsMlKem768, mlKem768, mlKem768Ready, nobleMlKem768, type MlKem768 } from '../../shared/ml-kem.js';

/**
 * C2SP/CCTV "accumulated" procedure (https://c2sp.org/CCTV/ML-KEM): one
 * SHAKE-128 stream over the empty string supplies d, z, m and a random
 * (invalid) ciphertext per test; ek, dk, ct, K and the implicit-rejection K of
 * the random ciphertext go into a second SHAKE-128. With 10 000 tests the
 * final FIPS 203 gives f959d18d3d1180121433bf0e05f11e7908cf9d03edc150b2b07cb90bef5bc1c1
 * (the value BoringSSL and LibreSSL check; noble reproduces it). The first 100
 * tests, run here, give ACCUMULATED_100.
 */
const ACCUMULATED_100 = '8d65b902f28edc683cebee2872962fd165a4d197c9e24ec74caa4470270df0b7';
const ACCUMULATED_10000 = 'f959d18d3d1180121433bf0e05f11e7908cf9d03edc150b2b07cb90bef5bc1c1';

interface Vector {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
  cipherText: Uint8Array;
  sharedSecret: Uint8Array;
  randomCipherText: Uint8Array;
  rejectionSecret: Uint8Array;
}

function accumulated(count: number, each?: (v: Vector) => void): string {
  const draw = 32 + 32 + 32 + 1088;
  const rng = createHash('shake128', { outputLength: count * draw }).update('').digest();
  assert.equal(rng.subarray(0, 16).toString('hex'), '7f9c2ba4e88f827d616045507605853e');
  const out = createHash('shake128', { outputLength: 32 });
  let offset = 0;
  const take = (n: number): Uint8Array => new Uint8Array(rng.subarray(offset, (offset += n)));
  for (let i = 0; i < count; i += 1) {
    const seed = take(64); // d ‖ z
    const { publicKey, secretKey } = ml_kem768.keygen(seed);
    const { cipherText, sharedSecret } = ml_kem768.encapsulate(publicKey, take(32));
    assert.deepEqual(ml_kem768.decapsulate(cipherText, secretKey), sharedSecret);
    const randomCipherText = take(1088);
    const rejectionSecret = ml_kem768.decapsulate(randomCipherText, secretKey);
    out.update(publicKey).update(secretKey).update(cipherText).update(sharedSecret).update(rejectionSecret);
    each?.({ publicKey, secretKey, cipherText, sharedSecret, randomCipherText, rejectionSecret });
  }
  return out.digest('hex');
}

describe('ML-KEM-768', () => {
  let liboqs: MlKem768;
  before(async () => {
    liboqs = await loadLiboqsMlKem768();
  });

  it('the WebAssembly (liboqs) implementation loads, passes its self-test and is the one in use', async () => {
    assert.deepEqual(await mlKem768Ready(), { name: 'liboqs' });
    assert.equal(mlKem768().name, 'liboqs');
  });

  it('noble matches the CCTV accumulated vectors (first 100 tests)', () => {
    assert.equal(accumulated(100), ACCUMULATED_100);
  });

  it('noble matches the CCTV accumulated vectors (10 000 tests; REFLECTOR_SLOW_TESTS=1)', { skip: process.env.REFLECTOR_SLOW_TESTS !== '1' && !process.env.CI && 'slow (~15 s): set REFLECTOR_SLOW_TESTS=1 or CI' }, () => {
    assert.equal(accumulated(10_000), ACCUMULATED_10000);
  });

  it('liboqs decapsulates the known-answer ciphertexts to the known secrets, implicit rejection included', () => {
    accumulated(100, (v) => {
      assert.deepEqual(liboqs.decapsulate(v.cipherText, v.secretKey), v.sharedSecret);
      assert.deepEqual(liboqs.decapsulate(v.randomCipherText, v.secretKey), v.rejectionSecret);
    });
  });

  it('each side decapsulates what the other encapsulated, both ways', () => {
    for (let i = 0; i < 20; i += 1) {
      const fromNoble = ml_kem768.keygen();
      const toNoble = liboqs.encapsulate(fromNoble.publicKey);
      assert.equal(toNoble.cipherText.length, 1088);
      assert.deepEqual(ml_kem768.decapsulate(toNoble.cipherText, fromNoble.secretKey), toNoble.sharedSecret);

      const fromLiboqs = liboqs.keygen();
      assert.equal(fromLiboqs.publicKey.length, 1184);
      assert.equal(fromLiboqs.secretKey.length, 2400);
      const toLiboqs = ml_kem768.encapsulate(fromLiboqs.publicKey);
      assert.deepEqual(liboqs.decapsulate(toLiboqs.cipherText, fromLiboqs.secretKey), toLiboqs.sharedSecret);
      // A liboqs secret key works in noble too: the same FIPS 203 dk layout.
      assert.deepEqual(ml_kem768.decapsulate(toLiboqs.cipherText, fromLiboqs.secretKey), toLiboqs.sharedSecret);
    }
  });

  it('accepts Buffers (the handshake passes them) as well as plain Uint8Arrays', () => {
    const pair = liboqs.keygen();
    const { cipherText, sharedSecret } = liboqs.encapsulate(Buffer.from(pair.publicKey));
    // A Buffer that is a slice of a larger pool, at an odd offset.
    const pooled = Buffer.concat([randomBytes(3), cipherText]).subarray(3);
    assert.deepEqual(liboqs.decapsulate(pooled, Buffer.from(pair.secretKey)), sharedSecret);
  });

  it('refuses wrong lengths and an encapsulation key that fails the modulus check', () => {
    const pair = liboqs.keygen();
    assert.throws(() => liboqs.encapsulate(pair.publicKey.subarray(1)));
    assert.throws(() => liboqs.decapsulate(new Uint8Array(1087), pair.secretKey));
    assert.throws(() => liboqs.decapsulate(new Uint8Array(1088), pair.secretKey.subarray(1)));
    const bad = pair.publicKey.slice();
    bad[0] = 0xff;
    bad[1] |= 0x0f; // first coefficient 0xfff ≥ 3329
    assert.throws(() => ml_kem768.encapsulate(bad));
    assert.throws(() => liboqs.encapsulate(bad));
  });

  it('the self-test accepts noble and liboqs and refuses an implementation that disagrees', () => {
    checkAgainstNoble(nobleMlKem768);
    checkAgainstNoble(liboqs);
    const broken: MlKem768 = {
      ...liboqs,
      decapsulate: (c, s) => {
        const k = liboqs.decapsulate(c, s);
        k[0] ^= 1;
        return k;
      },
    };
    assert.throws(() => checkAgainstNoble(broken), /disagrees with noble/);
  });
});
