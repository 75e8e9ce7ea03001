/**
 * The admin listener: its own Express app on its own HTTP server (default
 * 127.0.0.1), never the public gateway listener. It serves
 *
 *   GET /metrics            Prometheus text format (this server's registry only)
 *   GET /admin              the status page (admin-page.ts), refreshing itself
 *   GET /admin/api/status   the page's data as JSON, for scripts too
 *
 * behind helmet with a CSP that allows exactly what the page uses (its own
 * script, stylesheet and fetch). With a token, every request needs
 * `Authorization: Bearer TOKEN` (Prometheus `authorization.credentials`) or
 * Basic auth with TOKEN as the password (what a browser prompts for).
 * Without one, the listener is loopback-only (the config refuses anything
 * else) and answers only requests addressed to an IP or `localhost`, so a web
 * page cannot reach it through DNS rebinding.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { isIP, type AddressInfo, type Socket } from 'node:net';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import helmet from 'helmet';
import type { AdminConfig } from '../shared/config-schema.js';
import { ConfigError, ErrorCode } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { ADMIN_PAGE_CSS, ADMIN_PAGE_HTML, ADMIN_PAGE_SCRIPT } from './admin-page.js';
import type { ServerMetrics, ServiceTotals } from './metrics.js';
import type { ServerState, SessionInfo } from './server.js';

/** What the admin listener reads from the server. */
export interface AdminSource {
  readonly state: ServerState;
  readonly hostKeyThumbprint: string;
  listSessions(): SessionInfo[];
}

/** GET /admin/api/status */
export interface AdminStatus {
  state: ServerState;
  hostKey: string;
  /** The server's clock when it answered (ISO 8601). */
  now: string;
  sessions: Array<Omit<SessionInfo, 'since'> & { since: string }>;
  services: ServiceTotals[];
}

export const ADMIN_CSP_DIRECTIVES = {
  defaultSrc: ["'none'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  connectSrc: ["'self'"],
  imgSrc: ["'self'"],
  baseUri: ["'none'"],
  formAction: ["'none'"],
  frameAncestors: ["'none'"],
  requireTrustedTypesFor: ["'script'"],
};

export class AdminListener {
  private constructor(
    private readonly server: http.Server,
    private readonly sockets: Set<Socket>,
    readonly address: { host: string; port: number },
  ) {}

  /** Binds the listener; rejects with a ConfigError naming `admin.listen` if it cannot. */
  static async start(source: AdminSource, metrics: ServerMetrics, config: AdminConfig, logger: Logger): Promise<AdminListener> {
    const app = createAdminApp(source, metrics, config.token);
    const server = http.createServer(app);
    const sockets = new Set<Socket>();
    server.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
    const { host, port } = config.listen;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => {
        const reason = error.code === 'EADDRINUSE' ? 'the address is already in use' : error.message;
        reject(new ConfigError(`admin.listen ${host}:${port}: ${reason}`, { cause: error, code: ErrorCode.CONFIG_INVALID }));
      });
      server.listen(port, host, () => resolve());
    });
    const bound = server.address() as AddressInfo;
    const admin = new AdminListener(server, sockets, { host: bound.address, port: bound.port });
    logger.info(
      { event: 'admin.listening', url: admin.url, auth: config.token === undefined ? 'none' : 'bearer' },
      `admin listener on ${admin.url} (/metrics, /admin)${config.token === undefined ? '' : ', bearer token required'}`,
    );
    return admin;
  }

  get url(): string {
    const { host, port } = this.address;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  /** Stops listening and ends the connections still open (keep-alive scrapers, a page left open). */
  async close(): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}

export function createAdminApp(source: AdminSource, metrics: ServerMetrics, token?: string): Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.use(
    helmet({
      contentSecurityPolicy: { useDefaults: false, directives: ADMIN_CSP_DIRECTIVES },
      // Plain HTTP on loopback: HSTS would mean nothing, and upgrading requests would break the page's fetch.
      strictTransportSecurity: false,
    }),
  );
  app.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });
  app.use(token === undefined ? localOnly : requireToken(token));
  app.use((req, res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD') return next();
    res.set('Allow', 'GET, HEAD').status(405).json({ error: 'method not allowed' });
  });

  app.get('/metrics', (_req, res, next) => {
    metrics.metrics().then((text) => {
      res.type(metrics.contentType).send(text);
    }, next);
  });
  app.get('/admin/api/status', (_req, res) => {
    res.json(adminStatus(source, metrics));
  });
  app.get('/admin', (_req, res) => {
    res.type('html').send(ADMIN_PAGE_HTML);
  });
  app.get('/admin/admin.js', (_req, res) => {
    res.type('text/javascript').send(ADMIN_PAGE_SCRIPT);
  });
  app.get('/admin/admin.css', (_req, res) => {
    res.type('text/css').send(ADMIN_PAGE_CSS);
  });
  app.get('/favicon.ico', (_req, res) => {
    res.status(204).end(); // browsers ask for it; there is none, and that is not an error
  });
  app.get('/', (_req, res) => {
    res.redirect(302, '/admin');
  });
  app.use((_req, res) => {
    res.status(404).json({ error: 'not found' });
  });
  app.use((error: Error, _req: Request, res: Response, _next: NextFunction) => {
    // Only a failing metrics collector gets here; the message names it, never a secret.
    res.status(500).json({ error: error.message });
  });
  return app;
}

export function adminStatus(source: AdminSource, metrics: ServerMetrics): AdminStatus {
  return {
    state: source.state,
    hostKey: source.hostKeyThumbprint,
    now: new Date().toISOString(),
    sessions: source
      .listSessions()
      .sort((a, b) => a.since.getTime() - b.since.getTime())
      .map((session) => ({ ...session, since: session.since.toISOString() })),
    services: metrics.serviceTotals(),
  };
}

/** Without a token: only requests addressed to an IP literal or localhost (a DNS-rebinding guard). */
function localOnly(req: Request, res: Response, next: NextFunction): void {
  const host = hostnameOf(req.headers.host ?? '');
  if (host === 'localhost' || isIP(host) !== 0) return next();
  res.status(421).json({ error: 'the admin listener answers only to an IP address or localhost' });
}

function requireToken(token: string): (req: Request, res: Response, next: NextFunction) => void {
  const expected = digest(token);
  return (req, res, next) => {
    const presented = presentedToken(req.headers.authorization);
    if (presented !== undefined && timingSafeEqual(digest(presented), expected)) return next();
    res
      // One challenge per header line: browsers do not split a list of challenges in one line.
      .set('WWW-Authenticate', ['Basic realm="reflector admin", charset="UTF-8"', 'Bearer realm="reflector admin"'])
      .status(401)
      .json({ error: 'authorization required' });
  };
}

/** The token from `Bearer TOKEN`, or the password of `Basic base64(user:TOKEN)`. */
function presentedToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const bearer = /^Bearer +(\S+)\s*$/i.exec(header);
  if (bearer) return bearer[1];
  const basic = /^Basic +([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!basic) return undefined;
  const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

/** Fixed-length digests, so the comparison takes the same time whatever was presented. */
function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function hostnameOf(hostHeader: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(hostHeader);
  if (bracketed) return bracketed[1]!;
  return hostHeader.replace(/:\d+$/, '').toLowerCase();
}
