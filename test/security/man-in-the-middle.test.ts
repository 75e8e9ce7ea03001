/**
 * A man in the middle between the real client library and the real server:
 * a relay that terminates the client's WebSocket (as a TLS-terminating proxy
 * would) and rewrites or answers the handshake itself. Whatever it does, the
 * client refuses before any payload could flow:
 *
 *  - it swaps the server's key shares in hello for its own: the server sees a
 *    `th` that is not its hello (4001); or the relay answers the client
 *    itself and cannot produce the host key's signature over the client's
 *    transcript, not even by splicing in a genuine WELCOME signature it got
 *    from the real server as an authorized insider (client closes 4009,
 *    IdentityError WELCOME_INVALID, trust on first use records nothing);
 *  - it presents another host key: the pin or known_servers entry refuses it
 *    at hello (4009, SERVER_KEY_MISMATCH), the warning names both
 *    thumbprints, and not even the client's auth is shown to the impostor.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import WebSocket, { WebSocketServer } from 'ws';
import type { ReflectorServer } from '../../server/index.js';
import { aeadBackend } from '../../shared/aead.js';
import { CloseCode, SUBPROTOCOL } from '../../shared/constants.js';
import { AuthError, ErrorCode, IdentityError } from '../../shared/errors.js';
import { encodeFrames } from '../../shared/frames.js';
import { buildWelcome, finishServerHandshake, startServerHandshake, type WelcomeBody } from '../../shared/handshake.js';
import { generateIdentity, type Identity } from '../../shared/keys.js';
import { RecordSealer } from '../../shared/record-layer.js';
import {
  clientOptions,
  makeKeys,
  memoryLogger,
  serverConfig,
  startClientWith,
  startEchoBackend,
  startServer,
  startServerWith,
  waitFor,
  type Backend,
  type KeySet,
  type MemoryLog,
} from '../helpers/fixtures.js';
import { dialRaw, rawHandshake } from '../helpers/hostile-client.js';

interface Relay {
  url: string;
  /** Messages the client sent to the relay, in order. */
  fromClient: Array<{ data: Buffer; isBinary: boolean }>;
  /** The close code the client sent the relay. */
  clientClose: Promise<number>;
  close(): Promise<void>;
}

/**
 * A WebSocket endpoint that speaks reflector.v1 to the client and runs
 * `onClient` for each connection; with `tls`, it terminates TLS with that
 * (self-signed) certificate, as an inspecting proxy does.
 */
async function startRelay(onClient: (ws: WebSocket, relay: Relay) => void, tls?: { cert: Buffer; key: Buffer }): Promise<Relay> {
  const http_ = tls ? https.createServer(tls) : http.createServer();
  const wss = new WebSocketServer({
    server: http_,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
  });
  await new Promise<void>((resolve) => http_.listen(0, '127.0.0.1', resolve));
  let resolveClose!: (code: number) => void;
  const relay: Relay = {
    url: `${tls ? 'wss' : 'ws'}://127.0.0.1:${(http_.address() as AddressInfo).port}/tunnel`,
    fromClient: [],
    clientClose: new Promise<number>((resolve) => (resolveClose = resolve)),
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => http_.close(() => resolve()));
    },
  };
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer, isBinary: boolean) => relay.fromClient.push({ data: Buffer.from(data), isBinary }));
    ws.on('close', (code: number) => resolveClose(code));
    ws.on('error', () => undefined);
    onClient(ws, relay);
  });
  return relay;
}

/** Forwards both ways to `upstream`, passing the first server message (hello) through `rewriteHello`. */
function forwardingRelay(upstream: string, rewriteHello: (hello: Record<string, unknown>) => Record<string, unknown>) {
  return (client: WebSocket): void => {
    const server = new WebSocket(upstream, SUBPROTOCOL, { perMessageDeflate: false });
    server.on('error', () => undefined);
    let first = true;
    server.on('message', (data: Buffer, isBinary: boolean) => {
      if (first && !isBinary) {
        first = false;
        client.send(JSON.stringify(rewriteHello(JSON.parse(data.toString('utf8')) as Record<string, unknown>)));
        return;
      }
      client.send(data, { binary: isBinary });
    });
    client.on('message', (data: Buffer, isBinary: boolean) => {
      if (server.readyState === WebSocket.OPEN) server.send(data, { binary: isBinary });
    });
    const code = (c: number): number => (c >= 4000 || c === 1000 ? c : 1000);
    server.on('close', (c: number) => client.readyState === WebSocket.OPEN && client.close(code(c)));
    client.on('close', (c: number) => server.readyState === WebSocket.OPEN && server.close(code(c)));
  };
}

/** A fresh X25519 public key in the hello's format: the share a relay that wants to read the traffic offers. */
function relayX25519(): string {
  return generateKeyPairSync('x25519').publicKey.export({ format: 'jwk' }).x as string;
}

describe('man in the middle is refused', () => {
  let keys: KeySet;
  let mallory: Identity;
  let echo: Backend;
  let serverLog: MemoryLog;
  let server: ReflectorServer;
  let impostor: ReflectorServer;
  let impostorKeys: KeySet;
  const relays: Relay[] = [];

  before(async () => {
    keys = await makeKeys();
    impostorKeys = await makeKeys();
    mallory = await generateIdentity();
    echo = await startEchoBackend();
    serverLog = memoryLogger('debug');
    const base = serverConfig(keys, { echo: echo.target });
    // Mallory is an authorized client too: the insider who runs the TLS-terminating proxy.
    server = await startServerWith(
      { ...base, clients: [...base.clients, { name: 'mallory', publicKey: mallory, services: ['echo'] }] },
      serverLog.logger,
    );
    // Another gateway, with its own host key, that also lets our client in.
    impostor = await startServer({ ...serverConfig(impostorKeys, { echo: echo.target }), clients: base.clients });
  });

  after(async () => {
    for (const relay of relays) await relay.close();
    await server?.close();
    await impostor?.close();
    await echo?.close();
    await keys?.cleanup();
    await impostorKeys?.cleanup();
  });

  async function relay(onClient: (ws: WebSocket, relay: Relay) => void, tls?: { cert: Buffer; key: Buffer }): Promise<Relay> {
    const started = await startRelay(onClient, tls);
    relays.push(started);
    return started;
  }

  /** Runs the real client against `url` and returns the error its first attempt failed with. */
  async function clientFailure(url: string, overrides: Parameters<typeof clientOptions>[3] = {}): Promise<Error> {
    const log = memoryLogger('debug');
    const options = { ...clientOptions(keys, server, [], overrides), url };
    const result = await startClientWith(options, log.logger).then(
      async (client) => {
        const { state, lastError } = client.status;
        await client.close();
        return `the first attempt through the man in the middle was not refused as fatal (state ${state}, last error: ${lastError ?? 'none'})`;
      },
      (error: unknown) => error as Error,
    );
    assert.ok(result instanceof Error, String(result));
    return result;
  }

  it('a relay that swaps in its own X25519 key is caught by th at the server (4001), so the client gets no session', async () => {
    const from = serverLog.lines.length;
    const mitm = await relay(forwardingRelay(server.url, (hello) => ({ ...hello, x25519: relayX25519() })));
    const error = await clientFailure(mitm.url);
    assert.ok(error instanceof AuthError, `expected AuthError, got ${error}`);
    assert.equal(error.code, ErrorCode.AUTH_REFUSED);
    await waitFor(() => serverLog.entries().slice(from).some((e) => e.event === 'auth.failure'), 'the audit line');
    const failure = serverLog.entries().slice(from).find((e) => e.event === 'auth.failure')!;
    assert.equal(failure.code, ErrorCode.AUTH_BAD_CLAIMS);
    assert.match(String(failure.reason), /th is not the SHA-256 of the hello this server sent \(the hello was altered on the way\)/);
    assert.equal(server.listSessions().length, 0);
  });

  /** A genuine WELCOME payload from the real server, to Mallory (an authorized insider), parsed. */
  async function genuineWelcome(): Promise<Record<string, unknown>> {
    const upstream = await dialRaw(server.url);
    const genuine = await rawHandshake(upstream, mallory);
    upstream.ws.close(1000);
    return JSON.parse(genuine.welcomePayload.toString('utf8')) as Record<string, unknown>;
  }

  /**
   * The relay terminates the client's handshake with its own key shares and
   * the real host key in hello, so it derives the client's session keys. What
   * it cannot do is sign WELCOME with the host key: `chooseSig` picks what it
   * puts there instead (its own signature over the client's transcript, or
   * the real server's signature from Mallory's session). The other members
   * are copied from Mallory's genuine WELCOME, with the client's session id.
   */
  function terminatingRelay(chooseSig: (own: string, genuine: string) => string, signingKey = mallory.privateKey) {
    return (client: WebSocket): void => {
      // The host's public half with Mallory's private key: hello names the real host.
      const fakeHost: Identity = { ...keys.host, privateKey: signingKey };
      const handshake = startServerHandshake(fakeHost, ml_kem768.keygen());
      client.send(handshake.helloText);
      client.once('message', (data: Buffer) => {
        void (async () => {
          const { keys: stolen } = await finishServerHandshake(handshake, data.toString('utf8'), (kid) =>
            kid === keys.client.thumbprint ? keys.client.publicKey : undefined,
          );
          const { sig: genuineSig, sessionId: _theirs, ...body } = await genuineWelcome();
          const own = JSON.parse(buildWelcome(fakeHost, stolen, body as unknown as WelcomeBody).toString('utf8')) as { sig: string };
          const payload = Buffer.from(
            JSON.stringify({ ...body, sig: chooseSig(own.sig, genuineSig as string), sessionId: stolen.sessionId.toString('base64url') }),
          );
          const sealer = new RecordSealer(aeadBackend('node'), stolen.s2c, 2 ** 30);
          client.send(sealer.seal(encodeFrames([{ type: 'WELCOME', streamId: 0, payload }])), { binary: true });
        })().catch((error: unknown) => {
          // A broken relay would make the test pass for the wrong reason: say so loudly.
          console.error('man-in-the-middle relay failed:', error);
          client.terminate();
        });
      });
    };
  }

  function assertWelcomeRefused(error: Error): void {
    assert.ok(error instanceof IdentityError, `expected IdentityError, got ${error}`);
    assert.equal(error.code, ErrorCode.WELCOME_INVALID);
    assert.equal(error.closeCode, CloseCode.SERVER_IDENTITY_REJECTED);
    assert.match(error.message, new RegExp(`welcome signature does not verify with host key ${keys.host.thumbprint}`));
  }

  it('a relay that holds the host\'s private key is accepted (control: the key is all the relays below lack)', async () => {
    const mitm = await relay(terminatingRelay((own) => own, keys.host.privateKey));
    const client = await startClientWith({ ...clientOptions(keys, server, []), url: mitm.url }, memoryLogger('debug').logger);
    try {
      assert.equal(client.state, 'connected');
    } finally {
      await client.close();
    }
  });

  it('a relay that answers the handshake itself cannot sign WELCOME: the client closes 4009 (WELCOME_INVALID)', async () => {
    const mitm = await relay(terminatingRelay((own) => own));
    assertWelcomeRefused(await clientFailure(mitm.url));
    assert.equal(await mitm.clientClose, CloseCode.SERVER_IDENTITY_REJECTED);
    // The client sent its auth and nothing after it: no record, no OPEN, no byte of payload.
    assert.deepEqual(mitm.fromClient.map((m) => m.isBinary), [false]);
  });

  it('splicing in a genuine WELCOME signature from the real server (an insider\'s own session) does not help', async () => {
    const mitm = await relay(terminatingRelay((_own, genuine) => genuine));
    assertWelcomeRefused(await clientFailure(mitm.url));
    assert.equal(await mitm.clientClose, CloseCode.SERVER_IDENTITY_REJECTED);
    assert.deepEqual(mitm.fromClient.map((m) => m.isBinary), [false]);
  });

  it('trust on first use records nothing when the first server\'s WELCOME does not verify', async () => {
    const knownServers = path.join(keys.dir, 'known_servers.tofu');
    const mitm = await relay(terminatingRelay((own) => own));
    assertWelcomeRefused(await clientFailure(mitm.url, { serverKey: undefined, knownServers }));
    const recorded = await readFile(knownServers, 'utf8').catch(() => '');
    assert.equal(recorded, '', 'the known-servers file recorded a host whose WELCOME failed');
  });

  it('a relay that swaps the host key in hello is refused by the pin at hello, and sees no auth', async () => {
    const mitm = await relay(forwardingRelay(server.url, (hello) => ({ ...hello, hostKey: mallory.publicJwk })));
    const error = await clientFailure(mitm.url);
    assert.ok(error instanceof IdentityError, `expected IdentityError, got ${error}`);
    assert.equal(error.code, ErrorCode.SERVER_KEY_MISMATCH);
    assert.ok(error.message.includes(mallory.thumbprint) && error.message.includes(keys.host.thumbprint), error.message);
    assert.equal(await mitm.clientClose, CloseCode.SERVER_IDENTITY_REJECTED);
    assert.equal(mitm.fromClient.length, 0, 'the client sent its signed auth (and its kid) to an impostor');
  });

  it('a server with another host key is refused against the pin, naming both thumbprints', async () => {
    const log = memoryLogger('debug');
    const options = clientOptions(keys, impostor, []);
    const error = await startClientWith(options, log.logger).then(
      () => assert.fail('connected to a server whose key is not the pin'),
      (e: unknown) => e as Error,
    );
    assert.ok(error instanceof IdentityError);
    assert.equal(error.code, ErrorCode.SERVER_KEY_MISMATCH);
    assert.match(error.message, /SERVER IDENTIFICATION DOES NOT MATCH/);
    assert.ok(error.message.includes(impostorKeys.host.thumbprint), `names the presented key: ${error.message}`);
    assert.ok(error.message.includes(keys.host.thumbprint), `names the pinned key: ${error.message}`);
    assert.equal(impostor.listSessions().length, 0);
  });

  it('a server with another host key is refused against known_servers, naming both thumbprints and the line', async () => {
    const knownServers = path.join(keys.dir, 'known_servers.recorded');
    const { host, port } = impostor.address;
    await writeFile(knownServers, `# recorded earlier\n${host}:${port} ${keys.host.thumbprint}\n`, { mode: 0o600 });
    const log = memoryLogger('debug');
    const options = clientOptions(keys, impostor, [], { serverKey: undefined, knownServers });
    const error = await startClientWith(options, log.logger).then(
      () => assert.fail('connected to a server whose key is not the recorded one'),
      (e: unknown) => e as Error,
    );
    assert.ok(error instanceof IdentityError);
    assert.equal(error.code, ErrorCode.SERVER_KEY_MISMATCH);
    assert.match(error.message, /SERVER IDENTIFICATION HAS CHANGED/);
    assert.ok(error.message.includes(impostorKeys.host.thumbprint) && error.message.includes(keys.host.thumbprint), error.message);
    assert.match(error.message, /line 2/);
    assert.equal(await readFile(knownServers, 'utf8'), `# recorded earlier\n${host}:${port} ${keys.host.thumbprint}\n`, 'the file was changed');
    assert.equal(impostor.listSessions().length, 0, 'the client authenticated to the impostor');
  });

  describe('with --insecure (TLS certificate checks off), the end-to-end checks still hold', () => {
    let tls: { cert: Buffer; key: Buffer };

    before(() => {
      const keyFile = path.join(keys.dir, 'relay-key.pem');
      const certFile = path.join(keys.dir, 'relay-cert.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
        '-subj', '/CN=127.0.0.1', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' });
      tls = { cert: readFileSync(certFile), key: readFileSync(keyFile) };
    });

    it('a TLS-terminating relay that swaps the host key is refused at hello (4009)', async () => {
      const mitm = await relay(forwardingRelay(server.url, (hello) => ({ ...hello, hostKey: mallory.publicJwk })), tls);
      const error = await clientFailure(mitm.url, { insecure: true });
      assert.ok(error instanceof IdentityError, `expected IdentityError, got ${error}`);
      assert.equal(error.code, ErrorCode.SERVER_KEY_MISMATCH);
      assert.equal(await mitm.clientClose, CloseCode.SERVER_IDENTITY_REJECTED);
      assert.equal(mitm.fromClient.length, 0);
    });

    it('a TLS-terminating relay that answers the handshake itself is refused at WELCOME (4009)', async () => {
      const mitm = await relay(terminatingRelay((own) => own), tls);
      assertWelcomeRefused(await clientFailure(mitm.url, { insecure: true }));
      assert.equal(await mitm.clientClose, CloseCode.SERVER_IDENTITY_REJECTED);
    });
  });
});
