/**
 * One attempt: dial the WebSocket, run the client half of the handshake, check
 * the server's identity, and return an established session — or a typed error
 * that tells the caller whether trying again could help.
 *
 *   dial ──hello──> check server key ──auth──> wait WELCOME ──verify──> established
 *     │                 │ mismatch                │ close 4001
 *     └ ConnectError    └ IdentityError (fatal)   └ AuthError (fatal)
 */
import WebSocket from 'ws';
import { aeadBackend, type AeadName } from '../shared/aead.js';
import {
  AEAD_TAG_BYTES,
  CloseCode,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  MAX_STREAM_OFFSET,
  PROTOCOL_MAX_RECORD_BYTES,
  SUBPROTOCOL,
} from '../shared/constants.js';
import { AuthError, ErrorCode, IdentityError, ProtocolError, ReflectorError } from '../shared/errors.js';
import { decodeFrames } from '../shared/frames.js';
import { parseHello, respondToHello, verifyWelcome, type Hello, type WelcomeBody } from '../shared/handshake.js';
import type { Identity } from '../shared/keys.js';
import { RecordOpener, RecordSealer } from '../shared/record-layer.js';
import { SecureSession } from '../shared/secure-session.js';
import { ConnectError, ProxyAuthError } from './connect-error.js';
import { createConnectionFor, type DialOptions } from './dialer.js';

export { ConnectError, ProxyAuthError };

export interface SessionAttemptOptions {
  url: string;
  identity: Identity;
  headers: Record<string, string>;
  aead: AeadName;
  handshakeTimeoutMs: number;
  /** Called with the server's host-key thumbprint from hello, before anything is sent. */
  checkServerKey: (thumbprint: string) => Promise<void>;
  /** Called once WELCOME proved the server holds that key (trust on first use records it here). */
  confirmServerKey: (thumbprint: string) => Promise<void>;
  /** Proxy, TLS trust and warnings for reaching the server (dialer.ts); default: direct, default trust store. */
  dial?: Omit<DialOptions, 'timeoutMs'>;
}

export interface EstablishedSession {
  session: SecureSession;
  welcome: WelcomeBody;
  serverKey: string;
}

/** Errors that another attempt cannot fix: the server is not who we pinned, or it refuses us. */
export function isFatal(error: unknown): boolean {
  return (
    error instanceof IdentityError ||
    error instanceof AuthError ||
    error instanceof ProxyAuthError ||
    (error instanceof ReflectorError && error.code === ErrorCode.HANDSHAKE_VERSION)
  );
}

/** What a close code received during the handshake means for this attempt. */
function errorForHandshakeClose(code: number, url: string): ReflectorError {
  switch (code) {
    case CloseCode.AUTH_FAILED:
      return new AuthError(ErrorCode.AUTH_REFUSED, `${url}: the server refused this client key (close code ${code})`);
    case CloseCode.VERSION_UNSUPPORTED:
      return new ProtocolError(ErrorCode.HANDSHAKE_VERSION, `${url}: the server does not speak protocol v1`);
    case CloseCode.LIMIT_EXCEEDED:
      return new ConnectError(`${url}: the server has too many sessions or connections for this client (close code ${code})`);
    case CloseCode.GOING_AWAY:
      return new ConnectError(`${url}: the server is shutting down`);
    default:
      return new ConnectError(`${url}: connection closed during the handshake (close code ${code})`);
  }
}

export function establishSession(options: SessionAttemptOptions): Promise<EstablishedSession> {
  return new Promise<EstablishedSession>((resolve, reject) => {
    const { url } = options;
    const ws = new WebSocket(url, SUBPROTOCOL, {
      perMessageDeflate: false,
      maxPayload: PROTOCOL_MAX_RECORD_BYTES + AEAD_TAG_BYTES,
      headers: options.headers,
      handshakeTimeout: options.handshakeTimeoutMs,
      // RFC 6455 masking stops a hostile page from choosing the bytes a transparent
      // proxy sees. Every byte we send is either our own handshake JSON or AEAD
      // ciphertext, which nobody can choose, so an all-zero mask is safe — and it
      // lets ws skip a copy-and-XOR of every outgoing byte.
      generateMask: (mask: Buffer) => {
        mask.fill(0);
      },
      // The dialer connects (directly or through a proxy) and finishes TLS before ws sends the upgrade.
      createConnection: createConnectionFor(url, { ...options.dial, timeoutMs: options.handshakeTimeoutMs }) as unknown as WebSocket.ClientOptions['createConnection'],
    });
    let settled = false;
    let phase: 'dial' | 'hello' | 'welcome' = 'dial';
    let hello: Hello | undefined;
    let opener: RecordOpener | undefined;
    let sealer: RecordSealer | undefined;
    let keys: Awaited<ReturnType<typeof respondToHello>>['keys'] | undefined;
    let timer: NodeJS.Timeout | undefined;

    const fail = (error: ReflectorError, closeCode?: number): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.removeAllListeners('message');
      if (closeCode !== undefined && ws.readyState === WebSocket.OPEN) ws.close(closeCode);
      else ws.terminate();
      reject(error);
    };

    ws.on('error', (error: NodeJS.ErrnoException) => {
      // The dialer's errors (proxy, TLS, --ca) are already one sentence.
      if (error instanceof ReflectorError) return fail(error);
      fail(new ConnectError(`${url}: ${describeNetworkError(error)}`, { cause: error }));
    });
    ws.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      fail(new ConnectError(`${url}: the server answered HTTP ${status} ${res.statusMessage ?? ''} instead of a WebSocket upgrade${hintForStatus(status)}`));
    });
    ws.on('close', (code: number) => {
      fail(errorForHandshakeClose(code, url));
    });
    ws.on('open', () => {
      if (ws.protocol !== SUBPROTOCOL) {
        fail(new ConnectError(`${url}: the server did not accept subprotocol ${SUBPROTOCOL}`), CloseCode.PROTOCOL_ERROR);
        return;
      }
      phase = 'hello';
      timer = setTimeout(
        () => fail(new ConnectError(`${url}: handshake did not finish within ${options.handshakeTimeoutMs} ms`), CloseCode.HANDSHAKE_TIMEOUT),
        options.handshakeTimeoutMs,
      );
    });

    const onHello = async (text: string): Promise<void> => {
      hello = await parseHello(text);
      await options.checkServerKey(hello.hostKey.thumbprint);
      const answer = await respondToHello(hello, text, options.identity);
      keys = answer.keys;
      const backend = aeadBackend(options.aead);
      // Limits arrive in WELCOME; until then only the protocol ceilings apply.
      sealer = new RecordSealer(backend, keys.c2s, MAX_STREAM_OFFSET);
      opener = new RecordOpener(backend, keys.s2c, MAX_STREAM_OFFSET, PROTOCOL_MAX_RECORD_BYTES);
      phase = 'welcome';
      ws.send(answer.authText);
    };

    const onWelcomeRecord = async (record: Buffer): Promise<void> => {
      const frames = decodeFrames(opener!.open(record));
      const first = frames[0];
      if (frames.length !== 1 || first?.type !== 'WELCOME') {
        throw new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, 'the first record is not a lone WELCOME frame');
      }
      const welcome = verifyWelcome(first.payload, hello!, keys!);
      await options.confirmServerKey(hello!.hostKey.thumbprint);
      opener!.setLimits(welcome.rekeyBytes, welcome.maxRecord);
      sealer!.setRekeyBytes(welcome.rekeyBytes);
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.removeAllListeners('close');
      ws.removeAllListeners('message');
      ws.removeAllListeners('unexpected-response');
      const session = new SecureSession({
        transport: {
          ws,
          sealer: sealer!,
          opener: opener!,
          sessionId: keys!.sessionId,
          resumption: keys!.resumption,
          transcript: keys!.transcript,
        },
        role: 'client',
        resumable: welcome.resume > 0,
        windowBytes: welcome.window,
        maxRecordBytes: welcome.maxRecord,
        maxStreams: welcome.maxStreams,
        pingIntervalMs: welcome.pingInterval,
        idleTimeoutMs: welcome.pingInterval * 3,
      });
      resolve({ session, welcome, serverKey: hello!.hostKey.thumbprint });
    };

    // Messages are handled strictly one after another: the next waits for the previous step.
    let chain = Promise.resolve();
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      chain = chain.then(async () => {
        if (settled) return;
        try {
          if (phase === 'hello') {
            if (isBinary || bytes.length > MAX_HANDSHAKE_MESSAGE_BYTES) {
              throw new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, 'the first message is not a hello text message');
            }
            await onHello(bytes.toString('utf8'));
          } else if (phase === 'welcome') {
            if (!isBinary) throw new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, 'text message where WELCOME was expected');
            await onWelcomeRecord(bytes);
          } else {
            throw new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, 'message before the upgrade completed');
          }
        } catch (error) {
          const failure =
            error instanceof ReflectorError
              ? error
              : new ReflectorError(ErrorCode.INTERNAL, `handshake failed: ${(error as Error).message}`, { cause: error });
          fail(failure, failure.closeCode);
        }
      });
    });
  });
}

function describeNetworkError(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'ECONNREFUSED':
      return 'connection refused (is the server running?)';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not found';
    case 'ECONNRESET':
      return 'connection reset';
    case 'ETIMEDOUT':
      return 'connection timed out';
    default:
      return error.message;
  }
}

function hintForStatus(status: number): string {
  switch (status) {
    case 404:
      return ' (is the tunnel path right?)';
    case 503:
      return ' (the server is draining or not ready)';
    case 429:
      return ' (too many unauthenticated connections from this address)';
    case 400:
      return ' (not a Reflector endpoint, or a proxy stripped the upgrade)';
    default:
      return '';
  }
}
