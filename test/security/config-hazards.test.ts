/**
 * Config the operator wrote, met by a client's handshake. Two hazards found
 * by the adversarial suite:
 *
 *  - a client allowed a service named like an Object.prototype member
 *    ("toString", "constructor", "__proto__") passed validation, because the
 *    check asked `name in services` of a plain object (fixed in 0066a4a;
 *    this test keeps it fixed);
 *  - a WELCOME that cannot be built (a client allowed so many services that
 *    the list passes the 8 KiB limit, or a service name the WELCOME schema
 *    refuses, such as "toString") throws inside the server's connection
 *    handler, which nothing catches: the unhandled rejection ends the whole
 *    gateway process at the client's first handshake.
 *
 * The crash is observed in a child process running `reflector server`.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { CloseCode } from '../../shared/constants.js';
import { parseServerConfig } from '../../shared/config-schema.js';
import { ConfigError } from '../../shared/errors.js';
import { makeKeys, waitFor, type KeySet } from '../helpers/fixtures.js';
import { closeOf, dialRaw, rawHandshake } from '../helpers/hostile-client.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = path.join(ROOT, 'bin', 'reflector.ts');

function healthz(url: string): Promise<number | string> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: '/healthz' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
      .on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? String(error)));
  });
}

describe('config hazards', () => {
  let keys: KeySet;

  before(async () => {
    keys = await makeKeys();
  });

  after(async () => {
    await keys?.cleanup();
  });

  it('refuses a client allowed a service named like an Object.prototype member', async () => {
    for (const name of ['toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf']) {
      const raw = {
        hostKey: keys.hostFile,
        services: { smtp: '127.0.0.1:25' },
        clients: [{ name: 'alice', key: keys.client.publicJwk, services: ['smtp', name] }],
      };
      const outcome = await parseServerConfig(raw, 'server.yaml', keys.dir).then(
        (config) => `accepted, allowing ${JSON.stringify(config.clients[0]!.services)}`,
        (error: unknown) => error,
      );
      assert.ok(outcome instanceof ConfigError, `services: ["smtp", "${name}"] was ${String(outcome)}`);
      assert.match(outcome.message, new RegExp(`clients\\[0\\]\\.services\\[1\\]: unknown service "${name}"`));
    }
  });

  describe('a handshake whose WELCOME cannot be built', () => {
    let server: ChildProcess | undefined;
    let output = '';

    after(() => {
      server?.kill('SIGKILL');
    });

    it('ends that connection with 4010 and the server keeps serving', { timeout: 60_000 }, async () => {
      // 150 services with 60-character names: a valid config, but the WELCOME listing them is over 8 KiB.
      const services = Array.from({ length: 150 }, (_, i) => `  service-${String(i).padStart(3, '0')}-${'x'.repeat(48)}: 127.0.0.1:${1000 + i}`);
      const configFile = path.join(keys.dir, 'many-services.yaml');
      await writeFile(
        configFile,
        [
          'listen: { host: 127.0.0.1, port: 0 }',
          `hostKey: ${keys.hostFile}`,
          'services:',
          ...services,
          'clients:',
          `  - { name: alice, keyFile: ${keys.clientFile}.pub, services: ["*"] }`,
          'log: { level: info, format: json }',
        ].join('\n'),
      );
      server = spawn(process.execPath, ['--import', 'tsx', CLI, 'server', '--config', configFile], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      server.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      server.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      await waitFor(() => /"event":"server.listening"/.test(output), 'the server to listen', 20_000);
      const url = /"url":"(ws:[^"]+)"/.exec(output)![1]!;
      assert.equal(await healthz(url), 200);

      const connection = await dialRaw(url);
      const outcome = await rawHandshake(connection, keys.client).then(
        () => 'a WELCOME',
        () => 'no WELCOME',
      );
      assert.equal(outcome, 'no WELCOME');
      const closed = await closeOf(connection);
      const alive = await healthz(url);
      assert.equal(
        alive,
        200,
        `the gateway process died at the client's handshake (health check: ${alive}); its output ends with: ${output.trim().split('\n').slice(-6).join(' | ')}`,
      );
      assert.equal(closed.code, CloseCode.INTERNAL_ERROR);
    });
  });
});
