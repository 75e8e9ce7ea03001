/**
 * GET /metrics on the admin listener counts what the server did: sessions by
 * client, streams by service (open now, opened, refused by reason, closed by
 * outcome, bytes each way), handshake failures by reason, the two latency
 * histograms, flow-control stalls, and process metrics. Each server has its
 * own registry, and the public listener never serves /metrics.
 */
import assert from 'node:assert/strict';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import { createServer, type RunningServer } from '../../server/index.js';
import { AuthError } from '../../shared/errors.js';
import { generateIdentity, writeIdentityFiles } from '../../shared/keys.js';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  readAll,
  serverConfig,
  socketOutcome,
  startClient,
  startEchoBackend,
  testLogger,
  unusedPort,
  waitConnected,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';
import { nextEvent, sampleValue, scrape, type Sample } from './support/operations.js';

describe('metrics count sessions and streams', () => {
  let keys: KeySet;
  let echo: Backend;
  let server: RunningServer;
  let client: ReflectorClient;
  let metricsUrl: string;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    const closedPort = await unusedPort();
    server = await createServer(
      {
        ...serverConfig(keys, { echo: echo.target, closed: { host: '127.0.0.1', port: closedPort } }),
        admin: { listen: { host: '127.0.0.1', port: 0 } },
      },
      { logger: testLogger() },
    );
    assert.ok(server.operations.admin, 'the admin listener is up');
    metricsUrl = `${server.operations.admin.url}/metrics`;
    client = await startClient(
      clientOptions(keys, server, [
        { host: '127.0.0.1', port: 0, service: 'echo' },
        { host: '127.0.0.1', port: 0, service: 'closed' },
      ]),
    );
    await waitConnected(client);
  });

  after(async () => {
    await client?.close();
    await server?.close();
    await echo?.close();
    await keys?.cleanup();
  });

  const listenerPort = (service: string): number => client.listeners.find((l) => l.spec.service === service)!.address.port;

  it('serves Prometheus text on the admin listener and nothing on the public one', async () => {
    const response = await fetch(metricsUrl);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    assert.match(text, /^# HELP reflector_sessions /m);
    assert.match(text, /^# TYPE reflector_handshake_duration_seconds histogram$/m);

    const publicUrl = new URL(server.url);
    publicUrl.protocol = 'http:';
    publicUrl.pathname = '/metrics';
    assert.equal((await fetch(publicUrl)).status, 404, 'the public listener has no /metrics');
  });

  it('counts the session by client and the handshake that made it', async () => {
    const samples = await scrape(metricsUrl);
    assert.equal(sampleValue(samples, 'reflector_sessions', { client: 'tester' }), 1);
    assert.equal(sampleValue(samples, 'reflector_sessions_opened_total', { client: 'tester' }), 1);
    assert.equal(sampleValue(samples, 'reflector_handshake_duration_seconds_count'), 1);
    assert.equal(sampleValue(samples, 'reflector_draining'), 0);
  });

  it('shows a stream while it is open, then counts its bytes each way and its outcome', async () => {
    const socket: net.Socket = await connectLocal(listenerPort('echo'));
    const opened = nextEvent(server.events, 'stream.open');
    socket.write(Buffer.alloc(1000, 7));
    await opened;
    let samples = await scrape(metricsUrl);
    assert.equal(sampleValue(samples, 'reflector_streams', { service: 'echo' }), 1, 'one echo stream open now');
    assert.equal(sampleValue(samples, 'reflector_session_streams'), 1);
    assert.equal(sampleValue(samples, 'reflector_flow_control_stalls'), 0);

    const closed = nextEvent(server.events, 'stream.close');
    const echoed = readAll(socket);
    socket.end();
    assert.equal((await echoed).length, 1000);
    await closed;

    samples = await scrape(metricsUrl);
    assert.equal(sampleValue(samples, 'reflector_streams', { service: 'echo' }), 0);
    assert.equal(sampleValue(samples, 'reflector_streams_opened_total', { service: 'echo' }), 1);
    assert.equal(sampleValue(samples, 'reflector_streams_closed_total', { service: 'echo', outcome: 'fin' }), 1);
    assert.equal(sampleValue(samples, 'reflector_stream_bytes_total', { service: 'echo', direction: 'to_backend' }), 1000);
    assert.equal(sampleValue(samples, 'reflector_stream_bytes_total', { service: 'echo', direction: 'from_backend' }), 1000);
    assert.equal(sampleValue(samples, 'reflector_stream_open_latency_seconds_count', { service: 'echo' }), 1);
    assert.ok((sampleValue(samples, 'reflector_session_bytes', { direction: 'in' }) ?? 0) >= 1000);
  });

  it('counts a refused stream by service and reason', async () => {
    const refused = nextEvent(server.events, 'stream.refused');
    const socket = await connectLocal(listenerPort('closed'));
    const outcome = socketOutcome(socket);
    await refused;
    await outcome;
    const samples = await scrape(metricsUrl);
    assert.equal(sampleValue(samples, 'reflector_streams_failed_total', { service: 'closed', reason: 'refused' }), 1);
    assert.equal(sampleValue(samples, 'reflector_streams_opened_total', { service: 'closed' }), 0);
  });

  it('counts a handshake failure by its error code', async () => {
    const stranger = await generateIdentity();
    const strangerFile = `${keys.dir}/stranger.jwk`;
    await writeIdentityFiles(strangerFile, stranger);
    const failure = nextEvent(server.events, 'auth.failure');
    await assert.rejects(startClient(clientOptions(keys, server, [], { identity: strangerFile })), AuthError);
    const { code } = await failure;
    const samples = await scrape(metricsUrl);
    assert.equal(sampleValue(samples, 'reflector_handshake_failures_total', { reason: code }), 1);
    assert.equal(sampleValue(samples, 'reflector_sessions_opened_total', { client: 'tester' }), 1, 'no session for the stranger');
  });

  it('includes process and runtime metrics', async () => {
    const samples = await scrape(metricsUrl);
    const names = new Set(samples.map((s: Sample) => s.name));
    for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
      assert.ok(names.has(name), `${name} is exported`);
    }
  });

  it('keeps a second server in the same process on its own registry', async () => {
    const other = await createServer(
      { ...serverConfig(keys, { echo: echo.target }), admin: { listen: { host: '127.0.0.1', port: 0 } } },
      { logger: testLogger() },
    );
    try {
      const samples = await scrape(`${other.operations.admin!.url}/metrics`);
      assert.equal(sampleValue(samples, 'reflector_sessions_opened_total', { client: 'tester' }), undefined);
      assert.equal(sampleValue(samples, 'reflector_streams_opened_total', { service: 'echo' }), 0);
      const mine = await scrape(metricsUrl);
      assert.equal(sampleValue(mine, 'reflector_streams_opened_total', { service: 'echo' }), 1);
    } finally {
      await other.close();
    }
  });
});
