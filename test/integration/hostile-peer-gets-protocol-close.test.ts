/**
 * The server against a hostile but authenticated peer: a scripted client that
 * completes a real handshake and then sends what the real client never would.
 * Each violation closes that one WebSocket with the documented code
 * (PROTOCOL_ERROR 4000 for frames, RECORD_INVALID 4003 for records), never
 * reaches a backend it should not, and the server keeps serving others.
 */
import assert from 'node:assert/strict';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ReflectorServer } from '../../server/index.js';
import { CloseCode, FrameType } from '../../shared/constants.js';
import { encodeFrames } from '../../shared/frames.js';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  readAll,
  serverConfig,
  startBackend,
  startClient,
  startEchoBackend,
  startServer,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';
import { connectScriptedPeer, rawFrame, type PeerClose, type ScriptedPeer } from '../helpers/scripted-peer.js';

/** Far more than the window plus the kernel buffers between the server and a backend that reads nothing. */
const OVERRUN_BYTES = 64 * 1024 * 1024;

/** The close the server sent, or a clear failure if it never closes. */
function closeOf(peer: ScriptedPeer, timeoutMs = 10_000): Promise<PeerClose> {
  return Promise.race([
    peer.closed,
    new Promise<PeerClose>((_, reject) =>
      setTimeout(() => reject(new Error(`the server did not close the session within ${timeoutMs} ms`)), timeoutMs).unref(),
    ),
  ]);
}

describe('hostile peer gets protocol close', () => {
  let keys: KeySet;
  let echo: Backend;
  /** Must never be dialled: the OPEN that names its address is not a service. */
  let sentinel: Backend;
  let sentinelConnections = 0;
  /** Accepts and never reads. */
  let stalled: Backend;
  let server: ReflectorServer;
  const peers: ScriptedPeer[] = [];

  async function peer(): Promise<ScriptedPeer> {
    const connected = await connectScriptedPeer({ url: server.url, identity: keys.client });
    peers.push(connected);
    return connected;
  }

  /** Opens stream `id` to `service` for real and waits for OPEN_OK. */
  async function openStream(p: ScriptedPeer, id: number, service: string): Promise<void> {
    p.sendFrames([{ type: 'OPEN', streamId: id, service }]);
    const answer = await p.waitForFrame((f) => f.streamId === id && (f.type === 'OPEN_OK' || f.type === 'OPEN_FAIL'));
    assert.equal(answer.type, 'OPEN_OK', `the server did not accept stream ${id}`);
  }

  const openEcho = (p: ScriptedPeer, id: number): Promise<void> => openStream(p, id, 'echo');

  async function assertClosedWith(p: ScriptedPeer, code: number): Promise<void> {
    try {
      const { code: got } = await closeOf(p);
      assert.equal(got, code, `expected close code ${code}, got ${got}`);
      const id = p.keys.sessionId.toString('base64url');
      await waitFor(() => !server.listSessions().some((s) => s.id === id), 'the server to drop the hostile session');
      assert.equal(server.state, 'running');
    } finally {
      p.ws.terminate();
    }
  }

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    sentinel = await startBackend((socket: net.Socket) => {
      sentinelConnections += 1;
      socket.destroy();
    });
    stalled = await startBackend((socket: net.Socket) => socket.pause());
    server = await startServer(serverConfig(keys, { echo: echo.target, stalled: stalled.target }));
  }, { timeout: 30_000 });

  after(async () => {
    for (const p of peers) p.ws.terminate();
    await server?.close();
    await echo?.close();
    await sentinel?.close();
    await stalled?.close();
    await keys?.cleanup();
  }, { timeout: 30_000 });

  it('completes a real handshake and is served like the real client (control)', { timeout: 30_000 }, async () => {
    const p = await peer();
    assert.deepEqual(p.welcome.services, ['echo', 'stalled']);
    await openEcho(p, 1);
    p.sendFrames([
      { type: 'DATA', streamId: 1, data: Buffer.from('ping') },
      { type: 'FIN', streamId: 1 },
    ]);
    const data = await p.waitForFrame((f) => f.type === 'DATA' && f.streamId === 1);
    assert.equal(data.type === 'DATA' && data.data.toString(), 'ping');
    await p.waitForFrame((f) => f.type === 'FIN' && f.streamId === 1);
    const { code } = await p.close();
    assert.equal(code, CloseCode.NORMAL);
    await waitFor(() => server.listSessions().length === 0, 'the server to drop the session');
  });

  it('closes with PROTOCOL_ERROR (4000) on DATA for a stream that was never opened', { timeout: 30_000 }, async () => {
    const p = await peer();
    p.sendFrames([{ type: 'DATA', streamId: 7, data: Buffer.from('who am I talking to?') }]);
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
  });

  it('closes with PROTOCOL_ERROR (4000) on an OPEN that reuses the id of an open stream', { timeout: 30_000 }, async () => {
    const p = await peer();
    await openEcho(p, 1);
    p.sendFrames([{ type: 'OPEN', streamId: 1, service: 'echo' }]);
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
  });

  it('closes with PROTOCOL_ERROR (4000) on an OPEN that reuses the id of a stream already closed', { timeout: 30_000 }, async () => {
    const p = await peer();
    await openEcho(p, 3);
    p.sendFrames([{ type: 'RST', streamId: 3, code: 1 }]);
    p.sendFrames([{ type: 'OPEN', streamId: 3, service: 'echo' }]);
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
  });

  it('closes with PROTOCOL_ERROR (4000) on an OPEN with an id below the last one used', { timeout: 30_000 }, async () => {
    const p = await peer();
    await openEcho(p, 5);
    p.sendFrames([{ type: 'OPEN', streamId: 4, service: 'echo' }]);
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
  });

  it('closes with PROTOCOL_ERROR (4000) on DATA beyond the credit the server granted', { timeout: 60_000 }, async () => {
    const p = await peer();
    await openStream(p, 1, 'stalled');
    // The backend reads nothing, so the server stops granting credit once its socket to the backend is full
    // (kernel buffers, a few MiB). A peer that ignores WINDOW and keeps sending overruns the window.
    const chunk = p.welcome.maxRecord - 9;
    const payload = Buffer.alloc(chunk, 0x61);
    for (let sent = 0; sent < OVERRUN_BYTES && p.ws.readyState === p.ws.OPEN; sent += chunk) {
      p.sendFrames([{ type: 'DATA', streamId: 1, data: payload }]);
      if (p.ws.bufferedAmount > 4 * chunk) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
  });

  it('closes with PROTOCOL_ERROR (4000) on OPEN_OK sent by the client', { timeout: 30_000 }, async () => {
    const p = await peer();
    // OPEN_OK answers an OPEN; only the server answers. Sent while the server is still dialling the backend.
    p.sendFrames([
      { type: 'OPEN', streamId: 1, service: 'echo' },
      { type: 'OPEN_OK', streamId: 1 },
    ]);
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
  });

  it('closes with PROTOCOL_ERROR (4000) on GOAWAY sent by the client', { timeout: 30_000 }, async () => {
    const p = await peer();
    p.sendFrames([{ type: 'GOAWAY', streamId: 0, code: 1 }]);
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
  });

  it('closes with PROTOCOL_ERROR (4000) on an OPEN naming an address ("127.0.0.1:22") instead of a service', { timeout: 30_000 }, async () => {
    const p = await peer();
    // frames.ts will not encode this name, so the frame is built byte by byte.
    p.sendRecord(rawFrame(FrameType.OPEN, 1, '127.0.0.1:22'));
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
  });

  it('never dials an address named in an OPEN', { timeout: 30_000 }, async () => {
    const p = await peer();
    p.sendRecord(rawFrame(FrameType.OPEN, 1, `127.0.0.1:${sentinel.port}`));
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
    assert.equal(sentinelConnections, 0, 'the server connected to an address a peer named');
  });

  it('closes with PROTOCOL_ERROR (4000) on a WINDOW that acknowledges more than the server sent', { timeout: 30_000 }, async () => {
    const p = await peer();
    await openEcho(p, 1);
    // The server has sent nothing on stream 1, yet the peer claims to have consumed 1 MB of it.
    p.sendFrames([{ type: 'WINDOW', streamId: 1, consumed: 1_000_000 }]);
    await assertClosedWith(p, CloseCode.PROTOCOL_ERROR);
  });

  it('closes with RECORD_INVALID (4003) on a text message after the handshake', { timeout: 30_000 }, async () => {
    const p = await peer();
    p.sendRaw(JSON.stringify({ type: 'auth', token: 'a.b.c' }), { binary: false });
    await assertClosedWith(p, CloseCode.RECORD_INVALID);
  });

  it('closes with RECORD_INVALID (4003) on a record with one bit flipped', { timeout: 30_000 }, async () => {
    const p = await peer();
    await openEcho(p, 1);
    const record = p.seal(encodeFrames([{ type: 'DATA', streamId: 1, data: Buffer.from('MAIL FROM:<a@example.org>\r\n') }]));
    record[5]! ^= 0x04;
    p.sendRaw(record);
    await assertClosedWith(p, CloseCode.RECORD_INVALID);
  });

  it('keeps serving a normal client after all of that', { timeout: 30_000 }, async () => {
    const client = await startClient(clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'echo' }]));
    try {
      await waitConnected(client);
      const socket = await connectLocal(client.listeners[0]!.address.port);
      try {
        const reply = readAll(socket);
        socket.end('RSET\r\n');
        assert.equal((await reply).toString(), 'RSET\r\n');
      } finally {
        socket.destroy();
      }
    } finally {
      await client.close();
    }
    assert.equal(sentinelConnections, 0);
  });
});
