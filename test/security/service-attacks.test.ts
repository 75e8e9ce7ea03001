/**
 * The gateway is never an open proxy. An authenticated peer names services,
 * never addresses: a configured service it may not use, or an unknown name,
 * is an OPEN_FAIL (code 1, the session goes on); a name outside the service
 * grammar (an address, a NUL, a path, 64 KiB of name) is a malformed frame
 * (close 4000). Every outbound TCP connection the server makes during this
 * file is recorded (node:net's connect is wrapped): none goes anywhere but a
 * listed, allowed service.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ReflectorServer } from '../../server/index.js';
import { CloseCode, FrameType, OpenFailCode, ResetCode } from '../../shared/constants.js';
import type { ServerConfig } from '../../shared/config-schema.js';
import { ErrorCode } from '../../shared/errors.js';
import {
  makeKeys,
  memoryLogger,
  serverConfig,
  startBackend,
  startEchoBackend,
  startServerWith,
  waitFor,
  type Backend,
  type KeySet,
  type MemoryLog,
} from '../helpers/fixtures.js';
import { closeOf } from '../helpers/hostile-client.js';
import { connectScriptedPeer, rawFrame, type ScriptedPeer } from '../helpers/scripted-peer.js';

describe('service attacks never reach an unlisted address', () => {
  let keys: KeySet;
  let echo: Backend;
  /** Configured as "secret", but this client may not use it. */
  let secret: Backend;
  /** Not configured at all; peers name its address. */
  let sentinel: Backend;
  const dialled = { secret: 0, sentinel: 0 };
  let log: MemoryLog;
  let config: ServerConfig;
  let server: ReflectorServer;
  const peers: ScriptedPeer[] = [];
  /** Every host:port this process connected to while the suite ran (the server's backend dials among them). */
  const connects: string[] = [];
  const originalConnect = net.connect;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    secret = await startBackend((socket) => {
      dialled.secret += 1;
      socket.destroy();
    });
    sentinel = await startBackend((socket) => {
      dialled.sentinel += 1;
      socket.destroy();
    });
    log = memoryLogger('debug');
    config = serverConfig(keys, { echo: echo.target, secret: secret.target }, { allowed: ['echo'] });
    server = await startServerWith(config, log.logger);
    // Wrapped after the fixtures are up: from here on, only the server and the peers' WebSockets dial.
    (net as { connect: typeof net.connect }).connect = ((...args: Parameters<typeof net.connect>) => {
      const first: unknown = args[0];
      const options = first as { host?: string; port?: number };
      connects.push(typeof first === 'object' && first !== null ? `${options.host}:${options.port}` : String(first));
      return originalConnect(...args);
    }) as typeof net.connect;
  });

  after(async () => {
    (net as { connect: typeof net.connect }).connect = originalConnect;
    for (const p of peers) p.ws.terminate();
    await server?.close();
    await echo?.close();
    await secret?.close();
    await sentinel?.close();
    await keys?.cleanup();
  });

  async function peer(): Promise<ScriptedPeer> {
    const p = await connectScriptedPeer({ url: server.url, identity: keys.client });
    peers.push(p);
    return p;
  }

  /** Sends OPEN for `name` as raw bytes (so names the encoder refuses can be sent) and returns the answer. */
  async function openAnswer(p: ScriptedPeer, streamId: number, name: string | Buffer) {
    p.sendRecord(rawFrame(FrameType.OPEN, streamId, name));
    return p.waitForFrame((f) => f.streamId === streamId && (f.type === 'OPEN_OK' || f.type === 'OPEN_FAIL'));
  }

  /** The echo service, and the gateway itself (the scripted peer's own WebSocket dials go through net.connect too). */
  const allowedTargets = (): Set<string> =>
    new Set([`${echo.target.host}:${echo.target.port}`, `${server.address.host}:${server.address.port}`]);

  function assertNoUnlistedDial(): void {
    const stray = connects.filter((target) => !allowedTargets().has(target));
    assert.deepEqual(stray, [], `the gateway connected to ${stray.join(', ')}`);
    assert.deepEqual(dialled, { secret: 0, sentinel: 0 });
  }

  it('opens an allowed service (control: the connect wrapper sees the server dial)', async () => {
    const p = await peer();
    const answer = await openAnswer(p, 1, 'echo');
    assert.equal(answer.type, 'OPEN_OK');
    assert.ok(connects.includes(`${echo.target.host}:${echo.target.port}`), `recorded: ${connects.join(', ')}`);
    await p.close();
  });

  it('refuses a configured service this client may not use with OPEN_FAIL 1, and the session goes on', async () => {
    const p = await peer();
    const from = log.lines.length;
    const answer = await openAnswer(p, 1, 'secret');
    assert.equal(answer.type, 'OPEN_FAIL');
    assert.equal(answer.type === 'OPEN_FAIL' && answer.code, OpenFailCode.SERVICE_NOT_ALLOWED);
    const refused = log.entries().slice(from).find((e) => e.event === 'stream.refused');
    assert.equal(refused?.reason, 'not-allowed');
    assert.equal((await openAnswer(p, 2, 'echo')).type, 'OPEN_OK', 'the session did not survive a refused OPEN');
    await p.close();
    assertNoUnlistedDial();
  });

  it('refuses names that fit the grammar but name nothing configured (an IP, localhost, a host name)', async () => {
    const p = await peer();
    for (const [i, name] of ['nope', '127.0.0.1', 'localhost', '0.0.0.0', 'mail.internal.example', `${sentinel.port}`, 'constructor'].entries()) {
      const answer = await openAnswer(p, i + 1, name);
      assert.equal(answer.type, 'OPEN_FAIL', name);
      assert.equal(answer.type === 'OPEN_FAIL' && answer.code, OpenFailCode.SERVICE_NOT_ALLOWED, name);
    }
    await p.close();
    assertNoUnlistedDial();
  });

  const malformedNames: Array<[string, string | Buffer]> = [
    ['an address with a port (127.0.0.1:22)', '127.0.0.1:22'],
    ['the sentinel\'s own address', '127.0.0.1:0'],
    ['a NUL after a real service (echo\\u0000)', 'echo\u0000'],
    ['a NUL and more (smtp\\u0000evil)', 'smtp\u0000evil'],
    ['a relative path (../x)', '../x'],
    ['an absolute path (/etc/passwd)', '/etc/passwd'],
    ['upper case (ECHO)', 'ECHO'],
    ['a trailing newline', 'echo\n'],
    ['a space', 'echo smtp'],
    ['percent-encoding (%65cho)', '%65cho'],
    ['a URL (tcp://127.0.0.1:22)', 'tcp://127.0.0.1:22'],
    ['IPv6 ([::1]:22)', '[::1]:22'],
    ['non-ASCII (UTF-8 "échø")', Buffer.from('échø', 'utf8')],
    ['64 bytes (one more than allowed)', 'a'.repeat(64)],
    ['a 64 KiB name', 'a'.repeat(64 * 1024)],
    ['an empty name', ''],
  ];

  for (const [what, name] of malformedNames) {
    it(`closes the session (4000) on an OPEN with ${what}, and dials nothing`, async () => {
      const p = await peer();
      const bytes = typeof name === 'string' ? name.replace('127.0.0.1:0', `127.0.0.1:${sentinel.port}`) : name;
      const from = log.lines.length;
      p.sendRecord(rawFrame(FrameType.OPEN, 1, bytes));
      assert.equal((await closeOf(p)).code, CloseCode.PROTOCOL_ERROR);
      await waitFor(() => log.entries().slice(from).some((e) => e.event === 'session.close'), 'the session.close line');
      assert.equal(log.entries().slice(from).find((e) => e.event === 'session.close')!.errorCode, ErrorCode.FRAME_MALFORMED);
      assert.equal(p.received.filter((f) => f.type === 'OPEN_OK').length, 0);
      assertNoUnlistedDial();
    });
  }

  it('authorizes every OPEN against the config in force: a service removed by reload is refused, its open stream reset', async () => {
    const p = await peer();
    assert.equal((await openAnswer(p, 1, 'echo')).type, 'OPEN_OK');
    const { echo: _removed, ...rest } = config.services;
    server.reload({ ...config, services: rest, clients: config.clients.map((c) => ({ ...c, services: [] })) });
    try {
      const reset = await p.waitForFrame((f) => f.type === 'RST' && f.streamId === 1);
      assert.equal(reset.type === 'RST' && reset.code, ResetCode.REVOKED);
      const answer = await openAnswer(p, 2, 'echo');
      assert.equal(answer.type === 'OPEN_FAIL' && answer.code, OpenFailCode.SERVICE_NOT_ALLOWED);
    } finally {
      server.reload(config);
    }
    await p.close();
    assertNoUnlistedDial();
  });
});
