/**
 * A real deployment's path, with real programs: `reflector connect` →
 * tinyproxy (HTTP CONNECT) → nginx running deploy/nginx/reflector.conf (TLS
 * from a test CA, the tunnel served under /gw/tunnel, a required gateway
 * header) → `reflector server` (trustProxy: loopback) → a TCP echo backend.
 *
 * tinyproxy opens its connections from 127.0.0.9, so nginx sees the client at
 * 127.0.0.9 while the gateway's TCP peer is nginx at 127.0.0.1: the audit log
 * can only show 127.0.0.9 by reading X-Forwarded-For.
 *
 * Needs (Debian): nginx, tinyproxy, openssl. Skipped with a message when they
 * are missing, failed under CI.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectLocal, digestAll, pump, SeededBytes, startEchoBackend, type Backend } from '../helpers/fixtures.js';
import { freePort, sleep } from './harness/child-process.js';
import { connectOnce, NO_PROXY_ENV } from './harness/connect-once.js';
import { startTinyproxy, TINYPROXY_REQUIREMENTS, type RunningProxy } from './harness/http-proxies.js';
import { NGINX_REQUIREMENTS, startReflectorNginx, type ReflectorNginx } from './harness/nginx.js';
import {
  makeReflectorKeys,
  parseLogLine,
  startClientProcess,
  startServerProcess,
  type ClientProcess,
  type ReflectorKeys,
  type ServerProcess,
} from './harness/reflector-processes.js';
import { gate } from './harness/requirements.js';
import { makeTestCa, OPENSSL_REQUIREMENTS, type TestCa } from './harness/tls-ca.js';

const requirements = gate('nginx + CONNECT proxy system test (tunnel-through-nginx-and-connect-proxy)', [
  ...NGINX_REQUIREMENTS,
  ...TINYPROXY_REQUIREMENTS,
  ...OPENSSL_REQUIREMENTS,
]);

const TOKEN = { name: 'X-Gateway-Token', value: 'gw-secret-7f3a' };
const TOKEN_FLAG = ['--header', `${TOKEN.name}: ${TOKEN.value}`];
/** The address tinyproxy connects from: what nginx sees as the client. */
const CLIENT_EGRESS = '127.0.0.9';

/** Sends `bytes` of seeded data through a local -L port to the echo service and checks the echo's SHA-256. */
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

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function httpsStatus(url: string, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    readFile(ca).then((pem) => {
      https
        .get(url, { ca: pem }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        })
        .on('error', reject);
    }, reject);
  });
}

describe('tunnel through a CONNECT proxy and nginx (deploy/nginx/reflector.conf)', { skip: requirements.skip, timeout: 180_000 }, () => {
  let dir: string;
  let ca: TestCa;
  let keys: ReflectorKeys;
  let echo: Backend;
  let server: ServerProcess;
  let nginx: ReflectorNginx;
  let selfSigned: ReflectorNginx;
  let tinyproxy: RunningProxy;
  const clients: ClientProcess[] = [];

  before(async () => {
    requirements.assertAvailable();
    dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-nginx-proxy-'));
    ca = await makeTestCa(dir);
    keys = await makeReflectorKeys(path.join(dir, 'keys'));
    echo = await startEchoBackend();
    server = await startServerProcess({ keys, services: { echo: echo.target }, trustProxy: 'loopback' });
    nginx = await startReflectorNginx({
      tls: { cert: ca.cert, key: ca.key },
      upstreams: [server.address.port],
      publicPath: '/gw/tunnel',
      gatewayPath: '/tunnel',
      requireHeader: TOKEN,
    });
    selfSigned = await startReflectorNginx({ tls: { cert: ca.selfSignedCert, key: ca.selfSignedKey }, upstreams: [server.address.port] });
    tinyproxy = await startTinyproxy({ bindOutgoing: CLIENT_EGRESS });
  });

  after(async () => {
    for (const client of clients) await client.stop();
    await tinyproxy?.stop();
    await selfSigned?.stop();
    await nginx?.stop();
    await server?.stop();
    await echo?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function client(url: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<ClientProcess> {
    const started = await startClientProcess({ keys, url, forwards: [{ service: 'echo' }], args, env: { ...NO_PROXY_ENV, ...env } });
    clients.push(started);
    return started;
  }

  it('carries 2 MiB intact through tinyproxy CONNECT and nginx TLS verified with --ca, under the /gw/tunnel prefix', async () => {
    const started = await client(nginx.url, ['--proxy', tinyproxy.url, '--ca', ca.caCert, ...TOKEN_FLAG]);
    await echoThrough(started.ports.echo!, 2 * 1024 * 1024, 'nginx-proxy');
    assert.match(await tinyproxy.log(), new RegExp(`CONNECT 127\\.0\\.0\\.1:${nginx.port} `), 'tinyproxy carried the CONNECT to nginx');
  });

  it("the gateway's audit log shows the client's real address from X-Forwarded-For (trustProxy: loopback)", async () => {
    const seen = server.process.lines().length;
    const started = await client(nginx.url, ['--proxy', tinyproxy.url, '--ca', ca.caCert, ...TOKEN_FLAG]);
    const newAuth = () => server.process.lines().slice(seen).map(parseLogLine).find((entry) => entry?.event === 'auth.success');
    await waitFor(async () => newAuth() !== undefined, 'an auth.success line for the new session');
    const auth = newAuth()!;
    // The gateway's TCP peer is nginx (127.0.0.1); only X-Forwarded-For carries 127.0.0.9.
    assert.equal(auth.address, CLIENT_EGRESS, `auth.success names the proxy's egress address: ${JSON.stringify(auth)}`);
    await started.stop(); // nginx logs an upgraded request when it ends
    await waitFor(async () => new RegExp(`^${CLIENT_EGRESS.replaceAll('.', '\\.')} .*"GET /gw/tunnel HTTP/1.1" 101 `, 'm').test(await nginx.accessLog()), 'nginx access log line');
  });

  it('serves /healthz and /readyz through nginx, and nothing else', async () => {
    assert.equal(await httpsStatus(`${nginx.origin}/healthz`, ca.caCert), 200);
    assert.equal(await httpsStatus(`${nginx.origin}/readyz`, ca.caCert), 200);
    assert.equal(await httpsStatus(`${nginx.origin}/metrics`, ca.caCert), 404);
  });

  it('HTTPS_PROXY from the environment is used when --proxy is not given', async () => {
    const before = (await tinyproxy.log()).split('\n').length;
    await client(nginx.url, ['--ca', ca.caCert, ...TOKEN_FLAG], { HTTPS_PROXY: tinyproxy.url });
    const added = (await tinyproxy.log()).split('\n').slice(before - 1).join('\n');
    assert.match(added, new RegExp(`CONNECT 127\\.0\\.0\\.1:${nginx.port} `), 'the new session went through tinyproxy');
  });

  it('NO_PROXY bypasses the environment proxy (a dead one here) and connects directly', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const started = await client(nginx.url, ['--ca', ca.caCert, ...TOKEN_FLAG], { https_proxy: dead, NO_PROXY: 'example.com, 127.0.0.0/8' });
    await echoThrough(started.ports.echo!, 64 * 1024, 'no-proxy');
  });

  it('a request without the gateway header is refused by nginx, in one sentence', async () => {
    const attempt = await connectOnce({ keys, url: nginx.url, args: ['--proxy', tinyproxy.url, '--ca', ca.caCert] });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.match(attempt.message, /^reflector: .*wss:\/\/127\.0\.0\.1:\d+\/gw\/tunnel: the server answered HTTP 403 Forbidden instead of a WebSocket upgrade$/);
  });

  it('the unprefixed path is not served: the error says so', async () => {
    const attempt = await connectOnce({ keys, url: nginx.url.replace('/gw/tunnel', '/tunnel'), args: ['--ca', ca.caCert, ...TOKEN_FLAG] });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.match(attempt.message, /HTTP 404 Not Found instead of a WebSocket upgrade \(is the tunnel path right\?\)$/);
  });

  it('without --ca, a certificate from an unknown CA is one clear sentence', async () => {
    const attempt = await connectOnce({ keys, url: nginx.url, args: TOKEN_FLAG });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.match(
      attempt.message,
      /^reflector: .*wss:\/\/127\.0\.0\.1:\d+\/gw\/tunnel: TLS certificate not trusted \(issued by an unknown certificate authority\); use --ca FILE with the certificate that signed it$/,
    );
  });

  it('without --ca, a self-signed certificate is one clear sentence', async () => {
    const attempt = await connectOnce({ keys, url: selfSigned.url });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.match(attempt.message, /: TLS certificate not trusted \(self-signed\); use --ca FILE with the certificate that signed it$/);
  });

  it('a --ca that did not sign the certificate is named in the error', async () => {
    const attempt = await connectOnce({ keys, url: selfSigned.url, args: ['--ca', ca.caCert] });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.ok(attempt.message.includes(`TLS certificate not trusted (self-signed) (it is not signed by a certificate in ${ca.caCert})`), attempt.message);
  });

  it('--insecure connects to the self-signed gateway and warns on every connect', async () => {
    const started = await client(selfSigned.url, ['--insecure']);
    await echoThrough(started.ports.echo!, 64 * 1024, 'insecure');
    const warnings = started.process.lines('stderr').filter((line) => parseLogLine(line)?.event === 'tls.insecure');
    assert.equal(warnings.length, 1, 'one warning for the one connect so far');
    assert.match(String(parseLogLine(warnings[0]!)!.msg), /^TLS certificate verification is OFF for 127\.0\.0\.1:\d+ \(--insecure\)/);
    assert.equal(parseLogLine(warnings[0]!)!.level, 40, 'logged at warn level');
  });

  it('an unreachable proxy is one clear sentence', async () => {
    const port = await freePort();
    const attempt = await connectOnce({ keys, url: nginx.url, args: ['--proxy', `http://127.0.0.1:${port}`, '--ca', ca.caCert, ...TOKEN_FLAG] });
    assert.equal(attempt.code, 5, attempt.stderr);
    assert.match(attempt.message, new RegExp(`^reflector: .*proxy http://127\\.0\\.0\\.1:${port} unreachable: connection refused$`));
  });

  it('a --ca file that is not PEM is a usage error at startup', async () => {
    const attempt = await connectOnce({ keys, url: nginx.url, args: ['--ca', keys.clientPublicFile] });
    assert.equal(attempt.code, 2, attempt.stderr);
    assert.equal(attempt.message, `reflector: --ca ${keys.clientPublicFile}: expected PEM certificates ("-----BEGIN CERTIFICATE-----")`);
  });
});
