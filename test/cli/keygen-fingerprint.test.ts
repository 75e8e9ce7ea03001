/**
 * The built `reflector` command as a user runs it: a child process, its
 * stdout, stderr and exit code. Needs `npm run build` first (npm test runs it).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

const CLI = fileURLToPath(new URL('../../dist/bin/reflector.js', import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function reflector(args: string[], cwd: string): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd, timeout: 20_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A user error: exit 2, exactly one line on stderr, no stack trace. */
function assertOneLineUsageError(result: Result, pattern: RegExp): void {
  assert.equal(result.code, 2, `exit code (stderr: ${result.stderr})`);
  const lines = result.stderr.split('\n').filter((line) => line !== '');
  assert.equal(lines.length, 1, `one line on stderr, got: ${result.stderr}`);
  assert.match(lines[0]!, /^reflector: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(result.stderr, /\bat .+:\d+:\d+/, 'no stack trace');
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-cli-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('reflector keygen and fingerprint', () => {
  it('keygen writes a 0600 private key and a .pub, and fingerprint of either repeats its thumbprint', async () => {
    const result = await reflector(['keygen', '--out', 'alice.jwk'], dir);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^wrote alice\.jwk \(private, mode 0600\) and alice\.jwk\.pub$/m);
    const thumbprint = /^thumbprint: ([A-Za-z0-9_-]{43})$/m.exec(result.stdout)?.[1];
    assert.ok(thumbprint, `a thumbprint line in: ${result.stdout}`);

    assert.equal((await stat(path.join(dir, 'alice.jwk'))).mode & 0o777, 0o600);
    const publicJwk = JSON.parse(await readFile(path.join(dir, 'alice.jwk.pub'), 'utf8')) as Record<string, unknown>;
    assert.equal(publicJwk.d, undefined, 'the .pub file holds no private part');
    assert.equal(publicJwk.crv, 'Ed25519');

    for (const file of ['alice.jwk', 'alice.jwk.pub']) {
      const printed = await reflector(['fingerprint', file], dir);
      assert.equal(printed.code, 0, printed.stderr);
      assert.equal(printed.stdout, `${thumbprint}\n`);
    }
  });

  it('keygen refuses to overwrite an existing key without --force', async () => {
    const first = await reflector(['keygen', '--out', 'bob.jwk'], dir);
    assert.equal(first.code, 0, first.stderr);
    const before = await readFile(path.join(dir, 'bob.jwk'), 'utf8');

    assertOneLineUsageError(await reflector(['keygen', '--out', 'bob.jwk'], dir), /bob\.jwk.*already exists/);
    assert.equal(await readFile(path.join(dir, 'bob.jwk'), 'utf8'), before, 'the key was not replaced');

    const forced = await reflector(['keygen', '--out', 'bob.jwk', '--force'], dir);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(await readFile(path.join(dir, 'bob.jwk'), 'utf8'), before);
    assert.equal((await stat(path.join(dir, 'bob.jwk'))).mode & 0o777, 0o600);
  });

  it('fingerprint of a file that is not a JWK exits 2 with one line naming the file', async () => {
    await writeFile(path.join(dir, 'notes.txt'), 'just some text\n');
    assertOneLineUsageError(await reflector(['fingerprint', 'notes.txt'], dir), /notes\.txt: not valid JSON/);
    await writeFile(path.join(dir, 'rsa.json'), '{"kty":"RSA","n":"AQAB","e":"AQAB"}\n');
    assertOneLineUsageError(await reflector(['fingerprint', 'rsa.json'], dir), /rsa\.json: not an Ed25519 JWK/);
    assertOneLineUsageError(await reflector(['fingerprint', 'missing.jwk'], dir), /missing\.jwk: no such file/);
  });
});

describe('reflector usage', () => {
  it('--help lists the commands and the exit codes', async () => {
    const result = await reflector(['--help'], dir);
    assert.equal(result.code, 0);
    for (const command of ['keygen', 'fingerprint', 'server', 'connect', 'quickstart']) {
      assert.match(result.stdout, new RegExp(`^  ${command}\\b`, 'm'), `--help lists ${command}`);
    }
    assert.match(result.stdout, /Exit codes:/);
  });

  it('--version prints the package version', async () => {
    const { version } = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const result = await reflector(['--version'], dir);
    assert.equal(result.code, 0);
    assert.equal(result.stdout.trim(), version);
  });

  it('an unknown flag exits 2 with one line', async () => {
    assertOneLineUsageError(await reflector(['keygen', '--out', 'x.jwk', '--bogus'], dir), /unknown option '--bogus'/);
    assertOneLineUsageError(await reflector(['connect', '--forwrd', '1=smtp'], dir), /unknown option '--forwrd'.*--forward/);
  });

  it('an unknown command exits 2 with one line', async () => {
    assertOneLineUsageError(await reflector(['tunnel'], dir), /unknown command 'tunnel'/);
  });

  it('connect without -L or --stdio is a usage error', async () => {
    const result = await reflector(['connect', 'ws://127.0.0.1:1/tunnel', '--identity', 'alice.jwk'], dir);
    assertOneLineUsageError(result, /nothing to forward.*-L.*--stdio/);
  });

  it('a bad -L names the flag value', async () => {
    const result = await reflector(['connect', 'ws://127.0.0.1:1/tunnel', '--identity', 'alice.jwk', '-L', '99999=smtp'], dir);
    assertOneLineUsageError(result, /^reflector: -L 99999=smtp: port must be 1-65535$/);
  });

  it('server with an invalid config names the file and key', async () => {
    await writeFile(path.join(dir, 'server.yaml'), 'hostKey: host.jwk\nlistne: {}\n');
    const result = await reflector(['server', '--config', 'server.yaml'], dir);
    assertOneLineUsageError(result, /^reflector: server\.yaml: unknown key "listne" \(expected one of: listen,/);
  });
});
