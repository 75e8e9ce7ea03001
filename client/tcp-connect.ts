/**
 * One TCP connection with a deadline, Nagle off: the dial to the gateway
 * (dialer.ts) and to an HTTP proxy (proxy-connect.ts). The caller words the
 * errors, since only it knows what it was trying to reach.
 */
import net from 'node:net';

export interface TcpConnectErrors {
  /** No connection within the deadline (the socket is destroyed). */
  timedOut: () => Error;
  /** The socket failed before it connected. */
  failed: (error: NodeJS.ErrnoException) => Error;
}

export function connectTcp(target: { host: string; port: number }, timeoutMs: number, errors: TcpConnectErrors): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.host, port: target.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(errors.timedOut());
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      socket.setNoDelay(true);
      resolve(socket);
    });
    const onError = (error: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      reject(errors.failed(error));
    };
    socket.once('error', onError);
  });
}
