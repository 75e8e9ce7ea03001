/**
 * A proxy that stops answering must fail the attempt, not hang it: one
 * deadline covers the whole CONNECT exchange (each NTLM 407 round), the error
 * names the proxy and the request it left unanswered, the socket is closed,
 * and the next attempt goes through. Also the step after it, the WebSocket
 * upgrade through the tunnel, which ws only times out if the dialer arms its
 * handshakeTimeout. Last, the whole client: a stalled first attempt is logged
 * and retried by the reconnect loop (this one waits out the client's real
 * 15 s handshake deadline).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import WebSocket from 'ws';
import { ConnectError, ProxyAuthError } from '../../client/connect-error.js';
import { createConnectionFor } from '../../client/dialer.js';
import { connectThroughProxy, type ProxyCredentials } from '../../client/proxy-connect.js';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  memoryLogger,
  serverConfig,
  startClientWith,
  startEchoBackend,
  startServer,
  waitConnected,
} from '../helpers/fixtures.js';
import { ntlmChallenge } from '../helpers/ntlm-challenge.js';

/** What the fake proxy does with one request head: answer, tunnel, or say nothing. */
type Reply = string | 'tunnel' | 'silent';

interface FakeProxy {
  url: URL;
  /** Request lines with their `Proxy-Authorization` scheme and NTLM message type, per connection. */
  readonly requests: Array<{ connection: number; line: string; ntlmType?: number }>;
  /** How many accepted connections have closed (the client destroys the socket it gave up on). */
  closed(): number;
}

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/**
 * A CONNECT proxy on loopback. `reply(connection, index)` decides what the
 * index-th request on that connection gets; 'tunnel' answers 200 and pipes to
 * `tunnelTo` (or to the CONNECT target).
 */
async function fakeProxy(reply: (connection: number, index: number) => Reply, tunnelTo?: number): Promise<FakeProxy> {
  const requests: FakeProxy['requests'] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  let closed = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    const connection = connections++;
    let index = 0;
    let buffered = Buffer.alloc(0);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      sockets.delete(socket);
      closed += 1;
    });
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
        const [line = '', ...headers] = buffered.subarray(0, end).toString('latin1').split('\r\n');
        buffered = buffered.subarray(end + 4);
        const auth = headers.find((header) => /^proxy-authorization:/i.test(header));
        const ntlm = auth === undefined ? undefined : /NTLM\s+(\S+)/i.exec(auth)?.[1];
        requests.push({ connection, line, ...(ntlm ? { ntlmType: Buffer.from(ntlm, 'base64').readUInt32LE(8) } : {}) });
        const what = reply(connection, index++);
        if (what === 'silent') continue;
        if (what !== 'tunnel') {
          socket.write(what);
          continue;
        }
        socket.off('data', onData);
        const [host = '', port = ''] = line.split(' ')[1]!.split(/:(?=\d+$)/);
        const upstream = net.connect({ host, port: tunnelTo ?? Number(port) }, () => {
          socket.write('HTTP/1.1 200 Connection established\r\n\r\n');
          if (buffered.length > 0) upstream.write(buffered);
          socket.pipe(upstream).pipe(socket);
        });
        upstream.on('error', () => socket.destroy());
        socket.on('close', () => upstream.destroy());
        return;
      }
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return { url: new URL(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`), requests, closed: () => closed };
}

const CHALLENGE_407 = `HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM ${ntlmChallenge()}\r\nContent-Length: 5\r\n\r\ndeny.`;
const NTLM: ProxyCredentials = { scheme: 'ntlm', user: 'alice', domain: 'CORP', password: 'pw' };
const BASIC: ProxyCredentials = { scheme: 'basic', user: 'bob', password: 'pw' };

/** A target that echoes, so a tunnel that opened can be shown to carry bytes. */
async function echoTarget(): Promise<number> {
  const echo = await startEchoBackend();
  cleanups.push(() => echo.close());
  return echo.port;
}

async function roundTrip(socket: net.Socket, text: string): Promise<string> {
  const answer = new Promise<string>((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString())));
  socket.write(text);
  return answer;
}

/** Rejects like `promise` must, and says how long it took. */
async function timedRejection(promise: Promise<unknown>): Promise<{ error: Error; ms: number }> {
  const started = Date.now();
  try {
    await promise;
  } catch (error) {
    return { error: error as Error, ms: Date.now() - started };
  }
  throw new Error('expected a rejection');
}

const DEADLINE_MS = 400;
/** Timers fire late on a loaded machine; the point is "at the deadline", not "seconds later" or never. */
const SLACK_MS = 1_500;

describe('connectThroughProxy: one deadline for the whole exchange', () => {
  const cases: Array<{ name: string; credentials?: ProxyCredentials; reply: (index: number) => Reply; step: string; verb?: string }> = [
    { name: 'a plain CONNECT', reply: () => 'silent', step: 'the CONNECT' },
    { name: 'a Basic CONNECT', credentials: BASIC, reply: () => 'silent', step: 'the CONNECT with Basic credentials' },
    { name: 'NTLM type 1 (no challenge comes)', credentials: NTLM, reply: () => 'silent', step: 'the NTLM CONNECT (type 1)' },
    {
      name: 'NTLM type 3 (the challenge came, then nothing)',
      credentials: NTLM,
      reply: (index) => (index === 0 ? CHALLENGE_407 : 'silent'),
      step: 'the NTLM CONNECT (type 3)',
    },
    {
      name: 'a 407 whose body never ends',
      credentials: NTLM,
      reply: () => `HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM ${ntlmChallenge()}\r\nContent-Length: 100\r\n\r\nonly part`,
      step: 'the NTLM CONNECT (type 1)',
      verb: 'did not finish its answer to',
    },
  ];
  for (const { name, credentials, reply, step, verb } of cases) {
    it(`a proxy that stalls on ${name}: a ConnectError naming the proxy and the step, at the deadline, socket closed`, async () => {
      const proxy = await fakeProxy((_connection, index) => reply(index));
      const { error, ms } = await timedRejection(
        connectThroughProxy({ proxy: proxy.url, target: { host: '127.0.0.1', port: 9 }, timeoutMs: DEADLINE_MS, ...(credentials ? { credentials } : {}) }),
      );
      assert.ok(error instanceof ConnectError && !(error instanceof ProxyAuthError), `retryable, not fatal: ${error.name}`);
      assert.equal(error.message, `proxy ${proxy.url.origin} ${verb ?? 'did not answer'} ${step} to 127.0.0.1:9 within ${DEADLINE_MS} ms`);
      assert.ok(ms >= DEADLINE_MS - 50 && ms < DEADLINE_MS + SLACK_MS, `failed after ${ms} ms`);
      await waitUntil(() => proxy.closed() === 1, 'the proxy connection closed');
    });
  }

  it('the deadline is for the exchange as a whole: slow rounds that each fit do not reset it', async () => {
    // Each answer comes 600 ms after its request: either round fits in 1000 ms, both together do not.
    const server = await fakeProxyDelayed(600);
    const { error, ms } = await timedRejection(
      connectThroughProxy({ proxy: server, target: { host: '127.0.0.1', port: 9 }, timeoutMs: 1_000, credentials: NTLM }),
    );
    assert.equal(error.message, `proxy ${server.origin} did not answer the NTLM CONNECT (type 3) to 127.0.0.1:9 within 1000 ms`);
    assert.ok(ms < 1_000 + SLACK_MS, `failed after ${ms} ms`);
  });

  it('a proxy that answers only from the second attempt on: the first fails with the step, the retry opens a working tunnel', async () => {
    const target = await echoTarget();
    const proxy = await fakeProxy((connection, index) => (connection === 0 ? (index === 0 ? CHALLENGE_407 : 'silent') : index === 0 ? CHALLENGE_407 : 'tunnel'));
    const options = { proxy: proxy.url, target: { host: '127.0.0.1', port: target }, timeoutMs: DEADLINE_MS, credentials: NTLM };
    const { error } = await timedRejection(connectThroughProxy(options));
    assert.match(error.message, /did not answer the NTLM CONNECT \(type 3\) to 127\.0\.0\.1:\d+ within 400 ms$/);
    const socket = await connectThroughProxy({ ...options, timeoutMs: 5_000 });
    assert.equal(await roundTrip(socket, 'through the retried tunnel'), 'through the retried tunnel');
    socket.destroy();
    assert.deepEqual(
      proxy.requests.map(({ connection, ntlmType }) => [connection, ntlmType]),
      [
        [0, 1],
        [0, 3],
        [1, 1],
        [1, 3],
      ],
      'Type 1 and Type 3 on one connection, each attempt on a connection of its own',
    );
  });
});

/** A proxy that answers every request (NTLM challenge, then 200 and silence) `delayMs` after it arrives. */
async function fakeProxyDelayed(delayMs: number): Promise<URL> {
  const server = net.createServer((socket) => {
    let requests = 0;
    let buffered = '';
    socket.on('error', () => undefined);
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
        buffered = buffered.slice(end + 4);
        const answer = requests++ === 0 ? CHALLENGE_407 : 'HTTP/1.1 200 Connection established\r\n\r\n';
        setTimeout(() => socket.writable && socket.write(answer), delayMs);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return new URL(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
}

async function waitUntil(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('the WebSocket upgrade through the proxy tunnel', () => {
  it('ws times out an upgrade nobody answers (its handshakeTimeout reaches the socket the dialer hands over)', async () => {
    // The proxy says 200 and tunnels to a "server" that accepts and never answers the upgrade.
    const held = new Set<net.Socket>();
    const mute = net.createServer((socket) => {
      held.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => held.delete(socket));
    });
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const socket of held) socket.destroy();
          mute.close(() => resolve());
        }),
    );
    const port = (mute.address() as net.AddressInfo).port;
    const proxy = await fakeProxy(() => 'tunnel');
    const url = `ws://127.0.0.1:${port}/tunnel`;
    const started = Date.now();
    const ws = new WebSocket(url, {
      handshakeTimeout: DEADLINE_MS,
      createConnection: createConnectionFor(url, { proxy: proxy.url.href, timeoutMs: 5_000 }) as unknown as WebSocket.ClientOptions['createConnection'],
    });
    const error = await new Promise<Error>((resolve) => ws.once('error', resolve));
    const ms = Date.now() - started;
    assert.equal(error.message, 'Opening handshake has timed out');
    assert.ok(ms >= DEADLINE_MS - 50 && ms < DEADLINE_MS + SLACK_MS, `failed after ${ms} ms`);
    assert.equal(proxy.requests.length, 1, 'the CONNECT went through the proxy');
    await waitUntil(() => proxy.closed() === 1, 'the tunnel closed');
  });
});

describe('the client: a proxy that stalls mid-NTLM is retried by the reconnect loop', () => {
  it('logs one retry naming the proxy and the step, then connects through the next attempt and carries bytes', { timeout: 60_000 }, async () => {
    const keys = await makeKeys();
    cleanups.push(() => keys.cleanup());
    const echo = await startEchoBackend();
    cleanups.push(() => echo.close());
    const server = await startServer(serverConfig(keys, { echo: echo.target }));
    cleanups.push(() => server.close());
    // First connection: challenge, then silence after Type 3 (a squid whose NTLM helper never answers).
    const proxy = await fakeProxy((connection, index) => (index === 0 ? CHALLENGE_407 : connection === 0 ? 'silent' : 'tunnel'));
    const log = memoryLogger('info');
    const started = Date.now();
    const client = await startClientWith(
      clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'echo' }], {
        proxy: proxy.url.href,
        proxyAuth: { scheme: 'ntlm', user: 'alice', domain: 'CORP', password: 'pw' },
      }),
      log.logger,
    );
    cleanups.push(() => client.close());
    await waitConnected(client, 40_000);
    const elapsed = Date.now() - started;
    const retries = log.entries().filter((entry) => entry.event === 'session.retry');
    assert.equal(retries.length, 1, JSON.stringify(retries));
    const target = new URL(server.url).host;
    assert.equal(retries[0]!.reason, `proxy ${proxy.url.origin} did not answer the NTLM CONNECT (type 3) to ${target} within 15000 ms`);
    assert.ok(elapsed >= 14_900 && elapsed < 15_000 + 10_000, `connected after ${elapsed} ms`);
    assert.equal(proxy.closed() >= 1, true, 'the stalled connection was closed');
    const local = await connectLocal(client.listeners[0]!.address.port);
    assert.equal(await roundTrip(local, 'hello through the retried tunnel'), 'hello through the retried tunnel');
    local.destroy();
  });
});
