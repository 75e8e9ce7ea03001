/**
 * The stream table both sides share: allocates and checks stream ids, routes
 * decoded frames to streams, and packs outgoing frames into records. Frames
 * queued in the same turn of the event loop leave in one record (up to the
 * negotiated record size), so a burst of small frames costs one seal and one
 * WebSocket message.
 */
import { FRAME_HEADER_BYTES, MAX_STREAM_ID, OpenFailCode, ResetCode } from './constants.js';
import { ErrorCode, ProtocolError, StreamError } from './errors.js';
import { decodeFrames, encodedFrameLength, isSessionFrame, writeFrame, type Frame } from './frames.js';
import { TunnelStream, type StreamHost } from './tunnel-stream.js';

/** Where the mux hands finished record plaintexts; the session seals and sends them. */
export interface RecordSink {
  sendRecord(plaintext: Buffer): void;
  /** True while too many sealed bytes wait in the WebSocket. */
  readonly congested: boolean;
}

export interface StreamMuxOptions {
  role: 'client' | 'server';
  windowBytes: number;
  maxRecordBytes: number;
  maxStreams: number;
  sink: RecordSink;
  /** Server: a new stream was requested; call stream.accept() or stream.refuse(). */
  onOpen?: (stream: TunnelStream) => void;
  /** WELCOME, PING, PONG and GOAWAY go to the session. */
  onSessionFrame: (frame: Frame) => void;
}

export class StreamMux implements StreamHost {
  private readonly streams = new Map<number, TunnelStream>();
  /** Client: last id handed out. Server: highest id the client has used. Ids only grow. */
  private lastStreamId = 0;
  private queue: Frame[] = [];
  private queuedBytes = 0;
  private flushScheduled = false;
  private destroyed = false;
  readonly maxDataBytes: number;

  constructor(private readonly options: StreamMuxOptions) {
    this.maxDataBytes = options.maxRecordBytes - FRAME_HEADER_BYTES;
  }

  get congested(): boolean {
    return this.options.sink.congested;
  }
  get streamCount(): number {
    return this.streams.size;
  }
  get openStreams(): IterableIterator<TunnelStream> {
    return this.streams.values();
  }

  /** Client: starts a new stream to `service`. */
  openStream(service: string): TunnelStream {
    if (this.options.role !== 'client') throw new Error('only the client opens streams');
    if (this.destroyed) throw new StreamError(ErrorCode.SESSION_CLOSED, 'the session is closed');
    if (this.lastStreamId >= MAX_STREAM_ID) {
      throw new StreamError(ErrorCode.LIMIT_STREAMS, 'stream ids of this session are exhausted');
    }
    const id = ++this.lastStreamId;
    const stream = new TunnelStream(id, service, this.options.windowBytes, this);
    this.streams.set(id, stream);
    this.sendFrame({ type: 'OPEN', streamId: id, service });
    return stream;
  }

  /** Decodes one record's plaintext and applies its frames in order. Throws ProtocolError. */
  receiveRecord(plaintext: Buffer): void {
    for (const frame of decodeFrames(plaintext)) {
      if (this.destroyed) return;
      this.receiveFrame(frame);
    }
  }

  private receiveFrame(frame: Frame): void {
    if (isSessionFrame(frame.type)) {
      this.options.onSessionFrame(frame);
      return;
    }
    if (frame.type === 'OPEN') {
      this.receiveOpen(frame.streamId, frame.service);
      return;
    }
    if ((frame.type === 'OPEN_OK' || frame.type === 'OPEN_FAIL') && this.options.role !== 'client') {
      throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, `${frame.type} sent by the client`);
    }
    const stream = this.streams.get(frame.streamId);
    if (stream !== undefined) {
      stream.handleFrame(frame);
      return;
    }
    if (frame.streamId > this.lastStreamId) {
      throw new ProtocolError(ErrorCode.STREAM_UNKNOWN, `${frame.type} for stream ${frame.streamId}, which was never opened`);
    }
    // A stream that already closed here: the peer sent this before it saw our
    // RST or FIN. Frames crossing on the wire are normal and carry no data we owe anyone.
  }

  private receiveOpen(streamId: number, service: string): void {
    if (this.options.role !== 'server') {
      throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, 'OPEN sent by the server');
    }
    if (streamId <= this.lastStreamId) {
      throw new ProtocolError(ErrorCode.STREAM_ID_REUSED, `OPEN reuses stream id ${streamId} (last was ${this.lastStreamId})`);
    }
    this.lastStreamId = streamId;
    if (this.streams.size >= this.options.maxStreams) {
      this.sendFrame({
        type: 'OPEN_FAIL',
        streamId,
        code: OpenFailCode.STREAM_LIMIT,
        reason: `at most ${this.options.maxStreams} streams per session`,
      });
      return;
    }
    const stream = new TunnelStream(streamId, service, this.options.windowBytes, this);
    this.streams.set(streamId, stream);
    this.options.onOpen?.(stream);
  }

  /** Queues a frame for the next record. */
  sendFrame(frame: Frame): void {
    if (this.destroyed) return;
    const length = encodedFrameLength(frame);
    if (this.queuedBytes + length > this.options.maxRecordBytes) this.flush();
    this.queue.push(frame);
    this.queuedBytes += length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Seals everything queued now (also called when a record is full). */
  flush(): void {
    this.flushScheduled = false;
    if (this.queue.length === 0 || this.destroyed) return;
    const plaintext = Buffer.allocUnsafe(this.queuedBytes);
    let offset = 0;
    for (const frame of this.queue) offset = writeFrame(frame, plaintext, offset);
    this.queue = [];
    this.queuedBytes = 0;
    this.options.sink.sendRecord(plaintext);
  }

  streamClosed(stream: TunnelStream): void {
    this.streams.delete(stream.id);
  }

  /** The WebSocket drained: let blocked streams send again. */
  resume(): void {
    for (const stream of this.streams.values()) {
      if (this.congested) return;
      stream.resumeAfterCongestion();
    }
  }

  /** Ends every stream because the session is gone; nothing more is sent. */
  destroy(reason: string): void {
    if (this.destroyed) return;
    this.flush();
    this.destroyed = true;
    this.queue = [];
    const error = new StreamError(ErrorCode.SESSION_CLOSED, reason, ResetCode.SESSION_CLOSED);
    for (const stream of [...this.streams.values()]) stream.abort(error);
    this.streams.clear();
  }
}
