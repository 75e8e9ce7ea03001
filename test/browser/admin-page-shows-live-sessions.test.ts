/**
 * The admin status page in a real headless Chromium (Debian's `chromium`
 * package, driven by playwright-core): it logs in with the admin token the way
 * a person would (Basic auth, token as the password), shows live sessions and
 * per-service totals, follows them as streams open and close, and runs under
 * its strict CSP without a single violation.
 *
 * Without /usr/bin/chromium the test is skipped locally (loudly) and fails in
 * CI. `REFLECTOR_SCREENSHOT=docs/admin-page.png` also saves a screenshot.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { ReflectorClient } from '../../client/index.js';
import { createServer, type RunningServer } from '../../server/index.js';
import { generateIdentity, writeIdentityFiles, type Identity } from '../../shared/keys.js';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  readAll,
  serverConfig,
  startClient,
  startEchoBackend,
  testLogger,
  waitConnected,
  type Backend,
  type KeySet,
} from '../helpers/fixtures.js';

/** The page's globals, for the predicates that run in the browser (the project compiles without the DOM lib). */
interface PageElement {
  textContent: string | null;
  children: ArrayLike<PageElement>;
  firstElementChild: PageElement | null;
  getAttribute(name: string): string | null;
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): ArrayLike<PageElement> & Iterable<PageElement>;
};

/** Debian's chromium; REFLECTOR_CHROMIUM points elsewhere (or at nothing, to see the skip). */
const CHROMIUM = process.env.REFLECTOR_CHROMIUM ?? '/usr/bin/chromium';
const TOKEN = 'admin-page-test-token-7d3f1a';
const HAVE_CHROMIUM = existsSync(CHROMIUM);

if (!HAVE_CHROMIUM) {
  const message = `${CHROMIUM} not found: install Debian's "chromium" package (apt-get install -y chromium) to run the admin page browser test`;
  if (process.env.CI) throw new Error(`${message}; CI must install it`);
  process.stderr.write(`\n${'!'.repeat(100)}\n!!! SKIPPED: ${message}\n${'!'.repeat(100)}\n\n`);
}

/** Waits until `check` (run in the page) is true; the page refreshes itself every 2 s. */
async function waitForPage(page: Page, what: string, check: () => boolean): Promise<void> {
  try {
    await page.waitForFunction(check, undefined, { timeout: 15_000, polling: 100 });
  } catch (error) {
    const body = await page.locator('main').innerText().catch(() => '(no page)');
    throw new Error(`the page never showed ${what}; it shows:\n${body}`, { cause: error });
  }
}

const skip = HAVE_CHROMIUM ? false : `${CHROMIUM} missing (Debian package "chromium")`;

describe('admin page shows live sessions', () => {
  let keys: KeySet;
  let bob: Identity;
  let echo: Backend;
  let server: RunningServer;
  let alice: ReflectorClient;
  let bobClient: ReflectorClient;
  let browser: Browser;
  let page: Page;
  const consoleErrors: string[] = [];

  before(async () => {
    if (!HAVE_CHROMIUM) return;
    keys = await makeKeys();
    echo = await startEchoBackend();
    bob = await generateIdentity();
    const bobFile = path.join(keys.dir, 'bob.jwk');
    await writeIdentityFiles(bobFile, bob);
    const base = serverConfig(keys, { smtp: echo.target, pop3: echo.target, nntp: echo.target });
    server = await createServer(
      {
        ...base,
        clients: [
          { name: 'alice', publicKey: keys.client, services: ['smtp', 'pop3'] },
          { name: 'bob', publicKey: bob, services: ['nntp'] },
        ],
        admin: { listen: { host: '127.0.0.1', port: 0 }, token: TOKEN },
      },
      { logger: testLogger() },
    );
    alice = await startClient(
      clientOptions(keys, server, [
        { host: '127.0.0.1', port: 0, service: 'smtp' },
        { host: '127.0.0.1', port: 0, service: 'pop3' },
      ]),
    );
    bobClient = await startClient(clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'nntp' }], { identity: bobFile }));
    await waitConnected(alice);
    await waitConnected(bobClient);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({
      httpCredentials: { username: 'ops', password: TOKEN },
      viewport: { width: 1100, height: 640 },
    });
    page = await context.newPage();
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') consoleErrors.push(message.text());
    });
    page.on('pageerror', (error) => consoleErrors.push(error.message));
  });

  after(async () => {
    await browser?.close();
    await alice?.close();
    await bobClient?.close();
    await server?.close();
    await echo?.close();
    await keys?.cleanup();
  });

  const port = (client: ReflectorClient, service: string): number =>
    client.listeners.find((l) => l.spec.service === service)!.address.port;

  it('shows each live session and follows a stream as it opens and closes', { timeout: 60_000, skip }, async () => {
    const response = await page.goto(`${server.operations.admin!.url}/admin`);
    assert.equal(response?.status(), 200);
    assert.match(response!.headers()['content-security-policy'] ?? '', /script-src 'self'/);

    await waitForPage(page, 'both sessions', () => {
      const clients = [...document.querySelectorAll('#sessions tbody tr td:first-child')].map((td) => td.textContent);
      return clients.includes('alice') && clients.includes('bob');
    });
    assert.equal(await page.locator('#state').innerText(), 'running');
    assert.equal(await page.locator('#host-key').innerText(), keys.host.thumbprint);

    // Alice opens an SMTP stream and keeps it open: her row and the smtp row show it.
    const smtp = await connectLocal(port(alice, 'smtp'));
    smtp.write('EHLO browser-test\r\n');
    await waitForPage(page, "alice's open stream", () => {
      const row = [...document.querySelectorAll('#sessions tbody tr')].find((tr) => tr.firstElementChild?.textContent === 'alice');
      const service = document.querySelector('#services tbody tr[data-service="smtp"]');
      return row?.children[3]?.textContent === '1' && service?.children[1]?.textContent === '1';
    });
    const aliceRow = page.locator('#sessions tbody tr', { hasText: 'alice' });
    assert.equal(await aliceRow.locator('td').nth(1).innerText(), '127.0.0.1', 'the client address');
    assert.match(await aliceRow.locator('td').nth(2).innerText(), /s ago$/, 'since');

    // Bob moves some news; when his stream closes, the nntp totals keep its bytes.
    const nntp = await connectLocal(port(bobClient, 'nntp'));
    const article = Buffer.alloc(150_000, 0x61);
    const echoed = readAll(nntp);
    nntp.end(article);
    assert.equal((await echoed).length, article.length);
    await waitForPage(page, 'the nntp totals', () => {
      const row = document.querySelector('#services tbody tr[data-service="nntp"]');
      return row?.children[2]?.textContent === '1' && row.children[4]?.getAttribute('title') === '150000 bytes';
    });
    const pop3 = await connectLocal(port(alice, 'pop3'));
    const popReply = readAll(pop3);
    pop3.end('USER alice\r\nSTAT\r\n');
    await popReply;

    if (process.env.REFLECTOR_SCREENSHOT) {
      await waitForPage(page, 'the pop3 totals', () => document.querySelector('#services tbody tr[data-service="pop3"] td:nth-child(3)')?.textContent === '1');
      await page.screenshot({ path: process.env.REFLECTOR_SCREENSHOT, fullPage: true });
    }

    // Alice's stream ends: the page sees it go.
    const smtpReply = readAll(smtp);
    smtp.end('QUIT\r\n');
    await smtpReply;
    await waitForPage(page, 'the smtp stream closed', () => {
      const service = document.querySelector('#services tbody tr[data-service="smtp"]');
      return service?.children[1]?.textContent === '0' && service.children[2]?.textContent === '1';
    });

    assert.deepEqual(consoleErrors, [], 'no CSP violation, script error or failed request');
  });

  it('shows the server draining while a stream finishes', { timeout: 30_000, skip }, async () => {
    const smtp = await connectLocal(port(alice, 'smtp'));
    const reply = readAll(smtp);
    smtp.write('EHLO draining\r\n');
    await waitForPage(page, 'the stream before the drain', () => document.querySelector('#services tbody tr[data-service="smtp"] td:nth-child(2)')?.textContent === '1');
    const drained = server.drain();
    await waitForPage(page, 'the draining state', () => document.querySelector('#state')?.textContent === 'draining');
    smtp.end('QUIT\r\n');
    assert.equal((await reply).toString(), 'EHLO draining\r\nQUIT\r\n', 'the stream finished during the drain');
    await drained;
    assert.equal(server.state, 'closed');
  });
});
