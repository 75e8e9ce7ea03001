/** Loopback ports and the readiness probe every path shares. */
import net from 'node:net';
import { sleep } from './proc.js';

/** A port that was free a moment ago (bound to 127.0.0.1:0, then released). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Connects to `port` and reads the target's one-byte banner: proof that the
 * whole path (listener, tunnel, backend) carries bytes. Retries until `timeoutMs`.
 */
export async function waitForBanner(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      await bannerOnce(port, Math.max(500, deadline - Date.now()));
      return;
    } catch (error) {
      last = error;
      await sleep(100);
    }
  }
  throw new Error(`127.0.0.1:${port} never answered with the target's banner: ${(last as Error)?.message ?? last}`);
}

function bannerOnce(port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('timed out'));
    }, timeoutMs);
    socket.once('data', () => {
      clearTimeout(timer);
      socket.end();
      resolve();
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      reject(new Error('closed before the banner'));
    });
  });
}
