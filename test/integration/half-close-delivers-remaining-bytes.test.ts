/**
 * Half-close (TCP FIN) crosses the tunnel in each direction independently:
 * SMTP, POP3 and NNTP peers rely on "I am done sending, keep talking to me".
 * A FIN never overtakes data sent before it, and the other direction keeps
 * flowing until its own FIN.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import type { ReflectorServer } from '../../server/index.js';
import {
  clientOptions,
  connectLocal,
  digestAll,
  makeKeys,
  pump,
  SeededBytes,
  serverConfig,
  startBackend,
  startClient,
  startServer,
  waitConnected,
  type Backend,
  type DigestResult,
  type KeySet,
} from '../helpers/fixtures.js';

const MiB = 1024 * 1024;
const REQUEST_BYTES = 3 * MiB + 12_345;
const REPLY_BYTES = 5 * MiB + 6_789;
const GREETING = Buffer.from('+OK POP3 server ready, and that is all I will ever say\r\n');
const UPLOAD_BYTES = 6 * MiB + 4_321;
/**
 * Each case runs several times: whether the last bytes and the FIN cross in
 * one turn of the event loop or in two depends on how the kernel splits
 * reads, and a FIN that may overtake data only sometimes must still be caught.
 */
const ROUNDS = 8;

interface Observed {
  /** What the backend had received when it saw EOF. */
  atEof?: DigestResult;
  /** What the backend received in total when the connection closed. */
  total?: DigestResult;
  error?: Error;
}

describe('half-close delivers remaining bytes', () => {
  let keys: KeySet;
  let server: ReflectorServer;
  let client: ReflectorClient;
  /** request-then-reply: reads the whole request up to EOF, only then replies with REPLY_BYTES and ends. */
  let replyAfterEof: Backend;
  /** server-speaks-first: sends a greeting and FIN at once, then keeps reading until the client's FIN. */
  let greetAndHangUp: Backend;
  const replyAfterEofSeen: Observed[] = [];
  const greetAndHangUpSeen: Observed[] = [];

  before(async () => {
    keys = await makeKeys();
    replyAfterEof = await startBackend((socket) => {
      const seen: Observed = {};
      replyAfterEofSeen.push(seen);
      const hash = createHash('sha256');
      let bytes = 0;
      socket.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      socket.once('error', (error) => (seen.error = error));
      socket.once('end', () => {
        seen.atEof = { bytes, sha256: hash.digest('hex') };
        // Only now, after the client's FIN, does the reply start: a few MB, then our own FIN.
        const reply = new SeededBytes('reply');
        void pump(socket, REPLY_BYTES, (n) => reply.next(n)).catch((error: Error) => (seen.error = error));
      });
    });
    greetAndHangUp = await startBackend((socket) => {
      const seen: Observed = {};
      greetAndHangUpSeen.push(seen);
      let bytes = 0;
      socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
      socket.once('error', (error) => (seen.error = new Error(`${error.message} after ${bytes} of ${UPLOAD_BYTES} bytes`)));
      digestAll(socket).then(
        (total) => (seen.total = total),
        (error: Error) => (seen.error ??= error),
      );
      socket.end(GREETING);
    });
    server = await startServer(
      serverConfig(keys, { smtp: replyAfterEof.target, pop3: greetAndHangUp.target }),
    );
    client = await startClient(
      clientOptions(keys, server, [
        { host: '127.0.0.1', port: 0, service: 'smtp' },
        { host: '127.0.0.1', port: 0, service: 'pop3' },
      ]),
    );
    await waitConnected(client);
  }, { timeout: 30_000 });

  after(async () => {
    await client?.close();
    await server?.close();
    await replyAfterEof?.close();
    await greetAndHangUp?.close();
    await keys?.cleanup();
  }, { timeout: 30_000 });

  function listenerPort(service: string): number {
    const listener = client.listeners.find((l) => l.spec.service === service);
    assert.ok(listener, `no listener for ${service}`);
    return listener.address.port;
  }

  /** Rejects with a sentence that says which direction broke, instead of a bare ECONNRESET. */
  async function explain<T>(promise: Promise<T>, what: string): Promise<T> {
    try {
      return await promise;
    } catch (error) {
      return assert.fail(`${what}: ${(error as Error).message}`);
    }
  }

  async function requestThenReply(round: number): Promise<void> {
    const socket: net.Socket = await connectLocal(listenerPort('smtp'));
    try {
      const request = new SeededBytes(`request ${round}`);
      const replyDigest = digestAll(socket);
      replyDigest.catch(() => undefined);
      // pump() ends the socket (FIN) once the last request byte was written.
      const sent = await explain(
        pump(socket, REQUEST_BYTES, (n) => request.next(n)),
        `round ${round}: sending the request failed`,
      );
      const reply = await explain(replyDigest, `round ${round}: the reply did not arrive whole after the local FIN`);

      const expected = new SeededBytes('reply').next(REPLY_BYTES);
      assert.equal(reply.bytes, REPLY_BYTES, `round ${round}: the reply written after EOF was cut short`);
      assert.equal(reply.sha256, createHash('sha256').update(expected).digest('hex'), `round ${round}: the reply differs`);

      const seen = replyAfterEofSeen[round];
      assert.ok(seen?.atEof, `round ${round}: the backend never saw EOF`);
      assert.equal(seen.error, undefined, `round ${round}: the backend connection failed: ${seen.error?.message}`);
      assert.equal(seen.atEof.bytes, REQUEST_BYTES, `round ${round}: the backend saw EOF before the last request byte`);
      assert.equal(seen.atEof.sha256, sent.sha256, `round ${round}: the request bytes differ at the backend`);
    } finally {
      socket.destroy();
    }
  }

  async function greetingThenUpload(round: number): Promise<void> {
    const socket: net.Socket = await connectLocal(listenerPort('pop3'));
    try {
      // Read the greeting and the backend's FIN first: our write side must stay open.
      const greeting = await explain(digestAll(socket), `round ${round}: the greeting did not arrive`);
      assert.equal(greeting.bytes, GREETING.length);
      assert.equal(greeting.sha256, createHash('sha256').update(GREETING).digest('hex'));
      assert.equal(socket.writable, true, `round ${round}: the local socket lost its write side when the backend half-closed`);

      const upload = new SeededBytes(`upload ${round}`);
      const sent = await explain(
        pump(socket, UPLOAD_BYTES, (n) => upload.next(n)),
        `round ${round}: sending after the backend's FIN failed`,
      );

      const seen = greetAndHangUpSeen[round];
      assert.ok(seen, `round ${round}: the backend never got a connection`);
      const deadline = Date.now() + 30_000;
      while (seen.total === undefined && seen.error === undefined && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(seen.error, undefined, `round ${round}: the backend connection failed: ${seen.error?.message}`);
      assert.ok(seen.total, `round ${round}: the backend never saw the client's FIN`);
      assert.equal(seen.total.bytes, UPLOAD_BYTES, `round ${round}: bytes sent after the backend's FIN were lost`);
      assert.equal(seen.total.sha256, sent.sha256, `round ${round}: bytes sent after the backend's FIN differ`);
    } finally {
      socket.destroy();
    }
  }

  it(
    'delivers the whole reply after the local client shut down its write side, and the backend sees EOF only after every request byte',
    { timeout: 60_000 },
    async () => {
      for (let round = 0; round < ROUNDS; round++) await requestThenReply(round);
    },
  );

  it(
    "keeps carrying the local client's bytes to a backend that already sent its greeting and FIN",
    { timeout: 60_000 },
    async () => {
      for (let round = 0; round < ROUNDS; round++) await greetingThenUpload(round);
    },
  );
});
