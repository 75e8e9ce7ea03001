/**
 * `reflector server` on SIGTERM, as systemd or Kubernetes sends it: /readyz
 * answers 503 (so the load balancer stops sending), /healthz stays 200, new
 * WebSocket upgrades are refused, every session gets GOAWAY, open streams
 * carry on until they finish or drainTimeout runs out, then the process exits 0.
 * Runs the built CLI (`npm run build` first; `npm test` does it).
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { connect, type ReflectorClient } from '../../client/index.js';
import { SUBPROTOCOL } from '../../shared/constants.js';
import {
  connectLocal,
  makeKeys,
  memoryLogger,
  readAll,
  socketOutcome,
  startEchoBackend,
  waitFor,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';
import { adminUrl, listeningUrl, sampleValue, scrape, startServerProcess, type ServerProcess } from './support/operations.js';

function yaml(echoPort: number, drainTimeoutMs: number): string {
  return `listen: { host: 127.0.0.1, port: 0 }
hostKey: host.jwk
admin: { listen: { host: 127.0.0.1, port: 0 } }
services:
  smtp: 127.0.0.1:${echoPort}
clients:
  - { name: alice, keyFile: client.jwk.pub, services: [smtp] }
limits: { drainTimeoutMs: ${drainTimeoutMs} }
`;
}

/** Writes `text` and waits until it came back. */
async function roundTrip(socket: net.Socket, text: string): Promise<void> {
  const got = new Promise<string>((resolve, reject) => {
    let seen = '';
    const onData = (chunk: Buffer): void => {
      seen += chunk.toString();
      if (seen.length >= text.length) {
        socket.off('data', onData);
        resolve(seen);
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
  socket.write(text);
  assert.equal(await got, text);
}

/** The status code of a WebSocket upgrade to `url` (101 when accepted). */
function upgradeStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, SUBPROTOCOL);
    ws.once('upgrade', (response) => {
      resolve(response.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('unexpected-response', (_request, response) => {
      resolve(response.statusCode ?? 0);
      response.resume();
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

describe('SIGTERM drains then exits zero', () => {
  let keys: KeySet;
  let echo: Backend;
  const started: ServerProcess[] = [];
  const clients: ReflectorClient[] = [];

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
  });

  after(async () => {
    for (const client of clients) await client.close();
    for (const server of started) server.kill();
    await echo?.close();
    await keys?.cleanup();
  });

  async function start(drainTimeoutMs: number, name: string) {
    const configPath = path.join(keys.dir, name);
    await writeFile(configPath, yaml(echo.port, drainTimeoutMs));
    const server = startServerProcess(configPath);
    started.push(server);
    const url = await listeningUrl(server);
    const admin = await adminUrl(server);
    const clientLog = memoryLogger('info');
    const client = await connect(
      {
        url,
        identity: keys.clientFile,
        serverKey: keys.host.thumbprint,
        knownServers: path.join(keys.dir, 'known_servers'),
        forwards: [{ host: '127.0.0.1', port: 0, service: 'smtp' }],
        aead: 'node',
        reconnect: { initialDelayMs: 50, maxDelayMs: 200, maxAttempts: 0 },
        headers: {},
        log: { level: 'info', format: 'json' },
      },
      { logger: clientLog.logger },
    );
    clients.push(client);
    await waitFor(() => client.state === 'connected', 'the client to connect');
    const http = new URL(url);
    http.protocol = 'http:';
    return { server, url, admin, client, clientLog, httpBase: `${http.origin}` };
  }

  it('refuses new work, lets the open stream finish, and exits 0', { timeout: 60_000 }, async () => {
    const { server, url, admin, client, clientLog, httpBase } = await start(30_000, 'finish.yaml');
    const socket = await connectLocal(client.listeners[0]!.address.port);
    await roundTrip(socket, 'EHLO before-sigterm\r\n');
    assert.equal((await fetch(`${httpBase}/readyz`)).status, 200);

    server.child.kill('SIGTERM');
    await server.waitForLog((e) => e.event === 'server.draining', 'the server to start draining');

    assert.equal((await fetch(`${httpBase}/readyz`)).status, 503, '/readyz turns 503');
    assert.equal((await fetch(`${httpBase}/healthz`)).status, 200, '/healthz stays 200: the process is alive');
    assert.equal(await upgradeStatus(url), 503, 'new WebSocket upgrades are refused');
    assert.equal(sampleValue(await scrape(`${admin}/metrics`), 'reflector_draining'), 1, 'metrics stay up while draining');
    await waitFor(() => clientLog.entries().some((e) => e.event === 'session.goaway'), 'the client to get GOAWAY');

    // The stream opened before SIGTERM keeps working, both ways, to its normal end.
    await roundTrip(socket, 'DATA after-sigterm\r\n');
    const rest = readAll(socket);
    socket.end('QUIT\r\n');
    assert.equal((await rest).toString(), 'QUIT\r\n');

    assert.equal(await server.exited, 0, `exit code (stderr: ${server.stderr()})`);
    assert.ok(server.logs.some((e) => e.event === 'server.closed'));
    assert.ok(server.logs.some((e) => e.event === 'stream.close' && e.outcome === 'fin'), 'the stream closed normally');
  });

  it('resets streams still open when drainTimeout runs out, and exits 0', { timeout: 60_000 }, async () => {
    const { server, client } = await start(300, 'timeout.yaml');
    const socket = await connectLocal(client.listeners[0]!.address.port);
    await roundTrip(socket, 'EHLO slow\r\n');
    const outcome = socketOutcome(socket);
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0, `exit code (stderr: ${server.stderr()})`);
    assert.equal((await outcome).how, 'error', 'the unfinished stream was cut');
  });
});
