import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CloseCode, FRAME_HEADER_BYTES, OpenFailCode, ResetCode } from '../../shared/constants.js';
import { ErrorCode, ProtocolError, StreamError, type ErrorCodeValue } from '../../shared/errors.js';
import { decodeFrames, encodeFrames, type Frame } from '../../shared/frames.js';
import { LATE_ADVERTISEMENT_MS, StreamMux, type RecordSink } from '../../shared/stream-mux.js';
import type { TunnelStream } from '../../shared/tunnel-stream.js';

class CapturingSink implements RecordSink {
  records: Buffer[] = [];
  congested = false;
  sendRecord(plaintext: Buffer): void {
    this.records.push(Buffer.from(plaintext));
  }
  frames(): Frame[] {
    const all = this.records.flatMap((record) => decodeFrames(record));
    this.records = [];
    return all;
  }
}

function makeMux(role: 'client' | 'server', options: { window?: number; maxRecord?: number; maxStreams?: number } = {}) {
  const sink = new CapturingSink();
  const opened: TunnelStream[] = [];
  const mux = new StreamMux({
    role,
    windowBytes: options.window ?? 1024,
    maxRecordBytes: options.maxRecord ?? 4096,
    maxStreams: options.maxStreams ?? 8,
    resumable: false,
    sink,
    onOpen: (stream) => opened.push(stream),
    onSessionFrame: () => undefined,
  });
  return { mux, sink, opened };
}

function protocolError(code: ErrorCodeValue) {
  return (error: unknown) => error instanceof ProtocolError && error.code === code && error.closeCode === CloseCode.PROTOCOL_ERROR;
}

const record = (...frames: Frame[]) => encodeFrames(frames);

describe('StreamMux (client)', () => {
  it('sends OPEN at once but holds DATA and FIN until OPEN_OK', () => {
    const { mux, sink } = makeMux('client');
    const stream = mux.openStream('smtp');
    assert.equal(stream.write(Buffer.from('EHLO')), false);
    stream.end();
    mux.flush();
    assert.deepEqual(sink.frames(), [{ type: 'OPEN', streamId: 1, service: 'smtp' }]);
    mux.receiveRecord(record({ type: 'OPEN_OK', streamId: 1 }));
    mux.flush();
    const frames = sink.frames();
    assert.deepEqual(frames.map((f) => f.type), ['DATA', 'FIN']);
    assert.equal(stream.state, 'half-closed-local');
  });

  it('allocates strictly increasing stream ids from 1', () => {
    const { mux } = makeMux('client');
    assert.deepEqual([mux.openStream('a').id, mux.openStream('b').id, mux.openStream('c').id], [1, 2, 3]);
  });

  it('reports OPEN_FAIL as a reset with ERR_OPEN_FAILED and the wire code', () => {
    const { mux } = makeMux('client');
    const stream = mux.openStream('smtp');
    let failure: StreamError | undefined;
    stream.on('reset', (error: StreamError) => (failure = error));
    mux.receiveRecord(record({ type: 'OPEN_FAIL', streamId: 1, code: OpenFailCode.BACKEND_REFUSED, reason: 'refused' }));
    assert.equal(failure?.code, ErrorCode.OPEN_FAILED);
    assert.equal(failure?.wireCode, OpenFailCode.BACKEND_REFUSED);
    assert.equal(stream.state, 'closed');
    assert.equal(mux.streamCount, 0);
  });

  it('rejects an OPEN sent by the server', () => {
    const { mux } = makeMux('client');
    assert.throws(() => mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'x' })), protocolError(ErrorCode.FRAME_NOT_ALLOWED));
  });

  it('rejects DATA before OPEN_OK', () => {
    const { mux } = makeMux('client');
    mux.openStream('smtp');
    assert.throws(
      () => mux.receiveRecord(record({ type: 'DATA', streamId: 1, data: Buffer.from('x') })),
      protocolError(ErrorCode.STREAM_STATE),
    );
  });
});

describe('StreamMux (server)', () => {
  it('hands a new OPEN to onOpen and answers OPEN_OK on accept()', () => {
    const { mux, sink, opened } = makeMux('server');
    mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'smtp' }));
    assert.equal(opened.length, 1);
    opened[0]!.accept();
    mux.flush();
    assert.deepEqual(sink.frames(), [{ type: 'OPEN_OK', streamId: 1 }]);
  });

  it('advertises credit too small for a WINDOW of its own after LATE_ADVERTISEMENT_MS, and a full quarter at once', async () => {
    const { mux, sink, opened } = makeMux('server', { window: 1024 });
    mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'smtp' }));
    opened[0]!.accept();
    mux.receiveRecord(record({ type: 'DATA', streamId: 1, data: Buffer.alloc(300) }));
    opened[0]!.consumed(100);
    mux.flush();
    assert.deepEqual(sink.frames(), [{ type: 'OPEN_OK', streamId: 1 }], 'no WINDOW yet for 100 bytes of a 1024-byte window');
    opened[0]!.consumed(200);
    mux.flush();
    assert.deepEqual(sink.frames(), [{ type: 'WINDOW', streamId: 1, consumed: 300 }], 'a quarter of the window goes at once');
    mux.receiveRecord(record({ type: 'DATA', streamId: 1, data: Buffer.alloc(10) }));
    opened[0]!.consumed(10);
    await new Promise((resolve) => setTimeout(resolve, LATE_ADVERTISEMENT_MS + 30));
    mux.flush();
    assert.deepEqual(sink.frames(), [{ type: 'WINDOW', streamId: 1, consumed: 310 }]);
  });

  it('sends small freed credit along with the next DATA on the stream, in the same record', () => {
    const { mux, sink, opened } = makeMux('server', { window: 1024 });
    mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'smtp' }));
    opened[0]!.accept();
    mux.receiveRecord(record({ type: 'DATA', streamId: 1, data: Buffer.alloc(10) }));
    opened[0]!.consumed(10);
    opened[0]!.write(Buffer.from('250 OK'));
    mux.flush();
    assert.equal(sink.records.length, 1);
    assert.deepEqual(sink.frames(), [
      { type: 'OPEN_OK', streamId: 1 },
      { type: 'WINDOW', streamId: 1, consumed: 10 },
      { type: 'DATA', streamId: 1, data: Buffer.from('250 OK') },
    ]);
  });

  it('sends no late WINDOW for a stream that closed or a session that ended meanwhile', async () => {
    const { mux, sink, opened } = makeMux('server', { window: 1024 });
    for (const streamId of [1, 2]) {
      mux.receiveRecord(record({ type: 'OPEN', streamId, service: 'smtp' }));
      opened[streamId - 1]!.accept();
      mux.receiveRecord(record({ type: 'DATA', streamId, data: Buffer.alloc(10) }));
      opened[streamId - 1]!.consumed(10);
    }
    opened[0]!.reset();
    mux.flush();
    sink.records = [];
    await new Promise((resolve) => setTimeout(resolve, LATE_ADVERTISEMENT_MS + 30));
    mux.flush();
    assert.deepEqual(sink.frames(), [{ type: 'WINDOW', streamId: 2, consumed: 10 }]);

    mux.receiveRecord(record({ type: 'DATA', streamId: 2, data: Buffer.alloc(10) }));
    opened[1]!.consumed(10);
    mux.destroy('test');
    sink.records = [];
    await new Promise((resolve) => setTimeout(resolve, LATE_ADVERTISEMENT_MS + 30));
    assert.equal(sink.records.length, 0);
  });

  it('throws STREAM_ID_REUSED for an OPEN with an id not above the last one', () => {
    const { mux } = makeMux('server');
    mux.receiveRecord(record({ type: 'OPEN', streamId: 5, service: 'smtp' }));
    assert.throws(() => mux.receiveRecord(record({ type: 'OPEN', streamId: 5, service: 'smtp' })), protocolError(ErrorCode.STREAM_ID_REUSED));
    assert.throws(() => mux.receiveRecord(record({ type: 'OPEN', streamId: 3, service: 'smtp' })), protocolError(ErrorCode.STREAM_ID_REUSED));
  });

  for (const frame of [
    { type: 'DATA', streamId: 9, data: Buffer.from('x') },
    { type: 'WINDOW', streamId: 9, consumed: 0 },
    { type: 'FIN', streamId: 9 },
    { type: 'RST', streamId: 9, code: 1 },
  ] as Frame[]) {
    it(`throws STREAM_UNKNOWN for ${frame.type} on a stream never opened`, () => {
      const { mux } = makeMux('server');
      assert.throws(() => mux.receiveRecord(record(frame)), protocolError(ErrorCode.STREAM_UNKNOWN));
    });
  }

  it('ignores frames for a stream it already closed (they crossed our RST on the wire)', () => {
    const { mux, opened } = makeMux('server');
    mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'smtp' }));
    opened[0]!.accept();
    opened[0]!.reset(ResetCode.BACKEND_RESET);
    mux.receiveRecord(record({ type: 'DATA', streamId: 1, data: Buffer.from('late') }, { type: 'FIN', streamId: 1 }));
    assert.equal(mux.streamCount, 0);
  });

  it('answers OPEN_FAIL STREAM_LIMIT beyond maxStreams without closing the session', () => {
    const { mux, sink, opened } = makeMux('server', { maxStreams: 2 });
    mux.receiveRecord(record(
      { type: 'OPEN', streamId: 1, service: 'a' },
      { type: 'OPEN', streamId: 2, service: 'a' },
      { type: 'OPEN', streamId: 3, service: 'a' },
    ));
    assert.equal(opened.length, 2);
    mux.flush();
    const frames = sink.frames();
    assert.deepEqual(frames, [{ type: 'OPEN_FAIL', streamId: 3, code: OpenFailCode.STREAM_LIMIT, reason: 'at most 2 streams per session' }]);
  });

  for (const frame of [
    { type: 'OPEN_OK', streamId: 1 },
    { type: 'OPEN_FAIL', streamId: 1, code: 1, reason: 'x' },
  ] as Frame[]) {
    it(`throws FRAME_NOT_ALLOWED for ${frame.type} sent by the client`, () => {
      const { mux } = makeMux('server');
      mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'smtp' }));
      assert.throws(() => mux.receiveRecord(record(frame)), protocolError(ErrorCode.FRAME_NOT_ALLOWED));
    });
  }

  it('throws STREAM_STATE for DATA while the stream is still opening', () => {
    const { mux } = makeMux('server');
    mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'smtp' }));
    assert.throws(() => mux.receiveRecord(record({ type: 'DATA', streamId: 1, data: Buffer.from('x') })), protocolError(ErrorCode.STREAM_STATE));
  });

  it('throws STREAM_STATE for DATA after the peer half-closed', () => {
    const { mux, opened } = makeMux('server');
    mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'smtp' }));
    opened[0]!.accept();
    mux.receiveRecord(record({ type: 'FIN', streamId: 1 }));
    assert.equal(opened[0]!.state, 'half-closed-remote');
    assert.throws(() => mux.receiveRecord(record({ type: 'DATA', streamId: 1, data: Buffer.from('x') })), protocolError(ErrorCode.STREAM_STATE));
  });

  it('throws FLOW_CONTROL for DATA beyond the granted window', () => {
    const { mux, opened } = makeMux('server', { window: 1024 });
    mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'smtp' }));
    opened[0]!.accept();
    mux.receiveRecord(record({ type: 'DATA', streamId: 1, data: Buffer.alloc(1024) }));
    assert.throws(() => mux.receiveRecord(record({ type: 'DATA', streamId: 1, data: Buffer.alloc(1) })), protocolError(ErrorCode.FLOW_CONTROL));
  });

  it('removes a stream once FIN went both ways', () => {
    const { mux, opened } = makeMux('server');
    mux.receiveRecord(record({ type: 'OPEN', streamId: 1, service: 'smtp' }));
    const stream = opened[0]!;
    stream.accept();
    stream.end();
    assert.equal(stream.state, 'half-closed-local');
    let closed = false;
    stream.on('close', () => (closed = true));
    mux.receiveRecord(record({ type: 'FIN', streamId: 1 }));
    assert.equal(stream.state, 'closed');
    assert.equal(stream.outcome, 'fin');
    assert.equal(closed, true);
    assert.equal(mux.streamCount, 0);
  });
});

describe('StreamMux records', () => {
  it('packs frames queued in one turn into one record', () => {
    const { mux, sink } = makeMux('client');
    for (let i = 0; i < 10; i++) mux.openStream(`s${i}`);
    mux.flush();
    assert.equal(sink.records.length, 1);
    assert.equal(sink.frames().length, 10);
  });

  it('seals a lone stream\'s frames before the event loop moves on (a round trip waits for no other stream)', async () => {
    const { mux, sink } = makeMux('client');
    mux.openStream('smtp');
    assert.equal(sink.records.length, 0);
    await new Promise<void>((resolve) => process.nextTick(resolve));
    assert.equal(sink.records.length, 1);
  });

  it('with several streams, waits for the end of the I/O turn so frames from separate reads share a record', async () => {
    const { mux, sink } = makeMux('client');
    mux.openStream('a');
    mux.openStream('b');
    await new Promise<void>((resolve) => setImmediate(resolve));
    sink.records = [];
    const ping = { type: 'PING', streamId: 0, opaque: Buffer.alloc(8) } as const;
    mux.sendFrame(ping);
    await new Promise<void>((resolve) => process.nextTick(resolve));
    // A second socket read in the same turn of the loop, after the first one's ticks ran.
    mux.sendFrame(ping);
    assert.equal(sink.records.length, 0);
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(sink.records.length, 1);
    assert.deepEqual(sink.frames().map((frame) => frame.type), ['PING', 'PING']);
  });

  it('never builds a record larger than maxRecordBytes and splits DATA to fit', () => {
    const { mux, sink } = makeMux('client', { window: 1 << 20, maxRecord: 1024 });
    const stream = mux.openStream('bulk');
    mux.receiveRecord(record({ type: 'OPEN_OK', streamId: 1 }));
    stream.write(Buffer.alloc(10_000, 1));
    mux.flush();
    assert.ok(sink.records.length >= 10);
    for (const r of sink.records) assert.ok(r.length <= 1024, `record of ${r.length} bytes`);
    const data = sink.frames().filter((f) => f.type === 'DATA');
    assert.equal(data.reduce((n, f) => n + (f.type === 'DATA' ? f.data.length : 0), 0), 10_000);
    assert.ok(data.every((f) => f.type === 'DATA' && f.data.length <= 1024 - FRAME_HEADER_BYTES));
  });

  it('sends no more DATA than the window until WINDOW returns credit, then emits drain', () => {
    const { mux, sink } = makeMux('client', { window: 1000 });
    const stream = mux.openStream('bulk');
    mux.receiveRecord(record({ type: 'OPEN_OK', streamId: 1 }));
    assert.equal(stream.write(Buffer.alloc(2500)), false);
    mux.flush();
    const sent = () => sink.frames().reduce((n, f) => n + (f.type === 'DATA' ? f.data.length : 0), 0);
    assert.equal(sent(), 1000);
    let drained = 0;
    stream.on('drain', () => drained++);
    mux.receiveRecord(record({ type: 'WINDOW', streamId: 1, consumed: 1000 }));
    mux.flush();
    assert.equal(sent(), 1000);
    assert.equal(drained, 0);
    mux.receiveRecord(record({ type: 'WINDOW', streamId: 1, consumed: 2000 }));
    mux.flush();
    assert.equal(sent(), 500);
    assert.equal(drained, 1);
  });

  it('holds DATA while the WebSocket is congested and resumes on resume()', () => {
    const { mux, sink } = makeMux('client', { window: 1 << 20 });
    const stream = mux.openStream('bulk');
    mux.receiveRecord(record({ type: 'OPEN_OK', streamId: 1 }));
    mux.flush();
    sink.frames();
    sink.congested = true;
    assert.equal(stream.write(Buffer.alloc(100)), false);
    mux.flush();
    assert.equal(sink.frames().length, 0);
    sink.congested = false;
    mux.resume();
    mux.flush();
    assert.deepEqual(sink.frames().map((f) => f.type), ['DATA']);
  });

  it('resets every stream with SESSION_CLOSED on destroy()', () => {
    const { mux } = makeMux('client');
    const errors: StreamError[] = [];
    for (let i = 0; i < 3; i++) mux.openStream('s').on('reset', (e: StreamError) => errors.push(e));
    mux.destroy('gone');
    assert.equal(errors.length, 3);
    assert.ok(errors.every((e) => e.code === ErrorCode.SESSION_CLOSED));
    assert.equal(mux.streamCount, 0);
  });
});
