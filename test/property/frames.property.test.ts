import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FrameType, MAX_OPEN_FAIL_REASON_BYTES, SERVICE_NAME_PATTERN } from '../../shared/constants.js';
import { ErrorCode, ProtocolError } from '../../shared/errors.js';
import { decodeFrames, encodedFrameLength, encodeFrames, type Frame } from '../../shared/frames.js';

const RUNS = { numRuns: 10_000 };

const bytes = (min: number, max: number) =>
  fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a.buffer, a.byteOffset, a.length));
const streamId = fc.integer({ min: 1, max: 0xffff_ffff });
const u16 = fc.integer({ min: 0, max: 0xffff });

/** Any frame the decoder must accept, with payloads small enough to keep runs fast. */
const arbitraryFrame: fc.Arbitrary<Frame> = fc.oneof(
  bytes(0, 64).map((payload): Frame => ({ type: 'WELCOME', streamId: 0, payload })),
  fc.tuple(streamId, fc.stringMatching(SERVICE_NAME_PATTERN)).map(([id, service]): Frame => ({ type: 'OPEN', streamId: id, service })),
  streamId.map((id): Frame => ({ type: 'OPEN_OK', streamId: id })),
  fc
    .tuple(streamId, u16, fc.string({ unit: 'binary', maxLength: 80 }))
    .filter(([, , reason]) => Buffer.byteLength(reason) <= MAX_OPEN_FAIL_REASON_BYTES)
    .map(([id, code, reason]): Frame => ({ type: 'OPEN_FAIL', streamId: id, code, reason })),
  fc.tuple(streamId, bytes(1, 64)).map(([id, data]): Frame => ({ type: 'DATA', streamId: id, data })),
  fc.tuple(streamId, fc.maxSafeNat()).map(([id, consumed]): Frame => ({ type: 'WINDOW', streamId: id, consumed })),
  streamId.map((id): Frame => ({ type: 'FIN', streamId: id })),
  fc.tuple(streamId, u16).map(([id, code]): Frame => ({ type: 'RST', streamId: id, code })),
  bytes(8, 8).map((opaque): Frame => ({ type: 'PING', streamId: 0, opaque })),
  bytes(8, 8).map((opaque): Frame => ({ type: 'PONG', streamId: 0, opaque })),
  u16.map((code): Frame => ({ type: 'GOAWAY', streamId: 0, code })),
);
const frameLists = fc.array(arbitraryFrame, { minLength: 1, maxLength: 6 });

/** The decoder's whole contract on hostile input: frames, or a ProtocolError, nothing else. */
function decodeOrProtocolError(record: Buffer): Frame[] | ProtocolError {
  try {
    return decodeFrames(record);
  } catch (error) {
    if (error instanceof ProtocolError) return error;
    throw error;
  }
}

describe('decodeFrames (property)', () => {
  it('returns frames or throws ProtocolError for arbitrary bytes', () => {
    // Half the inputs start with a known type code so they get past the first check.
    const knownType = fc.constantFrom(...Object.values(FrameType));
    const record = fc.oneof(
      bytes(0, 96),
      fc.tuple(knownType, bytes(0, 96)).map(([type, rest]) => Buffer.concat([Buffer.of(type), rest])),
    );
    fc.assert(fc.property(record, (r) => void decodeOrProtocolError(r)), RUNS);
  });

  it('decodes what encodeFrames encodes, frame for frame', () => {
    fc.assert(
      fc.property(frameLists, (frames) => {
        assert.deepEqual(decodeFrames(encodeFrames(frames)), frames);
      }),
      RUNS,
    );
  });

  it('returns the whole frames before a cut on a frame boundary, and throws ERR_FRAME_MALFORMED for a cut inside a frame', () => {
    fc.assert(
      fc.property(frameLists, fc.nat(), (frames, cut) => {
        const record = encodeFrames(frames);
        const length = cut % record.length;
        const result = decodeOrProtocolError(record.subarray(0, length));
        let boundary = 0;
        let whole = 0;
        while (boundary < length) boundary += encodedFrameLength(frames[whole++]!);
        if (boundary === length && length > 0) {
          assert.deepEqual(result, frames.slice(0, whole));
        } else {
          assert.ok(result instanceof ProtocolError && result.code === ErrorCode.FRAME_MALFORMED);
        }
      }),
      RUNS,
    );
  });

  it('returns frames or throws ProtocolError for valid encodings with bytes flipped', () => {
    const flips = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 });
    fc.assert(
      fc.property(frameLists, flips, (frames, changes) => {
        const record = encodeFrames(frames);
        for (const [at, mask] of changes) record[at % record.length]! ^= mask;
        decodeOrProtocolError(record);
      }),
      RUNS,
    );
  });

  it('returns frames or throws ProtocolError for every prefix of a valid encoding', () => {
    fc.assert(
      fc.property(frameLists, (frames) => {
        const record = encodeFrames(frames);
        for (let length = 0; length <= record.length; length++) decodeOrProtocolError(record.subarray(0, length));
      }),
      { numRuns: 1_000 },
    );
  });
});
