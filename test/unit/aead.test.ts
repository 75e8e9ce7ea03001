import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes, randomInt } from 'node:crypto';
import { describe, it } from 'node:test';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { aeadBackend, sodiumAvailable, type AeadBackend } from '../../shared/aead.js';
import { ConfigError } from '../../shared/errors.js';
import { availableBackends } from '../helpers/aead-backends.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const backends: AeadBackend[] = availableBackends();

/**
 * RFC 8439 §2.8.2. It (like §A.5, the RFC's only other AEAD vector) uses AAD
 * and our backends take none, so it is run against the two primitives the
 * backends wrap; the Wycheproof vectors below cover the backends themselves.
 */
const rfc8439 = {
  key: hex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f'),
  nonce: hex('070000004041424344454647'),
  aad: hex('50515253c0c1c2c3c4c5c6c7'),
  plaintext: Buffer.from(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    'ascii',
  ),
  sealed: hex(
    'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6' +
      '3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36' +
      '92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc' +
      '3ff4def08e4b7a9de576d26586cec64b6116' +
      '1ae10b594f09e26a7e902ecbd0600691',
  ),
};

/** Wycheproof chacha20_poly1305_test.json cases with empty AAD, as our backends use. */
const wycheproofNoAad = [
  {
    tcId: 2,
    key: hex('80ba3192c803ce965ea371d5ff073cf0f43b6a2ab576b208426e11409c09b9b0'),
    nonce: hex('4da5bf8dfd5852c1ea12379d'),
    plaintext: hex(''),
    sealed: hex('76acb342cf3166a5b63c0c0ea1383c8d'),
  },
  {
    tcId: 34,
    key: hex('59d4eafb4de0cfc7d3db99a8f54b15d7b39f0acc8da69763b019c1699f87674a'),
    nonce: hex('2fcb1b38a99e71b84740ad9b'),
    plaintext: hex('549b365af913f3b081131ccb6b825588'),
    sealed: hex('e9110e9f56ab3ca483500ceabab67a13836ccabf15a6a22a51c1071cfa68fa0c'),
  },
];

function rawNodeSeal(key: Buffer, nonce: Buffer, plaintext: Buffer, aad?: Buffer): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  if (aad) cipher.setAAD(aad, { plaintextLength: plaintext.length });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

function rawNobleSeal(key: Buffer, nonce: Buffer, plaintext: Buffer, aad?: Buffer): Buffer {
  return Buffer.from(chacha20poly1305(key, nonce, aad).encrypt(plaintext));
}

function flipBit(buffer: Buffer, bit: number): Buffer {
  const copy = Buffer.from(buffer);
  copy[bit >> 3]! ^= 1 << (bit & 7);
  return copy;
}

describe('ChaCha20-Poly1305 primitives under the backends', () => {
  it('node:crypto reproduces the RFC 8439 §2.8.2 vector', () => {
    const { key, nonce, aad, plaintext, sealed } = rfc8439;
    assert.deepEqual(rawNodeSeal(key, nonce, plaintext, aad), sealed);
    const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
    decipher.setAAD(aad, { plaintextLength: plaintext.length });
    decipher.setAuthTag(sealed.subarray(-16));
    assert.deepEqual(Buffer.concat([decipher.update(sealed.subarray(0, -16)), decipher.final()]), plaintext);
  });

  it('@noble/ciphers reproduces the RFC 8439 §2.8.2 vector', () => {
    const { key, nonce, aad, plaintext, sealed } = rfc8439;
    assert.deepEqual(rawNobleSeal(key, nonce, plaintext, aad), sealed);
    assert.deepEqual(Buffer.from(chacha20poly1305(key, nonce, aad).decrypt(sealed)), plaintext);
  });
});

for (const backend of backends) {
  describe(`AeadBackend '${backend.name}'`, () => {
    it('is the backend aeadBackend() was asked for', () => {
      assert.equal(aeadBackend(backend.name), backend);
    });

    for (const vector of wycheproofNoAad) {
      it(`seals and opens Wycheproof tcId ${vector.tcId} (empty AAD)`, () => {
        assert.deepEqual(backend.seal(vector.key, vector.nonce, vector.plaintext), vector.sealed);
        assert.deepEqual(backend.open(vector.key, vector.nonce, vector.sealed), vector.plaintext);
      });
    }

    it('returns ciphertext ‖ 16-byte tag and opens it again, for lengths around block edges', () => {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      for (const length of [0, 1, 15, 16, 17, 63, 64, 65, 1000, 65536]) {
        const plaintext = randomBytes(length);
        const sealed = backend.seal(key, nonce, plaintext);
        assert.equal(sealed.length, length + 16);
        assert.deepEqual(backend.open(key, nonce, sealed), plaintext);
      }
    });

    it('returns null when any single bit of ciphertext or tag is flipped', () => {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      const sealed = backend.seal(key, nonce, randomBytes(40));
      for (let bit = 0; bit < sealed.length * 8; bit++) {
        assert.equal(backend.open(key, nonce, flipBit(sealed, bit)), null, `bit ${bit}`);
      }
    });

    it('returns null under the wrong key or nonce', () => {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      const sealed = backend.seal(key, nonce, Buffer.from('hello'));
      assert.equal(backend.open(flipBit(key, 0), nonce, sealed), null);
      assert.equal(backend.open(key, flipBit(nonce, 95), sealed), null);
    });

    it('returns null for input shorter than the tag', () => {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      for (let length = 0; length < 16; length++) {
        assert.equal(backend.open(key, nonce, randomBytes(length)), null, `length ${length}`);
      }
    });

    it('does not modify its inputs', () => {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      const plaintext = randomBytes(100);
      const copies = [Buffer.from(key), Buffer.from(nonce), Buffer.from(plaintext)];
      const sealed = backend.seal(key, nonce, plaintext);
      const sealedCopy = Buffer.from(sealed);
      backend.open(key, nonce, sealed);
      backend.open(key, nonce, flipBit(sealed, 0));
      assert.deepEqual([key, nonce, plaintext], copies);
      assert.deepEqual(sealed, sealedCopy);
    });
  });
}

describe('all backends', () => {
  it('are byte-identical to each other and to the raw no-AAD primitives on 1,000 random inputs up to 70 KiB, through seal() and sealInto()', () => {
    const [node, ...others] = backends as [AeadBackend, ...AeadBackend[]];
    for (let i = 0; i < 1000; i++) {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      // A quarter short (block and tag edges), the rest anywhere up to 70 KiB; 0 always included.
      const length = i === 0 ? 0 : i % 4 === 0 ? randomInt(0, 130) : randomInt(0, 70 * 1024 + 1);
      const plaintext = randomBytes(length);
      const context = `key=${key.toString('hex')} nonce=${nonce.toString('hex')} length=${length}`;
      const sealed = node.seal(key, nonce, plaintext);
      assert.ok(rawNodeSeal(key, nonce, plaintext).equals(sealed), `raw node:crypto differs: ${context}`);
      assert.ok(rawNobleSeal(key, nonce, plaintext).equals(sealed), `raw noble differs: ${context}`);
      for (const backend of [node, ...others]) {
        assert.ok(backend.seal(key, nonce, plaintext).equals(sealed), `${backend.name} seal() differs: ${context}`);
        // Into a slice of a larger, dirty buffer, as the record pool hands them out.
        const pooled = Buffer.alloc(length + 16 + 64, 0xa5).subarray(32, 32 + length + 16);
        backend.sealInto(key, nonce, plaintext, pooled);
        assert.ok(pooled.equals(sealed), `${backend.name} sealInto() differs: ${context}`);
        assert.ok(backend.open(key, nonce, sealed)?.equals(plaintext), `${backend.name} cannot open: ${context}`);
      }
    }
  });

  it('openInPlace() gives the same plaintext as open(), and on a bad tag returns null and leaves no plaintext in the record', () => {
    for (const backend of backends) {
      for (const length of [0, 1, 63, 64, 65, 1000, 64 * 1024]) {
        const key = randomBytes(32);
        const nonce = randomBytes(12);
        const plaintext = randomBytes(length);
        const sealed = backend.seal(key, nonce, plaintext);
        // Inside a larger buffer, as ws hands over a record read with its neighbours.
        const prefix = randomBytes(7);
        const suffix = randomBytes(9);
        const around = Buffer.concat([prefix, sealed, suffix]);
        const record = around.subarray(7, 7 + sealed.length);
        const opened = backend.openInPlace(key, nonce, record);
        assert.ok(opened?.equals(plaintext), `${backend.name} length ${length}`);
        assert.ok(around.subarray(0, 7).equals(prefix) && around.subarray(7 + sealed.length).equals(suffix), `${backend.name} wrote outside the record`);
        const tampered = Buffer.from(sealed);
        tampered[Math.max(0, tampered.length - 1)]! ^= 1;
        const before = Buffer.from(tampered);
        assert.equal(backend.openInPlace(key, nonce, tampered), null, `${backend.name} accepts a bad tag`);
        // libsodium zeroes its output on failure (here the record itself); never is any plaintext left there.
        const zeroedBody = tampered.subarray(0, length).every((byte) => byte === 0) && tampered.subarray(length).equals(before.subarray(length));
        assert.ok(tampered.equals(before) || zeroedBody, `${backend.name} left other bytes in a record that failed to open`);
      }
    }
  });

  it('sealInto() refuses an output of the wrong size instead of sending a record nobody can open', () => {
    for (const backend of backends) {
      const plaintext = randomBytes(100);
      for (const size of [0, 115, 117, 200]) {
        assert.throws(() => backend.sealInto(randomBytes(32), randomBytes(12), plaintext, Buffer.alloc(size)), RangeError, `${backend.name} size ${size}`);
      }
    }
  });
});

describe('choosing a backend', () => {
  it('auto is sodium where the addon loads and node otherwise', () => {
    assert.equal(aeadBackend('auto').name, sodiumAvailable ? 'sodium' : 'node');
  });

  it('an explicit sodium is libsodium where the addon loads, and otherwise a configuration error that says what to install', () => {
    if (sodiumAvailable) assert.equal(aeadBackend('sodium').name, 'sodium');
    else assert.throws(() => aeadBackend('sodium'), (e: unknown) => e instanceof ConfigError && /sodium-native/.test(e.message));
  });
});
