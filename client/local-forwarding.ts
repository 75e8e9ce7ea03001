/**
 * One accepted `-L` connection → one stream. The socket stays paused until
 * OPEN_OK (the protocol sends nothing before it), so an OPEN refused because
 * the server began draining is retried on the next session without losing a byte.
 */
import type net from 'node:net';
import type { ForwardSpec } from '../shared/forward-spec.js';
import { OpenFailCode } from '../shared/constants.js';
import { ErrorCode, type ReflectorError, type StreamError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { SecureSession } from '../shared/secure-session.js';
import { bridge, socketEndpoint } from '../shared/socket-bridge.js';

/** Retries of an OPEN refused with DRAINING (each on a newer session). */
const DRAINING_RETRIES = 3;

export interface ForwardingContext {
  /** Resolves with a session that takes new streams (waiting while reconnecting). */
  sessionForNewStream: () => Promise<{ session: SecureSession }>;
  logger: Logger;
}

export function forwardLocalConnection(socket: net.Socket, spec: ForwardSpec, context: ForwardingContext): void {
  socket.on('error', () => {
    // Errors before the bridge takes over end in 'close'; the bridge logs its own.
  });
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  const abort = (): void => socketEndpoint(socket).abort();
  const drop = (reason: string): void => {
    context.logger.warn({ event: 'stream.dropped', service: spec.service, peer }, `dropped local connection from ${peer}: ${reason}`);
    abort();
  };
  const attempt = (triesLeft: number): void => {
    context.sessionForNewStream().then(({ session }) => {
      if (socket.destroyed) return;
      const stream = session.openStream(spec.service);
      const log = context.logger.child({ stream: stream.id, service: spec.service, peer });
      const onReset = (error: StreamError): void => {
        if (error.code !== ErrorCode.OPEN_FAILED) return drop(error.message);
        if (error.wireCode === OpenFailCode.DRAINING && triesLeft > 0) {
          log.info({ event: 'stream.retry' }, 'server draining: opening the stream on a fresh session');
          return attempt(triesLeft - 1);
        }
        log.warn({ event: 'stream.refused', code: error.wireCode }, `${error.message}; closed the local connection from ${peer}`);
        abort();
      };
      stream.once('reset', onReset);
      stream.once('open', () => {
        stream.off('reset', onReset);
        bridge(stream, socketEndpoint(socket), {
          onClose: (summary) =>
            log.debug(
              { event: 'stream.close', bytesOut: summary.bytesOut, bytesIn: summary.bytesIn, outcome: summary.outcome },
              'stream closed',
            ),
        });
        socket.resume();
      });
    }, (error: ReflectorError) => drop(error.message));
  };
  attempt(DRAINING_RETRIES);
}
