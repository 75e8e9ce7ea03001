/**
 * What the server reports as it works, for metrics, the admin page and tests.
 * Every event mirrors an audit log line; none carries payload or key material.
 */
import { EventEmitter } from 'node:events';
import type { StreamOutcome } from '../shared/tunnel-stream.js';

export type StreamRefusalReason = 'draining' | 'unknown-service' | 'not-allowed' | 'unknown-client' | 'refused' | 'unreachable' | 'timeout';

export interface ServerEventMap {
  'auth.success': [{ client: string; thumbprint: string; address: string; durationMs: number }];
  'auth.failure': [{ address: string; code: string; kid?: string; reason: string }];
  'session.open': [{ id: string; client: string; address: string }];
  'session.close': [{ id: string; client: string; code: number; durationMs: number; errorCode?: string }];
  'session.suspend': [{ id: string; client: string; streams: number }];
  'session.resume': [{ id: string; client: string; streams: number }];
  'session.resume-refused': [{ client: string; code: number }];
  'stream.open': [{ session: string; client: string; service: string; latencyMs: number }];
  'stream.refused': [{ session: string; client: string; service: string; reason: StreamRefusalReason }];
  'stream.close': [
    {
      session: string;
      client: string;
      service: string;
      bytesToBackend: number;
      bytesFromBackend: number;
      durationMs: number;
      outcome: StreamOutcome;
    },
  ];
}

export class ServerEvents extends EventEmitter<ServerEventMap> {}
