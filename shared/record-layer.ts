/**
 * Record layer: one RecordSealer per sending direction, one RecordOpener per
 * receiving direction. Each record is one AEAD message; its nonce is implicit
 * (4 zero bytes ‖ u64 BE record counter of the current key epoch), so a
 * replayed, dropped or reordered record fails authentication.
 *
 * Both ends rekey at the same record without signalling: after each record the
 * epoch's plaintext bytes and record count are checked against the limits, and
 * past either one the key becomes HKDF-SHA256(key, salt = "", Label.REKEY).
 */
import { hkdfSync } from 'node:crypto';
import {
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  Label,
  REKEY_AFTER_RECORDS,
} from './constants.js';
import { ErrorCode, ProtocolError, ReflectorError } from './errors.js';
import type { AeadBackend } from './aead.js';

const EMPTY_SALT = Buffer.alloc(0);

/** The key, counter and byte count of one direction; shared by sealer and opener. */
class KeyEpoch {
  #key: Buffer;
  #counter = 0;
  #bytes = 0;
  /** Rewritten in place: both backends read the nonce synchronously and keep no reference. */
  readonly nonce = Buffer.alloc(AEAD_NONCE_BYTES);

  constructor(key: Buffer) {
    if (key.length !== AEAD_KEY_BYTES) throw new RangeError(`record key must be ${AEAD_KEY_BYTES} bytes, got ${key.length}`);
    // Our own copy, so wiping it on rekey never touches the caller's buffer.
    this.#key = Buffer.from(key);
  }

  get key(): Buffer {
    return this.#key;
  }

  /** Accounts for one record that was sealed or opened with the current nonce. */
  advance(plaintextBytes: number, rekeyBytes: number): void {
    this.#counter += 1;
    this.#bytes += plaintextBytes;
    if (this.#bytes >= rekeyBytes || this.#counter >= REKEY_AFTER_RECORDS) {
      this.#rekey();
      return;
    }
    // The counter stays below 2^32 (REKEY_AFTER_RECORDS), but write the full u64 anyway.
    this.nonce.writeUInt32BE(Math.floor(this.#counter / 2 ** 32), 4);
    this.nonce.writeUInt32BE(this.#counter >>> 0, 8);
  }

  wipe(): void {
    this.#key.fill(0);
  }

  #rekey(): void {
    const next = Buffer.from(hkdfSync('sha256', this.#key, EMPTY_SALT, Label.REKEY, AEAD_KEY_BYTES));
    this.#key.fill(0);
    this.#key = next;
    this.#counter = 0;
    this.#bytes = 0;
    this.nonce.fill(0);
  }
}

function checkLimit(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}

export class RecordSealer {
  readonly #backend: AeadBackend;
  readonly #epoch: KeyEpoch;
  #rekeyBytes: number;
  #destroyed = false;

  constructor(backend: AeadBackend, key: Buffer, rekeyBytes: number) {
    this.#backend = backend;
    this.#rekeyBytes = checkLimit('rekeyBytes', rekeyBytes);
    this.#epoch = new KeyEpoch(key);
  }

  /** Returns ciphertext ‖ tag. Never call concurrently with itself for one direction. */
  seal(plaintext: Buffer): Buffer {
    // A wiped key is all zeros: sealing with it would send readable records.
    if (this.#destroyed) throw new ReflectorError(ErrorCode.INTERNAL, 'RecordSealer used after destroy()');
    const record = this.#backend.seal(this.#epoch.key, this.#epoch.nonce, plaintext);
    this.#epoch.advance(plaintext.length, this.#rekeyBytes);
    return record;
  }

  /** Like seal(), into `output` (plaintext.length + 16 bytes, not overlapping the plaintext). */
  sealInto(plaintext: Buffer, output: Buffer): void {
    if (this.#destroyed) throw new ReflectorError(ErrorCode.INTERNAL, 'RecordSealer used after destroy()');
    this.#backend.sealInto(this.#epoch.key, this.#epoch.nonce, plaintext, output);
    this.#epoch.advance(plaintext.length, this.#rekeyBytes);
  }

  /** Takes effect from the next record; the peer's opener must change at the same record. */
  setRekeyBytes(n: number): void {
    this.#rekeyBytes = checkLimit('rekeyBytes', n);
  }

  /** Wipes the key; seal() throws afterwards. */
  destroy(): void {
    this.#destroyed = true;
    this.#epoch.wipe();
  }
}

export class RecordOpener {
  readonly #backend: AeadBackend;
  readonly #epoch: KeyEpoch;
  #rekeyBytes: number;
  #maxRecordBytes: number;
  /** Set by the first failure and never cleared: a session dies on its first bad record. */
  #poisoned = false;

  constructor(backend: AeadBackend, key: Buffer, rekeyBytes: number, maxRecordBytes: number) {
    this.#backend = backend;
    this.#rekeyBytes = checkLimit('rekeyBytes', rekeyBytes);
    this.#maxRecordBytes = checkLimit('maxRecordBytes', maxRecordBytes);
    this.#epoch = new KeyEpoch(key);
  }

  /** Returns the record's plaintext or throws ProtocolError; after a throw, every call throws. */
  open(record: Buffer): Buffer {
    return this.#open(record, false);
  }

  /**
   * Like open(), but the plaintext may be decrypted into the record's own
   * memory (no allocation per record): the caller must own `record`.
   */
  openInPlace(record: Buffer): Buffer {
    return this.#open(record, true);
  }

  #open(record: Buffer, inPlace: boolean): Buffer {
    if (this.#poisoned) throw new ProtocolError(ErrorCode.RECORD_OPEN_FAILED, 'an earlier record failed to open');
    // Cleared only on success, so any throw below (ours or a backend's) leaves the opener poisoned.
    this.#poisoned = true;
    if (record.length > this.#maxRecordBytes + AEAD_TAG_BYTES) {
      throw new ProtocolError(
        ErrorCode.RECORD_TOO_LARGE,
        `record of ${record.length} bytes exceeds ${this.#maxRecordBytes} + ${AEAD_TAG_BYTES}`,
      );
    }
    const { key, nonce } = this.#epoch;
    const plaintext = inPlace ? this.#backend.openInPlace(key, nonce, record) : this.#backend.open(key, nonce, record);
    if (plaintext === null) throw new ProtocolError(ErrorCode.RECORD_OPEN_FAILED, 'record failed authentication');
    this.#epoch.advance(plaintext.length, this.#rekeyBytes);
    this.#poisoned = false;
    return plaintext;
  }

  /** Takes effect from the next record; the peer's sealer must change at the same record. */
  setLimits(rekeyBytes: number, maxRecordBytes: number): void {
    this.#rekeyBytes = checkLimit('rekeyBytes', rekeyBytes);
    this.#maxRecordBytes = checkLimit('maxRecordBytes', maxRecordBytes);
  }

  /** Wipes the key and poisons the opener. */
  destroy(): void {
    this.#poisoned = true;
    this.#epoch.wipe();
  }
}
