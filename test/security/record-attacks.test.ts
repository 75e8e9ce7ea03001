/**
 * Attacks on the record layer by an authenticated peer (or by anyone on the
 * path who can alter WebSocket messages): every fault ends the session with
 * its documented close code, and no byte past the fault reaches a backend.
 *
 * Each case opens a stream to a backend that records every byte it receives,
 * sends DATA "A" in a good record, waits until the backend has it, then
 * commits the fault with DATA "B" (and "C"). The backend must end up with
 * exactly "A": its connection is reset when the session closes, so once it
 * closed nothing more can arrive.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ReflectorServer } from '../../server/index.js';
import { aeadBackend } from '../../shared/aead.js';
import { CloseCode } from '../../shared/constants.js';
import { ErrorCode } from '../../shared/errors.js';
import { encodeFrames } from '../../shared/frames.js';
import { RecordSealer } from '../../shared/record-layer.js';
import { makeKeys, memoryLogger, serverConfig, startServerWith, waitFor, type KeySet, type MemoryLog } from '../helpers/fixtures.js';
import { closeOf, startRecordingBackend, type RecordingBackend } from '../helpers/hostile-client.js';
import { connectScriptedPeer, type ScriptedPeer } from '../helpers/scripted-peer.js';

/** Small records, so that "larger than maxRecord" and "larger than maxPayload" are two different faults. */
const MAX_RECORD = 4096;
/** The server's WebSocket maxPayload: max(maxRecord + 16, 8192). */
const MAX_PAYLOAD = 8192;

const data = (text: string | Buffer) =>
  encodeFrames([{ type: 'DATA', streamId: 1, data: Buffer.isBuffer(text) ? text : Buffer.from(text) }]);

describe('record attacks close the session and deliver nothing past the fault', () => {
  let keys: KeySet;
  let backend: RecordingBackend;
  let log: MemoryLog;
  let server: ReflectorServer;
  const peers: ScriptedPeer[] = [];

  before(async () => {
    keys = await makeKeys();
    backend = await startRecordingBackend();
    log = memoryLogger('debug');
    server = await startServerWith(serverConfig(keys, { rec: backend.target }, { limits: { maxRecordBytes: MAX_RECORD } }), log.logger);
  });

  after(async () => {
    for (const p of peers) p.ws.terminate();
    await server?.close();
    await backend?.close();
    await keys?.cleanup();
  });

  /**
   * A session with stream 1 open to the recording backend and "A" delivered
   * through it; `fault` then does its worst. Checks the close code, the
   * session.close audit line, and that the backend got "A" and nothing else.
   */
  async function attack(
    fault: (peer: ScriptedPeer, recordA: Buffer) => void,
    expected: { close: number; errorCode?: string },
  ): Promise<void> {
    const peer = await connectScriptedPeer({ url: server.url, identity: keys.client });
    peers.push(peer);
    assert.equal(peer.welcome.maxRecord, MAX_RECORD);
    const index = backend.connections;
    peer.sendFrames([{ type: 'OPEN', streamId: 1, service: 'rec' }]);
    const answer = await peer.waitForFrame((f) => f.streamId === 1 && (f.type === 'OPEN_OK' || f.type === 'OPEN_FAIL'));
    assert.equal(answer.type, 'OPEN_OK');
    const recordA = peer.seal(data('A'));
    peer.sendRaw(recordA);
    await waitFor(() => Buffer.concat(backend.received[index] ?? []).toString() === 'A', 'the backend to receive "A"');
    const from = log.lines.length;

    fault(peer, recordA);

    const closed = await closeOf(peer);
    assert.equal(closed.code, expected.close, `close code: expected ${expected.close}, got ${closed.code}`);
    // The session must end here, not wait (suspended, its backend connection open) for the peer to resume it.
    const ended = await Promise.race([
      backend.closedConnection(index).then(() => 'closed' as const),
      waitFor(() => log.entries().slice(from).some((e) => e.event === 'session.suspend'), 'session.suspend').then(() => 'suspended' as const),
    ]);
    const suspend = log.entries().slice(from).find((e) => e.event === 'session.suspend');
    assert.equal(
      ended,
      'closed',
      `the peer broke the protocol, yet the server suspended its session for resumption (${JSON.stringify(suspend?.msg)}) and kept the backend connection open`,
    );
    assert.equal(Buffer.concat(backend.received[index]!).toString(), 'A', 'bytes past the fault reached the backend');
    await waitFor(() => server.listSessions().length === 0, 'the server to drop the session');
    const closeLine = log.entries().slice(from).find((e) => e.event === 'session.close');
    assert.ok(closeLine, 'no session.close audit line');
    assert.equal(closeLine.code, expected.close);
    if (expected.errorCode) assert.equal(closeLine.errorCode, expected.errorCode, `audit reason: ${String(closeLine.reason)}`);
    assert.equal(server.state, 'running');
  }

  const recordInvalid = (errorCode: string) => ({ close: CloseCode.RECORD_INVALID, errorCode });

  it('a record with one bit flipped: 4003, "B" never delivered', async () => {
    await attack((peer) => {
      const record = peer.seal(data('B'));
      record[9]! ^= 0x01; // the ciphertext of "B" itself: a stream cipher alone would deliver "C"
      peer.sendRaw(record);
    }, recordInvalid(ErrorCode.RECORD_OPEN_FAILED));
  });

  it('a record with a bit flipped in its tag: 4003', async () => {
    await attack((peer) => {
      const record = peer.seal(data('B'));
      record[record.length - 1]! ^= 0x80;
      peer.sendRaw(record);
    }, recordInvalid(ErrorCode.RECORD_OPEN_FAILED));
  });

  it('a record replayed (the one that carried "A"): 4003, "A" delivered exactly once', async () => {
    await attack((peer, recordA) => peer.sendRaw(recordA), recordInvalid(ErrorCode.RECORD_OPEN_FAILED));
  });

  it('a record dropped on the way: the next one fails (4003), "C" never delivered', async () => {
    await attack((peer) => {
      peer.seal(data('B')); // sealed, never sent: a middlebox swallowed it
      peer.sendRecord(data('C'));
    }, recordInvalid(ErrorCode.RECORD_OPEN_FAILED));
  });

  it('two records reordered: 4003, neither "B" nor "C" delivered', async () => {
    await attack((peer) => {
      const b = peer.seal(data('B'));
      const c = peer.seal(data('C'));
      peer.sendRaw(c);
      peer.sendRaw(b);
    }, recordInvalid(ErrorCode.RECORD_OPEN_FAILED));
  });

  it('a record reflected in the other direction (sealed with the server\'s key): 4003', async () => {
    await attack((peer) => {
      const s2c = new RecordSealer(aeadBackend('node'), peer.keys.s2c, 2 ** 40);
      peer.sendRaw(s2c.seal(data('B')));
    }, recordInvalid(ErrorCode.RECORD_OPEN_FAILED));
  });

  it('a truncated record and an empty message: 4003', async () => {
    await attack((peer) => {
      const record = peer.seal(data('B'));
      peer.sendRaw(record.subarray(0, record.length - 1));
    }, recordInvalid(ErrorCode.RECORD_OPEN_FAILED));
    await attack((peer) => peer.sendRaw(Buffer.alloc(0)), recordInvalid(ErrorCode.RECORD_OPEN_FAILED));
  });

  it('a valid record with no frames in it: 4000', async () => {
    await attack((peer) => peer.sendRecord(Buffer.alloc(0)), { close: CloseCode.PROTOCOL_ERROR, errorCode: ErrorCode.FRAME_MALFORMED });
  });

  it('a text message after the handshake: 4003, "B" never delivered', async () => {
    await attack((peer) => peer.sendRaw('B', { binary: false }), recordInvalid(ErrorCode.RECORD_UNEXPECTED_TEXT));
  });

  it('a record larger than maxRecord + 16 (but within maxPayload): 4003, refused before decryption', async () => {
    await attack((peer) => {
      const record = peer.seal(data(Buffer.alloc(MAX_RECORD, 'B')));
      assert.ok(record.length > MAX_RECORD + 16 && record.length <= MAX_PAYLOAD);
      peer.sendRaw(record);
    }, recordInvalid(ErrorCode.RECORD_TOO_LARGE));
  });

  it('a text message that is not UTF-8: 1007 from the WebSocket layer, session closed', async () => {
    await attack((peer) => {
      // ws will not send invalid UTF-8 as text, so the WebSocket frame is written by hand (masked, as a client must).
      const payload = Buffer.from([0x42, 0xff, 0xfe]);
      const mask = Buffer.from([1, 2, 3, 4]);
      const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!));
      const socket = (peer.ws as unknown as { _socket: import('node:net').Socket })._socket;
      socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
    }, { close: 1007 });
  });

  it('a message over maxPayload: 1009 from the WebSocket layer, "B" never delivered', async () => {
    await attack((peer) => {
      const record = peer.seal(data(Buffer.alloc(MAX_PAYLOAD, 'B')));
      assert.ok(record.length > MAX_PAYLOAD);
      peer.sendRaw(record);
    }, { close: CloseCode.MESSAGE_TOO_BIG });
  });
});
