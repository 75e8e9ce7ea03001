import assert from 'node:assert/strict';
import { createCipheriv, hkdfSync, randomBytes, randomInt } from 'node:crypto';
import { describe, it } from 'node:test';
import { aeadBackend, type AeadBackend } from '../../shared/aead.js';
import { CloseCode, Label } from '../../shared/constants.js';
import { ErrorCode, ProtocolError, ReflectorError, type ErrorCodeValue } from '../../shared/errors.js';
import { RecordOpener, RecordSealer } from '../../shared/record-layer.js';
import { availableBackends } from '../helpers/aead-backends.js';

const backends: AeadBackend[] = availableBackends();
const KiB = 1024;

/** Independent of both backends: node:crypto called directly, no AAD. */
function rawSeal(key: Buffer, counter: number, plaintext: Buffer): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, nonceFor(counter), { authTagLength: 16 });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

function nonceFor(counter: number): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64BE(BigInt(counter), 4);
  return nonce;
}

function nextKey(key: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), Label.REKEY, 32));
}

/** The protocol's record sequence, computed from the spec rather than the code under test. */
function referenceRecords(key: Buffer, rekeyBytes: number, plaintexts: Buffer[]): Buffer[] {
  let epochKey = key;
  let counter = 0;
  let bytes = 0;
  return plaintexts.map((plaintext) => {
    const record = rawSeal(epochKey, counter, plaintext);
    counter += 1;
    bytes += plaintext.length;
    if (bytes >= rekeyBytes) {
      epochKey = nextKey(epochKey);
      counter = 0;
      bytes = 0;
    }
    return record;
  });
}

function protocolError(code: ErrorCodeValue) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.equal(error.closeCode, CloseCode.RECORD_INVALID);
    return true;
  };
}
const openFailed = protocolError(ErrorCode.RECORD_OPEN_FAILED);
const tooLarge = protocolError(ErrorCode.RECORD_TOO_LARGE);

function pair(backend: AeadBackend, rekeyBytes = 1024 ** 3, maxRecordBytes = 128 * KiB) {
  const key = randomBytes(32);
  return {
    key,
    sealer: new RecordSealer(backend, key, rekeyBytes),
    opener: new RecordOpener(backend, key, rekeyBytes, maxRecordBytes),
  };
}

function randomPlaintexts(count: number, maxLength: number): Buffer[] {
  return Array.from({ length: count }, () => randomBytes(randomInt(0, maxLength + 1)));
}

for (const backend of backends) {
  describe(`RecordSealer and RecordOpener with the '${backend.name}' backend`, () => {
    it('round-trips a sequence of records, empty ones included', () => {
      const { sealer, opener } = pair(backend);
      for (const plaintext of [Buffer.alloc(0), ...randomPlaintexts(50, 70 * KiB), Buffer.alloc(0)]) {
        assert.deepEqual(opener.open(sealer.seal(plaintext)), plaintext);
      }
    });

    it('seals record n of an epoch with nonce 0000 ‖ u64 BE n and sends no nonce', () => {
      const { key, sealer } = pair(backend);
      for (let n = 0; n < 300; n++) {
        const plaintext = randomBytes(n);
        assert.deepEqual(sealer.seal(plaintext), rawSeal(key, n, plaintext), `record ${n}`);
      }
    });

    it('rekeys after exactly rekeyBytes of plaintext, not one byte earlier', () => {
      const key = randomBytes(32);
      const plaintexts = [4 * KiB, 4 * KiB, 4 * KiB, 4 * KiB - 1, 1, 10].map((n) => randomBytes(n));
      const sealer = new RecordSealer(backend, key, 16 * KiB);
      const records = plaintexts.map((p) => sealer.seal(p));
      // 16 KiB - 1 after four records: still the first epoch.
      assert.deepEqual(records[3], rawSeal(key, 3, plaintexts[3]!));
      assert.deepEqual(records[4], rawSeal(key, 4, plaintexts[4]!));
      // Exactly 16 KiB after the fifth: the sixth is record 0 under HKDF(key, "rekey").
      assert.notDeepEqual(records[5], rawSeal(key, 5, plaintexts[5]!));
      assert.deepEqual(records[5], rawSeal(nextKey(key), 0, plaintexts[5]!));

      const opener = new RecordOpener(backend, key, 16 * KiB, 64 * KiB);
      records.forEach((record, i) => assert.deepEqual(opener.open(record), plaintexts[i]));
    });

    it('matches the spec through many rekeys with rekeyBytes = 16 KiB, and the opener follows', () => {
      const key = randomBytes(32);
      const plaintexts = randomPlaintexts(400, 6 * KiB);
      const sealer = new RecordSealer(backend, key, 16 * KiB);
      const opener = new RecordOpener(backend, key, 16 * KiB, 6 * KiB);
      const records = plaintexts.map((p) => sealer.seal(p));
      assert.deepEqual(records, referenceRecords(key, 16 * KiB, plaintexts));
      records.forEach((record, i) => assert.deepEqual(opener.open(record), plaintexts[i]));
    });

    it('never wipes or changes the key buffer the caller passed in', () => {
      const key = randomBytes(32);
      const copy = Buffer.from(key);
      const sealer = new RecordSealer(backend, key, 1);
      const opener = new RecordOpener(backend, key, 1, 1024);
      for (let i = 0; i < 5; i++) opener.open(sealer.seal(randomBytes(10)));
      sealer.destroy();
      opener.destroy();
      assert.deepEqual(key, copy);
    });

    it('keeps both sides in step when setRekeyBytes and setLimits change at the same record', () => {
      const key = randomBytes(32);
      const plaintexts = randomPlaintexts(60, 4 * KiB);
      const sealer = new RecordSealer(backend, key, 1024 ** 3);
      const opener = new RecordOpener(backend, key, 1024 ** 3, 4 * KiB);
      plaintexts.forEach((plaintext, i) => {
        if (i === 20) {
          sealer.setRekeyBytes(16 * KiB);
          opener.setLimits(16 * KiB, 4 * KiB);
        }
        assert.deepEqual(opener.open(sealer.seal(plaintext)), plaintext);
      });
    });
  });

  describe(`RecordOpener with the '${backend.name}' backend`, () => {
    it('throws RECORD_OPEN_FAILED when a record is replayed, and stays poisoned', () => {
      const { sealer, opener } = pair(backend);
      const first = sealer.seal(Buffer.from('one'));
      const second = sealer.seal(Buffer.from('two'));
      opener.open(first);
      assert.throws(() => opener.open(first), openFailed);
      assert.throws(() => opener.open(second), openFailed);
    });

    it('throws RECORD_OPEN_FAILED when a record is dropped', () => {
      const { sealer, opener } = pair(backend);
      const records = ['a', 'b', 'c'].map((s) => sealer.seal(Buffer.from(s)));
      opener.open(records[0]!);
      assert.throws(() => opener.open(records[2]!), openFailed);
      assert.throws(() => opener.open(records[1]!), openFailed);
    });

    it('throws RECORD_OPEN_FAILED when records are reordered', () => {
      const { sealer, opener } = pair(backend);
      const records = ['a', 'b'].map((s) => sealer.seal(Buffer.from(s)));
      assert.throws(() => opener.open(records[1]!), openFailed);
      assert.throws(() => opener.open(records[0]!), openFailed);
    });

    it('throws RECORD_OPEN_FAILED when one bit of the record is flipped, then rejects the genuine record too', () => {
      const plaintext = randomBytes(33);
      const probe = pair(backend);
      const bits = probe.sealer.seal(plaintext).length * 8;
      for (let bit = 0; bit < bits; bit += 7) {
        const { sealer, opener } = pair(backend);
        const record = sealer.seal(plaintext);
        const tampered = Buffer.from(record);
        tampered[bit >> 3]! ^= 1 << (bit & 7);
        assert.throws(() => opener.open(tampered), openFailed, `bit ${bit}`);
        assert.throws(() => opener.open(record), openFailed, `bit ${bit}, genuine record after`);
      }
    });

    it('throws RECORD_OPEN_FAILED for a record shorter than the tag', () => {
      for (let length = 0; length < 16; length++) {
        const { opener } = pair(backend);
        assert.throws(() => opener.open(randomBytes(length)), openFailed, `length ${length}`);
      }
    });

    it('throws RECORD_OPEN_FAILED for a record sealed under another key', () => {
      const { opener } = pair(backend);
      const stranger = new RecordSealer(backend, randomBytes(32), 1024 ** 3);
      assert.throws(() => opener.open(stranger.seal(Buffer.from('hi'))), openFailed);
    });

    it('accepts maxRecordBytes of plaintext and throws RECORD_TOO_LARGE one byte beyond, then stays poisoned', () => {
      const { sealer, opener } = pair(backend, 1024 ** 3, 1024);
      assert.equal(opener.open(sealer.seal(Buffer.alloc(1024, 1))).length, 1024);
      const oversize = sealer.seal(Buffer.alloc(1025, 2));
      assert.throws(() => opener.open(oversize), tooLarge);
      assert.throws(() => opener.open(sealer.seal(Buffer.from('ok'))), openFailed);
    });

    it('throws RECORD_TOO_LARGE for oversize garbage without trying to authenticate it', () => {
      const { opener } = pair(backend, 1024 ** 3, 1024);
      assert.throws(() => opener.open(Buffer.alloc(1024 + 17)), tooLarge);
    });

    it('applies a lowered maxRecordBytes from setLimits to the next record', () => {
      const { sealer, opener } = pair(backend, 1024 ** 3, 4096);
      opener.open(sealer.seal(Buffer.alloc(2048)));
      opener.setLimits(1024 ** 3, 1024);
      assert.throws(() => opener.open(sealer.seal(Buffer.alloc(2048))), tooLarge);
    });

    it('fails with RECORD_OPEN_FAILED at the first record after the sender rekeys, when the two rekeyBytes differ', () => {
      const key = randomBytes(32);
      const sealer = new RecordSealer(backend, key, 16 * KiB);
      const opener = new RecordOpener(backend, key, 32 * KiB, 64 * KiB);
      for (let i = 0; i < 4; i++) opener.open(sealer.seal(Buffer.alloc(4 * KiB)));
      assert.throws(() => opener.open(sealer.seal(Buffer.alloc(4 * KiB))), openFailed);
    });

    it('fails with RECORD_OPEN_FAILED when the receiver rekeys earlier than the sender', () => {
      const key = randomBytes(32);
      const sealer = new RecordSealer(backend, key, 32 * KiB);
      const opener = new RecordOpener(backend, key, 16 * KiB, 64 * KiB);
      for (let i = 0; i < 4; i++) opener.open(sealer.seal(Buffer.alloc(4 * KiB)));
      assert.throws(() => opener.open(sealer.seal(Buffer.alloc(4 * KiB))), openFailed);
    });

    it('throws RECORD_OPEN_FAILED after destroy()', () => {
      const { sealer, opener } = pair(backend);
      opener.destroy();
      assert.throws(() => opener.open(sealer.seal(Buffer.from('x'))), openFailed);
    });
  });
}

describe('RecordSealer', () => {
  it('produces byte-identical records with either backend, across rekeys', () => {
    const key = randomBytes(32);
    const plaintexts = randomPlaintexts(100, 8 * KiB);
    const [first, ...others] = backends.map((b) => new RecordSealer(b, key, 16 * KiB)) as [RecordSealer, ...RecordSealer[]];
    plaintexts.forEach((plaintext, i) => {
      const record = first.seal(plaintext);
      for (const other of others) assert.deepEqual(other.seal(plaintext), record, `record ${i}`);
    });
  });

  it('sealInto() writes the same records as seal() and advances the counter the same way', () => {
    const key = randomBytes(32);
    const plaintexts = randomPlaintexts(60, 8 * KiB);
    for (const backend of backends) {
      const bySeal = new RecordSealer(backend, key, 16 * KiB);
      const byInto = new RecordSealer(backend, key, 16 * KiB);
      plaintexts.forEach((plaintext, i) => {
        const output = Buffer.alloc(plaintext.length + 16);
        byInto.sealInto(plaintext, output);
        assert.deepEqual(output, bySeal.seal(plaintext), `${backend.name} record ${i}`);
      });
    }
  });

  it('opens records sealed by the other backend', () => {
    const key = randomBytes(32);
    const sealer = new RecordSealer(aeadBackend('node'), key, 16 * KiB);
    const opener = new RecordOpener(aeadBackend('noble'), key, 16 * KiB, 8 * KiB);
    for (const plaintext of randomPlaintexts(50, 8 * KiB)) assert.deepEqual(opener.open(sealer.seal(plaintext)), plaintext);
  });

  it('refuses to seal after destroy() with ERR_INTERNAL', () => {
    const sealer = new RecordSealer(aeadBackend('node'), randomBytes(32), 1024);
    sealer.destroy();
    assert.throws(
      () => sealer.seal(Buffer.from('x')),
      (e: unknown) => e instanceof ReflectorError && e.code === ErrorCode.INTERNAL && e.closeCode === CloseCode.INTERNAL_ERROR,
    );
  });

  it('rejects a key that is not 32 bytes and limits that are not positive integers', () => {
    const backend = aeadBackend('node');
    assert.throws(() => new RecordSealer(backend, randomBytes(31), 1024), RangeError);
    assert.throws(() => new RecordOpener(backend, randomBytes(33), 1024, 1024), RangeError);
    assert.throws(() => new RecordSealer(backend, randomBytes(32), 0), RangeError);
    assert.throws(() => new RecordOpener(backend, randomBytes(32), 1024, 1.5), RangeError);
    assert.throws(() => new RecordSealer(backend, randomBytes(32), 1024).setRekeyBytes(Number.NaN), RangeError);
  });
});
