/**
 * A hostile client for tests: it performs a REAL handshake (hello → auth →
 * WELCOME, with the real key schedule and record layer) and then lets the
 * test send whatever it likes: frames the real client never would, raw frame
 * bytes the encoder refuses to produce, text messages, tampered records.
 *
 * It records every frame the server sends after WELCOME and how the
 * WebSocket closed, so a test can assert the server's exact close code.
 */
import WebSocket from 'ws';
import { aeadBackend, type AeadName } from '../../shared/aead.js';
import {
  AEAD_TAG_BYTES,
  FRAME_HEADER_BYTES,
  MAX_STREAM_OFFSET,
  PROTOCOL_MAX_RECORD_BYTES,
  SUBPROTOCOL,
} from '../../shared/constants.js';
import { decodeFrames, encodeFrames, type Frame } from '../../shared/frames.js';
import { parseHello, respondToHello, verifyWelcome, type Hello, type WelcomeBody } from '../../shared/handshake.js';
import type { SessionKeys } from '../../shared/key-schedule.js';
import type { Identity } from '../../shared/keys.js';
import { RecordOpener, RecordSealer } from '../../shared/record-layer.js';

export interface ScriptedPeerOptions {
  /** ws:// URL of the server's tunnel endpoint (ReflectorServer.url). */
  url: string;
  /** An authorized client identity (KeySet.client). */
  identity: Identity;
  /** Must match the server's `aead` only in speed: both backends seal identical bytes. */
  aead?: AeadName;
  /** How long the handshake may take. */
  timeoutMs?: number;
}

export interface PeerClose {
  code: number;
  reason: string;
}

export interface ScriptedPeer {
  readonly ws: WebSocket;
  readonly hello: Hello;
  readonly keys: SessionKeys;
  readonly welcome: WelcomeBody;
  /** Frames from the server after WELCOME, in arrival order. */
  readonly received: Frame[];
  /** Resolves once the WebSocket closed, with the close code the server sent (1006 if none). */
  readonly closed: Promise<PeerClose>;
  /** Seals `plaintext` as the next client→server record and returns it without sending (to tamper with it). */
  seal(plaintext: Buffer): Buffer;
  /** Seals `plaintext` (whole frames, or anything) as the next record and sends it. */
  sendRecord(plaintext: Buffer): void;
  /** Encodes well-formed frames into one record and sends it. */
  sendFrames(frames: Frame[]): void;
  /** Sends a WebSocket message exactly as given: a tampered record, a text message. */
  sendRaw(data: Buffer | string, options?: { binary?: boolean }): void;
  /** Resolves with the first received frame (past or future) that matches. */
  waitForFrame(match: (frame: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
  /** Closes the WebSocket normally (if still open) and waits for it. */
  close(): Promise<PeerClose>;
}

/** One frame built byte by byte, so frames the encoder refuses (bad service names, lengths) can be sent. */
export function rawFrame(type: number, streamId: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload;
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header[0] = type;
  header.writeUInt32BE(streamId >>> 0, 1);
  header.writeUInt32BE(body.length, 5);
  return Buffer.concat([header, body]);
}

function toBuffer(data: WebSocket.RawData): Buffer {
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
}

/** Connects, runs the client half of the handshake for real, verifies WELCOME, and hands over the session. */
export function connectScriptedPeer(options: ScriptedPeerOptions): Promise<ScriptedPeer> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const backend = aeadBackend(options.aead ?? 'node');
  const ws = new WebSocket(options.url, SUBPROTOCOL, {
    perMessageDeflate: false,
    maxPayload: PROTOCOL_MAX_RECORD_BYTES + AEAD_TAG_BYTES,
  });
  const closed = new Promise<PeerClose>((resolve) => {
    ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() }));
  });
  ws.on('error', () => {
    // 'close' follows and carries what the test asserts.
  });

  return new Promise<ScriptedPeer>((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`scripted peer: handshake with ${options.url} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    const fail = (error: unknown): void => {
      clearTimeout(timer);
      ws.terminate();
      reject(error instanceof Error ? error : new Error(String(error)));
    };
    let phase: 'hello' | 'welcome' | 'session' = 'hello';
    void closed.then((info) => {
      if (phase !== 'session') fail(new Error(`scripted peer: closed during the handshake (${info.code})`));
    });
    let hello: Hello;
    let helloKeys: SessionKeys;
    let sealer: RecordSealer;
    let opener: RecordOpener;
    const received: Frame[] = [];
    const waiters = new Set<() => void>();
    // Messages are handled one after another, as the real client does.
    let chain = Promise.resolve();

    const onSessionRecord = (record: Buffer): void => {
      for (const frame of decodeFrames(opener.open(record))) received.push(frame);
      for (const wake of [...waiters]) wake();
    };

    const onWelcome = (record: Buffer): void => {
      const frames = decodeFrames(opener.open(record));
      const first = frames[0];
      if (frames.length !== 1 || first?.type !== 'WELCOME') throw new Error('scripted peer: first record is not a lone WELCOME');
      const welcome = verifyWelcome(first.payload, hello, helloKeys);
      opener.setLimits(welcome.rekeyBytes, welcome.maxRecord);
      sealer.setRekeyBytes(welcome.rekeyBytes);
      phase = 'session';
      clearTimeout(timer);
      const peer: ScriptedPeer = {
        ws,
        hello,
        keys: helloKeys,
        welcome,
        received,
        closed,
        seal: (plaintext) => sealer.seal(plaintext),
        sendRecord: (plaintext) => ws.send(sealer.seal(plaintext), { binary: true }),
        sendFrames: (frames) => ws.send(sealer.seal(encodeFrames(frames)), { binary: true }),
        sendRaw: (data, sendOptions) => ws.send(data, { binary: sendOptions?.binary ?? typeof data !== 'string' }),
        waitForFrame: (match, waitMs = 10_000) =>
          new Promise<Frame>((resolveFrame, rejectFrame) => {
            const check = (): boolean => {
              const frame = received.find(match);
              if (frame === undefined) return false;
              cleanup();
              resolveFrame(frame);
              return true;
            };
            const cleanup = (): void => {
              clearTimeout(frameTimer);
              waiters.delete(wake);
            };
            const wake = (): void => void check();
            const frameTimer = setTimeout(() => {
              cleanup();
              rejectFrame(new Error(`scripted peer: no matching frame within ${waitMs} ms (got ${received.map((f) => f.type).join(', ') || 'nothing'})`));
            }, waitMs);
            if (!check()) waiters.add(wake);
          }),
        close: async () => {
          if (ws.readyState === WebSocket.OPEN) ws.close(1000);
          return closed;
        },
      };
      resolve(peer);
    };

    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      const bytes = toBuffer(data);
      chain = chain.then(async () => {
        try {
          if (phase === 'hello') {
            if (isBinary) throw new Error('scripted peer: hello was binary');
            const text = bytes.toString('utf8');
            hello = await parseHello(text);
            const answer = await respondToHello(hello, text, options.identity);
            helloKeys = answer.keys;
            // Limits arrive in WELCOME; until then only the protocol ceilings apply (as in client/session.ts).
            sealer = new RecordSealer(backend, helloKeys.c2s, MAX_STREAM_OFFSET);
            opener = new RecordOpener(backend, helloKeys.s2c, MAX_STREAM_OFFSET, PROTOCOL_MAX_RECORD_BYTES);
            phase = 'welcome';
            ws.send(answer.authText);
          } else if (phase === 'welcome') {
            if (!isBinary) throw new Error('scripted peer: text message where WELCOME was expected');
            onWelcome(bytes);
          } else if (isBinary) {
            onSessionRecord(bytes);
          }
        } catch (error) {
          if (phase !== 'session') fail(error);
          // After the handshake, a record we cannot open means the test already broke the session on purpose.
        }
      });
    });
  });
}
