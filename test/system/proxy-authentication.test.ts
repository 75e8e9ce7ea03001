/**
 * `reflector connect` through squid proxies that demand authentication for
 * CONNECT, as corporate networks do: Basic (basic_ncsa_auth, real password
 * check) and NTLM (ntlm_fake_auth: a real Type 1 → 407 challenge → Type 3
 * exchange on one kept-alive connection; any password is accepted). Also the
 * errors: 407 naming the schemes the proxy offers, refused credentials (fatal,
 * no retry), and a CONNECT the proxy refuses.
 *
 * Needs (Debian): squid, openssl. Skipped with a message when missing, failed under CI.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectLocal, digestAll, pump, SeededBytes, startEchoBackend, type Backend } from '../helpers/fixtures.js';
import { sleep } from './harness/child-process.js';
import { connectOnce, NO_PROXY_ENV } from './harness/connect-once.js';
import { SQUID_REQUIREMENTS, startSquid, type RunningProxy } from './harness/http-proxies.js';
import {
  makeReflectorKeys,
  startClientProcess,
  startServerProcess,
  type ClientProcess,
  type ReflectorKeys,
  type ServerProcess,
} from './harness/reflector-processes.js';
import { gate } from './harness/requirements.js';

const requirements = gate('proxy authentication system test (proxy-authentication)', SQUID_REQUIREMENTS);

/**
 * How long a client may take to open its session: the client gives a proxy 15 s per attempt before it
 * names the step that stalled and retries, so this leaves room for one lost attempt on a loaded machine.
 */
const SESSION_TIMEOUT_MS = 45_000;

const BASIC_USER = 'bob';
const BASIC_PASSWORD = 'b0b pass!@:/';

async function echoThrough(port: number, bytes: number, seed: string): Promise<void> {
  const data = new SeededBytes(seed);
  const socket = await connectLocal(port);
  const received = digestAll(socket);
  const sent = await pump(socket, bytes, (n) => data.next(n));
  const echoed = await received;
  socket.destroy();
  assert.equal(echoed.bytes, sent.bytes, `echoed byte count (${seed})`);
  assert.equal(echoed.sha256, sent.sha256, `echoed SHA-256 (${seed})`);
}

async function waitForLog(proxy: RunningProxy, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = await proxy.log();
    if (pattern.test(log)) return log;
    if (Date.now() > deadline) throw new Error(`${pattern} not in the proxy log after ${timeoutMs} ms:\n${log}`);
    await sleep(100);
  }
}

describe('proxy authentication: squid with Basic and NTLM', { skip: requirements.skip, timeout: 180_000 }, () => {
  let dir: string;
  let keys: ReflectorKeys;
  let echo: Backend;
  let server: ServerProcess;
  let basicSquid: RunningProxy;
  let ntlmSquid: RunningProxy;
  let strictSquid: RunningProxy;
  const clients: ClientProcess[] = [];
  const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

  before(async () => {
    requirements.assertAvailable();
    dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-proxy-auth-'));
    keys = await makeReflectorKeys(path.join(dir, 'keys'));
    echo = await startEchoBackend();
    server = await startServerProcess({ keys, services: { echo: echo.target } });
    [basicSquid, ntlmSquid, strictSquid] = await Promise.all([
      startSquid({ auth: { scheme: 'basic', users: { [BASIC_USER]: BASIC_PASSWORD } } }),
      startSquid({ auth: { scheme: 'ntlm' } }),
      startSquid({ auth: { scheme: 'none' }, allowConnectPorts: [443] }),
    ]);
  });

  after(async () => {
    for (const client of clients) await client.stop();
    await Promise.all([basicSquid?.stop(), ntlmSquid?.stop(), strictSquid?.stop()]);
    await server?.stop();
    await echo?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A client through `proxy` (args name it); if no session opens, the failure carries squid's own logs. */
  async function client(proxy: RunningProxy, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<ClientProcess> {
    let started: ClientProcess;
    try {
      started = await startClientProcess({
        keys,
        url: server.url,
        forwards: [{ service: 'echo' }],
        args,
        env: { ...NO_PROXY_ENV, ...env },
        sessionTimeoutMs: SESSION_TIMEOUT_MS,
      });
    } catch (error) {
      throw new Error(`${(error as Error).message}\n--- squid ${proxy.url} ---\n${await proxy.diagnostics()}`, { cause: error });
    }
    clients.push(started);
    return started;
  }

  const withCredentials = (proxy: RunningProxy, user: string, password: string): string =>
    `http://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${proxy.port}`;

  it('Basic: the user and password in the proxy URL open the tunnel; bytes arrive intact', async () => {
    const started = await client(basicSquid, ['--proxy', withCredentials(basicSquid, BASIC_USER, BASIC_PASSWORD)]);
    await echoThrough(started.ports.echo!, 1024 * 1024, 'basic');
    await started.stop(); // squid logs a tunnel when it closes
    await waitForLog(basicSquid, new RegExp(`TCP_TUNNEL/200 \\d+ CONNECT 127\\.0\\.0\\.1:${server.address.port} ${BASIC_USER} `));
  });

  it('Basic: --proxy-auth basic with REFLECTOR_PROXY_PASSWORD works without credentials in the URL', async () => {
    const started = await client(basicSquid, ['--proxy', basicSquid.url, '--proxy-auth', 'basic', '--proxy-user', BASIC_USER], {
      REFLECTOR_PROXY_PASSWORD: BASIC_PASSWORD,
    });
    await echoThrough(started.ports.echo!, 64 * 1024, 'basic-env');
  });

  it('Basic: a wrong password is refused in one sentence, at once, without retrying', async () => {
    const startedAt = Date.now();
    // --max-retries 0 retries forever: only a fatal error ends the process.
    const attempt = await connectOnce({ keys, url: server.url, args: ['--proxy', withCredentials(basicSquid, BASIC_USER, 'wrong')], maxRetries: 0 });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.equal(attempt.message, `reflector: proxy ${basicSquid.url} refused the credentials of ${BASIC_USER} (Basic)`);
    assert.ok(Date.now() - startedAt < 15_000, 'gave up at once');
    assert.ok(!attempt.stderr.includes('wrong'), 'the password never appears in the output');
  });

  it('Basic: without credentials, the 407 error names the scheme the proxy offers', async () => {
    const attempt = await connectOnce({ keys, url: server.url, args: ['--proxy', basicSquid.url], maxRetries: 0 });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.equal(
      attempt.message,
      `reflector: proxy ${basicSquid.url} requires authentication (it offers: Basic); put the user and password in the proxy URL (http://USER:PASSWORD@host:port) or pass --proxy-auth basic --proxy-user USER`,
    );
  });

  it('NTLM: Type 1, the 407 challenge and Type 3 on one connection open the tunnel; bytes arrive intact', async () => {
    const started = await client(ntlmSquid, ['--proxy', ntlmSquid.url, '--proxy-auth', 'ntlm', '--proxy-user', 'CORP\\alice'], {
      REFLECTOR_PROXY_PASSWORD: 'anything',
    });
    await echoThrough(started.ports.echo!, 1024 * 1024, 'ntlm');
    await started.stop();
    // squid logs the challenge (407) and then the tunnel as the NTLM user.
    const log = await waitForLog(ntlmSquid, new RegExp(`TCP_TUNNEL/200 \\d+ CONNECT 127\\.0\\.0\\.1:${server.address.port} \\S*alice `));
    assert.match(log, /TCP_DENIED\/407 \d+ CONNECT /, 'the Type 1 got a challenge first');
  });

  it('NTLM: the password can come from --proxy-password-file', async () => {
    const file = path.join(dir, 'proxy-password');
    await writeFile(file, 'from-a-file\n', { mode: 0o600 });
    const started = await client(ntlmSquid, ['--proxy', ntlmSquid.url, '--proxy-auth', 'ntlm', '--proxy-user', 'alice', '--proxy-domain', 'CORP', '--proxy-password-file', file]);
    await echoThrough(started.ports.echo!, 64 * 1024, 'ntlm-file');
  });

  it('NTLM: without credentials, the 407 error names NTLM and the flags to pass', async () => {
    const attempt = await connectOnce({ keys, url: server.url, args: ['--proxy', ntlmSquid.url], maxRetries: 0 });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.match(
      attempt.message,
      new RegExp(`^reflector: proxy ${escape(ntlmSquid.url)} requires authentication \\(it offers: NTLM\\); pass --proxy-auth ntlm --proxy-user DOMAIN\\\\USER`),
    );
  });

  it('NTLM: Basic credentials are refused with the schemes the proxy does accept', async () => {
    const attempt = await connectOnce({ keys, url: server.url, args: ['--proxy', withCredentials(ntlmSquid, 'alice', 'pw')], maxRetries: 0 });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.equal(attempt.message, `reflector: proxy ${ntlmSquid.url} does not accept Basic authentication (it offers: NTLM); pass --proxy-auth ntlm`);
  });

  it('NTLM without a password anywhere is a usage error before any connection', async () => {
    const attempt = await connectOnce({ keys, url: server.url, args: ['--proxy', ntlmSquid.url, '--proxy-auth', 'ntlm', '--proxy-user', 'alice'] });
    assert.equal(attempt.code, 2, attempt.stderr);
    assert.match(attempt.message, /^reflector: proxyAuth: missing the proxy password \(--proxy-password-file FILE, REFLECTOR_PROXY_PASSWORD, or the password in the proxy URL\)$/);
  });

  it('a CONNECT the proxy refuses is one sentence with its status (and is retried)', async () => {
    const attempt = await connectOnce({ keys, url: server.url, args: ['--proxy', strictSquid.url] });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.equal(
      attempt.message,
      `reflector: ${server.url}: giving up after 1 attempts: proxy ${strictSquid.url} refused CONNECT to 127.0.0.1:${server.address.port}: 403 Forbidden`,
    );
  });
});
