/**
 * Resumes find their replica: `reflector connect` → a cut relay → nginx
 * running deploy/nginx/reflector.conf (TLS from a test CA, two replicas in
 * the pool, the X-Reflector-Replica map) → `reflector server --replica gw-1`
 * and `--replica gw-2` (one host key, one server.yaml) → a sink backend that
 * hashes what it receives.
 *
 * A 100 MiB upload on one stream is cut four times between the client and
 * nginx. Each reconnect carries `X-Reflector-Replica` (from WELCOME), and
 * nginx's map sends it back to the replica holding the suspended session: the
 * RESUME is accepted there every time, the other replica never sees a
 * connection, and the upload arrives byte-exact with no reset on either
 * application socket. Round robin alone would send every other reconnect to
 * the wrong replica (UNKNOWN_SESSION, streams reset).
 *
 * Then the fallback the site documents: the replica holding the session is
 * killed; the resume naming it still reaches the other replica (the `backup`
 * server of its upstream), which answers UNKNOWN_SESSION, and the client goes
 * on with a fresh session there.
 *
 * Needs (Debian): nginx, openssl. Skipped with a message when they are
 * missing, failed under CI.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startCutRelay, type CutRelay } from '../helpers/cut-relay.js';
import { connectLocal, pump, SeededBytes, startBackend, startEchoBackend, waitFor, type Backend } from '../helpers/fixtures.js';
import { NGINX_REQUIREMENTS, startReflectorNginx, type ReflectorNginx } from './harness/nginx.js';
import {
  logEvents,
  makeReflectorKeys,
  startClientProcess,
  startServerProcess,
  waitForLogEvent,
  type ClientProcess,
  type ReflectorKeys,
  type ServerProcess,
} from './harness/reflector-processes.js';
import { gate } from './harness/requirements.js';
import { makeTestCa, OPENSSL_REQUIREMENTS, type TestCa } from './harness/tls-ca.js';

const requirements = gate('resume routing system test (resume-routes-back-to-its-replica)', [...NGINX_REQUIREMENTS, ...OPENSSL_REQUIREMENTS]);

const MiB = 1024 * 1024;
const UPLOAD_BYTES = 100 * MiB;
/** Where (fractions of the upload, counted on the relay) the connection is cut. */
const CUT_AT = [0.2, 0.4, 0.6, 0.8];
const REPLICA_NAMES = ['gw-1', 'gw-2'] as const;
const UNKNOWN_SESSION = 1; // ResumeFailCode.UNKNOWN_SESSION (docs/protocol.md)

interface Replica {
  name: string;
  server: ServerProcess;
}

/** What the sink received on each connection: its SHA-256 and length, sent back at the client's FIN. */
interface Sink extends Backend {
  errors: Error[];
}

async function startSink(): Promise<Sink> {
  const errors: Error[] = [];
  const backend = await startBackend((socket) => {
    const hash = createHash('sha256');
    let bytes = 0;
    socket.on('error', (error) => errors.push(error));
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    socket.on('end', () => socket.end(`${hash.digest('hex')} ${bytes}\n`));
  });
  return { ...backend, errors };
}

/** How a local socket ended: 'end' (FIN), or the error code it saw. */
function outcomeOf(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    socket.once('end', () => resolve('end'));
  });
}

describe('a resume through nginx goes back to the replica that holds the session', { skip: requirements.skip, timeout: 120_000 }, () => {
  let dir: string;
  let ca: TestCa;
  let keys: ReflectorKeys;
  let sink: Sink;
  let echo: Backend;
  const replicas: Replica[] = [];
  let nginx: ReflectorNginx;
  let relay: CutRelay;
  let client: ClientProcess;

  before(async () => {
    requirements.assertAvailable();
    dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-resume-routing-'));
    ca = await makeTestCa(dir);
    keys = await makeReflectorKeys(path.join(dir, 'keys'));
    sink = await startSink();
    echo = await startEchoBackend();
    for (const name of REPLICA_NAMES) {
      // Same options, so the same server.yaml: the replicas differ only by --replica (and their port).
      const server = await startServerProcess({
        keys,
        services: { sink: sink.target, echo: echo.target },
        trustProxy: 'loopback',
        args: ['--replica', name],
        name: `reflector server ${name}`,
      });
      replicas.push({ name, server });
    }
    nginx = await startReflectorNginx({
      tls: { cert: ca.cert, key: ca.key },
      upstreams: replicas.map(({ server }) => server.address.port),
      replicas: Object.fromEntries(replicas.map(({ name, server }) => [name, server.address.port])),
    });
    relay = await startCutRelay(nginx.port);
    client = await startClientProcess({
      keys,
      url: `wss://127.0.0.1:${relay.port}/tunnel`,
      forwards: [{ service: 'sink' }, { service: 'echo' }],
      args: ['--ca', ca.caCert],
    });
  });

  after(async () => {
    await client?.stop();
    await relay?.close();
    await nginx?.stop();
    for (const { server } of replicas) await server.stop();
    await sink?.close();
    await echo?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The one replica that authenticated the client so far (nginx picked it for the first connection). */
  function holder(): Replica {
    const authenticated = replicas.filter(({ server }) => logEvents(server.process, 'auth.success').length > 0);
    assert.equal(authenticated.length, 1, `exactly one replica has seen the client: ${authenticated.map(({ name }) => name).join(', ')}`);
    return authenticated[0]!;
  }

  it('100 MiB cut four times between client and nginx: every RESUME lands on the replica holding the session, the upload arrives byte-exact', async (t) => {
    const socket = await connectLocal(client.ports.sink!);
    const local = outcomeOf(socket);
    let reply = '';
    socket.on('data', (chunk: Buffer) => (reply += chunk.toString('latin1')));
    const data = new SeededBytes('resume-routing');
    const relayedBefore = relay.bytesUp;
    const upload = pump(socket, UPLOAD_BYTES, (n) => data.next(n));

    await waitFor(() => replicas.some(({ server }) => logEvents(server.process, 'stream.open').length > 0), 'the stream to open on a replica');
    const owner = holder();
    const other = replicas.find((replica) => replica !== owner)!;
    t.diagnostic(`the session is on ${owner.name} (port ${owner.server.address.port})`);

    // A reconnect that reaches the other replica is refused there and the
    // upload is reset: stop waiting at once and say so.
    let uploadFailure: Error | undefined;
    upload.catch((error: Error) => (uploadFailure = error));
    const misrouted = (): boolean => logEvents(other.server.process, 'auth.success').length > 0 || uploadFailure !== undefined;
    const checkRouting = (after: string): void => {
      assert.deepEqual(
        logEvents(other.server.process, 'session.resume.refused').concat(logEvents(other.server.process, 'auth.success')),
        [],
        `${after}: a reconnect reached ${other.name}, not ${owner.name} which holds the session`,
      );
      assert.equal(uploadFailure, undefined, `${after}: the upload failed`);
    };

    const recoveries: number[] = [];
    const cutAtBytes: number[] = [];
    for (const fraction of CUT_AT) {
      const what = `${fraction * 100}% of the upload through the relay`;
      await waitFor(() => relay.bytesUp - relayedBefore >= UPLOAD_BYTES * fraction || misrouted(), what, 60_000, 2);
      checkRouting(`before the cut at ${fraction * 100}%`);
      const resumedBefore = logEvents(owner.server.process, 'session.resumed').length;
      const cutTime = Date.now();
      cutAtBytes.push(relay.bytesUp - relayedBefore);
      relay.cut();
      await waitFor(
        () => logEvents(owner.server.process, 'session.resumed').length > resumedBefore || misrouted(),
        `the session to resume on ${owner.name} after the cut at ${fraction * 100}%`,
        30_000,
        5,
      );
      checkRouting(`after the cut at ${fraction * 100}%`);
      recoveries.push(Date.now() - cutTime);
    }
    const sent = await upload;
    assert.equal(await local, 'end', 'the local application socket ended with the sink FIN, not an error');
    t.diagnostic(`cuts at relayed bytes: ${cutAtBytes.map((n) => (n / MiB).toFixed(1)).join(', ')} MiB`);
    t.diagnostic(`cut → session.resumed on ${owner.name} (ms): ${recoveries.join(', ')}`);

    assert.equal(reply, `${sent.sha256} ${UPLOAD_BYTES}\n`, 'the sink received the 100 MiB byte-exact');
    assert.deepEqual(sink.errors, [], 'the sink saw no error or reset');

    // Every reconnect reached the owner, carrying its name, and was accepted there.
    assert.equal(logEvents(owner.server.process, 'session.resumed').length, CUT_AT.length, `session.resumed on ${owner.name}`);
    assert.equal(logEvents(owner.server.process, 'auth.success').length, 1 + CUT_AT.length, `one handshake per connection on ${owner.name}`);
    for (const replica of replicas) {
      assert.deepEqual(logEvents(replica.server.process, 'session.resume.refused'), [], `resume refused on ${replica.name}`);
    }
    assert.deepEqual(logEvents(other.server.process, 'auth.success'), [], `${other.name} never saw the client`);
    assert.equal(logEvents(client.process, 'session.resumed').length, CUT_AT.length, 'the client logged each resume');
    assert.deepEqual(logEvents(client.process, 'session.resume.refused'), [], 'the client was never refused');
    // nginx's own record: each cut tunnel request was passed to the owner's port.
    const tunnels = (await nginx.accessLog()).split('\n').filter((line) => line.includes('"GET /tunnel HTTP/1.1" 101 '));
    assert.ok(tunnels.length >= CUT_AT.length, `nginx logged ${tunnels.length} ended tunnel requests`);
    for (const line of tunnels) assert.ok(line.endsWith(` 127.0.0.1:${owner.server.address.port}`), `upstream of ${line}`);
  });

  it('when the replica holding the session is gone, the resume naming it reaches the other one, is refused (UNKNOWN_SESSION) and the client starts afresh there', async (t) => {
    const owner = holder();
    const other = replicas.find((replica) => replica !== owner)!;
    // A stream open on the owner: it dies with the owner's process.
    const socket = await connectLocal(client.ports.echo!);
    const local = outcomeOf(socket);
    socket.write('ping');
    await new Promise((resolve) => socket.once('data', resolve));

    const refusalsBefore = logEvents(client.process, 'session.resume.refused').length;
    const killTime = Date.now();
    owner.server.process.signal('SIGKILL'); // a crash: no GOAWAY, the connection just drops
    await owner.server.process.exited;

    const refused = await waitForLogEvent(other.server.process, 'session.resume.refused', () => true, 30_000);
    assert.equal(refused.code, UNKNOWN_SESSION, `${other.name} answered UNKNOWN_SESSION: ${JSON.stringify(refused)}`);
    await waitFor(() => logEvents(client.process, 'session.resume.refused').length > refusalsBefore, 'the client to log the refusal', 10_000);
    assert.equal(await local, 'ECONNRESET', 'the stream of the lost session is reset, not ended cleanly');

    // The fresh session (on the connection that carried the refused RESUME) serves new streams.
    const again = await connectLocal(client.ports.echo!);
    again.write('after the fallback');
    const echoed = await new Promise<string>((resolve) => {
      let text = '';
      again.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        if (text.length >= 'after the fallback'.length) resolve(text);
      });
    });
    again.destroy();
    assert.equal(echoed, 'after the fallback');
    t.diagnostic(`SIGKILL of ${owner.name} → a new stream echoed through ${other.name}: ${Date.now() - killTime} ms`);
    assert.ok(logEvents(other.server.process, 'stream.open').length >= 1, `the new stream went through ${other.name}`);
  });
});
