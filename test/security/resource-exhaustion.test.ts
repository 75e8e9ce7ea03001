/**
 * Resource exhaustion against the real server over real sockets: handshakes
 * that never finish, a flood of unauthenticated connections from one
 * address, a flood of OPENs in one session, and clients that never read (or
 * never acknowledge). Each limit holds, and an honest client is still served.
 *
 * Memory is process.memoryUsage() arrayBuffers + external of this process
 * (server, attackers and backends all live here), measured after a full GC
 * so that only live buffers count. Node's `external` already includes
 * `arrayBuffers`, so each live Buffer byte counts about twice; the bounds
 * below are in those units.
 *
 *  - A client that never reads, with 8 streams from a backend that floods as
 *    fast as back-pressure allows, and an 8 MiB window: 64 MiB of credit,
 *    which must never sit in memory. What the server may hold: the records
 *    waiting in ws until the session counts itself congested (2 MiB,
 *    CONGESTION_HIGH, plus the 128 KiB record that crosses it); the DATA it
 *    keeps for resumption until acknowledged, which is at most what it sealed
 *    (what the kernel's socket buffers took, a few MiB on loopback, plus that
 *    backlog); one backend read (≤ 64 KiB) waiting in each stream; Node's
 *    socket buffers. About 12 MiB of Buffers at worst, 24 MiB counted twice:
 *    bound 32 MiB. Without congestion control it would be the whole 64 MiB.
 *  - A client that reads but never sends WINDOW: it should cost no more than
 *    one that never reads (same bound). With resumption on, every
 *    unacknowledged byte is kept: window × streams. A control with
 *    resumption off shows that this retention is the cost.
 *  - A client that never reads and sends PINGs: each PING asks for a PONG, so
 *    what it sends comes back as records the server must hold. The same
 *    congestion mark should bound them: 16 MiB for 32 MiB of PINGs.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import type { ReflectorServer } from '../../server/index.js';
import { CloseCode, FRAME_HEADER_BYTES, OpenFailCode } from '../../shared/constants.js';
import { ErrorCode } from '../../shared/errors.js';
import { encodeFrames, type Frame } from '../../shared/frames.js';
import {
  clientOptions,
  connectLocal,
  digestAll,
  makeKeys,
  memoryLogger,
  pump,
  SeededBytes,
  serverConfig,
  sleep,
  startBackend,
  startClientWith,
  startEchoBackend,
  startServerWith,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
  type MemoryLog,
} from '../helpers/fixtures.js';
import { closeOf, dial, dialRaw, rawHandshake, type RawConnection } from '../helpers/hostile-client.js';
import { connectScriptedPeer, type ScriptedPeer } from '../helpers/scripted-peer.js';

const MiB = 1024 * 1024;
const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;

/** Full GCs (V8's gc() without --expose-gc), with pauses so the concurrent sweeper frees ArrayBuffers. */
async function collectGarbage(): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(20);
  }
}

const buffers = (): number => {
  const usage = process.memoryUsage();
  return usage.arrayBuffers + usage.external;
};

/** Whether this machine can use `address` as a source address (a second "client machine" on loopback). */
function canBind(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(0, address, () => probe.close(() => resolve(true)));
  });
}

/** Pauses the WebSocket's TCP socket: the kernel buffers fill, then the peer's writes pile up on its side. */
function stopReading(ws: import('ws').WebSocket): void {
  (ws as unknown as { _socket: net.Socket })._socket.pause();
}

/** A real client session that moves `bytes` through the echo service and checks them. */
async function echoThrough(client: ReflectorClient, bytes: number, seed: string): Promise<void> {
  const socket = await connectLocal(client.listeners[0]!.address.port);
  try {
    const received = digestAll(socket);
    const sent = await pump(socket, bytes, (n) => new SeededBytes(seed).next(n), { chunkBytes: 64 * 1024 });
    const got = await received;
    assert.equal(got.bytes, bytes);
    assert.equal(got.sha256, sent.sha256);
  } finally {
    socket.destroy();
  }
}

describe('resource exhaustion', () => {
  let keys: KeySet;
  let echo: Backend;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
  });

  after(async () => {
    await echo?.close();
    await keys?.cleanup();
  });

  describe('handshakes that never finish', () => {
    let log: MemoryLog;
    let server: ReflectorServer;
    const open: RawConnection[] = [];

    before(async () => {
      log = memoryLogger('debug');
      server = await startServerWith(
        serverConfig(keys, { echo: echo.target }, { limits: { handshakeTimeoutMs: 200, maxUnauthenticatedPerAddress: 2 } }),
        log.logger,
      );
    });

    after(async () => {
      for (const c of open) c.ws.terminate();
      await server?.close();
    });

    async function connect(): Promise<RawConnection> {
      const c = await dialRaw(server.url);
      open.push(c);
      return c;
    }

    function timeouts(from: number): number {
      return log
        .entries()
        .slice(from)
        .filter((e) => e.event === 'auth.failure' && e.code === ErrorCode.HANDSHAKE_TIMEOUT).length;
    }

    it('closes a connection that says nothing after hello with 4002, and frees its slot', async () => {
      const from = log.lines.length;
      const [a, b] = [await connect(), await connect()];
      // Both slots of this address are taken: a third is refused at the upgrade.
      assert.equal((await dial(server.url)).status, 429);
      assert.equal((await closeOf(a)).code, CloseCode.HANDSHAKE_TIMEOUT);
      assert.equal((await closeOf(b)).code, CloseCode.HANDSHAKE_TIMEOUT);
      assert.equal(timeouts(from), 2);
      const reason = log.entries().slice(from).find((e) => e.event === 'auth.failure')!.reason;
      assert.match(String(reason), /no auth message within 200 ms/);
      // The slots are free again.
      const c = await connect();
      assert.equal((await closeOf(c)).code, CloseCode.HANDSHAKE_TIMEOUT);
    });

    it('closes a connection that starts an auth message and never finishes it (slowloris) with 4002', async () => {
      const c = await connect();
      c.send('{"type":"auth","token":"', { fin: false }); // a text fragment whose continuation never comes
      assert.equal((await closeOf(c)).code, CloseCode.HANDSHAKE_TIMEOUT);
    });

    it('frees the slot of a connection that never reads, even while its socket lingers', async () => {
      const from = log.lines.length;
      const [a, b] = [await connect(), await connect()];
      stopReading(a.ws);
      stopReading(b.ws);
      await waitFor(() => timeouts(from) === 2, 'both handshakes to time out');
      // Their close frames sit unread, but the address may connect again.
      const c = await connect();
      assert.equal((await closeOf(c)).code, CloseCode.HANDSHAKE_TIMEOUT);
      for (const paused of [a, b]) (paused.ws as unknown as { _socket: net.Socket })._socket.resume();
      assert.equal((await closeOf(a)).code, CloseCode.HANDSHAKE_TIMEOUT);
    });
  });

  describe('1,000 unauthenticated connections from one address', () => {
    let log: MemoryLog;
    let server: ReflectorServer;
    const held: RawConnection[] = [];

    before(async () => {
      log = memoryLogger('info');
      // The shipped cap (32 per address); a handshake timeout long enough for the whole flood to be in flight.
      server = await startServerWith(serverConfig(keys, { echo: echo.target }, { limits: { handshakeTimeoutMs: 20_000 } }), log.logger);
    });

    after(async () => {
      for (const c of held) c.ws.terminate();
      await server?.close();
    });

    it('upgrades only maxUnauthenticatedPerAddress of them (429 for the rest); an honest client elsewhere is served', async (t) => {
      if (!(await canBind('127.0.0.2'))) {
        t.skip('127.0.0.2 is not a local address here (Linux routes all of 127/8 to loopback; macOS does not)');
        return;
      }
      const cap = server.limits.maxUnauthenticatedPerAddress;
      assert.equal(cap, 32);
      const statuses = new Map<number, number>();
      // The attacker is 127.0.0.2: another machine, as far as the server can tell.
      for (let wave = 0; wave < 10; wave++) {
        const outcomes = await Promise.all(Array.from({ length: 100 }, () => dial(server.url, { localAddress: '127.0.0.2' })));
        for (const outcome of outcomes) {
          statuses.set(outcome.status, (statuses.get(outcome.status) ?? 0) + 1);
          if (outcome.connection) held.push(outcome.connection);
        }
      }
      assert.deepEqual(Object.fromEntries(statuses), { 101: cap, 429: 1000 - cap });
      assert.ok(held.every((c) => c.ws.readyState === c.ws.OPEN), 'the held connections should still be waiting');

      // Meanwhile a real client from 127.0.0.1 connects, authenticates and moves data.
      const client = await startClientWith(clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'echo' }]), memoryLogger().logger);
      try {
        await waitConnected(client);
        await echoThrough(client, 1 * MiB, 'honest during the flood');
      } finally {
        await client.close();
      }
      const limited = log.entries().filter((e) => e.event === 'auth.limited');
      assert.equal(limited.length, 1000 - cap);
      assert.ok(limited.every((e) => e.address === '127.0.0.2'));
    });
  });

  describe('unauthenticated connections from many addresses', () => {
    let log: MemoryLog;
    let server: ReflectorServer;
    const held: RawConnection[] = [];

    before(async () => {
      log = memoryLogger('info');
      server = await startServerWith(
        serverConfig(keys, { echo: echo.target }, { limits: { handshakeTimeoutMs: 20_000, maxUnauthenticated: 8 } }),
        log.logger,
      );
    });

    after(async () => {
      for (const c of held) c.ws.terminate();
      await server?.close();
    });

    it('upgrades only maxUnauthenticated in all (503 for the next address), and frees a slot when one closes', async (t) => {
      if (!(await canBind('127.0.0.2'))) {
        t.skip('127.0.0.2 is not a local address here (Linux routes all of 127/8 to loopback; macOS does not)');
        return;
      }
      // Four addresses, two connections each: under the per-address cap of 32, at the server-wide cap of 8.
      for (const localAddress of ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']) {
        for (const outcome of await Promise.all([dial(server.url, { localAddress }), dial(server.url, { localAddress })])) {
          assert.equal(outcome.status, 101);
          if (outcome.connection) held.push(outcome.connection);
        }
      }
      const refused = await dial(server.url, { localAddress: '127.0.0.6' });
      assert.equal(refused.status, 503);
      const limited = log.entries().filter((e) => e.event === 'auth.limited');
      assert.equal(limited.length, 1);
      assert.equal(limited[0]?.address, '127.0.0.6');
      assert.equal(limited[0]?.pendingInAll, 8);

      held.pop()?.ws.terminate();
      // The server frees the slot once its end of that socket has closed.
      let status = 0;
      for (let attempt = 0; attempt < 100 && status !== 101; attempt++) {
        const outcome = await dial(server.url, { localAddress: '127.0.0.6' });
        status = outcome.status;
        if (outcome.connection) held.push(outcome.connection);
        else await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(status, 101);
    });
  });

  describe('10,000 OPENs in one second', () => {
    const MAX_STREAMS = 100;
    let server: ReflectorServer;
    let backend: Backend;
    let live = 0;
    let peak = 0;
    let dialled = 0;
    let peer: ScriptedPeer | undefined;

    before(async () => {
      backend = await startBackend((socket) => {
        dialled += 1;
        live += 1;
        peak = Math.max(peak, live);
        socket.once('close', () => (live -= 1));
        socket.pipe(socket);
      });
      server = await startServerWith(
        serverConfig(keys, { echo: backend.target }, { limits: { maxStreamsPerSession: MAX_STREAMS } }),
        memoryLogger('info').logger,
      );
    });

    after(async () => {
      peer?.ws.terminate();
      await server?.close();
      await backend?.close();
    });

    it('accepts exactly maxStreams of them, refuses the rest with OPEN_FAIL 4, and the session lives on', async () => {
      peer = await connectScriptedPeer({ url: server.url, identity: keys.client });
      const p = peer;
      const TOTAL = 10_000;
      const perRecord = Math.floor(p.welcome.maxRecord / (FRAME_HEADER_BYTES + 'echo'.length));
      for (let first = 1; first <= TOTAL; first += perRecord) {
        const frames: Frame[] = [];
        for (let id = first; id < Math.min(first + perRecord, TOTAL + 1); id++) frames.push({ type: 'OPEN', streamId: id, service: 'echo' });
        p.sendFrames(frames);
      }
      const answered = (): Frame[] => p.received.filter((f) => f.type === 'OPEN_OK' || f.type === 'OPEN_FAIL');
      await waitFor(() => answered().length === TOTAL, `answers to all ${TOTAL} OPENs`, 30_000);
      const ok = answered().filter((f) => f.type === 'OPEN_OK');
      const limited = answered().filter((f) => f.type === 'OPEN_FAIL' && f.code === OpenFailCode.STREAM_LIMIT);
      assert.equal(ok.length, MAX_STREAMS);
      assert.equal(limited.length, TOTAL - MAX_STREAMS);
      // OPEN_OK follows the server's connect; the backend may not have run its accept callback yet.
      await waitFor(() => dialled === MAX_STREAMS, 'the backend to see the accepted streams');
      assert.equal(server.listSessions()[0]?.streams, MAX_STREAMS);

      // The limit counts live streams: reset them all, and a new one opens.
      p.sendFrames(ok.map((f) => ({ type: 'RST', streamId: f.streamId, code: 1 })));
      await waitFor(() => server.listSessions()[0]?.streams === 0, 'the streams to close');
      p.sendFrames([{ type: 'OPEN', streamId: TOTAL + 1, service: 'echo' }]);
      const answer = await p.waitForFrame((f) => f.streamId === TOTAL + 1 && (f.type === 'OPEN_OK' || f.type === 'OPEN_FAIL'));
      assert.equal(answer.type, 'OPEN_OK');
      await waitFor(() => dialled === MAX_STREAMS + 1, 'the backend to see the new stream');
      assert.ok(peak <= MAX_STREAMS, `the backend saw ${peak} connections at once`);
      assert.equal(dialled, MAX_STREAMS + 1, 'the server dialled the backend for OPENs it refused');
      assert.equal(p.ws.readyState, p.ws.OPEN);
    });
  });

  describe('clients that never read (or never acknowledge)', () => {
    const STREAMS = 8;
    const WINDOW = 8 * MiB;
    let server: ReflectorServer;
    /** Default limits: 1 MiB window, 256 streams, resumption on. */
    let defaults: ReflectorServer;
    /** The same, with resumption off (resumeWindowMs 0): nothing is kept for a retransmission. */
    let noResume: ReflectorServer;
    let flood: Backend;
    let floodConnections = 0;
    let honest: ReflectorClient;
    const attackers: Array<{ ws: import('ws').WebSocket }> = [];

    before(async () => {
      // Writes as fast as its socket takes it (honouring 'drain', so the backend itself holds nothing).
      const chunk = new SeededBytes('flood').next(64 * 1024);
      flood = await startBackend((socket) => {
        floodConnections += 1;
        const write = (): void => {
          while (!socket.destroyed && socket.write(chunk));
          if (!socket.destroyed) socket.once('drain', write);
        };
        socket.on('error', () => undefined);
        write();
      });
      server = await startServerWith(
        serverConfig(keys, { echo: echo.target, flood: flood.target }, { limits: { windowBytes: WINDOW } }),
        memoryLogger('info').logger,
      );
      defaults = await startServerWith(serverConfig(keys, { flood: flood.target }), memoryLogger('info').logger);
      noResume = await startServerWith(serverConfig(keys, { flood: flood.target }, { limits: { resumeWindowMs: 0 } }), memoryLogger('info').logger);
      honest = await startClientWith(clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'echo' }]), memoryLogger().logger);
      await waitConnected(honest);
    });

    after(async () => {
      for (const p of attackers) p.ws.terminate();
      await honest?.close();
      await server?.close();
      await defaults?.close();
      await noResume?.close();
      await flood?.close();
    });

    /** Opens `streams` streams to the flood service on `target`; a session that reads and drops everything, never sending WINDOW. */
    async function nonAcknowledgingSession(target: ReflectorServer, streams: number): Promise<void> {
      const connection = await dialRaw(target.url);
      attackers.push(connection);
      const session = await rawHandshake(connection, keys.client);
      // Reads every record off the socket and throws it away: no WINDOW ever goes back.
      connection.ws.removeAllListeners('message');
      connection.ws.on('message', () => undefined);
      connection.messages.length = 0;
      const opens = Array.from({ length: streams }, (_, i): Frame => ({ type: 'OPEN', streamId: i + 1, service: 'flood' }));
      connection.send(session.sealer.seal(encodeFrames(opens)), { binary: true });
    }

    /** Live growth of arrayBuffers + external after `attack` and then `settle`, after a full GC. */
    async function liveGrowth(attack: () => Promise<void>, settle: number | (() => Promise<void>)): Promise<number> {
      await collectGarbage();
      const baseline = buffers();
      await attack();
      await (typeof settle === 'number' ? sleep(settle) : settle());
      await collectGarbage();
      return buffers() - baseline;
    }

    /**
     * Waits until the session with `streams` streams stops growing: either every
     * window is full, or the session-wide cap on retained DATA holds the rest back.
     */
    const sealingStopped = (target: ReflectorServer, streams: number) => async (): Promise<void> => {
      const sealed = (): number => target.listSessions().find((s) => s.streams === streams)?.bytesOut ?? -1;
      await waitFor(() => sealed() > 0, 'the flood to start');
      let last = -1;
      let still = 0;
      while (still < 5) {
        await sleep(200);
        const now = sealed();
        still = now === last ? still + 1 : 0;
        last = now;
      }
    };

    /** Waits until `target` has sealed a full window on each of `streams` streams of one session. */
    const windowsFilled = (target: ReflectorServer, streams: number) => () =>
      waitFor(
        () => target.listSessions().some((s) => s.streams === streams && s.bytesOut >= streams * target.limits.windowBytes),
        'the flood to fill every window',
        30_000,
      );

    it(`holds a never-reading client with ${STREAMS} flooded streams (${STREAMS * WINDOW / MiB} MiB of credit) under 32 MiB while another session moves data`, { timeout: 60_000 }, async (t) => {
      let peer: ScriptedPeer | undefined;
      const connectionsBefore = floodConnections;
      const live = await liveGrowth(async () => {
        peer = await connectScriptedPeer({ url: server.url, identity: keys.client });
        attackers.push(peer);
        assert.equal(peer.welcome.window, WINDOW);
        stopReading(peer.ws);
        peer.sendFrames(Array.from({ length: STREAMS }, (_, i): Frame => ({ type: 'OPEN', streamId: i + 1, service: 'flood' })));
        await waitFor(() => floodConnections === connectionsBefore + STREAMS, 'the flood backends to be dialled');
        // The honest session moves 4 MiB while the attacker's records pile up.
        await echoThrough(honest, 4 * MiB, 'honest while a client never reads');
      }, 2_000);
      const sealed = server.listSessions().find((s) => s.streams === STREAMS)?.bytesOut ?? 0;
      const report = `never-reading client, ${STREAMS} streams × ${mib(WINDOW)} window: the server sealed ${mib(sealed)} for it; arrayBuffers+external grew ${mib(live)} (live, after GC; bound ${mib(32 * MiB)})`;
      t.diagnostic(report);
      console.log(report);
      assert.ok(live < 32 * MiB, report);
      assert.ok(sealed < (STREAMS * WINDOW) / 2, `${report}: congestion control never engaged`);
      assert.equal(peer!.ws.readyState, peer!.ws.OPEN, 'the attacker was disconnected: then this test measured nothing');
    });

    it('caps the DATA kept for resumption for a client that reads but never acknowledges (no WINDOW)', { timeout: 60_000 }, async (t) => {
      const STREAMS_NOT_ACKED = 128;
      const live = await liveGrowth(() => nonAcknowledgingSession(defaults, STREAMS_NOT_ACKED), sealingStopped(defaults, STREAMS_NOT_ACKED));
      const session = defaults.listSessions().find((s) => s.streams === STREAMS_NOT_ACKED);
      const window = defaults.limits.windowBytes;
      // The session's cap on DATA kept for a resume: eight windows (shared/stream-mux.ts).
      const cap = 8 * window;
      const liveBound = 32 * MiB + 2 * cap + 4 * MiB;
      const report =
        `client that reads but never sends WINDOW, ${STREAMS_NOT_ACKED} streams × ${mib(window)} window: the server sealed ${mib(session?.bytesOut ?? 0)} (cap ${mib(cap)}); ` +
        `arrayBuffers+external grew ${mib(live)} (live, after GC; bound ${mib(liveBound)}). ` +
        `Uncapped, at the default maxStreams (${defaults.limits.maxStreamsPerSession}) that would be ${mib(defaults.limits.maxStreamsPerSession * window)} of retained DATA per session, ` +
        `× maxSessionsPerClient (${defaults.limits.maxSessionsPerClient}) per client key`;
      t.diagnostic(report);
      console.log(report);
      // The server stops sealing long before 128 windows are full. What remains is per-stream read
      // buffering, as in the resumption-off control: up to two 64 KiB socket reads per stream, counted
      // twice (arrayBuffers and external), 32 MiB for 128 streams, plus the capped retained DATA, twice.
      assert.ok((session?.bytesOut ?? 0) <= cap + MiB, `${report}: unacknowledged DATA kept for resumption is not capped per session`);
      assert.ok(live < liveBound, report);
    });

    it('holds a client that reads but never acknowledges under 32 MiB when resumption is off (control: the cost is the retained DATA)', { timeout: 60_000 }, async (t) => {
      const live = await liveGrowth(() => nonAcknowledgingSession(noResume, 128), windowsFilled(noResume, 128));
      const session = noResume.listSessions().find((s) => s.streams === 128);
      const report = `same client, resumption off: the server sealed ${mib(session?.bytesOut ?? 0)}; arrayBuffers+external grew ${mib(live)}`;
      t.diagnostic(report);
      console.log(report);
      assert.ok((session?.bytesOut ?? 0) >= 128 * noResume.limits.windowBytes, 'the flood did not fill the windows: this control measured nothing');
      assert.ok(live < 32 * MiB, report);
    });

    it('holds a never-reading client that floods PINGs under 16 MiB (every PING asks for a PONG)', { timeout: 60_000 }, async (t) => {
      const PINGS_BYTES = 32 * MiB;
      const live = await liveGrowth(async () => {
        const p = await connectScriptedPeer({ url: server.url, identity: keys.client });
        attackers.push(p);
        stopReading(p.ws);
        const ping = encodeFrames([{ type: 'PING', streamId: 0, opaque: Buffer.alloc(8, 1) }]);
        const record = Buffer.concat(Array.from({ length: Math.floor(p.welcome.maxRecord / ping.length) }, () => ping));
        for (let sent = 0; sent < PINGS_BYTES; sent += record.length) {
          p.sendRecord(record);
          // Lets the server read what was sent so far: the attacker's own send buffer is not what is measured.
          if (p.ws.bufferedAmount > 4 * MiB) await waitFor(() => p.ws.bufferedAmount < MiB, 'the server to read the PINGs', 30_000, 5);
        }
        await waitFor(() => p.ws.bufferedAmount === 0, 'the server to read every PING', 30_000);
      }, 200);
      const report = `never-reading client sent ${mib(PINGS_BYTES)} of PINGs: arrayBuffers+external grew ${mib(live)} (live, after GC; bound ${mib(16 * MiB)})`;
      t.diagnostic(report);
      console.log(report);
      assert.ok(live < 16 * MiB, `${report}: the server queues a PONG for every PING however much already waits unsent`);
    });
  });
});
