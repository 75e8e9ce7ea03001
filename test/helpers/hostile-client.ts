/**
 * Pieces for the adversarial suite (test/security/) that scripted-peer.ts
 * does not cover, because they happen before or instead of an honest
 * handshake:
 *
 *  - dialRaw(): a WebSocket that stops after `hello`, so a test can answer it
 *    with any auth text it likes (forged JWTs, replays, oversized or broken
 *    messages), or with nothing at all; it can dial from another loopback
 *    address (`localAddress`) to play a second client machine;
 *  - forgeToken() and honestClaims(): compact JWS built byte by byte, signed
 *    with EdDSA, HMAC or nothing, with any header and any claims;
 *  - rawHandshake(): an honest handshake on a raw connection that returns
 *    what the scripted peer hides (the WELCOME payload as it arrived);
 *  - startRecordingBackend(): a TCP backend that keeps every byte it gets,
 *    to prove that nothing past a fault reached it.
 */
import { createHash, createHmac, createPublicKey, diffieHellman, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import type net from 'node:net';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import WebSocket from 'ws';
import { aeadBackend } from '../../shared/aead.js';
import { AEAD_TAG_BYTES, AUTH_JWT_TYPE, MAX_STREAM_OFFSET, PROTOCOL_MAX_RECORD_BYTES, SUBPROTOCOL } from '../../shared/constants.js';
import { decodeFrames } from '../../shared/frames.js';
import { parseHello, respondToHello, type Hello } from '../../shared/handshake.js';
import type { SessionKeys } from '../../shared/key-schedule.js';
import type { Identity } from '../../shared/keys.js';
import { RecordOpener, RecordSealer } from '../../shared/record-layer.js';
import { startBackend, type Backend } from './fixtures.js';

export interface CloseInfo {
  code: number;
  reason: string;
}

export interface RawMessage {
  data: Buffer;
  isBinary: boolean;
}

/** A connection that got `hello` and waits for the test to answer it. */
export interface RawConnection {
  readonly ws: WebSocket;
  readonly helloText: string;
  readonly hello: Hello;
  /** Every message after hello, in arrival order. */
  readonly messages: RawMessage[];
  /** Resolves once the WebSocket closed, with the code the server sent (1006 if none). */
  readonly closed: Promise<CloseInfo>;
  /** Sends one WebSocket message exactly as given (text for a string unless told otherwise). */
  send(data: string | Buffer, options?: { binary?: boolean; fin?: boolean }): void;
  /** Resolves with the next message after hello (or rejects when the socket closes first). */
  nextMessage(timeoutMs?: number): Promise<RawMessage>;
}

export type DialOutcome = { status: 101; connection: RawConnection } | { status: number; connection?: undefined };

export interface DialOptions {
  /** Source address of the TCP connection: any 127.x.y.z plays another client machine on loopback. */
  localAddress?: string;
  timeoutMs?: number;
  /** maxPayload of this side (default: the protocol's 1 MiB + tag). */
  maxPayload?: number;
}

function toBuffer(data: WebSocket.RawData): Buffer {
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
}

/**
 * Dials the tunnel endpoint and waits for `hello`. Resolves with the HTTP
 * status when the upgrade is refused (429, 503, …); never throws for that.
 */
export function dial(url: string, options: DialOptions = {}): Promise<DialOutcome> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const ws = new WebSocket(url, SUBPROTOCOL, {
    perMessageDeflate: false,
    maxPayload: options.maxPayload ?? PROTOCOL_MAX_RECORD_BYTES + AEAD_TAG_BYTES,
    ...(options.localAddress ? { localAddress: options.localAddress } : {}),
  });
  const closed = new Promise<CloseInfo>((resolve) => {
    ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() }));
  });
  ws.on('error', () => {
    // 'close' (or 'unexpected-response') carries what the caller asserts.
  });
  return new Promise<DialOutcome>((resolve, reject) => {
    let settled = false;
    const settle = (outcome: DialOutcome | Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    const timer = setTimeout(() => {
      ws.terminate();
      settle(new Error(`dial ${url}: no hello within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      ws.terminate();
      settle({ status: res.statusCode ?? 0 });
    });
    void closed.then((info) => settle(new Error(`dial ${url}: closed (${info.code}) before hello`)));
    const messages: RawMessage[] = [];
    const waiters: Array<(message: RawMessage | undefined) => void> = [];
    let taken = 0;
    let helloSeen = false;
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      const bytes = toBuffer(data);
      if (!helloSeen) {
        helloSeen = true;
        const helloText = bytes.toString('utf8');
        parseHello(helloText).then(
          (hello) => settle({ status: 101, connection: makeConnection(hello, helloText) }),
          (error: unknown) => settle(error instanceof Error ? error : new Error(String(error))),
        );
        return;
      }
      messages.push({ data: bytes, isBinary });
      waiters.shift()?.(messages[taken++]);
    });
    void closed.then(() => {
      for (const wake of waiters.splice(0)) wake(undefined);
    });
    const makeConnection = (hello: Hello, helloText: string): RawConnection => ({
      ws,
      hello,
      helloText,
      messages,
      closed,
      send: (data, sendOptions) =>
        ws.send(data, { binary: sendOptions?.binary ?? typeof data !== 'string', fin: sendOptions?.fin ?? true }),
      nextMessage: (waitMs = 10_000) => {
        if (taken < messages.length) return Promise.resolve(messages[taken++]!);
        if (ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('the connection is closed'));
        return new Promise<RawMessage>((resolveMessage, rejectMessage) => {
          const wait = setTimeout(() => rejectMessage(new Error(`no message within ${waitMs} ms`)), waitMs);
          waiters.push((message) => {
            clearTimeout(wait);
            if (message) resolveMessage(message);
            else rejectMessage(new Error('the connection closed before another message'));
          });
        });
      },
    });
  });
}

/** dial(), insisting on an upgrade. */
export async function dialRaw(url: string, options: DialOptions = {}): Promise<RawConnection> {
  const outcome = await dial(url, options);
  if (outcome.connection === undefined) throw new Error(`dial ${url}: HTTP ${outcome.status} instead of an upgrade`);
  return outcome.connection;
}

/** Resolves with the close, or rejects if the server keeps the connection open for `timeoutMs`. */
export function closeOf(connection: { closed: Promise<CloseInfo> }, timeoutMs = 10_000): Promise<CloseInfo> {
  return Promise.race([
    connection.closed,
    new Promise<CloseInfo>((_, reject) =>
      setTimeout(() => reject(new Error(`the connection was not closed within ${timeoutMs} ms`)), timeoutMs).unref(),
    ),
  ]);
}

// ---------------------------------------------------------------------------
// JWTs built by hand

export type JwsSigner = (signingInput: Buffer) => Buffer;

/** Ed25519 over the signing input with `privateKey` (what an honest client does, with its own key). */
export const signEdDSA =
  (privateKey: KeyObject): JwsSigner =>
  (input) =>
    sign(null, input, privateKey);

/** HMAC-SHA256 keyed with `secret`: the classic "public key as HMAC secret" confusion attack. */
export const signHS256 =
  (secret: Buffer | string): JwsSigner =>
  (input) =>
    createHmac('sha256', secret).update(input).digest();

/** No signature at all (`alg: none`). */
export const unsigned: JwsSigner = () => Buffer.alloc(0);

const b64u = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

/**
 * A compact JWS: base64url(header) . base64url(payload) . base64url(signature).
 * A string payload or header is used byte for byte (malformed JSON on purpose).
 */
export function forgeToken(header: Record<string, unknown> | string, payload: Record<string, unknown> | string, signer: JwsSigner): string {
  const head = b64u(typeof header === 'string' ? header : JSON.stringify(header));
  const body = b64u(typeof payload === 'string' ? payload : JSON.stringify(payload));
  const signature = signer(Buffer.from(`${head}.${body}`, 'ascii'));
  return `${head}.${body}.${b64u(signature)}`;
}

export const authText = (token: string): string => JSON.stringify({ type: 'auth', token });

/** The header an honest client sends. */
export function honestHeader(identity: { thumbprint: string }): Record<string, unknown> {
  return { alg: 'EdDSA', typ: AUTH_JWT_TYPE, kid: identity.thumbprint };
}

export interface HonestClaims {
  claims: Record<string, unknown>;
}

/** The claims an honest client would sign for this hello, at `nowS` (seconds). */
export function honestClaims(hello: Hello, helloText: string, nowS = Math.floor(Date.now() / 1000)): HonestClaims {
  const ephemeral = generateKeyPairSync('x25519');
  const serverShare = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: hello.x25519.toString('base64url') }, format: 'jwk' });
  // Computed as an honest client would (a low-order server share throws here, as it does there).
  diffieHellman({ privateKey: ephemeral.privateKey, publicKey: serverShare });
  const { cipherText } = ml_kem768.encapsulate(hello.mlkem);
  return {
    claims: {
      aud: hello.hostKey.thumbprint,
      nonce: hello.challenge,
      epk: ephemeral.publicKey.export({ format: 'jwk' }).x as string,
      kem: Buffer.from(cipherText).toString('base64url'),
      th: createHash('sha256').update(helloText, 'utf8').digest('base64url'),
      iat: nowS,
      exp: nowS + 30,
    },
  };
}

// ---------------------------------------------------------------------------
// An honest handshake that shows its work

export interface RawSession {
  connection: RawConnection;
  keys: SessionKeys;
  authText: string;
  /** The WELCOME frame's payload exactly as the server sent it (JSON, with `sig`). */
  welcomePayload: Buffer;
  sealer: RecordSealer;
  opener: RecordOpener;
}

/** Answers `connection`'s hello honestly as `identity` and opens the WELCOME record. */
export async function rawHandshake(connection: RawConnection, identity: Identity): Promise<RawSession> {
  const answer = await respondToHello(connection.hello, connection.helloText, identity);
  const backend = aeadBackend('node');
  const sealer = new RecordSealer(backend, answer.keys.c2s, MAX_STREAM_OFFSET);
  const opener = new RecordOpener(backend, answer.keys.s2c, MAX_STREAM_OFFSET, PROTOCOL_MAX_RECORD_BYTES);
  connection.send(answer.authText);
  const message = await connection.nextMessage();
  if (!message.isBinary) throw new Error('rawHandshake: the server answered auth with a text message');
  const frames = decodeFrames(opener.open(message.data));
  const welcome = frames[0];
  if (frames.length !== 1 || welcome?.type !== 'WELCOME') throw new Error('rawHandshake: the first record is not a lone WELCOME');
  return { connection, keys: answer.keys, authText: answer.authText, welcomePayload: Buffer.from(welcome.payload), sealer, opener };
}


// ---------------------------------------------------------------------------
// A backend that remembers

export interface RecordingBackend extends Backend {
  /** Everything received so far, per connection, in order. */
  readonly received: Buffer[][];
  /** Every byte received on every connection, concatenated. */
  all(): Buffer;
  connections: number;
  /**
   * Resolves once connection `index` (0-based) can bring no more bytes: the
   * gateway half-closed it (FIN) or it closed. A backend that never writes
   * may not notice a reset after FIN, so FIN is where the stream's input ends.
   */
  closedConnection(index: number): Promise<void>;
}

/** A backend that reads and keeps every byte, never writes, and counts connections. */
export async function startRecordingBackend(): Promise<RecordingBackend> {
  const received: Buffer[][] = [];
  const closedPromises: Array<Promise<void>> = [];
  let connections = 0;
  const backend = await startBackend((socket: net.Socket) => {
    const chunks: Buffer[] = [];
    received.push(chunks);
    connections += 1;
    recording.connections = connections;
    closedPromises.push(
      new Promise<void>((resolve) => {
        socket.once('end', () => resolve());
        socket.once('close', () => resolve());
      }),
    );
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  });
  const recording: RecordingBackend = {
    ...backend,
    received,
    connections: 0,
    all: () => Buffer.concat(received.flat()),
    closedConnection: async (index) => {
      while (closedPromises[index] === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
      await closedPromises[index];
    },
  };
  return recording;
}
