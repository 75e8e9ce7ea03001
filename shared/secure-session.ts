/**
 * An established session, the same on both sides once the handshake is done:
 * WebSocket binary messages ⇄ record layer ⇄ stream mux, plus keepalive and
 * the one place a protocol error turns into a WebSocket close code.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type WebSocket from 'ws';
import { CloseCode, PING_PAYLOAD_BYTES } from './constants.js';
import { ErrorCode, ProtocolError, ReflectorError } from './errors.js';
import type { Frame } from './frames.js';
import type { RecordOpener, RecordSealer } from './record-layer.js';
import { StreamMux } from './stream-mux.js';
import type { TunnelStream } from './tunnel-stream.js';

/** Sealed bytes handed to the WebSocket but not yet written to the kernel. */
const CONGESTION_HIGH_BYTES = 2 * 1024 * 1024;
const CONGESTION_LOW_BYTES = 512 * 1024;

export interface SecureSessionOptions {
  ws: WebSocket;
  role: 'client' | 'server';
  sealer: RecordSealer;
  opener: RecordOpener;
  windowBytes: number;
  maxRecordBytes: number;
  maxStreams: number;
  pingIntervalMs: number;
  idleTimeoutMs: number;
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

/**
 * Events: 'goaway' (server asked us to move on), 'close' (SessionCloseInfo).
 */
export class SecureSession extends EventEmitter {
  readonly mux: StreamMux;
  private readonly ws: WebSocket;
  private outstandingBytes = 0;
  private activitySinceTick = true;
  private idleMs = 0;
  private readonly keepalive: NodeJS.Timeout;
  private closed = false;
  private goingAway = false;
  bytesSealed = 0;
  bytesOpened = 0;

  constructor(private readonly options: SecureSessionOptions) {
    super();
    this.ws = options.ws;
    this.mux = new StreamMux({
      role: options.role,
      windowBytes: options.windowBytes,
      maxRecordBytes: options.maxRecordBytes,
      maxStreams: options.maxStreams,
      sink: this,
      onOpen: options.onOpen,
      onSessionFrame: (frame) => this.receiveSessionFrame(frame),
    });
    this.ws.on('message', this.onMessage);
    this.ws.on('close', this.onClose);
    this.keepalive = setInterval(() => this.tick(), options.pingIntervalMs);
    this.keepalive.unref();
  }

  get congested(): boolean {
    return this.outstandingBytes > CONGESTION_HIGH_BYTES;
  }
  get isClosed(): boolean {
    return this.closed;
  }
  /** True once the server sent GOAWAY (client) or drain started (server). */
  get draining(): boolean {
    return this.goingAway;
  }

  openStream(service: string): TunnelStream {
    return this.mux.openStream(service);
  }

  sendFrame(frame: Frame): void {
    this.mux.sendFrame(frame);
  }

  /** Seals one record and hands it to the WebSocket; called by the mux. */
  sendRecord(plaintext: Buffer): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    const record = this.options.sealer.seal(plaintext);
    this.bytesSealed += plaintext.length;
    this.outstandingBytes += record.length;
    this.ws.send(record, { binary: true }, () => {
      const wasCongested = this.congested;
      this.outstandingBytes -= record.length;
      if (wasCongested || this.outstandingBytes < CONGESTION_LOW_BYTES) {
        if (!this.congested) this.mux.resume();
      }
    });
  }

  /** Server: tells the client to open no more streams here. */
  goAway(code: number): void {
    if (this.goingAway || this.closed) return;
    this.goingAway = true;
    this.mux.sendFrame({ type: 'GOAWAY', streamId: 0, code });
    this.mux.flush();
  }

  /** Ends the session: every stream is reset locally, the peer gets `code`. */
  close(code: number, error?: ReflectorError): void {
    if (this.closed) return;
    this.mux.flush();
    this.finish({ code, by: 'local', ...(error ? { error } : {}) });
    // Close the WebSocket only after the final record was queued in ws.
    this.ws.close(code);
  }

  private readonly onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
    if (this.closed) return;
    this.activitySinceTick = true;
    try {
      if (!isBinary) {
        throw new ProtocolError(ErrorCode.RECORD_UNEXPECTED_TEXT, 'text message after the handshake');
      }
      const record = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      const plaintext = this.options.opener.open(record);
      this.bytesOpened += plaintext.length;
      this.mux.receiveRecord(plaintext);
    } catch (error) {
      this.fail(error);
    }
  };

  private readonly onClose = (code: number): void => {
    this.finish({ code, by: 'remote' });
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
        this.mux.sendFrame({ type: 'PONG', streamId: 0, opaque: Buffer.from(frame.opaque) });
        return;
      case 'PONG':
        return;
      case 'GOAWAY':
        if (this.options.role !== 'client') throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, 'GOAWAY sent by the client');
        this.goingAway = true;
        this.emit('goaway', frame.code);
        return;
      case 'WELCOME':
        throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, 'WELCOME after the handshake');
      default:
        throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, `${frame.type} as a session frame`);
    }
  }

  private tick(): void {
    if (this.activitySinceTick) {
      this.idleMs = 0;
    } else {
      this.idleMs += this.options.pingIntervalMs;
      if (this.idleMs >= this.options.idleTimeoutMs) {
        this.close(
          CloseCode.IDLE_TIMEOUT,
          new ReflectorError(ErrorCode.IDLE_TIMEOUT, `no record from the peer for ${this.idleMs} ms`),
        );
        return;
      }
    }
    this.activitySinceTick = false;
    this.mux.sendFrame({ type: 'PING', streamId: 0, opaque: randomBytes(PING_PAYLOAD_BYTES) });
  }

  private finish(info: SessionCloseInfo): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepalive);
    this.ws.off('message', this.onMessage);
    this.mux.destroy(info.error?.message ?? `session closed (${info.code})`);
    this.emit('close', info);
  }
}
