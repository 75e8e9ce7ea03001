/**
 * Frame codec: pure functions, no I/O. A record's plaintext is a sequence of
 * whole frames; a frame never spans two records, so decoding keeps no state
 * between records.
 *
 *   0      1              5              9
 *   +------+--------------+--------------+-------------------+
 *   | type | stream id    | length       | payload (length)  |
 *   | u8   | u32 BE       | u32 BE       |                   |
 *   +------+--------------+--------------+-------------------+
 */
import {
  FRAME_HEADER_BYTES,
  FrameType,
  MAX_OPEN_FAIL_REASON_BYTES,
  MAX_SERVICE_NAME_BYTES,
  MAX_STREAM_OFFSET,
  PING_PAYLOAD_BYTES,
  RESUME_ENTRY_BYTES,
  RESUME_PROOF_BYTES,
  SESSION_ID_BYTES,
  SERVICE_NAME_PATTERN,
} from './constants.js';
import { ErrorCode, ProtocolError } from './errors.js';

export type Frame =
  | { type: 'WELCOME'; streamId: 0; payload: Buffer }
  | { type: 'OPEN'; streamId: number; service: string }
  | { type: 'OPEN_OK'; streamId: number }
  | { type: 'OPEN_FAIL'; streamId: number; code: number; reason: string }
  | { type: 'DATA'; streamId: number; data: Buffer }
  | { type: 'WINDOW'; streamId: number; consumed: number }
  | { type: 'FIN'; streamId: number }
  | { type: 'RST'; streamId: number; code: number }
  | { type: 'PING'; streamId: 0; opaque: Buffer }
  | { type: 'PONG'; streamId: 0; opaque: Buffer }
  | { type: 'GOAWAY'; streamId: 0; code: number }
  | { type: 'RESUME'; streamId: 0; sessionId: Buffer; proof: Buffer; streams: ResumeEntry[] }
  | { type: 'RESUME_OK'; streamId: 0; streams: ResumeEntry[] }
  | { type: 'RESUME_FAIL'; streamId: 0; code: number; reason: string };

/** One stream's position as its holder states it when a session resumes. */
export interface ResumeEntry {
  streamId: number;
  /** Bytes of DATA this side has received on the stream: the peer resends from here. */
  received: number;
  /** ResumeFlag bits. */
  flags: number;
}

export type FrameOf<T extends Frame['type']> = Extract<Frame, { type: T }>;

const typeNameByCode = new Map<number, Frame['type']>(
  Object.entries(FrameType).map(([name, code]) => [code, name as Frame['type']]),
);

/** Frames that belong to the session (stream id 0) rather than to a stream. */
const SESSION_FRAMES: ReadonlySet<Frame['type']> = new Set([
  'WELCOME',
  'PING',
  'PONG',
  'GOAWAY',
  'RESUME',
  'RESUME_OK',
  'RESUME_FAIL',
]);

export function isSessionFrame(type: Frame['type']): boolean {
  return SESSION_FRAMES.has(type);
}

function malformed(message: string): ProtocolError {
  return new ProtocolError(ErrorCode.FRAME_MALFORMED, message);
}

/**
 * Cuts an OPEN_FAIL reason to the wire limit on a character boundary, so a long
 * backend message never makes the peer see a malformed frame.
 */
export function clampReason(reason: string): string {
  if (Buffer.byteLength(reason, 'utf8') <= MAX_OPEN_FAIL_REASON_BYTES) return reason;
  let cut = reason.slice(0, MAX_OPEN_FAIL_REASON_BYTES);
  while (Buffer.byteLength(cut, 'utf8') > MAX_OPEN_FAIL_REASON_BYTES) cut = cut.slice(0, -1);
  return cut;
}

/** Bytes a frame occupies on the wire, header included. */
export function encodedFrameLength(frame: Frame): number {
  return FRAME_HEADER_BYTES + payloadLength(frame);
}

/** Our own bugs must fail here, not as a protocol error at the peer. */
function assertEncodable(frame: Frame): void {
  if ((frame.type === 'PING' || frame.type === 'PONG') && frame.opaque.length !== PING_PAYLOAD_BYTES) {
    throw new RangeError(`${frame.type} opaque must be ${PING_PAYLOAD_BYTES} bytes`);
  }
  if (frame.type === 'OPEN_FAIL' && Buffer.byteLength(frame.reason, 'utf8') > MAX_OPEN_FAIL_REASON_BYTES) {
    throw new RangeError('OPEN_FAIL reason too long; use clampReason()');
  }
  if (frame.type === 'RESUME' && (frame.sessionId.length !== SESSION_ID_BYTES || frame.proof.length !== RESUME_PROOF_BYTES)) {
    throw new RangeError('RESUME session id or proof has the wrong length');
  }
  if (frame.type === 'RESUME_FAIL' && Buffer.byteLength(frame.reason, 'utf8') > MAX_OPEN_FAIL_REASON_BYTES) {
    throw new RangeError('RESUME_FAIL reason too long; use clampReason()');
  }
  if (frame.type === 'WINDOW' && !(Number.isSafeInteger(frame.consumed) && frame.consumed >= 0)) {
    throw new RangeError(`WINDOW offset ${frame.consumed} is not a non-negative safe integer`);
  }
}

function payloadLength(frame: Frame): number {
  switch (frame.type) {
    case 'WELCOME':
      return frame.payload.length;
    case 'OPEN':
      return Buffer.byteLength(frame.service, 'utf8');
    case 'OPEN_OK':
    case 'FIN':
      return 0;
    case 'OPEN_FAIL':
      return 2 + Buffer.byteLength(frame.reason, 'utf8');
    case 'DATA':
      return frame.data.length;
    case 'WINDOW':
      return 8;
    case 'RST':
    case 'GOAWAY':
      return 2;
    case 'PING':
    case 'PONG':
      return PING_PAYLOAD_BYTES;
    case 'RESUME':
      return SESSION_ID_BYTES + RESUME_PROOF_BYTES + 4 + frame.streams.length * RESUME_ENTRY_BYTES;
    case 'RESUME_OK':
      return 4 + frame.streams.length * RESUME_ENTRY_BYTES;
    case 'RESUME_FAIL':
      return 2 + Buffer.byteLength(frame.reason, 'utf8');
  }
}

function writeResumeEntries(entries: readonly ResumeEntry[], target: Buffer, offset: number): number {
  let at = target.writeUInt32BE(entries.length, offset);
  for (const entry of entries) {
    at = target.writeUInt32BE(entry.streamId, at);
    target.writeBigUInt64BE(BigInt(entry.received), at);
    at += 8;
    at = target.writeUInt8(entry.flags, at);
  }
  return at;
}

function readResumeEntries(payload: Buffer, offset: number, type: string): ResumeEntry[] {
  if (payload.length - offset < 4) throw malformed(`${type} payload too short`);
  const count = payload.readUInt32BE(offset);
  if (payload.length - offset - 4 !== count * RESUME_ENTRY_BYTES) {
    throw malformed(`${type} announces ${count} streams in ${payload.length - offset - 4} bytes`);
  }
  const entries: ResumeEntry[] = [];
  let at = offset + 4;
  let previous = 0;
  for (let i = 0; i < count; i++) {
    const streamId = payload.readUInt32BE(at);
    const received = payload.readBigUInt64BE(at + 4);
    const flags = payload[at + 12]!;
    if (streamId <= previous) throw malformed(`${type} stream ids must be strictly increasing and non-zero`);
    if (received > BigInt(MAX_STREAM_OFFSET)) throw new ProtocolError(ErrorCode.FLOW_CONTROL, `${type} offset beyond 2^53-1`);
    if ((flags & ~0x03) !== 0) throw malformed(`${type} has unknown flag bits 0x${flags.toString(16)}`);
    entries.push({ streamId, received: Number(received), flags });
    previous = streamId;
    at += RESUME_ENTRY_BYTES;
  }
  return entries;
}

/**
 * Writes `frame` into `target` at `offset` and returns the offset after it.
 * The caller sizes `target` with encodedFrameLength(); this lets a record be
 * assembled from many frames with one allocation.
 */
export function writeFrame(frame: Frame, target: Buffer, offset: number): number {
  assertEncodable(frame);
  const length = payloadLength(frame);
  target[offset] = FrameType[frame.type];
  target.writeUInt32BE(frame.streamId, offset + 1);
  target.writeUInt32BE(length, offset + 5);
  let at = offset + FRAME_HEADER_BYTES;
  switch (frame.type) {
    case 'WELCOME':
      at += frame.payload.copy(target, at);
      break;
    case 'OPEN':
      at += target.write(frame.service, at, 'utf8');
      break;
    case 'OPEN_OK':
    case 'FIN':
      break;
    case 'OPEN_FAIL':
      target.writeUInt16BE(frame.code, at);
      at += 2;
      at += target.write(frame.reason, at, 'utf8');
      break;
    case 'DATA':
      at += frame.data.copy(target, at);
      break;
    case 'WINDOW':
      target.writeBigUInt64BE(BigInt(frame.consumed), at);
      at += 8;
      break;
    case 'RST':
    case 'GOAWAY':
      target.writeUInt16BE(frame.code, at);
      at += 2;
      break;
    case 'PING':
    case 'PONG':
      at += frame.opaque.copy(target, at, 0, PING_PAYLOAD_BYTES);
      break;
    case 'RESUME':
      at += frame.sessionId.copy(target, at);
      at += frame.proof.copy(target, at);
      at = writeResumeEntries(frame.streams, target, at);
      break;
    case 'RESUME_OK':
      at = writeResumeEntries(frame.streams, target, at);
      break;
    case 'RESUME_FAIL':
      target.writeUInt16BE(frame.code, at);
      at += 2;
      at += target.write(frame.reason, at, 'utf8');
      break;
  }
  return at;
}

export function encodeFrame(frame: Frame): Buffer {
  const out = Buffer.allocUnsafe(encodedFrameLength(frame));
  writeFrame(frame, out, 0);
  return out;
}

export function encodeFrames(frames: readonly Frame[]): Buffer {
  let total = 0;
  for (const frame of frames) total += encodedFrameLength(frame);
  const out = Buffer.allocUnsafe(total);
  let offset = 0;
  for (const frame of frames) offset = writeFrame(frame, out, offset);
  return out;
}

/**
 * Decodes every frame of one record's plaintext. Payload buffers are views
 * into `plaintext` (no copy); the caller must not reuse `plaintext`.
 * Throws ProtocolError (never anything else) on malformed input.
 */
export function decodeFrames(plaintext: Buffer): Frame[] {
  const frames: Frame[] = [];
  let offset = 0;
  if (plaintext.length === 0) throw malformed('empty record');
  while (offset < plaintext.length) {
    if (plaintext.length - offset < FRAME_HEADER_BYTES) throw malformed('truncated frame header');
    const code = plaintext[offset]!;
    const streamId = plaintext.readUInt32BE(offset + 1);
    const length = plaintext.readUInt32BE(offset + 5);
    const start = offset + FRAME_HEADER_BYTES;
    if (length > plaintext.length - start) throw malformed(`frame length ${length} runs past the record`);
    frames.push(decodeFrame(code, streamId, plaintext.subarray(start, start + length)));
    offset = start + length;
  }
  return frames;
}

function decodeFrame(code: number, streamId: number, payload: Buffer): Frame {
  const type = typeNameByCode.get(code);
  if (type === undefined) {
    throw new ProtocolError(ErrorCode.FRAME_UNKNOWN_TYPE, `unknown frame type 0x${code.toString(16).padStart(2, '0')}`);
  }
  if (isSessionFrame(type) !== (streamId === 0)) {
    throw malformed(`${type} frame with stream id ${streamId}`);
  }
  const expectLength = (n: number): void => {
    if (payload.length !== n) throw malformed(`${type} payload must be ${n} bytes, got ${payload.length}`);
  };
  switch (type) {
    case 'WELCOME':
      return { type, streamId: 0, payload };
    case 'OPEN': {
      if (payload.length === 0 || payload.length > MAX_SERVICE_NAME_BYTES) {
        throw malformed(`OPEN service name of ${payload.length} bytes`);
      }
      const service = payload.toString('latin1');
      if (!SERVICE_NAME_PATTERN.test(service)) throw malformed('OPEN service name has characters outside [a-z0-9._-]');
      return { type, streamId, service };
    }
    case 'OPEN_OK':
    case 'FIN':
      expectLength(0);
      return { type, streamId };
    case 'OPEN_FAIL': {
      if (payload.length < 2 || payload.length > 2 + MAX_OPEN_FAIL_REASON_BYTES) {
        throw malformed(`OPEN_FAIL payload of ${payload.length} bytes`);
      }
      return { type, streamId, code: payload.readUInt16BE(0), reason: payload.toString('utf8', 2) };
    }
    case 'DATA':
      if (payload.length === 0) throw malformed('empty DATA frame');
      return { type, streamId, data: payload };
    case 'WINDOW': {
      expectLength(8);
      const consumed = payload.readBigUInt64BE(0);
      if (consumed > BigInt(MAX_STREAM_OFFSET)) {
        throw new ProtocolError(ErrorCode.FLOW_CONTROL, 'WINDOW offset beyond 2^53-1');
      }
      return { type, streamId, consumed: Number(consumed) };
    }
    case 'RST':
      expectLength(2);
      return { type, streamId, code: payload.readUInt16BE(0) };
    case 'GOAWAY':
      expectLength(2);
      return { type, streamId: 0, code: payload.readUInt16BE(0) };
    case 'PING':
    case 'PONG':
      expectLength(PING_PAYLOAD_BYTES);
      return { type, streamId: 0, opaque: payload };
    case 'RESUME': {
      const fixed = SESSION_ID_BYTES + RESUME_PROOF_BYTES;
      if (payload.length < fixed + 4) throw malformed(`RESUME payload of ${payload.length} bytes`);
      return {
        type,
        streamId: 0,
        sessionId: payload.subarray(0, SESSION_ID_BYTES),
        proof: payload.subarray(SESSION_ID_BYTES, fixed),
        streams: readResumeEntries(payload, fixed, type),
      };
    }
    case 'RESUME_OK':
      return { type, streamId: 0, streams: readResumeEntries(payload, 0, type) };
    case 'RESUME_FAIL':
      if (payload.length < 2 || payload.length > 2 + MAX_OPEN_FAIL_REASON_BYTES) {
        throw malformed(`RESUME_FAIL payload of ${payload.length} bytes`);
      }
      return { type, streamId: 0, code: payload.readUInt16BE(0), reason: payload.toString('utf8', 2) };
  }
}
