import assert from 'node:assert/strict';
import { createHash, createHmac, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { CloseCode, Label } from '../../shared/constants.js';
import { ErrorCode, ReflectorError } from '../../shared/errors.js';
import { deriveSessionKeys, transcriptHash, type SessionKeys } from '../../shared/key-schedule.js';

/** RFC 5869 HKDF written out with HMAC, to pin salt/info/IKM to the right places. */
function hkdfReference(ikm: Buffer, salt: Buffer, info: string, length: number): Buffer {
  const prk = createHmac('sha256', salt).update(ikm).digest();
  const blocks: Buffer[] = [];
  let previous = Buffer.alloc(0);
  for (let i = 1; Buffer.concat(blocks).length < length; i++) {
    previous = createHmac('sha256', prk).update(previous).update(info, 'utf8').update(Buffer.from([i])).digest();
    blocks.push(previous);
  }
  return Buffer.concat(blocks).subarray(0, length);
}

/** One X25519 + ML-KEM exchange as the two sides see it. */
function exchange(): { client: [Buffer, Uint8Array]; server: [Buffer, Uint8Array] } {
  const server = generateKeyPairSync('x25519');
  const client = generateKeyPairSync('x25519');
  const kem = ml_kem768.keygen();
  const { cipherText, sharedSecret } = ml_kem768.encapsulate(kem.publicKey);
  return {
    client: [diffieHellman({ privateKey: client.privateKey, publicKey: server.publicKey }), sharedSecret],
    server: [diffieHellman({ privateKey: server.privateKey, publicKey: client.publicKey }), ml_kem768.decapsulate(cipherText, kem.secretKey)],
  };
}

const hello = '{"type":"hello","version":1}';
const auth = '{"type":"auth","token":"a.b.c"}';
const secretParts = (keys: SessionKeys): Buffer[] => [keys.c2s, keys.s2c, keys.resumption, keys.sessionId];

function assertAllDiffer(a: SessionKeys, b: SessionKeys): void {
  secretParts(a).forEach((part, i) => assert.notDeepEqual(part, secretParts(b)[i]));
}

describe('deriveSessionKeys', () => {
  it('gives client and server the same keys from one exchange', () => {
    const { client, server } = exchange();
    const clientKeys = deriveSessionKeys(...client, hello, auth);
    const serverKeys = deriveSessionKeys(...server, hello, auth);
    assert.deepEqual(clientKeys, serverKeys);
  });

  it('derives 32-byte directional keys, a 32-byte resumption secret and a 16-byte session id, all distinct', () => {
    const keys = deriveSessionKeys(randomBytes(32), randomBytes(32), hello, auth);
    assert.equal(keys.c2s.length, 32);
    assert.equal(keys.s2c.length, 32);
    assert.equal(keys.resumption.length, 32);
    assert.equal(keys.sessionId.length, 16);
    assert.equal(new Set(secretParts(keys).map((b) => b.toString('hex'))).size, 4);
  });

  it('uses T = SHA-256(hello ‖ auth) as the HKDF salt and the labels of constants.ts as info', () => {
    const x = randomBytes(32);
    const m = randomBytes(32);
    const keys = deriveSessionKeys(x, m, hello, auth);
    const t = createHash('sha256').update(hello + auth, 'utf8').digest();
    assert.deepEqual(keys.transcript, t);
    assert.deepEqual(transcriptHash(hello, auth), t);
    const ikm = Buffer.concat([x, m]);
    assert.deepEqual(keys.c2s, hkdfReference(ikm, t, Label.C2S, 32));
    assert.deepEqual(keys.s2c, hkdfReference(ikm, t, Label.S2C, 32));
    assert.deepEqual(keys.resumption, hkdfReference(ikm, t, Label.RESUME, 32));
    assert.deepEqual(keys.sessionId, hkdfReference(ikm, t, Label.SESSION_ID, 16));
  });

  it("matches the key-schedule vector of docs/protocol.md appendix B", () => {
    const keys = deriveSessionKeys(Buffer.alloc(32, 0x11), Buffer.alloc(32, 0x22), '{"type":"hello"}', '{"type":"auth"}');
    assert.equal(keys.transcript.toString('hex'), 'beb07479213fc2e623cdcbc8952c50a18c95349e72058acac7de43c4a4d07e43');
    assert.equal(keys.c2s.toString('hex'), '8fa82f7f0f12de69c9e666238eff894886b278e243c8eec5c8b5f6c9bc1bb385');
    assert.equal(keys.s2c.toString('hex'), '129f600d9aec68945799d69d2e460b2199c899aebab0f20c9f825ce84eb9a299');
    assert.equal(keys.resumption.toString('hex'), '56172369a744de6644f12a2e80677f30e0bfa121b20a35f1075fdf923c82b33d');
    assert.equal(keys.sessionId.toString('hex'), '61500ed5bd9ba9c7dca1d24fe9fa8697');
    assert.equal(keys.sessionId.toString('base64url'), 'YVAO1b2bqcfcodJP6fqGlw');
  });

  it("gives exactly node:crypto hkdfSync's bytes for every label", () => {
    for (let i = 0; i < 50; i += 1) {
      const x = randomBytes(32);
      const m = randomBytes(32);
      const helloText = `{"type":"hello","n":${i},"é":"${randomBytes(i).toString('base64')}"}`;
      const keys = deriveSessionKeys(x, m, helloText, auth);
      const ikm = Buffer.concat([x, m]);
      const hkdf = (label: string, length: number): Buffer => Buffer.from(hkdfSync('sha256', ikm, keys.transcript, label, length));
      assert.deepEqual(keys.c2s, hkdf(Label.C2S, 32));
      assert.deepEqual(keys.s2c, hkdf(Label.S2C, 32));
      assert.deepEqual(keys.resumption, hkdf(Label.RESUME, 32));
      assert.deepEqual(keys.sessionId, hkdf(Label.SESSION_ID, 16));
    }
  });

  it('gives different keys when only the X25519 half differs', () => {
    const mlkem = randomBytes(32);
    assertAllDiffer(deriveSessionKeys(randomBytes(32), mlkem, hello, auth), deriveSessionKeys(randomBytes(32), mlkem, hello, auth));
  });

  it('gives different keys when only the ML-KEM half differs', () => {
    const x25519 = randomBytes(32);
    assertAllDiffer(deriveSessionKeys(x25519, randomBytes(32), hello, auth), deriveSessionKeys(x25519, randomBytes(32), hello, auth));
  });

  it('gives different keys and transcript when the hello or the auth text differs by one character', () => {
    const x = randomBytes(32);
    const m = randomBytes(32);
    const base = deriveSessionKeys(x, m, hello, auth);
    for (const other of [deriveSessionKeys(x, m, hello.replace('1', '2'), auth), deriveSessionKeys(x, m, hello, auth.replace('a.b', 'a.c'))]) {
      assert.notDeepEqual(other.transcript, base.transcript);
      assertAllDiffer(base, other);
    }
  });

  it('hashes the texts as UTF-8', () => {
    const keys = deriveSessionKeys(randomBytes(32), randomBytes(32), 'héllo', 'ä');
    assert.deepEqual(keys.transcript, createHash('sha256').update(Buffer.from('héllo\u00e4', 'utf8')).digest());
  });

  it('refuses shared secrets that are not 32 bytes each', () => {
    const internal = (error: unknown): boolean => {
      assert.ok(error instanceof ReflectorError);
      assert.equal(error.code, ErrorCode.INTERNAL);
      assert.equal(error.closeCode, CloseCode.INTERNAL_ERROR);
      assert.match(error.message, /32 bytes each/);
      return true;
    };
    assert.throws(() => deriveSessionKeys(randomBytes(31), randomBytes(32), hello, auth), internal);
    assert.throws(() => deriveSessionKeys(randomBytes(32), randomBytes(64), hello, auth), internal);
  });
});
