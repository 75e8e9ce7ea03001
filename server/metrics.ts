/**
 * Prometheus metrics for one server, fed by its event feed (`server.events`)
 * and, at scrape time, by a snapshot of its live sessions (`listSessions()`).
 * Each ServerMetrics owns its own prom-client Registry, never the global
 * default one, so two servers in one process (tests, embedders) never collide.
 *
 * Label values are bounded: clients and services are the configured ones; a
 * service name a client made up (refused before it was checked) is counted as
 * "(other)", and close codes outside the documented set as "other".
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { CloseCode } from '../shared/constants.js';
import type { ServerEventMap, ServerEvents, StreamRefusalReason } from './server-events.js';
import type { ServerState, SessionInfo } from './server.js';

/** What the metrics read from a server: its event feed and, at scrape time, its sessions. */
export interface MetricsSource {
  readonly events: ServerEvents;
  readonly state: ServerState;
  /**
   * `stalledStreams` (streams whose sender waits for flow-control credit or
   * for a congested WebSocket) is read when the server reports it.
   */
  listSessions(): Array<SessionInfo & { stalledStreams?: number }>;
}

export interface ServerMetricsOptions {
  /** Service names configured now: their series start at zero. */
  services?: readonly string[];
  /** Process and Node.js runtime metrics (CPU, memory, event loop, GC); default true. */
  processMetrics?: boolean;
}

/** Per-service totals since the server started, for the admin page. */
export interface ServiceTotals {
  service: string;
  openStreams: number;
  opened: number;
  failed: number;
  bytesToBackend: number;
  bytesFromBackend: number;
}

/** The label a service gets when its name was never verified against the config. */
export const OTHER_SERVICE = '(other)';

/** Refusals that happen after the registry confirmed the service exists. */
const VERIFIED_SERVICE_REASONS: ReadonlySet<StreamRefusalReason> = new Set(['not-allowed', 'refused', 'unreachable', 'timeout']);
const KNOWN_CLOSE_CODES: ReadonlySet<number> = new Set([1000, 1001, 1005, 1006, ...Object.values(CloseCode)]);

function closeCodeLabel(code: number): string {
  return KNOWN_CLOSE_CODES.has(code) ? String(code) : 'other';
}

const SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Events the metrics count; an event added to the feed later is simply not counted until it is added here. */
type Handlers = { [K in keyof ServerEventMap]?: (...args: ServerEventMap[K]) => void };

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly knownServices = new Set<string>();
  private readonly totals = new Map<string, ServiceTotals>();
  private readonly handlers: Handlers;
  private reloads: Counter<'result'>;

  private readonly streamsOpen: Gauge<'service'>;
  private readonly streamsOpened: Counter<'service'>;
  private readonly streamsFailed: Counter<'service' | 'reason'>;
  private readonly streamsClosed: Counter<'service' | 'outcome'>;
  private readonly streamBytes: Counter<'service' | 'direction'>;
  private readonly streamOpenLatency: Histogram<'service'>;

  constructor(
    private readonly source: MetricsSource,
    options: ServerMetricsOptions = {},
  ) {
    const registers = [this.registry];
    new Gauge({
      name: 'reflector_sessions',
      help: 'Sessions open now, by client',
      labelNames: ['client'],
      registers,
      collect() {
        this.reset();
        for (const session of source.listSessions()) this.inc({ client: session.client });
      },
    });
    const sessionsOpened = new Counter({
      name: 'reflector_sessions_opened_total',
      help: 'Sessions established since start, by client',
      labelNames: ['client'],
      registers,
    });
    const sessionsClosed = new Counter({
      name: 'reflector_sessions_closed_total',
      help: 'Sessions ended since start, by WebSocket close code (docs/protocol.md)',
      labelNames: ['code'],
      registers,
    });
    const handshakeFailures = new Counter({
      name: 'reflector_handshake_failures_total',
      help: 'Handshakes that failed, by error code (the precise reason is in the audit log)',
      labelNames: ['reason'],
      registers,
    });
    const handshakeDuration = new Histogram({
      name: 'reflector_handshake_duration_seconds',
      help: 'Time from WebSocket upgrade to an authenticated session',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.streamsOpen = new Gauge({
      name: 'reflector_streams',
      help: 'Streams open now, by service',
      labelNames: ['service'],
      registers,
    });
    this.streamsOpened = new Counter({
      name: 'reflector_streams_opened_total',
      help: 'Streams joined to their backend since start, by service',
      labelNames: ['service'],
      registers,
    });
    this.streamsFailed = new Counter({
      name: 'reflector_streams_failed_total',
      help: 'Stream opens refused (OPEN_FAIL), by service and reason',
      labelNames: ['service', 'reason'],
      registers,
    });
    this.streamsClosed = new Counter({
      name: 'reflector_streams_closed_total',
      help: 'Streams ended, by service and outcome (fin, reset-local, reset-remote, session-lost)',
      labelNames: ['service', 'outcome'],
      registers,
    });
    this.streamBytes = new Counter({
      name: 'reflector_stream_bytes_total',
      help: 'Payload bytes of closed streams, by service and direction (to_backend, from_backend)',
      labelNames: ['service', 'direction'],
      registers,
    });
    this.streamOpenLatency = new Histogram({
      name: 'reflector_stream_open_latency_seconds',
      help: 'Time from OPEN to OPEN_OK (backend connect included), by service',
      labelNames: ['service'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    new Gauge({
      name: 'reflector_session_streams',
      help: 'Entries in the stream tables of the sessions open now (streams still opening included)',
      registers,
      collect() {
        this.set(source.listSessions().reduce((n, s) => n + s.streams, 0));
      },
    });
    new Gauge({
      name: 'reflector_flow_control_stalls',
      help: 'Streams whose sender waits now for flow-control credit or a congested WebSocket',
      registers,
      collect() {
        this.set(source.listSessions().reduce((n, s) => n + (s.stalledStreams ?? 0), 0));
      },
    });
    new Gauge({
      name: 'reflector_session_bytes',
      help: 'Record plaintext bytes of the sessions open now, by direction (in: from clients, out: to clients)',
      labelNames: ['direction'],
      registers,
      collect() {
        const sessions = source.listSessions();
        this.set({ direction: 'in' }, sessions.reduce((n, s) => n + s.bytesIn, 0));
        this.set({ direction: 'out' }, sessions.reduce((n, s) => n + s.bytesOut, 0));
      },
    });
    new Gauge({
      name: 'reflector_draining',
      help: '1 while the server drains (SIGTERM) or is closed, 0 while it accepts sessions',
      registers,
      collect() {
        this.set(source.state === 'running' ? 0 : 1);
      },
    });
    const suspended = new Counter({
      name: 'reflector_sessions_suspended_total',
      help: 'Sessions whose WebSocket dropped while they had streams, kept for a resume, by client',
      labelNames: ['client'],
      registers,
    });
    const resumed = new Counter({
      name: 'reflector_sessions_resumed_total',
      help: 'Suspended sessions resumed on a new WebSocket, by client',
      labelNames: ['client'],
      registers,
    });
    const resumeRefused = new Counter({
      name: 'reflector_session_resumes_refused_total',
      help: 'Resume attempts refused, by WebSocket close code',
      labelNames: ['code'],
      registers,
    });
    this.reloads = new Counter({
      name: 'reflector_config_reloads_total',
      help: 'Configuration reloads (SIGHUP or a watched file change), by result',
      labelNames: ['result'],
      registers,
    });
    this.reloads.inc({ result: 'success' }, 0);
    this.reloads.inc({ result: 'failure' }, 0);
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    this.setServices(options.services ?? []);

    this.handlers = {
      'auth.success': (event) => handshakeDuration.observe(event.durationMs / 1000),
      'auth.failure': (event) => handshakeFailures.inc({ reason: event.code }),
      'session.open': (event) => sessionsOpened.inc({ client: event.client }),
      'session.close': (event) => sessionsClosed.inc({ code: closeCodeLabel(event.code) }),
      'session.suspend': (event) => suspended.inc({ client: event.client }),
      'session.resume': (event) => resumed.inc({ client: event.client }),
      'session.resume-refused': (event) => resumeRefused.inc({ code: closeCodeLabel(event.code) }),
      'stream.open': (event) => {
        const service = this.verified(event.service);
        this.streamsOpen.inc({ service });
        this.streamsOpened.inc({ service });
        this.streamOpenLatency.observe({ service }, event.latencyMs / 1000);
        const totals = this.totalsFor(service);
        totals.openStreams += 1;
        totals.opened += 1;
      },
      'stream.refused': (event) => {
        const service = VERIFIED_SERVICE_REASONS.has(event.reason) ? this.verified(event.service) : this.labelFor(event.service);
        this.streamsFailed.inc({ service, reason: event.reason });
        this.totalsFor(service).failed += 1;
      },
      'stream.close': (event) => {
        const service = this.labelFor(event.service);
        this.streamsOpen.dec({ service });
        this.streamsClosed.inc({ service, outcome: event.outcome });
        this.streamBytes.inc({ service, direction: 'to_backend' }, event.bytesToBackend);
        this.streamBytes.inc({ service, direction: 'from_backend' }, event.bytesFromBackend);
        const totals = this.totalsFor(service);
        totals.openStreams = Math.max(0, totals.openStreams - 1);
        totals.bytesToBackend += event.bytesToBackend;
        totals.bytesFromBackend += event.bytesFromBackend;
      },
    };
    for (const [name, handler] of Object.entries(this.handlers)) {
      source.events.on(name as keyof ServerEventMap, handler as (...args: unknown[]) => void);
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of every metric. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** Services configured now (after a reload, too): their series exist from zero, so dashboards see them. */
  setServices(services: readonly string[]): void {
    for (const service of services) {
      this.knownServices.add(service);
      this.streamsOpen.inc({ service }, 0);
      this.streamsOpened.inc({ service }, 0);
      this.streamBytes.inc({ service, direction: 'to_backend' }, 0);
      this.streamBytes.inc({ service, direction: 'from_backend' }, 0);
      this.totalsFor(service);
    }
  }

  recordReload(ok: boolean): void {
    this.reloads.inc({ result: ok ? 'success' : 'failure' });
  }

  /** Per-service totals, sorted by name. */
  serviceTotals(): ServiceTotals[] {
    return [...this.totals.values()].map((entry) => ({ ...entry })).sort((a, b) => a.service.localeCompare(b.service));
  }

  /** Stops listening to the server's events. */
  detach(): void {
    for (const [name, handler] of Object.entries(this.handlers)) {
      this.source.events.off(name as keyof ServerEventMap, handler as (...args: unknown[]) => void);
    }
  }

  /** The registry checked this name (the backend was tried, or the client was refused by its allow-list). */
  private verified(service: string): string {
    this.knownServices.add(service);
    return service;
  }

  private labelFor(service: string): string {
    return this.knownServices.has(service) ? service : OTHER_SERVICE;
  }

  private totalsFor(service: string): ServiceTotals {
    let totals = this.totals.get(service);
    if (totals === undefined) {
      totals = { service, openStreams: 0, opened: 0, failed: 0, bytesToBackend: 0, bytesFromBackend: 0 };
      this.totals.set(service, totals);
    }
    return totals;
  }
}
