/**
 * Joins one tunnel stream to one local byte pipe (a TCP socket on either side,
 * or stdin/stdout). It keeps the three promises of a stream:
 *  - back-pressure: the local reader pauses while the stream has no credit, and
 *    credit goes back to the peer only once the local writer took the bytes
 *    without back-pressure, so memory per stream is bounded by the window;
 *  - half-close: EOF on the local reader becomes FIN, FIN becomes end() on the
 *    local writer, and the other direction keeps flowing;
 *  - reset: an abnormal end on either side aborts the other (TCP RST locally).
 */
import type { Readable, Writable } from 'node:stream';
import type { Socket } from 'node:net';
import { ResetCode } from './constants.js';
import type { StreamError } from './errors.js';
import type { StreamOutcome, TunnelStream } from './tunnel-stream.js';

export interface BridgeEndpoint {
  readable: Readable;
  writable: Writable;
  /** Abort both directions; for a TCP socket, with a RST so the application sees it. */
  abort(): void;
}

export interface BridgeSummary {
  streamId: number;
  service: string;
  /** Bytes from the local side into the tunnel. */
  bytesOut: number;
  /** Bytes from the tunnel to the local side. */
  bytesIn: number;
  durationMs: number;
  outcome: StreamOutcome;
  error?: StreamError | Error;
}

export function socketEndpoint(socket: Socket): BridgeEndpoint {
  return {
    readable: socket,
    writable: socket,
    abort: () => {
      if (socket.destroyed) return;
      // resetAndDestroy() needs a connected handle whose write side is not shutting
      // down (libuv refuses a reset during a pending shutdown and the fd would leak);
      // otherwise destroy() is all there is.
      const connected = socket.readyState === 'open' || socket.readyState === 'readOnly' || socket.readyState === 'writeOnly';
      if (connected && !socket.writableEnded) {
        socket.resetAndDestroy();
      } else {
        socket.destroy();
      }
    },
  };
}

export interface BridgeOptions {
  /** RST code sent when the local side fails (client: CANCEL; server: BACKEND_RESET). */
  localFailureCode?: number;
  onClose?: (summary: BridgeSummary) => void;
}

export function bridge(stream: TunnelStream, endpoint: BridgeEndpoint, options: BridgeOptions = {}): void {
  const { readable, writable } = endpoint;
  const started = Date.now();
  let failure: StreamError | Error | undefined;
  let unacknowledged = 0;

  const onReadableData = (chunk: Buffer): void => {
    if (!stream.write(chunk)) readable.pause();
  };
  let localReadEnded = false;
  const onReadableEnd = (): void => {
    localReadEnded = true;
    stream.end();
  };
  const onLocalError = (error: Error): void => {
    if (stream.state === 'closed') return;
    failure = error;
    stream.reset(options.localFailureCode ?? ResetCode.CANCEL);
    endpoint.abort();
  };
  // A socket is one object for both directions; stdin/stdout are two.
  const split = writable !== (readable as unknown);
  const cutOff = (): void => {
    if (stream.state !== 'closed') stream.reset(options.localFailureCode ?? ResetCode.CANCEL);
  };
  const onLocalClose = (hadError?: boolean): void => {
    // A clean close after EOF: our FIN may still wait behind DATA for credit; the
    // bytes are in the stream, not the socket, so let them go out. A socket must
    // also have finished writing; a split reader's close says nothing about its writer.
    if (!hadError && localReadEnded && (split || writable.writableFinished)) return;
    // Any other close before both directions finished means the socket was cut off.
    cutOff();
  };
  const onWritableClose = (): void => {
    if (!writable.writableFinished) cutOff();
  };
  const onWritableDrain = (): void => {
    if (unacknowledged === 0) return;
    const n = unacknowledged;
    unacknowledged = 0;
    stream.consumed(n);
  };

  readable.on('data', onReadableData);
  readable.on('end', onReadableEnd);
  readable.on('error', onLocalError);
  readable.on('close', onLocalClose);
  if (split) {
    writable.on('error', onLocalError);
    writable.on('close', onWritableClose);
  }
  writable.on('drain', onWritableDrain);

  stream.on('drain', () => readable.resume());
  stream.on('data', (data: Buffer) => {
    if (writable.write(data) && unacknowledged === 0) {
      stream.consumed(data.length);
    } else {
      unacknowledged += data.length;
    }
  });
  stream.on('end', () => writable.end());
  stream.on('reset', (error: StreamError) => {
    failure = error;
    endpoint.abort();
  });
  stream.once('close', () => {
    readable.off('data', onReadableData);
    readable.off('end', onReadableEnd);
    readable.off('close', onLocalClose);
    writable.off('close', onWritableClose);
    writable.off('drain', onWritableDrain);
    // After FIN both ways the local side finishes flushing and closes itself;
    // any other end (a reset from either side, a lost session) aborts it.
    const outcome = stream.outcome ?? 'session-lost';
    if (outcome !== 'fin') endpoint.abort();
    options.onClose?.({
      streamId: stream.id,
      service: stream.service,
      bytesOut: stream.bytesSent,
      bytesIn: stream.bytesReceived,
      durationMs: Date.now() - started,
      outcome,
      ...(failure ? { error: failure } : {}),
    });
  });
}
