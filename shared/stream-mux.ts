/**
 * The stream table both sides share: allocates and checks stream ids, routes
 * decoded frames to streams, and packs outgoing frames into records. Frames
 * queued in the same turn of the event loop leave in one record (up to the
 * negotiated record size), so a burst of small frames costs one seal and one
 * WebSocket message.
 */
import { FRAME_HEADER_BYTES, MAX_STREAM_ID, OpenFailCode, ResetCode } from './constants.js';
import { ErrorCode, ProtocolError, StreamError } from './errors.js';
import { decodeFrames, encodedFrameLength, isSessionFrame, writeFrame, type Frame, type ResumeEntry } from './frames.js';
import { plaintextScratch } from './record-buffers.js';
import { TunnelStream, type StreamHost } from './tunnel-stream.js';

/**
 * Session-wide cap on DATA kept for a possible resume (each stream is also
 * capped by its window): eight windows (8 MiB at the default window), and
 * never less than 2 MiB. Up to 64 streams can then each hold the 128 KiB
 * that prompt the receiver's WINDOW at the default window; beyond that,
 * streams also wait for its late advertisements (LATE_ADVERTISEMENT_MS).
 */
const RETAINED_BUDGET_WINDOWS = 8;
const MIN_RETAINED_BUDGET_BYTES = 2 * 1024 * 1024;
/**
 * Consumed credit too small for a WINDOW of its own is advertised at the
 * latest this long after it was freed (protocol.md §9): a sender held back by
 * its session-wide cap would otherwise wait for acknowledgements that never come.
 */
export const LATE_ADVERTISEMENT_MS = 20;

/** Where the mux hands finished record plaintexts; the session seals and sends them. */
export interface RecordSink {
  /** `plaintext` is a shared scratch buffer: seal or copy it before returning, keep no reference. */
  sendRecord(plaintext: Buffer): void;
  /** True while too many sealed bytes wait in the WebSocket. */
  readonly congested: boolean;
}

export interface StreamMuxOptions {
  role: 'client' | 'server';
  windowBytes: number;
  maxRecordBytes: number;
  maxStreams: number;
  /** Keep sent bytes until acknowledged so streams can survive a resumed connection. */
  resumable: boolean;
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
  private retainedBytes = 0;
  private readonly retainedBudget: number;
  private readonly lateAdvertisements = new Set<TunnelStream>();
  private lateAdvertisementTimer: NodeJS.Timeout | undefined;
  readonly maxDataBytes: number;
  readonly retainsUnacknowledged: boolean;

  constructor(private readonly options: StreamMuxOptions) {
    this.maxDataBytes = options.maxRecordBytes - FRAME_HEADER_BYTES;
    this.retainsUnacknowledged = options.resumable;
    this.retainedBudget = Math.max(MIN_RETAINED_BUDGET_BYTES, RETAINED_BUDGET_WINDOWS * options.windowBytes);
  }

  /** Highest stream id used so far on this session (0 before the first OPEN). */
  get highestStreamId(): number {
    return this.lastStreamId;
  }

  /**
   * True while the WebSocket has too much unsent data, or the session keeps too
   * many sent-but-unacknowledged bytes for resumption (a peer that reads but
   * never acknowledges must not make us hold a window per stream without limit).
   */
  get congested(): boolean {
    return this.options.sink.congested || this.retainedBytes > this.retainedBudget;
  }

  retainedChanged(delta: number): void {
    const wasOver = this.retainedBytes > this.retainedBudget;
    this.retainedBytes += delta;
    if (wasOver && this.retainedBytes <= this.retainedBudget) setImmediate(() => this.resume());
  }

  advertiseLater(stream: TunnelStream): void {
    if (this.destroyed) return;
    this.lateAdvertisements.add(stream);
    if (this.lateAdvertisementTimer === undefined) {
      this.lateAdvertisementTimer = setTimeout(() => this.advertiseLate(), LATE_ADVERTISEMENT_MS);
      this.lateAdvertisementTimer.unref();
    }
  }

  private advertiseLate(): void {
    this.lateAdvertisementTimer = undefined;
    const streams = [...this.lateAdvertisements];
    this.lateAdvertisements.clear();
    for (const stream of streams) stream.advertisePending();
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
    const frames = decodeFrames(plaintext);
    if (frames.length > 1 && frames.some((f) => f.type === 'RESUME' || f.type === 'RESUME_OK' || f.type === 'RESUME_FAIL')) {
      // A resume moves the stream table to another connection: nothing may ride along.
      throw new ProtocolError(ErrorCode.FRAME_MALFORMED, 'a RESUME, RESUME_OK or RESUME_FAIL frame must travel alone in its record');
    }
    for (const frame of frames) {
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
      // With several streams, waiting for the end of this I/O turn lets reads from
      // other sockets share the record. A lone stream has no one to wait for, and
      // sealing before the loop moves on takes about 15 µs off a round trip.
      if (this.streams.size <= 1) process.nextTick(() => this.flush());
      else setImmediate(() => this.flush());
    }
  }

  /** Seals everything queued now (also called when a record is full). */
  flush(): void {
    this.flushScheduled = false;
    if (this.queue.length === 0 || this.destroyed) return;
    const plaintext = plaintextScratch(this.queuedBytes);
    let offset = 0;
    for (const frame of this.queue) offset = writeFrame(frame, plaintext, offset);
    this.queue = [];
    this.queuedBytes = 0;
    this.options.sink.sendRecord(plaintext);
  }

  streamClosed(stream: TunnelStream): void {
    this.streams.delete(stream.id);
    this.lateAdvertisements.delete(stream);
  }

  /** The WebSocket drained: let blocked streams send again. */
  resume(): void {
    for (const stream of this.streams.values()) {
      if (this.congested) return;
      stream.resumeAfterCongestion();
    }
  }

  /** Every live stream's position, in id order, for RESUME / RESUME_OK. */
  resumeEntries(): ResumeEntry[] {
    return [...this.streams.values()].map((stream) => stream.resumeEntry()).sort((a, b) => a.streamId - b.streamId);
  }

  /**
   * Matches our streams with the peer's list after a resume. A stream only one
   * side still has cannot continue: ours are reset locally, the peer's get RST.
   */
  reconcile(peerEntries: readonly ResumeEntry[]): void {
    const peer = new Map(peerEntries.map((entry) => [entry.streamId, entry]));
    for (const entry of peerEntries) {
      if (entry.streamId <= this.lastStreamId) continue;
      // The server may never have seen an OPEN lost with the old connection: that
      // stream is reset below like any other one-sided stream, and its id is spent.
      if (this.options.role !== 'server') {
        throw new ProtocolError(ErrorCode.STREAM_UNKNOWN, `resume names stream ${entry.streamId}, which was never opened`);
      }
      this.lastStreamId = entry.streamId;
    }
    const lost = new StreamError(ErrorCode.SESSION_CLOSED, 'the stream did not survive the reconnection', ResetCode.SESSION_CLOSED);
    for (const stream of [...this.streams.values()]) {
      const entry = peer.get(stream.id);
      if (entry === undefined) stream.abort(lost);
      else stream.resume(entry, this.options.role);
      peer.delete(stream.id);
    }
    for (const streamId of peer.keys()) this.sendFrame({ type: 'RST', streamId, code: ResetCode.SESSION_CLOSED });
  }

  /** The connection dropped: frames not yet sealed are rebuilt from stream state on resume. */
  discardQueued(): void {
    this.queue = [];
    this.queuedBytes = 0;
  }

  /** Ends every stream because the session is gone; nothing more is sent. */
  destroy(reason: string): void {
    if (this.destroyed) return;
    this.flush();
    this.destroyed = true;
    this.queue = [];
    clearTimeout(this.lateAdvertisementTimer);
    this.lateAdvertisementTimer = undefined;
    this.lateAdvertisements.clear();
    // Most sessions end with no stream left: skip building an Error (and its stack) for nobody.
    if (this.streams.size === 0) return;
    const error = new StreamError(ErrorCode.SESSION_CLOSED, reason, ResetCode.SESSION_CLOSED);
    for (const stream of [...this.streams.values()]) stream.abort(error);
    this.streams.clear();
  }
}
