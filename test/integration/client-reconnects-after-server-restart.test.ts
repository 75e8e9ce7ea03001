/**
 * The server goes away and comes back on the same address with the same host
 * key: the client reconnects by itself, its -L listeners stay bound on the
 * same ports throughout, and local connections accepted while it had no
 * session wait for the new one instead of failing.
 */
import assert from 'node:assert/strict';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import type { ReflectorServer } from '../../server/index.js';
import type { ServerConfig } from '../../shared/config-schema.js';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  readAll,
  serverConfig,
  sleep,
  startClient,
  startEchoBackend,
  startServer,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';

async function echoOnce(port: number, text: string): Promise<string> {
  const socket = await connectLocal(port);
  try {
    const reply = readAll(socket);
    socket.end(text);
    return (await reply).toString();
  } finally {
    socket.destroy();
  }
}

describe('client reconnects after server restart', () => {
  let keys: KeySet;
  let echo: Backend;
  let config: ServerConfig;
  /** Every server started here, so `after` closes whichever are still up. */
  const servers: ReflectorServer[] = [];
  let client: ReflectorClient;
  let serverPort: number;
  let listenerPort: number;

  /** A new server process-equivalent: same config, same host key, the first server's port. */
  async function restartServer(): Promise<ReflectorServer> {
    const server = await startServer({ ...config, listen: { host: '127.0.0.1', port: serverPort } });
    servers.push(server);
    assert.equal(server.address.port, serverPort);
    return server;
  }

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    config = serverConfig(keys, { echo: echo.target });
    const first = await startServer(config);
    servers.push(first);
    serverPort = first.address.port;
    client = await startClient(clientOptions(keys, first, [{ host: '127.0.0.1', port: 0, service: 'echo' }]));
    await waitConnected(client);
    listenerPort = client.listeners[0]!.address.port;
  }, { timeout: 30_000 });

  after(async () => {
    await client?.close();
    for (const server of servers) await server.close();
    await echo?.close();
    await keys?.cleanup();
  }, { timeout: 30_000 });

  it('reconnects by itself to a new server on the same port, with its listener still on the same port', { timeout: 60_000 }, async () => {
    assert.equal(await echoOnce(listenerPort, 'before the restart'), 'before the restart');
    const first = servers.at(-1)!;
    const firstSession = first.listSessions()[0]!.id;

    await first.close();
    await waitFor(() => client.state !== 'connected', 'the client to notice the server went away');

    const second = await restartServer();
    await waitConnected(client, 30_000);
    assert.equal(second.listSessions().length, 1, 'the client did not open a session on the new server');
    assert.notEqual(second.listSessions()[0]!.id, firstSession);

    assert.equal(client.listeners.length, 1);
    assert.equal(client.listeners[0]!.address.port, listenerPort, 'the -L listener moved');
    assert.equal(await echoOnce(listenerPort, 'after the restart'), 'after the restart');
  });

  it('holds local connections made while the server is down and serves them once it is back', { timeout: 60_000 }, async () => {
    await servers.at(-1)!.close();
    await waitFor(() => client.state !== 'connected', 'the client to notice the server went away');

    // Three local connections arrive with no session to carry them; each sends its request at once.
    const waiting: Array<{ socket: net.Socket; reply: Promise<Buffer>; closedEarly: boolean }> = [];
    for (let i = 0; i < 3; i++) {
      const socket = await connectLocal(listenerPort);
      const entry = { socket, reply: readAll(socket), closedEarly: false };
      entry.reply.catch(() => undefined);
      socket.once('close', () => (entry.closedEarly = true));
      socket.end(`request ${i} sent while the server was down`);
      waiting.push(entry);
    }
    try {
      // Let the client retry against the closed port a few times (its backoff here is 50-500 ms).
      await sleep(1_000);
      assert.notEqual(client.state, 'connected', 'the client claims a session while no server runs');
      for (const [i, entry] of waiting.entries()) {
        assert.equal(entry.closedEarly, false, `local connection ${i} was dropped instead of waiting for a session`);
      }

      await restartServer();
      await waitConnected(client, 30_000);
      for (const [i, entry] of waiting.entries()) {
        assert.equal((await entry.reply).toString(), `request ${i} sent while the server was down`);
      }
    } finally {
      for (const entry of waiting) entry.socket.destroy();
    }
    assert.equal(client.listeners[0]!.address.port, listenerPort);
  });
});
