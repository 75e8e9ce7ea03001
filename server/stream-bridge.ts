/**
 * Serves one OPEN: authorizes it against the registry snapshot in force now,
 * connects to the backend, answers OPEN_OK or OPEN_FAIL, and joins the stream
 * to the backend socket (half-close, back-pressure, reset) with an audit record.
 */
import net from 'node:net';
import { OpenFailCode, ResetCode } from '../shared/constants.js';
import type { Logger } from '../shared/logger.js';
import { bridge, socketEndpoint, type BridgeSummary } from '../shared/socket-bridge.js';
import type { TunnelStream } from '../shared/tunnel-stream.js';
import type { ServiceRegistry } from './service-registry.js';

export interface StreamContext {
  registry: () => ServiceRegistry;
  clientThumbprint: string;
  clientName: string;
  connectTimeoutMs: number;
  draining: () => boolean;
  logger: Logger;
  onClosed?: (summary: BridgeSummary) => void;
}

const refusalText: Record<string, string> = {
  'unknown-service': 'no such service',
  'not-allowed': 'this client may not use the service',
  'unknown-client': 'this client key is no longer authorized',
};

export function serveStream(stream: TunnelStream, context: StreamContext): void {
  const log = context.logger.child({ stream: stream.id, service: stream.service });
  if (context.draining()) {
    stream.refuse(OpenFailCode.DRAINING, 'the server is shutting down');
    log.info({ event: 'stream.refused', reason: 'draining' }, 'stream refused: server draining');
    return;
  }
  const decision = context.registry().authorize(context.clientThumbprint, stream.service);
  if (!decision.allowed) {
    stream.refuse(OpenFailCode.SERVICE_NOT_ALLOWED, refusalText[decision.reason] ?? 'not allowed');
    log.warn(
      { event: 'stream.refused', reason: decision.reason, client: context.clientName },
      `stream refused: service "${stream.service}" ${refusalText[decision.reason]}`,
    );
    return;
  }

  const { host, port } = decision.target;
  const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
  let connected = false;
  const timer = setTimeout(() => {
    socket.destroy();
    refuse(OpenFailCode.BACKEND_UNREACHABLE, 'the backend did not answer in time', 'timeout');
  }, context.connectTimeoutMs);

  const refuse = (code: number, reason: string, cause: string): void => {
    clearTimeout(timer);
    if (stream.state !== 'opening') return; // the session ended while we were connecting
    stream.refuse(code, reason);
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
        context.onClosed?.(summary);
      },
    });
  });
  socket.once('error', (error: NodeJS.ErrnoException) => {
    if (connected) return; // the bridge owns errors after connect
    const refused = error.code === 'ECONNREFUSED';
    refuse(
      refused ? OpenFailCode.BACKEND_REFUSED : OpenFailCode.BACKEND_UNREACHABLE,
      refused ? 'the backend refused the connection' : 'the backend is unreachable',
      error.code ?? error.message,
    );
  });
  stream.once('close', () => {
    if (!connected) {
      clearTimeout(timer);
      socket.destroy();
    }
  });
}
