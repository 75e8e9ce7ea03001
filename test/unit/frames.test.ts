import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CloseCode, FrameType, MAX_STREAM_OFFSET } from '../../shared/constants.js';
import { ErrorCode, ProtocolError, type ErrorCodeValue } from '../../shared/errors.js';
import { decodeFrames, encodedFrameLength, encodeFrame, encodeFrames, type Frame } from '../../shared/frames.js';

/** Builds a frame byte by byte, so invalid frames need no help from the encoder. */
function rawFrame(type: number, streamId: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const header = Buffer.alloc(9);
  header[0] = type;
  header.writeUInt32BE(streamId, 1);
  header.writeUInt32BE(body.length, 5);
  return Buffer.concat([header, body]);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u64(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
}

function rejects(record: Buffer, code: ErrorCodeValue = ErrorCode.FRAME_MALFORMED): void {
  assert.throws(
    () => decodeFrames(record),
    (e: unknown) => e instanceof ProtocolError && e.code === code && e.closeCode === CloseCode.PROTOCOL_ERROR,
  );
}

const everyType: Frame[] = [
  { type: 'WELCOME', streamId: 0, payload: Buffer.from('{"hello":"world"}') },
  { type: 'OPEN', streamId: 1, service: 'smtp' },
  { type: 'OPEN_OK', streamId: 1 },
  { type: 'OPEN_FAIL', streamId: 3, code: 2, reason: 'connection refused — ß' },
  { type: 'DATA', streamId: 1, data: Buffer.from('EHLO example.org\r\n') },
  { type: 'WINDOW', streamId: 1, consumed: 262_144 },
  { type: 'FIN', streamId: 1 },
  { type: 'RST', streamId: 0xffff_ffff, code: 1 },
  { type: 'PING', streamId: 0, opaque: Buffer.from('01234567') },
  { type: 'PONG', streamId: 0, opaque: Buffer.from('76543210') },
  { type: 'GOAWAY', streamId: 0, code: 1 },
];

describe('encodeFrames / decodeFrames', () => {
  for (const frame of everyType) {
    it(`round-trips a ${frame.type} frame on its own`, () => {
      const encoded = encodeFrame(frame);
      assert.equal(encoded.length, encodedFrameLength(frame));
      assert.equal(encoded[0], FrameType[frame.type]);
      assert.deepEqual(decodeFrames(encoded), [frame]);
    });
  }

  it('round-trips every frame type packed into one record', () => {
    const record = encodeFrames(everyType);
    assert.equal(record.length, everyType.reduce((sum, f) => sum + encodedFrameLength(f), 0));
    assert.deepEqual(decodeFrames(record), everyType);
  });

  it('accepts the edge values: WINDOW at 2^53-1, a 63-byte service, OPEN_FAIL with a 256-byte reason', () => {
    const frames: Frame[] = [
      { type: 'WINDOW', streamId: 7, consumed: MAX_STREAM_OFFSET },
      { type: 'OPEN', streamId: 9, service: 'a'.repeat(63) },
      { type: 'OPEN', streamId: 11, service: 'nntp.news-1_a' },
      { type: 'OPEN_FAIL', streamId: 9, code: 0xffff, reason: 'r'.repeat(256) },
      { type: 'OPEN_FAIL', streamId: 9, code: 0, reason: '' },
      { type: 'WELCOME', streamId: 0, payload: Buffer.alloc(0) },
    ];
    assert.deepEqual(decodeFrames(encodeFrames(frames)), frames);
  });

  it('returns DATA payloads as views into the record, without copying', () => {
    const record = encodeFrame({ type: 'DATA', streamId: 1, data: Buffer.from('abc') });
    const [frame] = decodeFrames(record);
    assert.ok(frame?.type === 'DATA');
    assert.equal(frame.data.buffer, record.buffer);
  });
});

describe('decodeFrames rejects', () => {
  it('an empty record with ERR_FRAME_MALFORMED', () => {
    rejects(Buffer.alloc(0));
  });

  it('a truncated frame header with ERR_FRAME_MALFORMED', () => {
    const fin = rawFrame(FrameType.FIN, 1);
    for (let length = 1; length < 9; length++) rejects(fin.subarray(0, length));
    rejects(Buffer.concat([fin, fin.subarray(0, 5)]));
  });

  it('a frame length running past the record with ERR_FRAME_MALFORMED', () => {
    const data = rawFrame(FrameType.DATA, 1, 'hello');
    rejects(data.subarray(0, data.length - 1));
    const huge = Buffer.from(data);
    huge.writeUInt32BE(0xffff_ffff, 5);
    rejects(huge);
  });

  it('an unknown frame type with ERR_FRAME_UNKNOWN_TYPE', () => {
    for (const type of [0x00, 0x0f, 0x7f, 0xff]) rejects(rawFrame(type, 1), ErrorCode.FRAME_UNKNOWN_TYPE);
    // Also after a valid frame: the record is rejected as a whole.
    rejects(Buffer.concat([rawFrame(FrameType.FIN, 1), rawFrame(0x0f, 0)]), ErrorCode.FRAME_UNKNOWN_TYPE);
  });

  it('a session frame with a non-zero stream id with ERR_FRAME_MALFORMED', () => {
    rejects(rawFrame(FrameType.WELCOME, 1, '{}'));
    rejects(rawFrame(FrameType.PING, 1, Buffer.alloc(8)));
    rejects(rawFrame(FrameType.PONG, 0xffff_ffff, Buffer.alloc(8)));
    rejects(rawFrame(FrameType.GOAWAY, 2, u16(1)));
  });

  it('a stream frame with stream id 0 with ERR_FRAME_MALFORMED', () => {
    rejects(rawFrame(FrameType.OPEN, 0, 'smtp'));
    rejects(rawFrame(FrameType.OPEN_OK, 0));
    rejects(rawFrame(FrameType.OPEN_FAIL, 0, u16(1)));
    rejects(rawFrame(FrameType.DATA, 0, 'x'));
    rejects(rawFrame(FrameType.WINDOW, 0, u64(1n)));
    rejects(rawFrame(FrameType.FIN, 0));
    rejects(rawFrame(FrameType.RST, 0, u16(1)));
  });

  it('fixed-length payloads of the wrong length with ERR_FRAME_MALFORMED', () => {
    for (const length of [0, 7, 9]) rejects(rawFrame(FrameType.WINDOW, 1, Buffer.alloc(length)));
    for (const length of [0, 1, 3]) rejects(rawFrame(FrameType.RST, 1, Buffer.alloc(length)));
    for (const length of [0, 1, 3]) rejects(rawFrame(FrameType.GOAWAY, 0, Buffer.alloc(length)));
    for (const length of [0, 7, 9]) rejects(rawFrame(FrameType.PING, 0, Buffer.alloc(length)));
    for (const length of [0, 7, 9]) rejects(rawFrame(FrameType.PONG, 0, Buffer.alloc(length)));
    rejects(rawFrame(FrameType.OPEN_OK, 1, Buffer.alloc(1)));
    rejects(rawFrame(FrameType.FIN, 1, Buffer.alloc(1)));
  });

  for (const [label, name] of [
    ['empty', ''],
    ['host:port', '127.0.0.1:22'],
    ['with a NUL', 'smtp\u0000'],
    ['a path', '../x'],
    ['upper case', 'SMTP'],
    ['starting with a dot', '.smtp'],
    ['non-ASCII', 'smtpé'],
    ['64 bytes long', 'a'.repeat(64)],
    ['64 KiB long', 'a'.repeat(64 * 1024)],
  ] as const) {
    it(`an OPEN service name that is ${label} with ERR_FRAME_MALFORMED`, () => {
      rejects(rawFrame(FrameType.OPEN, 1, name));
    });
  }

  it('an OPEN_FAIL shorter than its code or with a reason over 256 bytes with ERR_FRAME_MALFORMED', () => {
    rejects(rawFrame(FrameType.OPEN_FAIL, 1, Buffer.alloc(1)));
    rejects(rawFrame(FrameType.OPEN_FAIL, 1, Buffer.concat([u16(1), Buffer.alloc(257, 0x61)])));
  });

  it('a WINDOW offset beyond 2^53-1 with ERR_FLOW_CONTROL', () => {
    rejects(rawFrame(FrameType.WINDOW, 1, u64(BigInt(MAX_STREAM_OFFSET) + 1n)), ErrorCode.FLOW_CONTROL);
    rejects(rawFrame(FrameType.WINDOW, 1, u64(2n ** 64n - 1n)), ErrorCode.FLOW_CONTROL);
  });

  it('an empty DATA frame with ERR_FRAME_MALFORMED', () => {
    rejects(rawFrame(FrameType.DATA, 1));
  });
});
