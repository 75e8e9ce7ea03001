/**
 * A stream whose FIN and whose end (a RST, or any protocol error that closes
 * the session) arrive in the same record must not leave its backend socket
 * open in the gateway.
 *
 * On FIN the bridge half-closes the backend socket (socket.end(): a libuv
 * shutdown request, still pending in that tick); the reset that follows calls
 * socket.resetAndDestroy(), i.e. uv_tcp_close_reset(), which libuv refuses
 * while a shutdown is pending (UV_EINVAL: "mixing of uv_shutdown and
 * uv_tcp_close_reset calls is not allowed"). Node then emits 'error', drops
 * its reference to the handle, and never closes it: the file descriptor and
 * the backend connection leak, one per stream, and a process that then ends
 * its event loop spins in handle cleanup. A peer can repeat it at will; an
 * honest client does it too when its application half-closes and then drops
 * the connection in the same turn of the event loop.
 *
 * The gateway runs in a child process (`reflector server`), so that its
 * file descriptors can be counted in /proc and a leaked handle cannot hang
 * this test process.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { CloseCode } from '../../shared/constants.js';
import type { Frame } from '../../shared/frames.js';
import { makeKeys, sleep, waitFor, type KeySet } from '../helpers/fixtures.js';
import { startRecordingBackend, type RecordingBackend } from '../helpers/hostile-client.js';
import { connectScriptedPeer } from '../helpers/scripted-peer.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = path.join(ROOT, 'bin', 'reflector.ts');
const ROUNDS = 20;

/** Sockets the process holds open, from /proc (Linux). */
function openSockets(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
    } catch {
      return false; // closed while we looked
    }
  }).length;
}

describe('backend sockets are not leaked', { skip: process.platform !== 'linux' && 'counts file descriptors in /proc' }, () => {
  let keys: KeySet;
  let backend: RecordingBackend;
  let server: ChildProcess;
  let url: string;
  let output = '';

  before(async () => {
    keys = await makeKeys();
    backend = await startRecordingBackend();
    const configFile = path.join(keys.dir, 'server.yaml');
    await writeFile(
      configFile,
      [
        'listen: { host: 127.0.0.1, port: 0 }',
        `hostKey: ${keys.hostFile}`,
        `services: { rec: "127.0.0.1:${backend.port}" }`,
        'clients:',
        `  - { name: tester, keyFile: ${keys.clientFile}.pub, services: [rec] }`,
        'log: { level: info, format: json }',
      ].join('\n'),
    );
    server = spawn(process.execPath, ['--import', 'tsx', CLI, 'server', '--config', configFile], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    server.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    server.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await waitFor(() => /"event":"server.listening"/.test(output), 'the server to listen', 20_000);
    url = /"url":"(ws:[^"]+)"/.exec(output)![1]!;
  });

  after(async () => {
    server?.kill('SIGKILL');
    await backend?.close();
    await keys?.cleanup();
  });

  /** Runs `rounds` sessions that each open a stream, deliver "A", then send `last` in one record. */
  async function rounds(last: Frame[], expectClose: number | undefined): Promise<void> {
    for (let i = 0; i < ROUNDS; i++) {
      const peer = await connectScriptedPeer({ url, identity: keys.client });
      const index = backend.connections;
      peer.sendFrames([{ type: 'OPEN', streamId: 1, service: 'rec' }]);
      await peer.waitForFrame((f) => f.streamId === 1 && f.type === 'OPEN_OK');
      peer.sendFrames([{ type: 'DATA', streamId: 1, data: Buffer.from('A') }]);
      await waitFor(() => Buffer.concat(backend.received[index] ?? []).toString() === 'A', 'the backend to receive "A"');
      peer.sendFrames(last);
      if (expectClose === undefined) {
        await backend.closedConnection(index);
        await peer.close();
      } else {
        assert.equal((await peer.closed).code, expectClose);
      }
    }
  }

  async function assertNoLeak(what: string, baseline: number): Promise<void> {
    // The gateway closes a reset socket at once; give the child a moment to get there, then count.
    await waitFor(() => openSockets(server.pid!) <= baseline, `${what}: the gateway to close its backend sockets`, 5_000).catch(() => undefined);
    const leaked = openSockets(server.pid!) - baseline;
    assert.ok(leaked <= 0, `${what}: the gateway holds ${leaked} more sockets after ${ROUNDS} sessions, all closed (one leaked backend connection per stream)`);
  }

  it('FIN then RST in one record: the backend socket is closed', { timeout: 60_000 }, async () => {
    await sleep(200);
    const baseline = openSockets(server.pid!);
    await rounds([{ type: 'FIN', streamId: 1 }, { type: 'RST', streamId: 1, code: 1 }], undefined);
    await assertNoLeak('FIN + RST', baseline);
  });

  it('FIN then a protocol error (DATA after FIN) in one record: the backend socket is closed', { timeout: 60_000 }, async () => {
    const baseline = openSockets(server.pid!);
    await rounds([{ type: 'FIN', streamId: 1 }, { type: 'DATA', streamId: 1, data: Buffer.from('B') }], CloseCode.PROTOCOL_ERROR);
    await assertNoLeak('FIN + DATA', baseline);
    assert.ok(backend.received.every((chunks) => Buffer.concat(chunks).toString() === 'A'), 'bytes past the fault reached the backend');
  });
});
