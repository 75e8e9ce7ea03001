/**
 * A TCP relay between the client reflector and the server reflector that a test
 * can cut (every relayed connection is reset, as when a laptop changes network
 * or a proxy drops idle connections) and block (new connections are refused
 * while the "network" is down).
 */
import net from 'node:net';

export interface CutRelay {
  port: number;
  url: (path?: string) => string;
  /** Resets every relayed connection in both directions. */
  cut: () => void;
  /** While blocked, new connections are reset at once. */
  block: (blocked: boolean) => void;
  /** Bytes relayed client → server so far. */
  readonly bytesUp: number;
  connections: () => number;
  close: () => Promise<void>;
}

export async function startCutRelay(targetPort: number, targetHost = '127.0.0.1'): Promise<CutRelay> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  let blocked = false;
  let bytesUp = 0;
  const server = net.createServer((inbound) => {
    inbound.on('error', () => undefined);
    if (blocked) {
      inbound.resetAndDestroy();
      return;
    }
    const outbound = net.connect({ port: targetPort, host: targetHost });
    outbound.on('error', () => undefined);
    const pair: [net.Socket, net.Socket] = [inbound, outbound];
    pairs.add(pair);
    inbound.on('data', (chunk: Buffer) => {
      bytesUp += chunk.length;
    });
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const drop = (): void => {
      pairs.delete(pair);
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on('close', drop);
    outbound.on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const reset = (socket: net.Socket): void => {
    if (socket.destroyed) return;
    if (socket.readyState === 'open') socket.resetAndDestroy();
    else socket.destroy();
  };
  return {
    port,
    url: (path = '/tunnel') => `ws://127.0.0.1:${port}${path}`,
    cut: () => {
      for (const [inbound, outbound] of [...pairs]) {
        reset(inbound);
        reset(outbound);
      }
      pairs.clear();
    },
    block: (value) => {
      blocked = value;
    },
    get bytesUp() {
      return bytesUp;
    },
    connections: () => pairs.size,
    close: async () => {
      for (const [inbound, outbound] of pairs) {
        inbound.destroy();
        outbound.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
