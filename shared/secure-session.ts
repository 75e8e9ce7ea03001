/**
 * An established session, the same on both sides once the handshake is done:
 * WebSocket binary messages ⇄ record layer ⇄ stream mux, plus keepalive and
 * the one place a protocol error turns into a WebSocket close code.
 *
 * The session (its stream table) can outlive its connection (WebSocket plus
 * record keys). When the connection drops without a deliberate close, a
 * resumable session is suspended instead of closed; a later connection that
 * proves it continues this session is attached in its place.
 *
 *   open ──unclean drop / idle──> suspended ──attach(new connection)──> open
 *    │                              │ expire() (resume window over)
 *    └──close() / deliberate close──┴──────────────────────────────────> closed
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type WebSocket from 'ws';
import { AEAD_TAG_BYTES, CloseCode, PING_PAYLOAD_BYTES } from './constants.js';
import { ErrorCode, PolicyError, ProtocolError, ReflectorError } from './errors.js';
import type { Frame, FrameOf } from './frames.js';
import { RecordBufferPool } from './record-buffers.js';
import { recordBytesPassed } from './gc-pacer.js';
import type { RecordOpener, RecordSealer } from './record-layer.js';
import { StreamMux } from './stream-mux.js';
import type { TunnelStream } from './tunnel-stream.js';

/** Sealed bytes handed to the WebSocket but not yet written to the kernel. */
const CONGESTION_HIGH_BYTES = 2 * 1024 * 1024;
const CONGESTION_LOW_BYTES = 512 * 1024;
/**
 * DATA stops at the congestion mark, but control frames (PONG, WINDOW,
 * OPEN_FAIL) do not; a peer that never reads yet keeps asking for them is
 * cut off here rather than growing our memory without end.
 */
const OUTSTANDING_HARD_LIMIT_BYTES = 16 * 1024 * 1024;

/** Close codes that mean "the connection died", not "the peer ended the session". */
const RESUMABLE_CLOSE_CODES: ReadonlySet<number> = new Set([1001, 1006, 1011, 1012, 1013, 1014, CloseCode.IDLE_TIMEOUT]);

/** The close code ws sends for each framing fault it finds in what the peer sent. */
const WS_FAULT_CLOSE_CODES: Readonly<Record<string, number>> = {
  WS_ERR_INVALID_UTF8: 1007,
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: CloseCode.MESSAGE_TOO_BIG,
  WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH: CloseCode.MESSAGE_TOO_BIG,
};

/** One connection's worth of state: the socket, its record keys, its key schedule outputs. */
export interface SessionTransport {
  ws: WebSocket;
  sealer: RecordSealer;
  opener: RecordOpener;
  /** From this connection's handshake: names the session and keys the next RESUME proof. */
  sessionId: Buffer;
  resumption: Buffer;
  transcript: Buffer;
}

export interface SecureSessionOptions {
  transport: SessionTransport;
  role: 'client' | 'server';
  windowBytes: number;
  maxRecordBytes: number;
  maxStreams: number;
  pingIntervalMs: number;
  idleTimeoutMs: number;
  /** Suspend on an unclean drop (keeping unacknowledged bytes) instead of closing. */
  resumable: boolean;
  /** Server: a stream was requested. */
  onOpen?: (stream: TunnelStream) => void;
}

export interface SessionCloseInfo {
  /** The WebSocket close code (sent by us, or received from the peer). */
  code: number;
  /** Who closed: 'local' (we decided, possibly because of `error`) or 'remote'. */
  by: 'local' | 'remote';
  error?: ReflectorError;
}

export type SessionState = 'open' | 'suspended' | 'closed';

/**
 * Events: 'goaway' (code), 'suspend' (SessionCloseInfo), 'close' (SessionCloseInfo),
 * 'resume' (RESUME frame, server), 'resume-ok' / 'resume-fail' (client).
 */
export class SecureSession extends EventEmitter {
  readonly mux: StreamMux;
  private transport: SessionTransport;
  private currentState: SessionState = 'open';
  private outstandingBytes = 0;
  private activitySinceTick = true;
  private idleMs = 0;
  private keepalive: NodeJS.Timeout | undefined;
  private goingAway = false;
  bytesSealed = 0;
  bytesOpened = 0;
  private readonly recordBuffers: RecordBufferPool;

  constructor(private readonly options: SecureSessionOptions) {
    super();
    this.transport = options.transport;
    this.recordBuffers = RecordBufferPool.forCapacity(options.maxRecordBytes + AEAD_TAG_BYTES);
    this.mux = new StreamMux({
      role: options.role,
      windowBytes: options.windowBytes,
      maxRecordBytes: options.maxRecordBytes,
      maxStreams: options.maxStreams,
      resumable: options.resumable,
      sink: this,
      onOpen: options.onOpen,
      onSessionFrame: (frame) => this.receiveSessionFrame(frame),
    });
    this.connect();
  }

  get state(): SessionState {
    return this.currentState;
  }
  get congested(): boolean {
    return this.currentState !== 'open' || this.outstandingBytes > CONGESTION_HIGH_BYTES;
  }
  get isClosed(): boolean {
    return this.currentState === 'closed';
  }
  /** True once the server sent GOAWAY (client) or drain started (server). */
  get draining(): boolean {
    return this.goingAway;
  }
  /** Names the session for a RESUME; changes with every resumed connection. */
  get sessionId(): Buffer {
    return this.transport.sessionId;
  }
  get resumptionSecret(): Buffer {
    return this.transport.resumption;
  }
  get transcript(): Buffer {
    return this.transport.transcript;
  }

  openStream(service: string): TunnelStream {
    return this.mux.openStream(service);
  }

  sendFrame(frame: Frame): void {
    this.mux.sendFrame(frame);
  }

  /** Seals one record and hands it to the WebSocket; called by the mux. */
  sendRecord(plaintext: Buffer): void {
    const { ws, sealer } = this.transport;
    if (this.currentState !== 'open' || ws.readyState !== ws.OPEN) return;
    const record = this.recordBuffers.acquire(plaintext.length + AEAD_TAG_BYTES);
    sealer.sealInto(plaintext, record);
    this.bytesSealed += plaintext.length;
    recordBytesPassed(record.length);
    this.outstandingBytes += record.length;
    if (this.outstandingBytes > OUTSTANDING_HARD_LIMIT_BYTES) {
      this.recordBuffers.release(record);
      this.close(
        CloseCode.LIMIT_EXCEEDED,
        new PolicyError(ErrorCode.LIMIT_SESSIONS, `the peer left ${this.outstandingBytes} bytes unread`),
      );
      return;
    }
    ws.send(record, { binary: true }, () => {
      // ws is done with the bytes (written to the kernel, or the socket failed).
      this.recordBuffers.release(record);
      if (this.transport.ws !== ws) return; // a callback from a connection we already left
      const wasCongested = this.congested;
      this.outstandingBytes -= record.length;
      if ((wasCongested || this.outstandingBytes < CONGESTION_LOW_BYTES) && !this.congested) this.mux.resume();
    });
  }

  /** Server: tells the client to open no more streams here. */
  goAway(code: number): void {
    if (this.goingAway || this.currentState === 'closed') return;
    this.goingAway = true;
    this.mux.sendFrame({ type: 'GOAWAY', streamId: 0, code });
    this.mux.flush();
  }

  /** Ends the session: every stream is reset locally, the peer gets `code`. */
  close(code: number, error?: ReflectorError): void {
    if (this.currentState === 'closed') return;
    const wasOpen = this.currentState === 'open';
    if (wasOpen) this.mux.flush();
    this.finish({ code, by: 'local', ...(error ? { error } : {}) });
    // Close the WebSocket only after the final record was queued in ws.
    if (wasOpen) this.transport.ws.close(code);
  }

  /** The resume window ran out: the suspended streams are reset. */
  expire(): void {
    if (this.currentState !== 'suspended') return;
    this.finish({
      code: CloseCode.GOING_AWAY,
      by: 'local',
      error: new ReflectorError(ErrorCode.SESSION_CLOSED, 'the connection dropped and was not resumed in time'),
    });
  }

  /** Drops the current connection now (it may be stale) and waits for another. */
  suspend(info: SessionCloseInfo): void {
    if (this.currentState !== 'open') return;
    this.currentState = 'suspended';
    this.disconnect();
    this.transport.ws.terminate();
    this.mux.discardQueued();
    this.outstandingBytes = 0;
    this.emit('suspend', info);
  }

  /** Continues this session over a new connection (the caller then reconciles streams). */
  attach(transport: SessionTransport): void {
    if (this.currentState === 'closed') throw new Error('attach to a closed session');
    if (this.currentState === 'open') this.suspend({ code: CloseCode.IDLE_TIMEOUT, by: 'local' });
    // Frames queued while suspended describe a connection that is gone; resume rebuilds them.
    this.mux.discardQueued();
    this.transport = transport;
    this.currentState = 'open';
    this.outstandingBytes = 0;
    this.connect();
  }

  /**
   * Hands this (fresh, streamless) session's connection to a session being
   * resumed; this one ends silently, its WebSocket stays open.
   */
  detachTransport(): SessionTransport {
    if (this.currentState !== 'open' || this.mux.streamCount > 0) throw new Error('detach from a busy session');
    this.disconnect();
    this.currentState = 'closed';
    this.mux.destroy('connection handed to a resumed session');
    return this.transport;
  }

  private connect(): void {
    const { ws } = this.transport;
    this.wsFault = undefined;
    ws.on('message', this.onMessage);
    ws.on('close', this.onClose);
    ws.on('error', this.onWsError);
    this.activitySinceTick = true;
    this.idleMs = 0;
    this.keepalive = setInterval(() => this.tick(), this.options.pingIntervalMs);
    this.keepalive.unref();
  }

  private disconnect(): void {
    clearInterval(this.keepalive);
    this.transport.ws.off('message', this.onMessage);
    this.transport.ws.off('close', this.onClose);
    this.transport.ws.off('error', this.onWsError);
  }

  /**
   * ws found a framing fault in what the peer sent (a message over maxPayload,
   * invalid UTF-8...) and closes the socket itself; the 'close' that follows
   * looks like a dropped connection, but it is the peer's fault: no resume.
   */
  private readonly onWsError = (error: Error & { code?: string }): void => {
    this.wsFault = WS_FAULT_CLOSE_CODES[error.code ?? ''] ?? 1002;
  };
  /** The close code ws sent for the peer's framing fault, if any. */
  private wsFault: number | undefined;

  private readonly onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
    if (this.currentState !== 'open') return;
    this.activitySinceTick = true;
    try {
      if (!isBinary) {
        throw new ProtocolError(ErrorCode.RECORD_UNEXPECTED_TEXT, 'text message after the handshake');
      }
      const record = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      // The message buffer is ours alone once ws emits it: open the record where it lies.
      const plaintext = this.transport.opener.openInPlace(record);
      this.bytesOpened += plaintext.length;
      recordBytesPassed(record.length);
      this.mux.receiveRecord(plaintext);
    } catch (error) {
      this.fail(error);
    }
  };

  private readonly onClose = (code: number): void => {
    if (this.wsFault !== undefined) {
      const error = new ProtocolError(ErrorCode.FRAME_MALFORMED, `WebSocket framing fault from the peer (close ${this.wsFault})`);
      this.finish({ code: this.wsFault, by: 'local', error });
      return;
    }
    const info: SessionCloseInfo = { code, by: 'remote' };
    if (this.options.resumable && RESUMABLE_CLOSE_CODES.has(code) && !this.goingAway) this.suspend(info);
    else this.finish(info);
  };

  /** Turns anything thrown while handling input into a close with its code. */
  fail(error: unknown): void {
    if (error instanceof ReflectorError) {
      this.close(error.closeCode, error);
    } else {
      const wrapped = new ReflectorError(ErrorCode.INTERNAL, `internal error: ${(error as Error)?.message ?? error}`, {
        cause: error,
      });
      this.close(CloseCode.INTERNAL_ERROR, wrapped);
    }
  }

  private receiveSessionFrame(frame: Frame): void {
    switch (frame.type) {
      case 'PING':
        // A peer that does not read what we send needs no proof of life from us.
        if (!this.congested) this.mux.sendFrame({ type: 'PONG', streamId: 0, opaque: Buffer.from(frame.opaque) });
        return;
      case 'PONG':
        return;
      case 'GOAWAY':
        this.expectRole('client', frame.type);
        this.goingAway = true;
        this.emit('goaway', frame.code);
        return;
      case 'RESUME':
        this.expectRole('server', frame.type);
        if (this.mux.highestStreamId !== 0) {
          throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, 'RESUME after streams were opened on this connection');
        }
        this.emit('resume', frame satisfies FrameOf<'RESUME'>);
        return;
      case 'RESUME_OK':
      case 'RESUME_FAIL':
        this.expectRole('client', frame.type);
        if (this.listenerCount(frame.type === 'RESUME_OK' ? 'resume-ok' : 'resume-fail') === 0) {
          throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, `${frame.type} without a RESUME`);
        }
        this.emit(frame.type === 'RESUME_OK' ? 'resume-ok' : 'resume-fail', frame);
        return;
      case 'WELCOME':
        throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, 'WELCOME after the handshake');
      default:
        throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, `${frame.type} as a session frame`);
    }
  }

  private expectRole(role: 'client' | 'server', type: string): void {
    if (this.options.role !== role) {
      throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, `${type} sent by the ${role}`);
    }
  }

  private tick(): void {
    if (this.activitySinceTick) {
      this.idleMs = 0;
    } else {
      this.idleMs += this.options.pingIntervalMs;
      if (this.idleMs >= this.options.idleTimeoutMs) {
        const error = new ReflectorError(ErrorCode.IDLE_TIMEOUT, `no record from the peer for ${this.idleMs} ms`);
        if (this.options.resumable) this.suspend({ code: CloseCode.IDLE_TIMEOUT, by: 'local', error });
        else this.close(CloseCode.IDLE_TIMEOUT, error);
        return;
      }
    }
    this.activitySinceTick = false;
    this.mux.sendFrame({ type: 'PING', streamId: 0, opaque: randomBytes(PING_PAYLOAD_BYTES) });
  }

  private finish(info: SessionCloseInfo): void {
    if (this.currentState === 'closed') return;
    this.currentState = 'closed';
    this.disconnect();
    this.mux.destroy(info.error?.message ?? `session closed (${info.code})`);
    this.emit('close', info);
  }
}
