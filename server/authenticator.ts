/**
 * The server half of the handshake on one WebSocket: send `hello`, wait (with
 * a deadline) for `auth`, check it against the authorized keys in force now,
 * and return who the client is and the session keys. Every failure is a typed
 * error; the caller logs its precise message and sends the peer only the code.
 */
import type WebSocket from 'ws';
import { MAX_HANDSHAKE_MESSAGE_BYTES } from '../shared/constants.js';
import { AuthError, ErrorCode, ProtocolError, ReflectorError } from '../shared/errors.js';
import { finishServerHandshake, startServerHandshake, type KemKeyCache } from '../shared/handshake.js';
import type { SessionKeys } from '../shared/key-schedule.js';
import type { Identity } from '../shared/keys.js';
import type { AuthorizedClient, ServiceRegistry } from './service-registry.js';

export interface AuthenticatorOptions {
  hostIdentity: Identity;
  kemKeys: KemKeyCache;
  registry: () => ServiceRegistry;
  timeoutMs: number;
}

export interface Authenticated {
  client: AuthorizedClient;
  keys: SessionKeys;
}

export async function authenticate(ws: WebSocket, options: AuthenticatorOptions): Promise<Authenticated> {
  const handshake = startServerHandshake(options.hostIdentity, options.kemKeys.current());
  // The client must send auth and then wait for WELCOME; a second message (even
  // one that arrived in the same TCP read as auth) is a protocol error, not lost input.
  let messages = 0;
  const countMessages = (): void => {
    messages += 1;
  };
  ws.on('message', countMessages);
  let result;
  try {
    const authText = await receiveAuth(ws, handshake.helloText, options.timeoutMs);
    const registry = options.registry();
    result = await finishServerHandshake(handshake, authText, (thumbprint) => registry.client(thumbprint)?.publicKey);
  } finally {
    ws.off('message', countMessages);
  }
  if (messages > 1) throw new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, 'message received before WELCOME was sent');
  // Looked up again: a reload may have removed the key while we verified.
  const client = options.registry().client(result.clientThumbprint);
  if (client === undefined) {
    throw new AuthError(ErrorCode.AUTH_UNKNOWN_KEY, `client key ${result.clientThumbprint} was removed during the handshake`);
  }
  return { client, keys: result.keys };
}

function receiveAuth(ws: WebSocket, helloText: string, timeoutMs: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
    };
    const fail = (error: ReflectorError): void => {
      cleanup();
      reject(error);
    };
    const timer = setTimeout(
      () => fail(new ProtocolError(ErrorCode.HANDSHAKE_TIMEOUT, `no auth message within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (isBinary) {
        fail(new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, 'binary message where the auth message was expected'));
        return;
      }
      if (bytes.length > MAX_HANDSHAKE_MESSAGE_BYTES) {
        fail(new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, `auth message of ${bytes.length} bytes exceeds ${MAX_HANDSHAKE_MESSAGE_BYTES}`));
        return;
      }
      cleanup();
      resolve(bytes.toString('utf8'));
    };
    const onClose = (code: number): void => {
      fail(new ProtocolError(ErrorCode.HANDSHAKE_MALFORMED, `connection closed (${code}) before auth`));
    };
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.send(helloText);
  });
}
