/**
 * The client's TLS and proxy settings in shared/client-config.ts and
 * shared/proxy-config.ts: where the proxy comes from (flag, file,
 * environment), how credentials are gathered, and the one-sentence errors.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  loadClientConfig,
  mergeClientInputs,
  parseClientInput,
  resolveClientOptions,
  type ClientInput,
} from '../../shared/client-config.js';
import { parseProxyUrl, proxyFromEnv } from '../../shared/proxy-config.js';
import { ConfigError } from '../../shared/errors.js';

const BASE: ClientInput = { url: 'wss://gw.example.com/tunnel', identity: '/k/alice.jwk' };
const resolve = (input: ClientInput, env: NodeJS.ProcessEnv = {}) => resolveClientOptions({ ...BASE, ...input }, 'client.yaml', env);

function throwsConfig(run: () => unknown, message: string): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `a ConfigError, got ${String(error)}`);
    assert.equal(error.message, message);
    return true;
  });
}

describe('client proxy settings', () => {
  it('connects directly when nothing names a proxy', () => {
    const options = resolve({});
    assert.equal(options.proxy, undefined);
    assert.equal(options.proxyAuth, undefined);
  });

  it('normalises the proxy URL, adding http:// to a bare host:port', () => {
    assert.equal(resolve({ proxy: 'http://proxy.corp:3128' }).proxy, 'http://proxy.corp:3128/');
    assert.equal(parseClientInput({ proxy: 'proxy.corp:3128' }, '').proxy, 'http://proxy.corp:3128/');
  });

  it('refuses what is not an http:// proxy, naming the flag and hiding the password', () => {
    const labels = { labels: { proxy: '--proxy' } };
    throwsConfig(
      () => parseClientInput({ proxy: 'https://u:secret@proxy:3128' }, '', labels),
      '--proxy: expected an http:// proxy URL or "none", got "https://u:***@proxy:3128" (https:// proxies are not supported; the tunnel inside an http:// proxy is still TLS)',
    );
    throwsConfig(
      () => parseClientInput({ proxy: 'socks5://proxy:1080' }, '', labels),
      '--proxy: expected an http:// proxy URL or "none", got "socks5://proxy:1080" (socks5:// proxies are not supported, only http://)',
    );
    throwsConfig(
      () => parseClientInput({ proxy: 'http://proxy:3128/path' }, '', labels),
      '--proxy: expected an http:// proxy URL or "none", got "http://proxy:3128/path" (a proxy URL has no path)',
    );
    assert.ok(typeof parseProxyUrl('http://[::1]:3128') !== 'string');
  });

  it('takes https_proxy, then HTTPS_PROXY, then all_proxy for wss://', () => {
    assert.deepEqual(proxyFromEnv('wss://gw/t', { https_proxy: 'http://a:1', HTTPS_PROXY: 'http://b:1' }), { variable: 'https_proxy', value: 'http://a:1' });
    assert.deepEqual(proxyFromEnv('wss://gw/t', { HTTPS_PROXY: 'http://b:1', ALL_PROXY: 'http://c:1' }), { variable: 'HTTPS_PROXY', value: 'http://b:1' });
    assert.deepEqual(proxyFromEnv('wss://gw/t', { https_proxy: ' ', all_proxy: 'http://c:1' }), { variable: 'all_proxy', value: 'http://c:1' });
    assert.equal(resolve({}, { HTTPS_PROXY: 'proxy.corp:8080' }).proxy, 'http://proxy.corp:8080/');
  });

  it('takes http_proxy for ws://, never HTTP_PROXY (a CGI request can set that one)', () => {
    assert.deepEqual(proxyFromEnv('ws://gw/t', { http_proxy: 'http://a:1' }), { variable: 'http_proxy', value: 'http://a:1' });
    assert.equal(proxyFromEnv('ws://gw/t', { HTTP_PROXY: 'http://a:1', HTTPS_PROXY: 'http://b:1' }), undefined);
  });

  it('lets --proxy override the environment, and "none" turn it off', () => {
    const env = { HTTPS_PROXY: 'http://env:1' };
    assert.equal(resolve({ proxy: 'http://flag:2' }, env).proxy, 'http://flag:2/');
    assert.equal(resolve({ proxy: 'none' }, env).proxy, undefined);
  });

  it('names the variable when the environment holds a bad proxy', () => {
    throwsConfig(
      () => resolve({}, { https_proxy: 'socks5://user:pw@proxy:1080' }),
      'https_proxy: expected an http:// proxy URL, got "socks5://user:***@proxy:1080" (socks5:// proxies are not supported, only http://)',
    );
  });

  it('takes noProxy from the config, else no_proxy, else NO_PROXY', () => {
    assert.equal(resolve({ noProxy: 'a.corp' }, { no_proxy: 'b.corp' }).noProxy, 'a.corp');
    assert.equal(resolve({}, { no_proxy: 'b.corp', NO_PROXY: 'c.corp' }).noProxy, 'b.corp');
    assert.equal(resolve({}, { NO_PROXY: 'c.corp' }).noProxy, 'c.corp');
  });
});

describe('client proxy credentials', () => {
  it('leaves Basic credentials in the proxy URL to the dialer', () => {
    const options = resolve({ proxy: 'http://bob:pw@proxy:3128' });
    assert.equal(options.proxy, 'http://bob:pw@proxy:3128/');
    assert.equal(options.proxyAuth, undefined);
  });

  it('NTLM: splits DOMAIN\\user and takes the password from REFLECTOR_PROXY_PASSWORD', () => {
    const options = resolve({ proxy: 'http://proxy:3128', proxyAuth: { scheme: 'ntlm', user: 'CORP\\alice' } }, { REFLECTOR_PROXY_PASSWORD: 's3cret' });
    assert.deepEqual(options.proxyAuth, { scheme: 'ntlm', user: 'alice', domain: 'CORP', password: 's3cret' });
  });

  it('NTLM: an explicit domain wins over the DOMAIN\\ prefix; user and domain may come from the environment', () => {
    const explicit = resolve({ proxyAuth: { scheme: 'ntlm', user: 'OLD\\alice', domain: 'NEW' } }, { REFLECTOR_PROXY_PASSWORD: 'x' });
    assert.equal(explicit.proxyAuth?.domain, 'NEW');
    const fromEnv = resolve({ proxyAuth: { scheme: 'ntlm' } }, { REFLECTOR_PROXY_USER: 'bob', REFLECTOR_PROXY_DOMAIN: 'CORP', REFLECTOR_PROXY_PASSWORD: 'x' });
    assert.deepEqual(fromEnv.proxyAuth, { scheme: 'ntlm', user: 'bob', domain: 'CORP', password: 'x' });
  });

  it('NTLM: user and password may come from the proxy URL (as curl --proxy-ntlm does)', () => {
    const options = resolve({ proxy: `http://${encodeURIComponent('CORP\\alice')}:${encodeURIComponent('p@ss')}@proxy:3128`, proxyAuth: { scheme: 'ntlm' } });
    assert.deepEqual(options.proxyAuth, { scheme: 'ntlm', user: 'alice', domain: 'CORP', password: 'p@ss' });
  });

  it('a password file is kept as a path, to be read at each connect', () => {
    const options = resolve({ proxyAuth: { scheme: 'basic', user: 'bob', passwordFile: '/run/secrets/proxy' } }, { REFLECTOR_PROXY_PASSWORD: 'ignored' });
    assert.deepEqual(options.proxyAuth, { scheme: 'basic', user: 'bob', domain: '', passwordFile: '/run/secrets/proxy' });
  });

  it('says what is missing in one sentence', () => {
    throwsConfig(
      () => resolve({ proxyAuth: { scheme: 'ntlm' } }),
      'client.yaml: proxyAuth: missing the proxy user (--proxy-user [DOMAIN\\]USER, REFLECTOR_PROXY_USER, or the user in the proxy URL)',
    );
    throwsConfig(
      () => resolve({ proxyAuth: { scheme: 'ntlm', user: 'alice' } }),
      'client.yaml: proxyAuth: missing the proxy password (--proxy-password-file FILE, REFLECTOR_PROXY_PASSWORD, or the password in the proxy URL)',
    );
    throwsConfig(
      () => resolve({ proxyAuth: { user: 'alice' } }),
      'client.yaml: proxyAuth: missing the scheme (--proxy-auth basic|ntlm, or "scheme" in the config file)',
    );
    throwsConfig(() => parseClientInput({ proxyAuth: { scheme: 'kerberos' } }, 'client.yaml'), 'client.yaml: proxyAuth.scheme: expected "basic" or "ntlm", got "kerberos"');
    throwsConfig(
      () => parseClientInput({ proxyAuth: { password: 'x' } }, 'client.yaml'),
      'client.yaml: proxyAuth: unknown key "password" (expected one of: scheme, user, domain, passwordFile)',
    );
  });

  it('merges proxyAuth key by key: flags override the file', () => {
    const merged = mergeClientInputs({ proxyAuth: { scheme: 'ntlm', user: 'alice', domain: 'CORP' } }, { proxyAuth: { user: 'bob', domain: undefined } });
    assert.deepEqual(merged.proxyAuth, { scheme: 'ntlm', user: 'bob', domain: 'CORP' });
  });
});

describe('client TLS settings', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-proxy-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads ca, insecure, proxy, noProxy and proxyAuth from client.yaml, with paths relative to the file', async () => {
    const file = path.join(dir, 'client.yaml');
    await writeFile(
      file,
      [
        'url: wss://gw.example.com/gw/tunnel',
        'identity: alice.jwk',
        'ca: certs/gateway-ca.pem',
        'insecure: false',
        'proxy: http://proxy.corp:3128',
        'noProxy: .corp.example, 10.0.0.0/8',
        'proxyAuth: { scheme: ntlm, user: alice, domain: CORP, passwordFile: proxy-password }',
        '',
      ].join('\n'),
    );
    const options = resolveClientOptions(await loadClientConfig(file), file, {});
    assert.equal(options.url, 'wss://gw.example.com/gw/tunnel');
    assert.equal(options.ca, path.join(dir, 'certs/gateway-ca.pem'));
    assert.equal(options.insecure, undefined);
    assert.equal(options.proxy, 'http://proxy.corp:3128/');
    assert.equal(options.noProxy, '.corp.example, 10.0.0.0/8');
    assert.deepEqual(options.proxyAuth, { scheme: 'ntlm', user: 'alice', domain: 'CORP', passwordFile: path.join(dir, 'proxy-password') });
  });

  it('keeps insecure only when true, and refuses anything but a boolean', () => {
    assert.equal(resolve({ insecure: true }).insecure, true);
    throwsConfig(() => parseClientInput({ insecure: 'yes' }, 'client.yaml'), 'client.yaml: insecure: expected true or false, got "yes"');
  });
});
