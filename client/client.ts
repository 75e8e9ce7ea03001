/**
 * The client reflector: local listeners that stay up, a connection loop that
 * keeps one session established (reconnecting with backoff), and the glue that
 * turns each accepted local socket into a stream on the current session.
 *
 *   connecting ──ok──> connected ──session lost──> reconnecting ──ok──> connected
 *        │                 │ GOAWAY: the old session keeps its streams,
 *        │                 │         new streams go to a fresh one
 *        └─ fatal ─────────┴──────────────────────────> closed (done rejects)
 */
import { EventEmitter } from 'node:events';
import { URL } from 'node:url';
import type { ClientOptions } from '../shared/client-config.js';
import { ErrorCode, ReflectorError, StreamError } from '../shared/errors.js';
import type { Identity } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import type { SecureSession } from '../shared/secure-session.js';
import type { TunnelStream } from '../shared/tunnel-stream.js';
import { cleartextUpgradeWarning, dialOptionsFor } from './dialer.js';
import { checkKnownServer, checkPinnedServer, verifyKnownServer } from './known-servers.js';
import { LocalListeners, type BoundListener } from './listeners.js';
import { Backoff } from './reconnect.js';
import { ConnectError, establishSession, isFatal, type EstablishedSession } from './session.js';
import { forwardLocalConnection } from './local-forwarding.js';
import { requestResume } from './resume-request.js';

export type ClientState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

const HANDSHAKE_TIMEOUT_MS = 15_000;
/** How long an accepted local connection waits for a session before it is reset. */
const WAIT_FOR_SESSION_MS = 30_000;

export interface ClientStatus {
  state: ClientState;
  /** Payload bytes received from / sent to the server over every session so far (always set by ReflectorClient). */
  bytesIn?: number;
  bytesOut?: number;
  serverKey?: string;
  lastError?: string;
  retryInMs?: number;
  streams: number;
}

export class ReflectorClient {
  /** Emits 'state' (ClientStatus) on every change. */
  readonly events = new EventEmitter();
  private currentState: ClientState = 'connecting';
  private current: EstablishedSession | undefined;
  /** A session whose connection dropped, waiting to be resumed over the next one. */
  private suspended: EstablishedSession | undefined;
  private suspendTimer: NodeJS.Timeout | undefined;
  private readonly draining = new Set<SecureSession>();
  private readonly listenersOwner = new LocalListeners();
  private readonly waiting = new Set<(session: EstablishedSession | undefined) => void>();
  private readonly backoff: Backoff;
  private readonly hostPort: string;
  private lastError: string | undefined;
  /** Byte counts of sessions that ended, so status totals never go back. */
  private readonly closedBytes = { in: 0, out: 0 };
  private retryTimer: NodeJS.Timeout | undefined;
  private wakeRetry: ((why: 'goaway' | 'lost' | 'closed') => void) | undefined;
  private settleDone!: { resolve: () => void; reject: (error: unknown) => void };
  /** Resolves on close(); rejects with the fatal error that stopped the client. */
  readonly done: Promise<void>;

  constructor(
    private readonly options: ClientOptions,
    private readonly identity: Identity,
    private readonly logger: Logger,
  ) {
    this.backoff = new Backoff(options.reconnect);
    const url = new URL(options.url);
    const defaultPort = url.protocol === 'wss:' ? '443' : '80';
    this.hostPort = `${url.hostname}:${url.port || defaultPort}`;
    this.done = new Promise<void>((resolve, reject) => {
      this.settleDone = { resolve, reject };
    });
    // A caller that only awaits connect() must not crash on an unobserved rejection.
    this.done.catch(() => undefined);
  }

  get state(): ClientState {
    return this.currentState;
  }
  /** A method, not a field read, so checks after an await are not narrowed away. */
  isClosed(): boolean {
    return this.currentState === 'closed';
  }
  get listeners(): BoundListener[] {
    return this.listenersOwner.bound;
  }
  get status(): ClientStatus {
    const live = [this.current?.session, this.suspended?.session, ...this.draining].filter(
      (session): session is SecureSession => session !== undefined,
    );
    return {
      state: this.currentState,
      bytesIn: this.closedBytes.in + live.reduce((n, s) => n + s.bytesOpened, 0),
      bytesOut: this.closedBytes.out + live.reduce((n, s) => n + s.bytesSealed, 0),
      ...(this.current ? { serverKey: this.current.serverKey } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      streams: (this.current?.session.mux.streamCount ?? 0) + [...this.draining].reduce((n, s) => n + s.mux.streamCount, 0),
    };
  }

  /**
   * Binds the listeners and makes the first attempt. Rejects only on a fatal
   * first attempt (wrong server key, refused client key) or a bad listener;
   * a server that is merely unreachable is retried in the background.
   */
  async start(): Promise<void> {
    await this.listenersOwner.bind(this.options.forwards, (socket, spec) =>
      forwardLocalConnection(socket, spec, {
        sessionForNewStream: () => this.sessionForNewStream(WAIT_FOR_SESSION_MS),
        logger: this.logger,
      }),
    );
    for (const { spec, address } of this.listeners) {
      this.logger.info(
        { event: 'listener.bound', service: spec.service, address },
        `forwarding ${address.host}:${address.port} to service ${spec.service}`,
      );
    }
    const cleartext = cleartextUpgradeWarning(new URL(this.options.url));
    if (cleartext !== undefined) this.logger.warn({ event: 'transport.cleartext', url: this.options.url }, cleartext);
    const first = await this.attempt();
    if (first !== undefined && isFatal(first)) {
      await this.shutdown(first);
      throw first;
    }
    void this.loop(first);
  }

  /**
   * Opens a stream on the current session (waiting for one if we are
   * reconnecting) and resolves once the server accepted it.
   */
  async openStream(service: string, waitMs = WAIT_FOR_SESSION_MS): Promise<TunnelStream> {
    const established = await this.sessionForNewStream(waitMs);
    const stream = established.session.openStream(service);
    await new Promise<void>((resolve, reject) => {
      stream.once('open', resolve);
      stream.once('reset', reject);
    });
    return stream;
  }

  async close(): Promise<void> {
    await this.shutdown();
  }

  private setState(state: ClientState): void {
    this.currentState = state;
    this.events.emit('state', this.status);
  }

  /** One connection attempt; returns the error if it failed. */
  private async attempt(): Promise<ReflectorError | undefined> {
    try {
      const established = await establishSession({
        url: this.options.url,
        identity: this.identity,
        // Behind several replicas, nginx routes a resume back to the one holding the session.
        headers: this.suspended?.welcome.replica
          ? { ...this.options.headers, 'x-reflector-replica': this.suspended.welcome.replica }
          : this.options.headers,
        aead: this.options.aead,
        handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
        dial: dialOptionsFor(this.options, (message) => this.logger.warn({ event: 'tls.insecure', url: this.options.url }, message)),
        checkServerKey: async (thumbprint) => {
          if (this.options.serverKey) checkPinnedServer(this.options.serverKey, thumbprint, this.hostPort);
          else await verifyKnownServer(this.options.knownServers, this.hostPort, thumbprint);
        },
        confirmServerKey: async (thumbprint) => {
          if (this.options.serverKey) return;
          const result = await checkKnownServer(this.options.knownServers, this.hostPort, thumbprint);
          if (result === 'added') {
            this.logger.warn(
              { event: 'server.key.added', hostPort: this.hostPort, thumbprint, file: this.options.knownServers },
              `trusting ${this.hostPort} on first use: host key ${thumbprint} added to ${this.options.knownServers}`,
            );
          }
        },
      });
      if (this.currentState === 'closed') {
        established.session.close(1000);
        return undefined;
      }
      if (this.suspended !== undefined) return await this.resumeOver(established);
      this.watch(established);
      this.adopt(established);
      return undefined;
    } catch (error) {
      const failure =
        error instanceof ReflectorError
          ? error
          : new ReflectorError(ErrorCode.INTERNAL, `connection attempt failed: ${(error as Error).message}`, { cause: error });
      this.lastError = failure.message;
      return failure;
    }
  }

  /**
   * Asks the server to continue the suspended session over the connection just
   * established. On RESUME_OK the old session takes the connection over and its
   * streams carry on; on RESUME_FAIL its streams are reset and the fresh
   * session is used instead. Returns an error only if the fresh connection died.
   */
  private async resumeOver(fresh: EstablishedSession): Promise<ReflectorError | undefined> {
    const old = this.suspended!;
    const outcome = await requestResume(old.session, fresh.session, HANDSHAKE_TIMEOUT_MS);
    if ('lost' in outcome) return new ConnectError(`${this.options.url}: the connection closed while resuming`);
    this.clearSuspended();
    if (outcome.resumed) {
      this.logger.info(
        { event: 'session.resumed', streams: old.session.mux.streamCount },
        `resumed the session with ${old.session.mux.streamCount} streams`,
      );
      this.adopt({ ...old, welcome: fresh.welcome });
      return undefined;
    }
    this.logger.warn(
      { event: 'session.resume.refused', reason: outcome.reason },
      `could not resume the session (${outcome.reason}); its streams are reset`,
    );
    old.session.expire();
    this.watch(fresh);
    this.adopt(fresh);
    return undefined;
  }

  private clearSuspended(): void {
    clearTimeout(this.suspendTimer);
    this.suspended = undefined;
  }

  /** Follows one session's life once, whatever connections it goes through. */
  private watch(established: EstablishedSession): void {
    const { session } = established;
    session.on('suspend', (info: { code: number; error?: ReflectorError }) => {
      if (this.current?.session !== session) return;
      this.current = undefined;
      this.suspended = established;
      const windowMs = established.welcome.resume;
      this.lastError = info.error?.message ?? `connection lost (code ${info.code})`;
      this.logger.warn(
        { event: 'session.suspend', code: info.code, streams: session.mux.streamCount },
        `connection lost (${this.lastError}); keeping ${session.mux.streamCount} streams for up to ${windowMs} ms`,
      );
      this.suspendTimer = setTimeout(() => {
        if (this.suspended !== established) return;
        this.clearSuspended();
        session.expire();
      }, windowMs);
      this.suspendTimer.unref();
      this.wakeRetry?.('lost');
    });
    session.on('goaway', () => {
      this.logger.info({ event: 'session.goaway' }, 'server is draining: new streams will use a new session');
      this.retire(established);
      this.wakeRetry?.('goaway');
    });
    session.once('close', (info: { code: number; error?: ReflectorError }) => {
      this.closedBytes.in += session.bytesOpened;
      this.closedBytes.out += session.bytesSealed;
      this.draining.delete(session);
      if (this.current?.session === session) {
        this.current = undefined;
        this.lastError = info.error?.message ?? `session closed (code ${info.code})`;
        this.logger.warn({ event: 'session.lost', code: info.code }, `session lost: ${this.lastError}`);
        this.wakeRetry?.('lost');
      }
    });
  }

  private adopt(established: EstablishedSession): void {
    this.backoff.reset();
    this.current = established;
    this.lastError = undefined;
    const { serverKey, welcome } = established;
    const replica = welcome.replica === undefined ? '' : `, replica ${welcome.replica}`;
    this.logger.info(
      { event: 'session.open', url: this.options.url, serverKey, services: welcome.services, replica: welcome.replica },
      `connected to ${this.options.url} (server key ${serverKey}${replica})`,
    );
    this.setState('connected');
    for (const wake of [...this.waiting]) wake(established);
  }

  /** Moves a GOAWAY'd session aside: its streams finish, then it closes. */
  private retire(established: EstablishedSession): void {
    if (this.current?.session !== established.session) return;
    this.current = undefined;
    const { session } = established;
    this.draining.add(session);
    const closeWhenIdle = (): void => {
      if (session.mux.streamCount === 0) session.close(1000);
      else setTimeout(closeWhenIdle, 100).unref();
    };
    closeWhenIdle();
  }

  /** Keeps a session established until close() or a fatal error. */
  private async loop(lastFailure: ReflectorError | undefined): Promise<void> {
    let failure = lastFailure;
    while (this.currentState !== 'closed') {
      if (this.current !== undefined) {
        const why = await new Promise<'goaway' | 'lost' | 'closed'>((resolve) => (this.wakeRetry = resolve));
        this.wakeRetry = undefined;
        if (why === 'closed' || this.isClosed()) return;
        // A GOAWAY means "move on now"; a lost session retries after a short backoff.
        failure = why === 'goaway' ? undefined : new ConnectError(this.lastError ?? 'session lost');
      }
      if (failure !== undefined) {
        if (this.backoff.exhausted) {
          await this.shutdown(new ConnectError(`${this.options.url}: giving up after ${this.backoff.attempts} attempts: ${failure.message}`));
          return;
        }
        const delay = this.backoff.nextDelay();
        this.setState('reconnecting');
        this.logger.warn(
          { event: 'session.retry', retryInMs: delay, reason: failure.message },
          `reconnecting in ${(delay / 1000).toFixed(1)} s: ${failure.message}`,
        );
        this.events.emit('state', { ...this.status, retryInMs: delay });
        await new Promise<void>((resolve) => {
          this.retryTimer = setTimeout(resolve, delay);
        });
        if (this.isClosed()) return;
      }
      failure = await this.attempt();
      if (failure !== undefined && isFatal(failure)) {
        await this.shutdown(failure);
        return;
      }
    }
  }

  private sessionForNewStream(waitMs: number): Promise<EstablishedSession> {
    if (this.current && !this.current.session.isClosed && !this.current.session.draining) {
      return Promise.resolve(this.current);
    }
    if (this.currentState === 'closed') {
      return Promise.reject(new StreamError(ErrorCode.SESSION_CLOSED, 'the client is closed'));
    }
    return new Promise<EstablishedSession>((resolve, reject) => {
      const wake = (session: EstablishedSession | undefined): void => {
        clearTimeout(timer);
        this.waiting.delete(wake);
        if (session) resolve(session);
        else reject(new StreamError(ErrorCode.SESSION_CLOSED, 'the client is closed'));
      };
      const timer = setTimeout(() => {
        this.waiting.delete(wake);
        reject(
          new StreamError(
            ErrorCode.SESSION_CLOSED,
            `no session to ${this.options.url} within ${waitMs} ms${this.lastError ? ` (last error: ${this.lastError})` : ''}`,
          ),
        );
      }, waitMs);
      this.waiting.add(wake);
    });
  }

  private async shutdown(fatal?: ReflectorError): Promise<void> {
    if (this.currentState === 'closed') return;
    this.setState('closed');
    clearTimeout(this.retryTimer);
    this.wakeRetry?.('closed');
    for (const wake of [...this.waiting]) wake(undefined);
    // Cleared first, so the sessions' close handlers do not take this for a lost session.
    const current = this.current;
    const suspended = this.suspended;
    this.current = undefined;
    this.clearSuspended();
    current?.session.close(1000);
    suspended?.session.close(1000);
    for (const session of this.draining) session.close(1000);
    await this.listenersOwner.close();
    if (fatal) {
      this.logger.error({ event: 'client.fatal', code: fatal.code }, fatal.message);
      this.settleDone.reject(fatal);
    } else {
      this.settleDone.resolve();
    }
  }
}
