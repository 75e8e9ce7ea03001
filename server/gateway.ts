/**
 * The listener: one HTTP(S) server running the Express app, with the WebSocket
 * upgrade accepted on the tunnel path only. It checks the upgrade (path,
 * subprotocol, readiness, unauthenticated connections per address and in all) and hands
 * the WebSocket over; it knows nothing about the handshake or sessions.
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Express } from 'express';
import proxyaddr from 'proxy-addr';
import { WebSocketServer, type WebSocket } from 'ws';
import { SUBPROTOCOL } from '../shared/constants.js';
import { ConfigError, ErrorCode } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';

export interface ConnectionInfo {
  /** The client's address, through trusted proxies. */
  address: string;
  /** Call once the connection is authenticated or gone: it frees its unauthenticated slot. */
  releaseUnauthenticated: () => void;
}

export interface GatewayOptions {
  listen: { host: string; port: number };
  tls?: { cert: string; key: string };
  path: string;
  maxPayloadBytes: number;
  maxUnauthenticatedPerAddress: number;
  maxUnauthenticated: number;
  app: Express;
  accepting: () => boolean;
  onConnection: (ws: WebSocket, info: ConnectionInfo) => void;
  logger: Logger;
}

export class Gateway {
  private readonly wss: WebSocketServer;
  private server: http.Server | undefined;
  private readonly unauthenticated = new Map<string, number>();
  private unauthenticatedTotal = 0;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly options: GatewayOptions) {
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: options.maxPayloadBytes,
      clientTracking: false,
      handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
    });
  }

  async listen(): Promise<{ host: string; port: number }> {
    const { tls, app, listen } = this.options;
    let server: http.Server;
    if (tls) {
      const [cert, key] = await Promise.all([readTlsFile(tls.cert, 'tls.cert'), readTlsFile(tls.key, 'tls.key')]);
      server = https.createServer({ cert, key }, app);
    } else {
      server = http.createServer(app);
    }
    server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException): void => {
        reject(
          new ConfigError(
            error.code === 'EADDRINUSE'
              ? `listen ${listen.host}:${listen.port}: the address is already in use`
              : `listen ${listen.host}:${listen.port}: ${error.message}`,
            { cause: error, code: ErrorCode.CONFIG_INVALID },
          ),
        );
      };
      server.once('error', onError);
      server.listen(listen.port, listen.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    this.server = server;
    const address = server.address() as AddressInfo;
    return { host: address.address, port: address.port };
  }

  /** Stops accepting; existing connections are the caller's to end. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    await closed;
  }

  /** Destroys every socket still open on the listener (after sessions were closed). */
  destroyAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {
      // A client that vanishes mid-upgrade: nothing to do; ws handles it after handover.
    });
    const { logger } = this.options;
    const pathname = new URL(req.url ?? '/', 'http://gateway').pathname;
    if (pathname !== this.options.path) return reject(socket, 404, 'Not Found');
    if (!this.options.accepting()) return reject(socket, 503, 'Service Unavailable');
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!offered.includes(SUBPROTOCOL)) return reject(socket, 400, 'Bad Request');

    const address = proxyaddr(req, this.options.app.get('trust proxy fn'));
    if (this.unauthenticatedTotal >= this.options.maxUnauthenticated) {
      logger.warn(
        { event: 'auth.limited', address, pendingInAll: this.unauthenticatedTotal },
        `refused upgrade from ${address}: ${this.unauthenticatedTotal} unauthenticated connections in all already`,
      );
      return reject(socket, 503, 'Service Unavailable');
    }
    const pending = this.unauthenticated.get(address) ?? 0;
    if (pending >= this.options.maxUnauthenticatedPerAddress) {
      logger.warn(
        { event: 'auth.limited', address, pending },
        `refused upgrade from ${address}: ${pending} unauthenticated connections already`,
      );
      return reject(socket, 429, 'Too Many Requests');
    }
    this.unauthenticated.set(address, pending + 1);
    this.unauthenticatedTotal += 1;
    let released = false;
    const releaseUnauthenticated = (): void => {
      if (released) return;
      released = true;
      this.unauthenticatedTotal -= 1;
      const left = (this.unauthenticated.get(address) ?? 1) - 1;
      if (left <= 0) this.unauthenticated.delete(address);
      else this.unauthenticated.set(address, left);
    };
    socket.once('close', releaseUnauthenticated);
    // ws writes the 101 response and hands the WebSocket over synchronously, and the
    // server's hello is sent in that same tick: corked, both leave in one write
    // (one syscall here, one read for the client) instead of two.
    socket.cork();
    try {
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        this.options.onConnection(ws, { address, releaseUnauthenticated });
      });
    } finally {
      socket.uncork();
    }
  }
}

function reject(socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

async function readTlsFile(path: string, key: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw new ConfigError(`${key}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? error})`, {
      cause: error,
    });
  }
}
