/**
 * The `-L` listeners: local TCP servers that outlive sessions. Each accepted
 * socket is handed on with the service it stands for; what happens next (wait
 * for a session, open a stream) is the client's business.
 */
import net from 'node:net';
import type { ForwardSpec } from '../shared/forward-spec.js';
import { ConfigError } from '../shared/errors.js';

export interface BoundListener {
  spec: ForwardSpec;
  address: { host: string; port: number };
}

export type AcceptHandler = (socket: net.Socket, spec: ForwardSpec) => void;

export class LocalListeners {
  private readonly servers: net.Server[] = [];
  readonly bound: BoundListener[] = [];

  /** Binds every listener, or none: a failure closes the ones already bound. */
  async bind(specs: readonly ForwardSpec[], onAccept: AcceptHandler): Promise<void> {
    try {
      for (const spec of specs) await this.bindOne(spec, onAccept);
    } catch (error) {
      await this.close();
      throw error;
    }
  }

  private bindOne(spec: ForwardSpec, onAccept: AcceptHandler): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) =>
      onAccept(socket, spec),
    );
    return new Promise((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => {
        const where = `-L ${spec.host}:${spec.port}=${spec.service}`;
        reject(
          new ConfigError(
            error.code === 'EADDRINUSE'
              ? `${where}: port ${spec.port} on ${spec.host} is already in use`
              : `${where}: cannot listen (${error.code ?? error.message})`,
            { cause: error },
          ),
        );
      });
      server.listen(spec.port, spec.host, () => {
        const address = server.address() as net.AddressInfo;
        this.servers.push(server);
        this.bound.push({ spec, address: { host: address.address, port: address.port } });
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    this.servers.length = 0;
  }
}
