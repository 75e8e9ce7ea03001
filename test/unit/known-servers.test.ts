import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkKnownServer, checkPinnedServer } from '../../client/known-servers.js';
import { CloseCode } from '../../shared/constants.js';
import { ConfigError, ErrorCode, IdentityError } from '../../shared/errors.js';

const OLD = 'sVjIm3wQmJNZJFo1xExNcA2lBtnj39OLpw2A0U9dWnw';
const NEW = 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k';

function mismatch(...fragments: string[]) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof IdentityError, `expected IdentityError, got ${String(error)}`);
    assert.equal(error.code, ErrorCode.SERVER_KEY_MISMATCH);
    assert.equal(error.closeCode, CloseCode.SERVER_IDENTITY_REJECTED);
    for (const fragment of fragments) assert.ok(error.message.includes(fragment), `message lacks ${fragment}: ${error.message}`);
    return true;
  };
}

describe('checkKnownServer', () => {
  let dir: string;
  let counter = 0;
  const fresh = (): string => join(dir, `case-${++counter}`, 'known_servers');
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reflector-known-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('records a first-seen server, creating the file 0600 in a 0700 directory', async () => {
    const file = fresh();
    assert.equal(await checkKnownServer(file, 'mail.example.com:443', OLD), 'added');
    assert.equal(await readFile(file, 'utf8'), `mail.example.com:443 ${OLD}\n`);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(join(file, '..'))).mode & 0o777, 0o700);
  });

  it('answers known for a server recorded with the same thumbprint, without rewriting the file', async () => {
    const file = fresh();
    await checkKnownServer(file, 'mail.example.com:443', OLD);
    assert.equal(await checkKnownServer(file, 'mail.example.com:443', OLD), 'known');
    assert.equal(await checkKnownServer(file, 'MAIL.example.com:443', OLD), 'known');
    assert.equal(await readFile(file, 'utf8'), `mail.example.com:443 ${OLD}\n`);
  });

  it('keeps servers on other ports apart', async () => {
    const file = fresh();
    await checkKnownServer(file, 'mail.example.com:443', OLD);
    assert.equal(await checkKnownServer(file, 'mail.example.com:8443', NEW), 'added');
    assert.equal(await readFile(file, 'utf8'), `mail.example.com:443 ${OLD}\nmail.example.com:8443 ${NEW}\n`);
  });

  it('refuses a changed key, showing both thumbprints, the file and the line to delete', async () => {
    const file = fresh();
    await checkKnownServer(file, 'news.example.com:443', NEW);
    await checkKnownServer(file, 'mail.example.com:443', OLD);
    await assert.rejects(
      checkKnownServer(file, 'mail.example.com:443', NEW),
      mismatch('SERVER IDENTIFICATION HAS CHANGED', 'mail.example.com:443', OLD, NEW, `${file} line 2`, 'delete line 2'),
    );
    assert.equal((await readFile(file, 'utf8')).split('\n').length, 3, 'the file is unchanged');
  });

  it('ignores comments and blank lines, and counts them in line numbers', async () => {
    const file = fresh();
    await checkKnownServer(file, 'x.example:1', OLD); // creates the directory
    await writeFile(file, `# servers I trust\n\n  mail.example.com:443   ${OLD}  \n`);
    assert.equal(await checkKnownServer(file, 'mail.example.com:443', OLD), 'known');
    await assert.rejects(checkKnownServer(file, 'mail.example.com:443', NEW), mismatch('line 3'));
  });

  it('accepts any of several lines for one server, as ssh does during a key rollover', async () => {
    const file = fresh();
    await checkKnownServer(file, 'x.example:1', OLD);
    await writeFile(file, `mail.example.com:443 ${OLD}\nmail.example.com:443 ${NEW}\n`);
    assert.equal(await checkKnownServer(file, 'mail.example.com:443', NEW), 'known');
  });

  it('appends on a new line when the file lacks its final newline', async () => {
    const file = fresh();
    await checkKnownServer(file, 'x.example:1', OLD);
    await writeFile(file, `mail.example.com:443 ${OLD}`);
    assert.equal(await checkKnownServer(file, 'news.example.com:443', NEW), 'added');
    assert.equal(await readFile(file, 'utf8'), `mail.example.com:443 ${OLD}\nnews.example.com:443 ${NEW}\n`);
  });

  it('refuses a damaged line instead of silently trusting the next key it sees', async () => {
    const file = fresh();
    await checkKnownServer(file, 'x.example:1', OLD);
    await writeFile(file, `mail.example.com:443 ${OLD.slice(0, 20)}\n`);
    await assert.rejects(checkKnownServer(file, 'mail.example.com:443', NEW), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.code, ErrorCode.CONFIG_INVALID);
      assert.equal(error.closeCode, CloseCode.INTERNAL_ERROR);
      assert.match(error.message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:1: expected "<host:port> <thumbprint>"`));
      return true;
    });
  });

  it('refuses a host:port that could not be written as one line', async () => {
    const file = fresh();
    for (const hostPort of ['mail.example.com', 'evil.example:443 x\nmail.example.com:443', 'a#b:1']) {
      await assert.rejects(checkKnownServer(file, hostPort, OLD), (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(error.code, ErrorCode.CONFIG_INVALID);
        assert.equal(error.closeCode, CloseCode.INTERNAL_ERROR);
        return true;
      });
    }
  });

  it('records an IPv6 literal with its port', async () => {
    const file = fresh();
    assert.equal(await checkKnownServer(file, '[::1]:8443', OLD), 'added');
    assert.equal(await checkKnownServer(file, '[::1]:8443', OLD), 'known');
  });
});

describe('checkPinnedServer', () => {
  it('accepts the pinned thumbprint', () => {
    checkPinnedServer(OLD, OLD, 'mail.example.com:443');
  });

  it('refuses another thumbprint, showing both', () => {
    assert.throws(() => checkPinnedServer(OLD, NEW, 'mail.example.com:443'), mismatch('mail.example.com:443', `presented host key ${NEW}`, `pinned key is ${OLD}`));
  });

  it('compares whole thumbprints, never a prefix', () => {
    assert.throws(() => checkPinnedServer(OLD.slice(0, 16), OLD, 'mail.example.com:443'), mismatch());
    assert.throws(() => checkPinnedServer(OLD, `${OLD}x`, 'mail.example.com:443'), mismatch());
  });
});
