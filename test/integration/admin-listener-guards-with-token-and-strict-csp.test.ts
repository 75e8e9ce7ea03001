/**
 * The admin listener is the operator's door, so it is shut by default: with a
 * token, nothing without `Authorization: Bearer TOKEN` (or Basic with TOKEN as
 * the password, what a browser prompts for); without one, it is loopback-only
 * and refuses requests addressed to a host name (DNS rebinding). Every answer
 * carries helmet's headers and a CSP that allows only the page's own script,
 * stylesheet and fetch.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { ReflectorClient } from '../../client/index.js';
import { createServer, type AdminStatus, type RunningServer } from '../../server/index.js';
import {
  clientOptions,
  makeKeys,
  serverConfig,
  startClient,
  startEchoBackend,
  testLogger,
  waitConnected,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';

const TOKEN = 'correct-horse-battery-staple-42';

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { headers }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body }));
    });
    request.on('error', reject);
  });
}

describe('admin listener guards with a token and a strict CSP', () => {
  let keys: KeySet;
  let echo: Backend;
  let open: RunningServer;
  let guarded: RunningServer;
  let client: ReflectorClient;

  before(async () => {
    keys = await makeKeys();
    echo = await startEchoBackend();
    const base = serverConfig(keys, { echo: echo.target });
    open = await createServer({ ...base, admin: { listen: { host: '127.0.0.1', port: 0 } } }, { logger: testLogger() });
    guarded = await createServer({ ...base, admin: { listen: { host: '127.0.0.1', port: 0 }, token: TOKEN } }, { logger: testLogger() });
    client = await startClient(clientOptions(keys, guarded, [{ host: '127.0.0.1', port: 0, service: 'echo' }]));
    await waitConnected(client);
  });

  after(async () => {
    await client?.close();
    await open?.close();
    await guarded?.close();
    await echo?.close();
    await keys?.cleanup();
  });

  it('answers 401 with Bearer and Basic challenges when the token is missing or wrong', async () => {
    const url = guarded.operations.admin!.url;
    for (const path of ['/metrics', '/admin', '/admin/api/status', '/admin/admin.js']) {
      const response = await get(`${url}${path}`);
      assert.equal(response.status, 401, path);
      const challenges = response.headers['www-authenticate'];
      assert.match(String(challenges), /^Basic realm="reflector admin"/m, 'a browser can prompt for the token');
      assert.match(String(challenges), /Bearer realm="reflector admin"/, 'a scraper is told to send a bearer token');
      assert.doesNotMatch(response.body, /reflector_|<html/i, 'nothing leaks in the 401 body');
    }
    assert.equal((await get(`${url}/metrics`, { authorization: `Bearer ${TOKEN}x` })).status, 401);
    assert.equal((await get(`${url}/metrics`, { authorization: `Bearer ${TOKEN.slice(1)}` })).status, 401);
    assert.equal((await get(`${url}/metrics`, { authorization: `Basic ${Buffer.from(`admin:${TOKEN}!`).toString('base64')}` })).status, 401);
  });

  it('serves everything with the bearer token, or with Basic auth carrying it as the password', async () => {
    const url = guarded.operations.admin!.url;
    const bearer = await get(`${url}/metrics`, { authorization: `Bearer ${TOKEN}` });
    assert.equal(bearer.status, 200);
    assert.match(bearer.body, /^reflector_sessions\{client="tester"\} 1$/m);
    const basic = await get(`${url}/admin`, { authorization: `Basic ${Buffer.from(`ops:${TOKEN}`).toString('base64')}` });
    assert.equal(basic.status, 200);
    assert.match(basic.body, /<title>Reflector gateway<\/title>/);
  });

  it('describes live sessions and per-service totals in /admin/api/status', async () => {
    const response = await get(`${guarded.operations.admin!.url}/admin/api/status`, { authorization: `Bearer ${TOKEN}` });
    assert.equal(response.status, 200);
    assert.match(String(response.headers['content-type']), /^application\/json/);
    assert.equal(response.headers['cache-control'], 'no-store');
    const status = JSON.parse(response.body) as AdminStatus;
    assert.equal(status.state, 'running');
    assert.equal(status.hostKey, keys.host.thumbprint);
    assert.equal(status.sessions.length, 1);
    const [session] = status.sessions;
    assert.equal(session!.client, 'tester');
    assert.equal(session!.address, '127.0.0.1');
    assert.equal(session!.streams, 0);
    assert.ok(!Number.isNaN(Date.parse(session!.since)));
    assert.deepEqual(status.services, [{ service: 'echo', openStreams: 0, opened: 0, failed: 0, bytesToBackend: 0, bytesFromBackend: 0 }]);
  });

  it("sends helmet's headers and a CSP that allows only the page's own script, style and fetch", async () => {
    const response = await get(`${open.operations.admin!.url}/admin`);
    assert.equal(response.status, 200);
    const csp = String(response.headers['content-security-policy']);
    const directives = Object.fromEntries(
      csp.split(';').map((d) => d.trim()).filter(Boolean).map((d) => [d.split(/\s+/)[0], d.split(/\s+/).slice(1).join(' ')]),
    );
    assert.deepEqual(directives, {
      'default-src': "'none'",
      'script-src': "'self'",
      'style-src': "'self'",
      'connect-src': "'self'",
      'img-src': "'self'",
      'base-uri': "'none'",
      'form-action': "'none'",
      'frame-ancestors': "'none'",
      'require-trusted-types-for': "'script'",
    });
    assert.equal(response.headers['x-content-type-options'], 'nosniff');
    assert.equal(response.headers['x-frame-options'], 'SAMEORIGIN');
    assert.equal(response.headers['x-powered-by'], undefined);
    assert.doesNotMatch(response.body, /<script>|<style>|\son[a-z]+=/i, 'no inline script, style or handlers');
    const script = await get(`${open.operations.admin!.url}/admin/admin.js`);
    assert.match(String(script.headers['content-type']), /^text\/javascript/);
  });

  it('without a token, refuses requests addressed to a host name (DNS rebinding) and accepts IPs and localhost', async () => {
    const { port } = open.operations.admin!.address;
    const url = `http://127.0.0.1:${port}/admin/api/status`;
    assert.equal((await get(url, { host: `attacker.example:${port}` })).status, 421);
    assert.equal((await get(url, { host: `localhost:${port}` })).status, 200);
    assert.equal((await get(url)).status, 200);
  });

  it('refuses anything but GET and HEAD', async () => {
    const response = await fetch(`${open.operations.admin!.url}/admin/api/status`, { method: 'POST' });
    assert.equal(response.status, 405);
    assert.equal(response.headers.get('allow'), 'GET, HEAD');
  });

  it('closes with the server', async () => {
    const server = await createServer(
      { ...serverConfig(keys, { echo: echo.target }), admin: { listen: { host: '127.0.0.1', port: 0 } } },
      { logger: testLogger() },
    );
    const url = `${server.operations.admin!.url}/metrics`;
    assert.equal((await fetch(url)).status, 200);
    await server.close();
    await assert.rejects(fetch(url), 'the admin port is closed');
  });
});
