/**
 * The server reflector's lifecycle: start the gateway, run each connection
 * through the authenticator into a session, reload the registry, drain, close.
 *
 *   running ──drain()──> draining ──(streams done or drainTimeout)──> closed
 *      └────────────────────────close()──────────────────────────────────┘
 */
import type WebSocket from 'ws';
import { aeadBackend, type AeadBackend } from '../shared/aead.js';
import { AEAD_TAG_BYTES, CloseCode, GoAwayCode, MAX_HANDSHAKE_MESSAGE_BYTES, ResetCode, ResumeFailCode } from '../shared/constants.js';
import type { FrameOf } from '../shared/frames.js';
import { verifyResumeProof } from '../shared/resume.js';
import type { Limits, ServerConfig } from '../shared/config-schema.js';
import { AuthError, ErrorCode, PolicyError, ReflectorError } from '../shared/errors.js';
import { buildWelcome, KemKeyCache } from '../shared/handshake.js';
import { loadPrivateKeyFile, type Identity } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import { RecordOpener, RecordSealer } from '../shared/record-layer.js';
import { SecureSession } from '../shared/secure-session.js';
import { authenticate } from './authenticator.js';
import { Gateway, type ConnectionInfo } from './gateway.js';
import { createHttpApp } from './http-app.js';
import { ServerEvents } from './server-events.js';
import { ServiceRegistry, type AuthorizedClient } from './service-registry.js';
import { serveStream } from './stream-bridge.js';

export type ServerState = 'running' | 'draining' | 'closed';

export interface SessionInfo {
  id: string;
  client: string;
  thumbprint: string;
  address: string;
  since: Date;
  streams: number;
  /** Streams whose sender waits for flow-control credit or for the WebSocket to drain. */
  stalledStreams: number;
  /** 'suspended' while the connection is lost and the session waits for a RESUME. */
  state: 'open' | 'suspended' | 'closed';
  bytesIn: number;
  bytesOut: number;
  /** Live per-stream byte counts (tunnel → backend is bytesIn). */
  openStreams: Array<{ id: number; service: string; bytesIn: number; bytesOut: number }>;
}

interface LiveSession {
  /** Stable for the session's life, across resumed connections (the wire session id changes). */
  id: string;
  session: SecureSession;
  client: AuthorizedClient;
  address: string;
  since: Date;
  suspendTimer?: NodeJS.Timeout;
}

export class ReflectorServer {
  private currentState: ServerState = 'running';
  private registry: ServiceRegistry;
  private readonly sessions = new Set<LiveSession>();
  /** The same sessions by client thumbprint: the per-client limit is checked on every handshake. */
  private readonly sessionsByClient = new Map<string, Set<LiveSession>>();
  private readonly aead: AeadBackend;
  private readonly kemKeys = new KemKeyCache();
  private readonly gateway: Gateway;
  private boundAddress: { host: string; port: number } | undefined;
  private drained: Promise<void> | undefined;
  /** Mirrors the audit log as typed events (metrics, admin page, tests). */
  readonly events = new ServerEvents();

  private constructor(
    private config: ServerConfig,
    private readonly hostIdentity: Identity,
    private readonly logger: Logger,
  ) {
    this.registry = new ServiceRegistry(config);
    this.aead = aeadBackend(config.aead);
    const app = createHttpApp({ ready: () => this.currentState === 'running', trustProxy: config.trustProxy });
    this.gateway = new Gateway({
      listen: config.listen,
      ...(config.tls ? { tls: config.tls } : {}),
      path: config.path,
      maxPayloadBytes: Math.max(config.limits.maxRecordBytes + AEAD_TAG_BYTES, MAX_HANDSHAKE_MESSAGE_BYTES),
      maxUnauthenticatedPerAddress: config.limits.maxUnauthenticatedPerAddress,
      maxUnauthenticated: config.limits.maxUnauthenticated,
      app,
      accepting: () => this.currentState === 'running',
      onConnection: (ws, info) =>
        this.handleConnection(ws, info).catch((error: unknown) => {
          // A bug or a config the session cannot be built from: this connection ends, the gateway stays up.
          logger.error({ event: 'session.error', err: (error as Error)?.message }, `connection failed: ${(error as Error)?.message}`);
          info.releaseUnauthenticated();
          closeSocket(ws, CloseCode.INTERNAL_ERROR);
        }),
      logger,
    });
  }

  static async start(config: ServerConfig, logger: Logger): Promise<ReflectorServer> {
    const hostIdentity = await loadPrivateKeyFile(config.hostKey);
    const server = new ReflectorServer(config, hostIdentity, logger);
    server.boundAddress = await server.gateway.listen();
    logger.info(
      { event: 'server.listening', url: server.url, hostKey: hostIdentity.thumbprint },
      `listening on ${server.url} (host key ${hostIdentity.thumbprint})`,
    );
    return server;
  }

  get state(): ServerState {
    return this.currentState;
  }
  get address(): { host: string; port: number } {
    if (!this.boundAddress) throw new Error('server not listening');
    return this.boundAddress;
  }
  get url(): string {
    const { host, port } = this.address;
    const scheme = this.config.tls ? 'wss' : 'ws';
    const printable = host.includes(':') ? `[${host}]` : host;
    return `${scheme}://${printable}:${port}${this.config.path}`;
  }
  get hostKeyThumbprint(): string {
    return this.hostIdentity.thumbprint;
  }
  get limits(): Limits {
    return this.config.limits;
  }

  listSessions(): SessionInfo[] {
    return [...this.sessions].map((live) => ({
      id: live.id,
      client: live.client.name,
      thumbprint: live.client.thumbprint,
      address: live.address,
      since: live.since,
      streams: live.session.mux.streamCount,
      stalledStreams: [...live.session.mux.openStreams].filter((stream) => stream.bufferedBytes > 0).length,
      state: live.session.state,
      bytesIn: live.session.bytesOpened,
      bytesOut: live.session.bytesSealed,
      openStreams: [...live.session.mux.openStreams].map((stream) => ({
        id: stream.id,
        service: stream.service,
        bytesIn: stream.bytesReceived,
        bytesOut: stream.bytesSent,
      })),
    }));
  }

  /**
   * Swaps in a new registry (clients and services). Sessions of a removed key
   * close at once; streams to a service the client lost are reset.
   */
  reload(config: ServerConfig): void {
    this.config = { ...this.config, services: config.services, clients: config.clients };
    this.registry = new ServiceRegistry(this.config);
    for (const live of this.sessions) {
      const client = this.registry.client(live.client.thumbprint);
      if (client === undefined) {
        this.logger.warn(
          { event: 'session.revoked', client: live.client.name, session: live.id },
          `closing session of ${live.client.name}: its key was removed`,
        );
        live.session.close(
          CloseCode.KEY_REVOKED,
          new PolicyError(ErrorCode.KEY_REVOKED, `client key ${live.client.thumbprint} was removed by a reload`),
        );
        continue;
      }
      live.client = client;
      for (const stream of [...live.session.mux.openStreams]) {
        if (!this.registry.authorize(client.thumbprint, stream.service).allowed) {
          this.logger.warn(
            { event: 'stream.revoked', client: client.name, service: stream.service, stream: stream.id },
            `resetting stream ${stream.id} of ${client.name}: service "${stream.service}" is no longer allowed`,
          );
          stream.reset(ResetCode.REVOKED);
        }
      }
    }
    this.logger.info(
      { event: 'config.reloaded', clients: config.clients.length, services: Object.keys(config.services).length },
      'configuration reloaded',
    );
  }

  /** GOAWAY to every session, let open streams finish (up to drainTimeoutMs), then close. */
  drain(): Promise<void> {
    if (this.drained) return this.drained;
    this.drained = this.runDrain();
    return this.drained;
  }

  private async runDrain(): Promise<void> {
    if (this.currentState === 'closed') return;
    this.currentState = 'draining';
    this.logger.info({ event: 'server.draining', sessions: this.sessions.size }, 'draining');
    for (const live of [...this.sessions]) {
      // Nobody can come back to a suspended session: new connections are refused while draining.
      if (live.session.state === 'suspended') live.session.expire();
      else live.session.goAway(GoAwayCode.DRAINING);
    }
    const deadline = Date.now() + this.config.limits.drainTimeoutMs;
    while (Date.now() < deadline && [...this.sessions].some((live) => live.session.mux.streamCount > 0)) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await this.close();
  }

  /** Closes every session at once and stops listening. */
  async close(): Promise<void> {
    if (this.currentState === 'closed') return;
    this.currentState = 'closed';
    for (const live of this.sessions) live.session.close(CloseCode.GOING_AWAY);
    await this.gateway.close();
    this.gateway.destroyAll();
    this.logger.info({ event: 'server.closed' }, 'server closed');
  }

  /**
   * A fresh, authenticated connection asks to continue an earlier session. On
   * success the old session takes over the connection; on failure the fresh
   * session simply goes on, and the old one is left untouched for its owner.
   */
  private resume(fresh: LiveSession, frame: FrameOf<'RESUME'>, log: Logger): void {
    const target = [...this.sessions].find((live) => live !== fresh && live.session.sessionId.equals(frame.sessionId));
    const refuse = (code: number, reason: string, detail: string): void => {
      fresh.session.mux.flush(); // RESUME_FAIL travels alone in its record
      fresh.session.sendFrame({ type: 'RESUME_FAIL', streamId: 0, code, reason });
      fresh.session.mux.flush();
      log.warn({ event: 'session.resume.refused', code, reason: detail }, `resume refused: ${detail}`);
      this.events.emit('session.resume-refused', { client: fresh.client.name, code });
    };
    if (target === undefined || target.session.isClosed) {
      return refuse(ResumeFailCode.UNKNOWN_SESSION, 'no such session here', `no session ${frame.sessionId.toString('base64url')} on this server`);
    }
    if (target.client.thumbprint !== fresh.client.thumbprint) {
      return refuse(ResumeFailCode.WRONG_CLIENT, 'the session belongs to another client', `session of ${target.client.name} claimed by ${fresh.client.name}`);
    }
    if (!verifyResumeProof(frame.proof, target.session.resumptionSecret, target.session.sessionId, fresh.session.transcript)) {
      return refuse(ResumeFailCode.BAD_PROOF, 'the resume proof does not verify', `bad proof for session ${target.id}`);
    }
    clearTimeout(target.suspendTimer);
    this.removeSession(fresh);
    target.session.attach(fresh.session.detachTransport());
    target.address = fresh.address;
    target.session.sendFrame({ type: 'RESUME_OK', streamId: 0, streams: target.session.mux.resumeEntries() });
    target.session.mux.flush();
    try {
      target.session.mux.reconcile(frame.streams);
    } catch (error) {
      target.session.fail(error);
      return;
    }
    log.info(
      { event: 'session.resumed', session: target.id, streams: target.session.mux.streamCount },
      `session ${target.id} resumed with ${target.session.mux.streamCount} streams`,
    );
    this.events.emit('session.resume', { id: target.id, client: target.client.name, streams: target.session.mux.streamCount });
  }

  private addSession(live: LiveSession): void {
    this.sessions.add(live);
    const mine = this.sessionsByClient.get(live.client.thumbprint);
    if (mine === undefined) this.sessionsByClient.set(live.client.thumbprint, new Set([live]));
    else mine.add(live);
  }

  private removeSession(live: LiveSession): void {
    this.sessions.delete(live);
    const mine = this.sessionsByClient.get(live.client.thumbprint);
    if (mine?.delete(live) && mine.size === 0) this.sessionsByClient.delete(live.client.thumbprint);
  }

  private async handleConnection(ws: WebSocket, info: ConnectionInfo): Promise<void> {
    // Child loggers are made on first use: a connection that only authenticates and
    // closes writes its two audit lines through this.logger with the same fields inline.
    let connectionLog: Logger | undefined;
    const log = (): Logger => (connectionLog ??= this.logger.child({ address: info.address }));
    const connectedAt = Date.now();
    ws.on('error', (error) => log().warn({ event: 'ws.error', err: error.message }, `websocket error: ${error.message}`));
    let authenticated;
    try {
      authenticated = await authenticate(ws, {
        hostIdentity: this.hostIdentity,
        kemKeys: this.kemKeys,
        registry: () => this.registry,
        timeoutMs: this.config.limits.handshakeTimeoutMs,
      });
    } catch (error) {
      info.releaseUnauthenticated();
      const failure = error instanceof ReflectorError ? error : undefined;
      const kid = error instanceof AuthError ? error.kid : undefined;
      log().warn(
        { event: 'auth.failure', code: failure?.code ?? ErrorCode.INTERNAL, ...(kid ? { kid } : {}), reason: (error as Error).message },
        `authentication failed: ${(error as Error).message}`,
      );
      this.events.emit('auth.failure', {
        address: info.address,
        code: failure?.code ?? ErrorCode.INTERNAL,
        ...(kid ? { kid } : {}),
        reason: (error as Error).message,
      });
      closeSocket(ws, failure?.closeCode ?? CloseCode.INTERNAL_ERROR);
      return;
    }
    info.releaseUnauthenticated();
    const { client, keys } = authenticated;
    if (this.currentState !== 'running') {
      closeSocket(ws, CloseCode.GOING_AWAY);
      return;
    }
    const sessionId = keys.sessionId.toString('base64url');
    const mine = this.sessionsByClient.get(client.thumbprint) ?? new Set<LiveSession>();
    let clientSessions = 0;
    for (const live of mine) if (live.session.state === 'open') clientSessions += 1;
    // A suspended session must not stop its own resume; suspended ones are bounded by the resume window.
    if (clientSessions >= this.config.limits.maxSessionsPerClient || mine.size >= 2 * this.config.limits.maxSessionsPerClient) {
      log().warn(
        { event: 'auth.limited', client: client.name, sessions: clientSessions },
        `refused session of ${client.name}: ${clientSessions} sessions already open`,
      );
      closeSocket(ws, CloseCode.LIMIT_EXCEEDED);
      return;
    }

    const { limits } = this.config;
    // What log.child({ client, session }) would bind, in the same order: a line logged
    // with these fields first is byte for byte the child's line.
    const sessionFields = { address: info.address, client: client.name, session: sessionId };
    let sessionLogger: Logger | undefined;
    const sessionLog = (): Logger => (sessionLogger ??= this.logger.child(sessionFields));
    const live: LiveSession = {
      id: sessionId,
      client,
      address: info.address,
      since: new Date(),
      session: new SecureSession({
        transport: {
          ws,
          sealer: new RecordSealer(this.aead, keys.s2c, limits.rekeyBytes),
          opener: new RecordOpener(this.aead, keys.c2s, limits.rekeyBytes, limits.maxRecordBytes),
          sessionId: keys.sessionId,
          resumption: keys.resumption,
          transcript: keys.transcript,
        },
        role: 'server',
        resumable: limits.resumeWindowMs > 0,
        windowBytes: limits.windowBytes,
        maxRecordBytes: limits.maxRecordBytes,
        maxStreams: limits.maxStreamsPerSession,
        pingIntervalMs: limits.pingIntervalMs,
        idleTimeoutMs: limits.idleTimeoutMs,
        onOpen: (stream) =>
          serveStream(stream, {
            registry: () => this.registry,
            clientThumbprint: client.thumbprint,
            clientName: live.client.name,
            sessionId,
            events: this.events,
            connectTimeoutMs: limits.backendConnectTimeoutMs,
            draining: () => this.currentState !== 'running',
            logger: sessionLog(),
          }),
      }),
    };
    this.addSession(live);
    live.session.on('suspend', (suspendInfo) => {
      sessionLog().info(
        { event: 'session.suspend', code: suspendInfo.code, streams: live.session.mux.streamCount, resumeWindowMs: limits.resumeWindowMs },
        `connection lost (${suspendInfo.code}); keeping ${live.session.mux.streamCount} streams for ${limits.resumeWindowMs} ms`,
      );
      this.events.emit('session.suspend', { id: live.id, client: live.client.name, streams: live.session.mux.streamCount });
      live.suspendTimer = setTimeout(() => live.session.expire(), limits.resumeWindowMs);
      live.suspendTimer.unref();
    });
    live.session.on('resume', (frame: FrameOf<'RESUME'>) => this.resume(live, frame, sessionLog()));
    live.session.on('close', (closeInfo) => {
      clearTimeout(live.suspendTimer);
      this.removeSession(live);
      this.logger.info(
        {
          ...sessionFields,
          event: 'session.close',
          code: closeInfo.code,
          by: closeInfo.by,
          ...(closeInfo.error ? { reason: closeInfo.error.message, errorCode: closeInfo.error.code } : {}),
          durationMs: Date.now() - live.since.getTime(),
        },
        `session closed (${closeInfo.code}${closeInfo.error ? `: ${closeInfo.error.message}` : ''})`,
      );
      this.events.emit('session.close', {
        id: sessionId,
        client: live.client.name,
        code: closeInfo.code,
        durationMs: Date.now() - live.since.getTime(),
        ...(closeInfo.error ? { errorCode: closeInfo.error.code } : {}),
      });
    });
    live.session.sendFrame({
      type: 'WELCOME',
      streamId: 0,
      payload: buildWelcome(this.hostIdentity, keys, {
        window: limits.windowBytes,
        maxStreams: limits.maxStreamsPerSession,
        maxRecord: limits.maxRecordBytes,
        rekeyBytes: limits.rekeyBytes,
        pingInterval: limits.pingIntervalMs,
        resume: limits.resumeWindowMs,
        services: this.registry.servicesFor(client.thumbprint),
        ...(this.config.replica ? { replica: this.config.replica } : {}),
      }),
    });
    live.session.mux.flush();
    this.logger.info(
      { ...sessionFields, event: 'auth.success', thumbprint: client.thumbprint },
      `client ${client.name} authenticated from ${info.address}`,
    );
    this.events.emit('auth.success', {
      client: client.name,
      thumbprint: client.thumbprint,
      address: info.address,
      durationMs: Date.now() - connectedAt,
    });
    this.events.emit('session.open', { id: sessionId, client: client.name, address: info.address });
  }
}

function closeSocket(ws: WebSocket, code: number): void {
  if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code);
}
