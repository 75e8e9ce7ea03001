/**
 * With `watch: true`, a change of the config file or of a client key file it
 * names reloads clients and services, as SIGHUP does: including a file
 * replaced by renaming a new one over it (editors, config management). A file
 * that fails validation is rejected and logged; the config in force stays.
 */
import assert from 'node:assert/strict';
import { rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import { createServer, type RunningServer } from '../../server/index.js';
import { loadServerConfig } from '../../shared/config-schema.js';
import { CloseCode } from '../../shared/constants.js';
import { generateIdentity, writeIdentityFiles } from '../../shared/keys.js';
import {
  clientOptions,
  makeKeys,
  memoryLogger,
  sleep,
  startClient,
  startEchoBackend,
  waitConnected,
  waitFor,
  type Backend,
  type KeySet,
  type MemoryLog,
} from '../helpers/fixtures.js';
import { nextEvent } from './support/operations.js';

function yaml(echoPort: number, clients: string): string {
  return `listen: { host: 127.0.0.1, port: 0 }
hostKey: host.jwk
watch: true
services:
  smtp: 127.0.0.1:${echoPort}
clients:
${clients}
`;
}
const ALICE = '  - { name: alice, keyFile: client.jwk.pub, services: [smtp] }\n';
const BOB = '  - { name: bob, keyFile: bob.jwk.pub, services: [smtp] }\n';

/** Replaces `file` the way editors do: write a temporary file, rename it over. */
async function replaceFile(file: string, text: string): Promise<void> {
  const temporary = `${file}.tmp-${process.pid}`;
  await writeFile(temporary, text);
  await rename(temporary, file);
}

describe('config watch reloads on file change', () => {
  let keys: KeySet;
  let echo: Backend;
  let configPath: string;
  let server: RunningServer;
  let log: MemoryLog;
  let alice: ReflectorClient;
  let bob: ReflectorClient;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    await writeIdentityFiles(path.join(keys.dir, 'bob.jwk'), await generateIdentity());
    configPath = path.join(keys.dir, 'server.yaml');
    await writeFile(configPath, yaml(echo.port, ALICE + BOB));
    log = memoryLogger('info');
    server = await createServer(await loadServerConfig(configPath), { logger: log.logger });
    await waitFor(() => log.entries().some((e) => e.event === 'config.watching'), 'the watcher to start');
    const forwards = [{ host: '127.0.0.1', port: 0, service: 'smtp' }];
    alice = await startClient(clientOptions(keys, server, forwards));
    bob = await startClient(clientOptions(keys, server, forwards, { identity: path.join(keys.dir, 'bob.jwk') }));
    await waitConnected(alice);
    await waitConnected(bob);
  });

  after(async () => {
    await alice?.close();
    await bob?.close();
    await server?.close();
    await echo?.close();
    await keys?.cleanup();
  });

  const reloads = () => log.entries().filter((e) => e.event === 'config.reloaded').length;

  it('ignores other files in the same directory', async () => {
    await writeFile(path.join(keys.dir, 'notes.txt'), 'not the config\n');
    await sleep(600); // past the debounce: a reload would have happened by now
    assert.equal(reloads(), 0);
  });

  it('closes the sessions of a client removed from the config file', async () => {
    const bobSession = server.listSessions().find((s) => s.client === 'bob')!.id;
    const closed = nextEvent(server.events, 'session.close', (e) => e.id === bobSession);
    await replaceFile(configPath, yaml(echo.port, ALICE));
    assert.equal((await closed).code, CloseCode.KEY_REVOKED);
    assert.equal(reloads(), 1);
    assert.deepEqual(server.listSessions().map((s) => s.client), ['alice']);
  });

  it('closes the sessions of a client whose key file now holds another key', async () => {
    const aliceSession = server.listSessions().find((s) => s.client === 'alice')!.id;
    const closed = nextEvent(server.events, 'session.close', (e) => e.id === aliceSession);
    await writeIdentityFiles(path.join(keys.dir, 'client.jwk'), await generateIdentity(), { overwrite: true });
    assert.equal((await closed).code, CloseCode.KEY_REVOKED);
  });

  it('rejects a broken file, logs why, and keeps the config in force', async () => {
    const before = reloads();
    await replaceFile(configPath, `${yaml(echo.port, ALICE)}limits: { windowBytes: -5 }\n`);
    await waitFor(() => log.entries().some((e) => e.event === 'config.reload_failed'), 'the reload to fail');
    const failed = log.entries().find((e) => e.event === 'config.reload_failed')!;
    assert.equal(failed.trigger, 'file change');
    assert.match(String(failed.err), /limits\.windowBytes: expected an integer between 1024 and 1073741824, got -5/);
    assert.equal(reloads(), before);
  });
});
