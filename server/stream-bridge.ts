/**
 * Serves one OPEN: authorizes it against the registry snapshot in force now,
 * connects to the backend, answers OPEN_OK or OPEN_FAIL, and joins the stream
 * to the backend socket (half-close, back-pressure, reset) with an audit record.
 */
import net from 'node:net';
import { OpenFailCode, ResetCode } from '../shared/constants.js';
import type { Logger } from '../shared/logger.js';
import { bridge, socketEndpoint } from '../shared/socket-bridge.js';
import type { TunnelStream } from '../shared/tunnel-stream.js';
import type { ServerEvents, StreamRefusalReason } from './server-events.js';
import type { ServiceRegistry } from './service-registry.js';

export interface StreamContext {
  registry: () => ServiceRegistry;
  clientThumbprint: string;
  clientName: string;
  sessionId: string;
  connectTimeoutMs: number;
  draining: () => boolean;
  logger: Logger;
  events: ServerEvents;
}

const refusalText: Record<string, string> = {
  'unknown-service': 'no such service',
  'not-allowed': 'this client may not use the service',
  'unknown-client': 'this client key is no longer authorized',
};

export function serveStream(stream: TunnelStream, context: StreamContext): void {
  const log = context.logger.child({ stream: stream.id, service: stream.service });
  const { events } = context;
  const refused = (reason: StreamRefusalReason): void => {
    events.emit('stream.refused', { session: context.sessionId, client: context.clientName, service: stream.service, reason });
  };
  if (context.draining()) {
    stream.refuse(OpenFailCode.DRAINING, 'the server is shutting down');
    log.info({ event: 'stream.refused', reason: 'draining' }, 'stream refused: server draining');
    refused('draining');
    return;
  }
  const decision = context.registry().authorize(context.clientThumbprint, stream.service);
  if (!decision.allowed) {
    stream.refuse(OpenFailCode.SERVICE_NOT_ALLOWED, refusalText[decision.reason] ?? 'not allowed');
    log.warn(
      { event: 'stream.refused', reason: decision.reason, client: context.clientName },
      `stream refused: service "${stream.service}" ${refusalText[decision.reason]}`,
    );
    refused(decision.reason);
    return;
  }

  const { host, port } = decision.target;
  const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
  let connected = false;
  const timer = setTimeout(() => {
    socket.destroy();
    refuse(OpenFailCode.BACKEND_UNREACHABLE, 'the backend did not answer in time', 'timeout', 'timeout');
  }, context.connectTimeoutMs);

  const refuse = (code: number, reason: string, cause: string, kind: StreamRefusalReason): void => {
    clearTimeout(timer);
    if (stream.state !== 'opening') return; // the session ended while we were connecting
    stream.refuse(code, reason);
    refused(kind);
    log.warn(
      { event: 'stream.refused', reason: cause, backend: `${host}:${port}` },
      `stream refused: backend ${host}:${port} for "${stream.service}": ${cause}`,
    );
  };

  socket.once('connect', () => {
    clearTimeout(timer);
    connected = true;
    if (stream.state !== 'opening') {
      socket.destroy();
      return;
    }
    stream.accept();
    log.info({ event: 'stream.open', client: context.clientName, backend: `${host}:${port}` }, 'stream open');
    events.emit('stream.open', {
      session: context.sessionId,
      client: context.clientName,
      service: stream.service,
      latencyMs: Date.now() - stream.openedAt,
    });
    bridge(stream, socketEndpoint(socket), {
      localFailureCode: ResetCode.BACKEND_RESET,
      onClose: (summary) => {
        log.info(
          {
            event: 'stream.close',
            client: context.clientName,
            bytesToBackend: summary.bytesIn,
            bytesFromBackend: summary.bytesOut,
            durationMs: summary.durationMs,
            outcome: summary.outcome,
          },
          'stream closed',
        );
        events.emit('stream.close', {
          session: context.sessionId,
          client: context.clientName,
          service: stream.service,
          bytesToBackend: summary.bytesIn,
          bytesFromBackend: summary.bytesOut,
          durationMs: summary.durationMs,
          outcome: summary.outcome,
        });
      },
    });
  });
  socket.once('error', (error: NodeJS.ErrnoException) => {
    if (connected) return; // the bridge owns errors after connect
    const wasRefused = error.code === 'ECONNREFUSED';
    refuse(
      wasRefused ? OpenFailCode.BACKEND_REFUSED : OpenFailCode.BACKEND_UNREACHABLE,
      wasRefused ? 'the backend refused the connection' : 'the backend is unreachable',
      error.code ?? error.message,
      wasRefused ? 'refused' : 'unreachable',
    );
  });
  stream.once('close', () => {
    if (!connected) {
      clearTimeout(timer);
      socket.destroy();
    }
  });
}
