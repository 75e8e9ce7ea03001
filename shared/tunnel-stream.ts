/**
 * One stream inside a session: its lifecycle, its two flow-control windows and
 * the bytes waiting for credit. It knows nothing about sockets (see
 * socket-bridge.ts) or records (see stream-mux.ts).
 *
 *            OPEN sent/received
 *                  |
 *               opening ──OPEN_FAIL / RST──────────────────┐
 *                  | OPEN_OK                                 |
 *                  v                                         |
 *    ┌───────────open───────────┐                            |
 *    | FIN sent                 | FIN received               |
 *    v                          v                            |
 * half-closed-local     half-closed-remote                   |
 *    | FIN received             | FIN sent                   |
 *    └─────────> closed <───────┴──── RST either way <────────┘
 *
 * Events: 'open' (OPEN_OK arrived), 'data' (Buffer), 'end' (peer sent FIN),
 * 'drain' (write() may be called again), 'reset' (StreamError: RST, OPEN_FAIL
 * or session loss), 'close' (the stream left the table; always last).
 */
import { EventEmitter } from 'node:events';
import { ResetCode, ResumeFlag } from './constants.js';
import { ErrorCode, ProtocolError, StreamError } from './errors.js';
import { ReceiveWindow, SendWindow } from './flow-window.js';
import { clampReason, type Frame, type ResumeEntry } from './frames.js';

export type StreamState = 'opening' | 'open' | 'half-closed-local' | 'half-closed-remote' | 'closed';
/** How a closed stream ended: FIN both ways, a RST we sent, one we received (or OPEN_FAIL), or the session died. */
export type StreamOutcome = 'fin' | 'reset-local' | 'reset-remote' | 'session-lost';

/** What a stream needs from its session: a way to send frames and to leave the table. */
export interface StreamHost {
  sendFrame(frame: Frame): void;
  /** True while the WebSocket has too much unsent data; DATA then waits. */
  readonly congested: boolean;
  /** Largest DATA payload that fits one record. */
  readonly maxDataBytes: number;
  /** Keep sent bytes until acknowledged, so a resumed connection can send them again. */
  readonly retainsUnacknowledged: boolean;
  /** Told of every change in the bytes kept that way, so the session can cap them. */
  retainedChanged(delta: number): void;
  /** Credit was freed below the WINDOW threshold: call advertisePending() on this stream soon. */
  advertiseLater(stream: TunnelStream): void;
  streamClosed(stream: TunnelStream): void;
}

export class TunnelStream extends EventEmitter {
  private currentState: StreamState = 'opening';
  private readonly sendWindow: SendWindow;
  private readonly receiveWindow: ReceiveWindow;
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Sent but not yet acknowledged bytes, from offset `unackedStart` up to `sent`. */
  private unacked: Buffer[] = [];
  private unackedStart = 0;
  private finRequested = false;
  private needsDrain = false;
  private closeEmitted = false;
  private endedHow: StreamOutcome | undefined;
  readonly openedAt = Date.now();

  constructor(
    readonly id: number,
    readonly service: string,
    windowBytes: number,
    private readonly host: StreamHost,
  ) {
    super();
    this.sendWindow = new SendWindow(windowBytes);
    this.receiveWindow = new ReceiveWindow(windowBytes);
  }

  get state(): StreamState {
    return this.currentState;
  }
  /** Set once the stream is closed. */
  get outcome(): StreamOutcome | undefined {
    return this.endedHow;
  }
  get bytesSent(): number {
    return this.sendWindow.sent;
  }
  get bytesReceived(): number {
    return this.receiveWindow.received;
  }
  /** Bytes written but not yet sent for lack of credit or because the WebSocket is congested. */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  /**
   * Queues `data` for the peer. Returns false when the caller should stop
   * writing until 'drain' (no credit, or the WebSocket is congested).
   */
  write(data: Buffer): boolean {
    if (this.finRequested || this.currentState === 'closed' || this.currentState === 'half-closed-local') {
      throw new StreamError(ErrorCode.STREAM_STATE, `write on stream ${this.id} after it was ended`);
    }
    if (data.length > 0) {
      this.pending.push(data);
      this.pendingBytes += data.length;
    }
    this.flush();
    const accepted = this.pendingBytes === 0 && !this.host.congested;
    if (!accepted) this.needsDrain = true;
    return accepted;
  }

  /** Half-closes our direction once every queued byte has been sent. */
  end(): void {
    if (this.finRequested || this.currentState === 'closed') return;
    this.finRequested = true;
    this.flush();
  }

  /** Aborts the stream in both directions and tells the peer. */
  reset(code: number = ResetCode.CANCEL): void {
    if (this.currentState === 'closed') return;
    this.host.sendFrame({ type: 'RST', streamId: this.id, code });
    this.finish('reset-local');
  }

  /** The application took `n` received bytes with no back-pressure: return the credit. */
  consumed(n: number): void {
    if (this.currentState === 'closed') return;
    this.receiveWindow.markConsumed(n);
    const offset = this.receiveWindow.takeAdvertisement();
    if (offset !== undefined) this.host.sendFrame({ type: 'WINDOW', streamId: this.id, consumed: offset });
    else this.host.advertiseLater(this);
  }

  /**
   * Advertises every consumed byte not yet advertised, however few. The sender
   * may be holding back for reasons of its own (a session-wide cap on
   * unacknowledged bytes) long before it has sent the quarter window that
   * would make us answer.
   */
  advertisePending(): void {
    if (this.currentState === 'closed') return;
    const offset = this.receiveWindow.takeAdvertisement(true);
    if (offset !== undefined) this.host.sendFrame({ type: 'WINDOW', streamId: this.id, consumed: offset });
  }

  /** Server side: the backend is connected. */
  accept(): void {
    this.expectState('opening', 'accept');
    this.host.sendFrame({ type: 'OPEN_OK', streamId: this.id });
    this.currentState = 'open';
    this.flush();
  }

  /** Server side: the stream cannot be served. */
  refuse(code: number, reason: string): void {
    this.expectState('opening', 'refuse');
    this.host.sendFrame({ type: 'OPEN_FAIL', streamId: this.id, code, reason: clampReason(reason) });
    this.finish('reset-local');
  }

  /** The session ended underneath the stream. */
  abort(error: StreamError): void {
    if (this.currentState === 'closed') return;
    this.emit('reset', error);
    this.finish('session-lost');
  }

  /** Called by the mux when the WebSocket has room again. */
  resumeAfterCongestion(): void {
    this.flush();
  }

  /** Applies one frame addressed to this stream; throws ProtocolError on a frame illegal in this state. */
  handleFrame(frame: Frame): void {
    switch (frame.type) {
      case 'OPEN_OK':
        this.expectState('opening', 'OPEN_OK');
        this.currentState = 'open';
        this.emit('open');
        this.flush();
        return;
      case 'OPEN_FAIL':
        this.expectState('opening', 'OPEN_FAIL');
        this.emit(
          'reset',
          new StreamError(ErrorCode.OPEN_FAILED, `service ${this.service}: ${frame.reason || 'refused'}`, frame.code),
        );
        this.finish('reset-remote');
        return;
      case 'DATA':
        if (this.currentState !== 'open' && this.currentState !== 'half-closed-local') {
          throw new ProtocolError(ErrorCode.STREAM_STATE, `DATA on stream ${this.id} in state ${this.currentState}`);
        }
        this.receiveWindow.receive(frame.data.length);
        this.emit('data', frame.data);
        return;
      case 'WINDOW':
        if (this.sendWindow.update(frame.consumed)) {
          this.dropUnackedBefore(frame.consumed);
          this.flush();
        }
        return;
      case 'FIN':
        if (this.currentState === 'open') this.currentState = 'half-closed-remote';
        else if (this.currentState === 'half-closed-local') this.currentState = 'closed';
        else throw new ProtocolError(ErrorCode.STREAM_STATE, `FIN on stream ${this.id} in state ${this.currentState}`);
        this.emit('end');
        if (this.currentState === 'closed') this.finish('fin');
        return;
      case 'RST':
        this.emit('reset', new StreamError(ErrorCode.STREAM_RESET, `stream ${this.id} (${this.service}) reset by peer`, frame.code));
        this.finish('reset-remote');
        return;
      default:
        throw new ProtocolError(ErrorCode.FRAME_NOT_ALLOWED, `${frame.type} frame on a stream`);
    }
  }

  /** This side's position, stated in RESUME / RESUME_OK. */
  resumeEntry(): ResumeEntry {
    let flags = 0;
    if (this.currentState === 'half-closed-remote') flags |= ResumeFlag.FIN_RECEIVED;
    if (this.currentState !== 'opening') flags |= ResumeFlag.OPENED;
    return { streamId: this.id, received: this.receiveWindow.received, flags };
  }

  /**
   * Picks the stream up on a resumed connection, given the peer's position:
   * resend OPEN_OK if it was lost (server), every byte after what the peer
   * received, FIN if the peer never got it, and the current WINDOW offset.
   */
  resume(peer: ResumeEntry, role: 'client' | 'server'): void {
    if (this.currentState === 'closed') return;
    if (role === 'server' && this.currentState !== 'opening' && (peer.flags & ResumeFlag.OPENED) === 0) {
      this.host.sendFrame({ type: 'OPEN_OK', streamId: this.id });
    }
    const sent = this.sendWindow.sent;
    this.sendWindow.rewind(peer.received);
    this.dropUnackedBefore(peer.received);
    // What the peer lacks goes back in front of anything not yet sent.
    const resend = this.unacked;
    const resendBytes = resend.reduce((n, chunk) => n + chunk.length, 0);
    if (resendBytes !== sent - peer.received) {
      throw new ProtocolError(ErrorCode.FLOW_CONTROL, `stream ${this.id}: cannot resend ${sent - peer.received} bytes, ${resendBytes} retained`);
    }
    this.unacked = [];
    this.unackedStart = peer.received;
    this.host.retainedChanged(-resendBytes);
    if (resendBytes > 0) {
      this.pending.unshift(...resend);
      this.pendingBytes += sent - peer.received;
    }
    if (this.currentState === 'half-closed-local' && (peer.flags & ResumeFlag.FIN_RECEIVED) === 0) {
      this.currentState = 'open';
      this.finRequested = true;
    }
    if (this.currentState !== 'opening') {
      this.host.sendFrame({ type: 'WINDOW', streamId: this.id, consumed: this.receiveWindow.readvertise() });
    }
    this.needsDrain = true;
    this.flush();
  }

  private dropUnackedBefore(offset: number): void {
    let excess = offset - this.unackedStart;
    let dropped = 0;
    while (excess > 0 && this.unacked.length > 0) {
      const head = this.unacked[0]!;
      const n = Math.min(head.length, excess);
      if (n === head.length) this.unacked.shift();
      else this.unacked[0] = head.subarray(n);
      excess -= n;
      dropped += n;
      this.unackedStart += n;
    }
    if (this.unacked.length === 0) this.unackedStart = Math.max(this.unackedStart, offset);
    if (dropped > 0) this.host.retainedChanged(-dropped);
  }

  private expectState(state: StreamState, what: string): void {
    if (this.currentState !== state) {
      throw new ProtocolError(ErrorCode.STREAM_STATE, `${what} on stream ${this.id} in state ${this.currentState}`);
    }
  }

  /** Sends what credit and the WebSocket allow, then FIN if it was asked for. */
  private flush(): void {
    if (this.currentState !== 'open' && this.currentState !== 'half-closed-remote') return;
    let acknowledged = false;
    while (this.pending.length > 0 && !this.host.congested) {
      const credit = this.sendWindow.available;
      if (credit <= 0) break;
      if (!acknowledged) {
        // Credit freed below the WINDOW threshold rides along with the DATA, in the same
        // record, as TCP's acknowledgements ride on its segments: a request and its answer
        // then need no WINDOW record of their own.
        this.advertisePending();
        acknowledged = true;
      }
      const head = this.pending[0]!;
      const n = Math.min(head.length, credit, this.host.maxDataBytes);
      const chunk = n === head.length ? head : head.subarray(0, n);
      if (n === head.length) this.pending.shift();
      else this.pending[0] = head.subarray(n);
      this.pendingBytes -= n;
      this.sendWindow.consume(n);
      if (this.host.retainsUnacknowledged) {
        // A small slice of a socket read would pin the whole 64 KiB read buffer
        // until acknowledged: keep a copy of just its bytes instead.
        this.unacked.push(chunk.length * 2 < chunk.buffer.byteLength ? Buffer.from(chunk) : chunk);
        this.host.retainedChanged(n);
      }
      this.host.sendFrame({ type: 'DATA', streamId: this.id, data: chunk });
    }
    if (this.pendingBytes > 0) return;
    if (this.finRequested) {
      this.finRequested = false;
      this.host.sendFrame({ type: 'FIN', streamId: this.id });
      if (this.currentState === 'open') {
        this.currentState = 'half-closed-local';
      } else {
        this.finish('fin');
        return;
      }
    }
    if (this.needsDrain && !this.host.congested && this.currentState !== 'half-closed-local') {
      this.needsDrain = false;
      this.emit('drain');
    }
  }

  private finish(outcome: StreamOutcome): void {
    this.endedHow ??= outcome;
    this.currentState = 'closed';
    this.pending.length = 0;
    this.pendingBytes = 0;
    const retained = this.unacked.reduce((n, chunk) => n + chunk.length, 0);
    if (retained > 0) this.host.retainedChanged(-retained);
    this.unacked = [];
    if (this.closeEmitted) return;
    this.closeEmitted = true;
    this.host.streamClosed(this);
    this.emit('close');
  }
}
