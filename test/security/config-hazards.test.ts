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
 * The refusal is observed in a child process running `reflector server`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { parseServerConfig } from '../../shared/config-schema.js';
import { ConfigError } from '../../shared/errors.js';
import { makeKeys, type KeySet } from '../helpers/fixtures.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = path.join(ROOT, 'bin', 'reflector.ts');

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

  describe('a client whose WELCOME could not be built', () => {
    it('is refused when the config is loaded, with one sentence, instead of failing at its first handshake', { timeout: 60_000 }, async () => {
      // 150 services with 60-character names: the WELCOME listing them would be over 8 KiB.
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
      const server = spawn(process.execPath, ['--import', 'tsx', CLI, 'server', '--config', configFile], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      server.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const code = await new Promise<number | null>((resolve) => server.once('exit', (exitCode) => resolve(exitCode)));
      assert.equal(code, 2, stderr);
      const lines = stderr.split('\n').filter(Boolean);
      assert.equal(lines.length, 1, stderr);
      assert.match(lines[0]!, /clients\[0\]\.services: 150 services .* do not fit in the handshake/);
    });
  });
});
