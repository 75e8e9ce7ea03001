import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConnectError } from '../../client/connect-error.js';
import { bypassesProxy, checkDialFiles, cleartextUpgradeWarning, describeTlsError, dial, proxyCredentials, proxyFor } from '../../client/dialer.js';
import { ConfigError } from '../../shared/errors.js';
import { unusedPort } from '../helpers/fixtures.js';

describe('bypassesProxy (NO_PROXY)', () => {
  const cases: Array<[noProxy: string | undefined, host: string, port: number, bypass: boolean]> = [
    [undefined, 'gw.example.com', 443, false],
    ['', 'gw.example.com', 443, false],
    ['*', 'gw.example.com', 443, true],
    ['*', '10.1.2.3', 8443, true],
    // a name matches itself and its subdomains, with or without a leading dot or "*."
    ['example.com', 'example.com', 443, true],
    ['example.com', 'gw.example.com', 443, true],
    ['.example.com', 'example.com', 443, true],
    ['.example.com', 'gw.example.com', 443, true],
    ['*.example.com', 'gw.example.com', 443, true],
    ['example.com', 'badexample.com', 443, false],
    ['example.com', 'example.com.evil.net', 443, false],
    ['gw.example.com', 'example.com', 443, false],
    // case and a trailing dot do not matter
    ['EXAMPLE.com', 'Gw.Example.COM.', 443, true],
    // lists: commas and/or spaces
    ['localhost, internal.corp  ,example.com', 'gw.example.com', 443, true],
    ['localhost internal.corp', 'x.internal.corp', 443, true],
    ['localhost,,', 'gw.example.com', 443, false],
    // IP addresses and CIDRs; names are never resolved
    ['127.0.0.1', '127.0.0.1', 443, true],
    ['127.0.0.1', '127.0.0.2', 443, false],
    ['10.0.0.0/8', '10.200.3.4', 443, true],
    ['10.0.0.0/8', '11.0.0.1', 443, false],
    ['10.0.0.0/8', 'ten.example.com', 443, false],
    ['::1', '[::1]', 443, true],
    ['::1', '::1', 443, true],
    ['fd00::/8', 'fd12:3456::1', 443, true],
    ['fd00::/8', '10.0.0.1', 443, false],
    ['localhost', '127.0.0.1', 443, false],
    ['10.0.0.0/99', '10.0.0.1', 443, false],
    // ports: host:port matches that port only
    ['example.com:8443', 'gw.example.com', 8443, true],
    ['example.com:8443', 'gw.example.com', 443, false],
    ['127.0.0.1:443', '127.0.0.1', 443, true],
    ['[::1]:443', '::1', 443, true],
    ['[::1]:443', '::1', 8443, false],
  ];
  for (const [noProxy, host, port, bypass] of cases) {
    it(`${JSON.stringify(noProxy)} ${bypass ? 'exempts' : 'does not exempt'} ${host}:${port}`, () => {
      assert.equal(bypassesProxy(host, port, noProxy), bypass);
    });
  }
});

describe('proxyFor', () => {
  it('uses the proxy unless NO_PROXY exempts the URL, counting the default port of the scheme', () => {
    const proxy = 'http://proxy.corp:3128/';
    assert.equal(proxyFor(new URL('wss://gw.example.com/tunnel'), { proxy })?.href, proxy);
    assert.equal(proxyFor(new URL('wss://gw.example.com/tunnel'), { proxy, noProxy: 'example.com' }), undefined);
    assert.equal(proxyFor(new URL('wss://gw.example.com/tunnel'), { proxy, noProxy: 'example.com:443' }), undefined);
    assert.equal(proxyFor(new URL('ws://gw.example.com/tunnel'), { proxy, noProxy: 'example.com:443' })?.href, proxy);
    assert.equal(proxyFor(new URL('ws://[::1]:8080/tunnel'), { proxy, noProxy: '::1' }), undefined);
  });

  it('goes direct without a proxy', () => {
    assert.equal(proxyFor(new URL('wss://gw.example.com/tunnel'), {}), undefined);
  });
});

describe('proxyCredentials', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-dialer-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('takes Basic credentials from the proxy URL, percent-decoded', async () => {
    const proxy = new URL(`http://${encodeURIComponent('bob@corp')}:${encodeURIComponent('p:ss w/rd')}@proxy:3128`);
    assert.deepEqual(await proxyCredentials(proxy, undefined), { scheme: 'basic', user: 'bob@corp', password: 'p:ss w/rd' });
  });

  it('has none for a URL without a user', async () => {
    assert.equal(await proxyCredentials(new URL('http://proxy:3128'), undefined), undefined);
  });

  it('reads the password file at each dial (first line only), for NTLM and Basic', async () => {
    const file = path.join(dir, 'password');
    await writeFile(file, 'first\r\nsecond\n');
    const proxy = new URL('http://proxy:3128');
    assert.deepEqual(await proxyCredentials(proxy, { scheme: 'ntlm', user: 'alice', domain: 'CORP', passwordFile: file }), {
      scheme: 'ntlm',
      user: 'alice',
      domain: 'CORP',
      password: 'first',
    });
    await writeFile(file, 'changed\n');
    assert.deepEqual(await proxyCredentials(proxy, { scheme: 'basic', user: 'bob', domain: '', passwordFile: file }), {
      scheme: 'basic',
      user: 'bob',
      password: 'changed',
    });
  });

  it('uses a configured password when there is no file', async () => {
    assert.deepEqual(await proxyCredentials(new URL('http://proxy:3128'), { scheme: 'ntlm', user: 'a', domain: 'D', password: 'pw' }), {
      scheme: 'ntlm',
      user: 'a',
      domain: 'D',
      password: 'pw',
    });
  });

  it('names an unreadable or empty password file', async () => {
    const missing = path.join(dir, 'missing');
    await assert.rejects(checkDialFiles({ proxyAuth: { scheme: 'ntlm', user: 'a', domain: '', passwordFile: missing } }), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `--proxy-password-file ${missing}: cannot read the file (ENOENT)`);
      return true;
    });
    const empty = path.join(dir, 'empty');
    await writeFile(empty, '\n');
    await assert.rejects(checkDialFiles({ proxyAuth: { scheme: 'ntlm', user: 'a', domain: '', passwordFile: empty } }), {
      message: `--proxy-password-file ${empty}: the first line (the password) is empty`,
    });
  });

  it('checks the --ca file, unless --insecure makes it moot', async () => {
    const notPem = path.join(dir, 'not.pem');
    await writeFile(notPem, 'hello\n');
    await assert.rejects(checkDialFiles({ ca: notPem }), { message: `--ca ${notPem}: expected PEM certificates ("-----BEGIN CERTIFICATE-----")` });
    const broken = path.join(dir, 'broken.pem');
    await writeFile(broken, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    await assert.rejects(checkDialFiles({ ca: broken }), /^ConfigError: --ca .*broken\.pem: certificate 1 of 1 is not a valid PEM certificate/);
    await assert.rejects(checkDialFiles({ ca: path.join(dir, 'nope.pem') }), /cannot read the file \(ENOENT\)$/);
    await checkDialFiles({ ca: notPem, insecure: true });
  });
});

describe('describeTlsError', () => {
  const error = (code: string, message = code) => Object.assign(new Error(message), { code });
  it('says the certificate is not trusted, why, and what to pass', () => {
    assert.equal(
      describeTlsError(error('DEPTH_ZERO_SELF_SIGNED_CERT'), 'gw', undefined),
      'TLS certificate not trusted (self-signed); use --ca FILE with the certificate that signed it',
    );
    assert.equal(
      describeTlsError(error('UNABLE_TO_VERIFY_LEAF_SIGNATURE'), 'gw', '/etc/ca.pem'),
      'TLS certificate not trusted (issued by an unknown certificate authority) (it is not signed by a certificate in /etc/ca.pem)',
    );
    assert.equal(describeTlsError(error('CERT_HAS_EXPIRED'), 'gw', undefined), 'TLS certificate not trusted (expired); use --ca FILE with the certificate that signed it');
  });

  it('names the host and the names the certificate has when they differ', () => {
    const mismatch = error('ERR_TLS_CERT_ALTNAME_INVALID', "Hostname/IP does not match certificate's altnames: IP: 10.0.0.1 is not in the cert's list: 127.0.0.1");
    assert.equal(describeTlsError(mismatch, '10.0.0.1', undefined), 'TLS certificate is not valid for 10.0.0.1 (it names 127.0.0.1)');
    const byName = error(
      'ERR_TLS_CERT_ALTNAME_INVALID',
      "Hostname/IP does not match certificate's altnames: Host: gw.example.com. is not in the cert's altnames: DNS:other.example.com",
    );
    assert.equal(describeTlsError(byName, 'gw.example.com', undefined), 'TLS certificate is not valid for gw.example.com (it names DNS:other.example.com)');
  });

  it('recognises a plain-HTTP server behind a wss:// URL', () => {
    assert.match(describeTlsError(error('ERR_SSL_WRONG_VERSION_NUMBER'), 'gw', undefined), /does not speak TLS/);
  });
});

describe('dial', () => {
  it('connects directly when no proxy applies, and reports a refused connection in one sentence', async () => {
    const port = await unusedPort();
    await assert.rejects(dial(new URL(`ws://127.0.0.1:${port}/tunnel`), { timeoutMs: 2_000 }), (error: unknown) => {
      assert.ok(error instanceof ConnectError);
      assert.equal(error.message, `ws://127.0.0.1:${port}/tunnel: connection refused (is the server running?)`);
      return true;
    });
  });

  it('goes through the proxy unless NO_PROXY exempts the host', async () => {
    const target = net.createServer((socket) => socket.end('direct'));
    await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
    const targetPort = (target.address() as net.AddressInfo).port;
    const seen: string[] = [];
    const proxy = net.createServer((socket) => {
      socket.once('data', (data) => {
        seen.push(data.toString().split('\r\n')[0]!);
        socket.end('HTTP/1.1 200 OK\r\n\r\nvia-proxy');
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxyUrl = `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
    const read = (socket: net.Socket) =>
      new Promise<string>((resolve) => {
        let text = '';
        socket.on('data', (chunk) => (text += chunk));
        socket.on('end', () => resolve(text));
        socket.resume();
      });
    try {
      const url = new URL(`ws://127.0.0.1:${targetPort}/tunnel`);
      assert.equal(await read(await dial(url, { timeoutMs: 2_000, proxy: proxyUrl })), 'via-proxy');
      assert.deepEqual(seen, [`CONNECT 127.0.0.1:${targetPort} HTTP/1.1`]);
      assert.equal(await read(await dial(url, { timeoutMs: 2_000, proxy: proxyUrl, noProxy: '127.0.0.0/8' })), 'direct');
      assert.equal(seen.length, 1);
    } finally {
      target.close();
      proxy.close();
    }
  });
});

describe('cleartextUpgradeWarning', () => {
  it('stays quiet for wss:// and for ws:// to this machine', () => {
    for (const url of ['wss://gw.example.com/tunnel', 'ws://127.0.0.1:8080/tunnel', 'ws://127.8.9.10/tunnel', 'ws://localhost:8080/tunnel', 'ws://[::1]:8080/tunnel']) {
      assert.equal(cleartextUpgradeWarning(new URL(url)), undefined, url);
    }
  });

  it('names the host and what crosses in clear for ws:// to anywhere else', () => {
    for (const url of ['ws://gw.example.com/tunnel', 'ws://10.0.0.5:8080/tunnel', 'ws://[2001:db8::1]/tunnel', 'ws://128.0.0.1/tunnel']) {
      const warning = cleartextUpgradeWarning(new URL(url));
      assert.ok(warning?.startsWith(`${new URL(url).host} is reached over ws://`), `${url}: ${warning}`);
      assert.match(warning!, /use wss:\/\//);
    }
  });
});
