/**
 * Streams outlive a dropped WebSocket: the connection between the client and
 * the server reflector is cut (a relay resets it), the client reconnects,
 * proves the old session, and both sides resend exactly what the other lacks.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { establishSession } from '../../client/session.js';
import { ResumeFailCode } from '../../shared/constants.js';
import type { FrameOf } from '../../shared/frames.js';
import { generateIdentity, loadPrivateKeyFile, type Identity } from '../../shared/keys.js';
import { resumeProof } from '../../shared/resume.js';
import { startCutRelay, type CutRelay } from '../helpers/cut-relay.js';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  serverConfig,
  sleep,
  startBackend,
  startClient,
  startServer,
  waitConnected,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';

const MiB = 1024 * 1024;

/** Deterministic content: every 4-byte word holds its own offset. */
function fill(chunk: Buffer, offset: number): Buffer {
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((offset + i) >>> 0, i);
  return chunk;
}

async function until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function watchErrors(socket: net.Socket): { error?: Error } {
  const seen: { error?: Error } = {};
  socket.on('error', (error) => (seen.error = error));
  return seen;
}

describe('a stream survives three cuts of the WebSocket', () => {
  let keys: KeySet;
  let backend: Backend;
  let relay: CutRelay;
  let server: Awaited<ReturnType<typeof startServer>>;
  let client: Awaited<ReturnType<typeof startClient>>;
  const received = { bytes: 0, hash: createHash('sha256'), errors: 0 };
  const DOWNLOAD = 200 * MiB;

  before(async () => {
    keys = await makeKeys();
    backend = await startBackend((socket) => {
      socket.on('error', () => received.errors++);
      socket.once('data', (first: Buffer) => {
        if (first.toString('latin1', 0, 8) === 'DOWNLOAD') {
          // Server speaks: 200 MiB of deterministic bytes, then FIN.
          let offset = 0;
          const pump = (): void => {
            while (offset < DOWNLOAD) {
              const chunk = fill(Buffer.allocUnsafe(MiB), offset);
              offset += chunk.length;
              if (!socket.write(chunk)) {
                socket.once('drain', pump);
                return;
              }
            }
            socket.end();
          };
          pump();
          return;
        }
        received.hash.update(first);
        received.bytes += first.length;
        socket.on('data', (chunk: Buffer) => {
          received.hash.update(chunk);
          received.bytes += chunk.length;
        });
        socket.on('end', () => socket.end(`${received.hash.digest('hex')} ${received.bytes}`));
      });
    });
    server = await startServer(serverConfig(keys, { data: backend.target }));
    relay = await startCutRelay(server.address.port);
    client = await startClient({
      ...clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'data' }]),
      url: relay.url(),
    });
    await waitConnected(client);
  });

  after(async () => {
    await client?.close();
    await server?.close();
    await relay?.close();
    await backend?.close();
    await keys?.cleanup();
  });

  it('uploads 200 MiB byte-exact with no reset seen by either application', { timeout: 180_000 }, async (t) => {
    const total = 200 * MiB;
    const socket = await connectLocal(client.listeners[0]!.address.port);
    const local = watchErrors(socket);
    let reply = '';
    socket.on('data', (data: Buffer) => (reply += data.toString()));
    const ended = new Promise<void>((resolve) => socket.once('end', resolve));
    const sentHash = createHash('sha256');
    const recoveries: number[] = [];
    const cutAt = [total / 4, total / 2, (3 * total) / 4];
    let cutCount = 0;
    let sent = 0;
    while (sent < total) {
      const chunk = fill(Buffer.allocUnsafe(MiB), sent);
      sentHash.update(chunk);
      sent += chunk.length;
      if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
      if (cutCount < cutAt.length && received.bytes >= cutAt[cutCount]!) {
        const resumed = new Promise<void>((resolve) => server.events.once('session.resume', () => resolve()));
        const cutTime = Date.now();
        relay.cut();
        // The sender keeps writing meanwhile (its socket buffers until the stream has credit again).
        void resumed.then(() => recoveries.push(Date.now() - cutTime));
        await until(() => recoveries.length === cutCount + 1, 'the session to resume');
        cutCount++;
      }
    }
    socket.end();
    await ended;
    assert.equal(recoveries.length, 3, 'the transfer was cut three times');
    assert.equal(reply, `${sentHash.digest('hex')} ${total}`);
    assert.equal(local.error, undefined, 'the local application saw no error or reset');
    assert.equal(received.errors, 0, 'the backend saw no error or reset');
    t.diagnostic(`cut → RESUME accepted (ms): ${recoveries.join(', ')}`);
  });

  it('downloads 200 MiB byte-exact through three cuts', { timeout: 180_000 }, async (t) => {
    const socket = await connectLocal(client.listeners[0]!.address.port);
    const local = watchErrors(socket);
    const hash = createHash('sha256');
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    const ended = new Promise<void>((resolve) => socket.once('end', resolve));
    socket.write('DOWNLOAD');
    const recoveries: number[] = [];
    const resumeTimes: number[] = [];
    for (const fraction of [0.25, 0.5, 0.75]) {
      await until(() => bytes >= DOWNLOAD * fraction, `${fraction * 100}% of the download`, 120_000);
      const resumed = new Promise<void>((resolve) => server.events.once('session.resume', () => resolve()));
      const cutTime = Date.now();
      relay.cut();
      await resumed;
      resumeTimes.push(Date.now() - cutTime);
      const mark = bytes + 8 * MiB;
      await until(() => bytes > mark || bytes === DOWNLOAD, 'data to flow again after the cut');
      recoveries.push(Date.now() - cutTime);
    }
    await ended;
    const expected = createHash('sha256');
    for (let offset = 0; offset < DOWNLOAD; offset += MiB) expected.update(fill(Buffer.allocUnsafe(MiB), offset));
    assert.equal(bytes, DOWNLOAD);
    assert.equal(hash.digest('hex'), expected.digest('hex'));
    assert.equal(local.error, undefined);
    t.diagnostic(`cut → RESUME accepted (ms): ${resumeTimes.join(', ')}`);
    t.diagnostic(`cut → 8 MiB more delivered (ms): ${recoveries.join(', ')}`);
  });
});

describe('a cut longer than the resume window', () => {
  it('resets the stream on both ends, leaks nothing, and the client carries on', { timeout: 60_000 }, async () => {
    const keys = await makeKeys();
    const backendErrors: Error[] = [];
    const backendClosed: Promise<void>[] = [];
    const backend = await startBackend((socket) => {
      socket.on('error', (error) => backendErrors.push(error));
      backendClosed.push(new Promise((resolve) => socket.once('close', () => resolve())));
      socket.pipe(socket);
    });
    const server = await startServer(serverConfig(keys, { echo: backend.target }, { limits: { resumeWindowMs: 300 } }));
    const relay = await startCutRelay(server.address.port);
    const client = await startClient({
      ...clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'echo' }]),
      url: relay.url(),
    });
    try {
      await waitConnected(client);
      const socket = await connectLocal(client.listeners[0]!.address.port);
      const localEnd = new Promise<string>((resolve) => {
        socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
        socket.once('end', () => resolve('end'));
      });
      socket.write('ping');
      await new Promise((resolve) => socket.once('data', resolve));
      relay.block(true);
      relay.cut();
      await sleep(1000);
      relay.block(false);
      assert.equal(await localEnd, 'ECONNRESET', 'the local application sees a reset, not a clean end');
      await Promise.all(backendClosed);
      assert.ok(backendErrors.some((e) => (e as NodeJS.ErrnoException).code === 'ECONNRESET'), 'the backend sees a reset');
      assert.equal(backend.sockets.size, 0, 'no backend socket left open');
      await until(() => client.state === 'connected', 'the client to reconnect');
      assert.ok(server.listSessions().every((s) => s.streams === 0), 'no stream left on the server');
      const again = await connectLocal(client.listeners[0]!.address.port);
      again.write('hello');
      const echoed = await new Promise<Buffer>((resolve) => again.once('data', resolve));
      assert.equal(echoed.toString(), 'hello');
      again.destroy();
    } finally {
      await client.close();
      await server.close();
      await relay.close();
      await backend.close();
      await keys.cleanup();
    }
  });
});

describe('a forged, replayed or foreign RESUME', () => {
  let keys: KeySet;
  let intruder: Identity;
  let intruderFile: string;
  let backend: Backend;
  let server: Awaited<ReturnType<typeof startServer>>;
  let relay: CutRelay;

  before(async () => {
    keys = await makeKeys();
    intruder = await generateIdentity();
    intruderFile = `${keys.dir}/intruder.jwk`;
    const { writeIdentityFiles } = await import('../../shared/keys.js');
    await writeIdentityFiles(intruderFile, intruder);
    backend = await startBackend((socket) => socket.pipe(socket));
    const config = serverConfig(keys, { echo: backend.target });
    config.clients.push({ name: 'intruder', publicKey: intruder, services: ['echo'] });
    server = await startServer(config);
    relay = await startCutRelay(server.address.port);
  });

  after(async () => {
    await server?.close();
    await relay?.close();
    await backend?.close();
    await keys?.cleanup();
  });

  /** A second, fully authenticated connection that sends RESUME with the given proof. */
  async function tryResume(identity: Identity, sessionId: Buffer, proofFor: (transcript: Buffer) => Buffer): Promise<number | 'ok'> {
    const fresh = await establishSession({
      url: server.url,
      identity,
      headers: {},
      aead: 'node',
      handshakeTimeoutMs: 5000,
      checkServerKey: async () => undefined,
      confirmServerKey: async () => undefined,
    });
    try {
      return await new Promise<number | 'ok'>((resolve) => {
        fresh.session.once('resume-fail', (frame: FrameOf<'RESUME_FAIL'>) => resolve(frame.code));
        fresh.session.once('resume-ok', () => resolve('ok'));
        fresh.session.sendFrame({ type: 'RESUME', streamId: 0, sessionId, proof: proofFor(fresh.session.transcript), streams: [] });
        fresh.session.mux.flush();
      });
    } finally {
      fresh.session.close(1000);
    }
  }

  it('refuses each one and leaves the suspended streams to their owner', { timeout: 60_000 }, async () => {
    const client = await startClient({
      ...clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'echo' }]),
      url: relay.url(),
    });
    try {
      await waitConnected(client);
      const socket = await connectLocal(client.listeners[0]!.address.port);
      const local = watchErrors(socket);
      socket.write('before ');
      await new Promise((resolve) => socket.once('data', resolve));
      const [live] = server.listSessions().filter((s) => s.client === 'tester');
      const sessionId = Buffer.from(live!.id, 'base64url');
      relay.block(true);
      relay.cut();
      await until(() => server.listSessions().some((s) => s.client === 'tester' && s.streams === 1), 'the session to be suspended');

      const owner = await loadPrivateKeyFile(keys.clientFile);
      assert.equal(await tryResume(owner, sessionId, () => randomBytes(32)), ResumeFailCode.BAD_PROOF, 'a random proof');
      // A proof made for another connection's transcript: what an eavesdropper could replay.
      const captured = resumeProof(randomBytes(32), sessionId, randomBytes(32));
      assert.equal(await tryResume(owner, sessionId, () => captured), ResumeFailCode.BAD_PROOF, 'a replayed proof');
      assert.equal(await tryResume(intruder, sessionId, () => randomBytes(32)), ResumeFailCode.WRONG_CLIENT, 'another client key');
      assert.equal(await tryResume(owner, randomBytes(16), () => randomBytes(32)), ResumeFailCode.UNKNOWN_SESSION, 'an unknown session');

      relay.block(false);
      let echoed = '';
      socket.on('data', (chunk: Buffer) => (echoed += chunk.toString()));
      socket.write('after');
      await until(() => echoed === 'after', 'the owner to resume and the echo to come back');
      assert.equal(local.error, undefined);
      socket.destroy();
    } finally {
      await client.close();
    }
  });
});
