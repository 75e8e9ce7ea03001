import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { aeadBackend } from '../../shared/aead.js';
import { CloseCode } from '../../shared/constants.js';
import { ErrorCode, ProtocolError } from '../../shared/errors.js';
import { RecordOpener, RecordSealer } from '../../shared/record-layer.js';

const RUNS = { numRuns: 10_000 };
const backend = fc.constantFrom(aeadBackend('node'), aeadBackend('noble'));
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a.buffer, a.byteOffset, a.length));
const key = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a));

describe('RecordOpener (property)', () => {
  it('throws only RECORD_OPEN_FAILED or RECORD_TOO_LARGE for arbitrary records, and keeps failing', () => {
    const maxRecordBytes = 1024;
    fc.assert(
      fc.property(backend, key, fc.array(bytes(maxRecordBytes + 64), { minLength: 1, maxLength: 3 }), (aead, k, records) => {
        const opener = new RecordOpener(aead, k, 16 * 1024, maxRecordBytes);
        records.forEach((record, i) => {
          try {
            opener.open(record);
            assert.fail('a random record was accepted');
          } catch (error) {
            assert.ok(error instanceof ProtocolError, `not a ProtocolError: ${String(error)}`);
            assert.equal(error.closeCode, CloseCode.RECORD_INVALID);
            // Only the first failure can be about size; a poisoned opener always says OPEN_FAILED.
            const oversize = i === 0 && record.length > maxRecordBytes + 16;
            assert.equal(error.code, oversize ? ErrorCode.RECORD_TOO_LARGE : ErrorCode.RECORD_OPEN_FAILED);
          }
        });
      }),
      RUNS,
    );
  });
});

describe('RecordSealer → RecordOpener (property)', () => {
  it('round-trips arbitrary plaintext sequences under arbitrary rekey thresholds', () => {
    const rekeyBytes = fc.integer({ min: 1, max: 4096 });
    fc.assert(
      fc.property(backend, backend, rekeyBytes, fc.array(bytes(1024), { maxLength: 8 }), (sealWith, openWith, limit, plaintexts) => {
        const k = randomBytes(32);
        const sealer = new RecordSealer(sealWith, k, limit);
        const opener = new RecordOpener(openWith, k, limit, 1024);
        for (const plaintext of plaintexts) assert.deepEqual(opener.open(sealer.seal(plaintext)), plaintext);
      }),
      RUNS,
    );
  });
});
