/**
 * The whole deployment, every hop a real program:
 *
 *   swaks / curl / nntplib
 *     → reflector connect -L (child process; --proxy, --ca)
 *     → tinyproxy (HTTP CONNECT; connects out from 127.0.0.9)
 *     → nginx running deploy/nginx/reflector.conf (TLS from a test CA)
 *     → reflector server --replica gw-1 | --replica gw-2 (one host key, one server.yaml, one nginx upstream)
 *     → OpenSMTPD, Dovecot (POP3), INN
 *
 * Mail goes each way and news is posted and read back, byte-checked as in
 * the per-protocol tests. Then the replica holding the session gets SIGTERM
 * while an SMTP conversation is open on it: it drains (GOAWAY), the open
 * conversation finishes there, the client reconnects through nginx to the
 * other replica, and the next message goes through that one. The time from
 * the SIGTERM to the next message accepted is reported (t.diagnostic).
 *
 * Needs (Debian): nginx, tinyproxy, openssl, opensmtpd, dovecot-core,
 * dovecot-pop3d, inn2, swaks, curl, python3 (nntplib); root. Skipped with a
 * message when missing, failed under CI.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SUBPROTOCOL } from '../../shared/constants.js';
import { connectLocal } from '../helpers/fixtures.js';
import { startTinyproxy, TINYPROXY_REQUIREMENTS, type RunningProxy } from './harness/http-proxies.js';
import {
  CURL_REQUIREMENTS,
  curlRetrieve,
  NNTPLIB_REQUIREMENTS,
  nntplibPostAndRead,
  SWAKS_REQUIREMENTS,
  swaksSendWithAttachment,
} from './harness/mail-clients.js';
import {
  base64Lines,
  buildArticle,
  buildMimeMessage,
  CRLF,
  extractAttachment,
  parseHeaders,
  prependedHeaders,
  sha256,
  splitHeaderBody,
  TRICKY_LINES,
} from './harness/mail-messages.js';
import {
  DOVECOT_REQUIREMENTS,
  INND_REQUIREMENTS,
  OPENSMTPD_REQUIREMENTS,
  startDovecot,
  startInnd,
  startOpenSmtpd,
  type Dovecot,
  type Innd,
  type OpenSmtpd,
} from './harness/mail-servers.js';
import { NGINX_REQUIREMENTS, startReflectorNginx, type ReflectorNginx } from './harness/nginx.js';
import {
  logEvents,
  makeReflectorKeys,
  settledStreamCloses,
  startClientProcess,
  startServerProcess,
  waitForLogEvent,
  type ClientProcess,
  type ReflectorKeys,
  type ServerProcess,
} from './harness/reflector-processes.js';
import { gate } from './harness/requirements.js';
import { makeTestCa, OPENSSL_REQUIREMENTS, type TestCa } from './harness/tls-ca.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const requirements = gate('full chain system test (full-chain-with-two-replicas)', [
  ...NGINX_REQUIREMENTS,
  ...TINYPROXY_REQUIREMENTS,
  ...OPENSSL_REQUIREMENTS,
  ...OPENSMTPD_REQUIREMENTS,
  ...DOVECOT_REQUIREMENTS,
  ...INND_REQUIREMENTS,
  ...SWAKS_REQUIREMENTS,
  ...CURL_REQUIREMENTS,
  ...NNTPLIB_REQUIREMENTS,
]);

const REPLICA_NAMES = ['gw-1', 'gw-2'] as const;
/** The address tinyproxy connects from: what nginx, and through X-Forwarded-For the gateway, see as the client. */
const CLIENT_EGRESS = '127.0.0.9';
const NEWSGROUP = 'local.fullchain';

interface Replica {
  name: string;
  server: ServerProcess;
}

function messageIdOf(content: Buffer): string | undefined {
  const { headers } = splitHeaderBody(content.subarray(0, 64 * KiB).toString('latin1'));
  return parseHeaders(headers)
    .find(([name]) => name.toLowerCase() === 'message-id')?.[1]
    ?.replace(/^<|>$/g, '');
}

/**
 * A hand-driven SMTP conversation on a raw socket: send a line, read the
 * reply up to its last line ("250 ..." after any "250-..." lines).
 */
class SmtpConversation {
  private buffered = '';
  private readonly waiters: Array<() => void> = [];
  private ended: string | undefined;

  constructor(private readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (text: string) => {
      this.buffered += text;
      for (const wake of this.waiters.splice(0)) wake();
    });
    const end = (why: string) => {
      this.ended = why;
      for (const wake of this.waiters.splice(0)) wake();
    };
    socket.on('end', () => end('the server closed the connection'));
    socket.on('error', (error) => end(`socket error: ${error.message}`));
  }

  /** The next complete reply (all its lines); rejects on an unexpected code. */
  async reply(expected: number): Promise<string> {
    for (;;) {
      const match = /^(?:\d{3}-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n/.exec(this.buffered);
      if (match !== null) {
        this.buffered = this.buffered.slice(match[0].length);
        if (Number(match[1]) !== expected) throw new Error(`SMTP: expected ${expected}, got ${JSON.stringify(match[0])}`);
        return match[0];
      }
      if (this.ended !== undefined) throw new Error(`SMTP: ${this.ended} while waiting for ${expected} (buffered ${JSON.stringify(this.buffered)})`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  async command(line: string, expected: number): Promise<string> {
    this.socket.write(`${line}\r\n`);
    return this.reply(expected);
  }
}

/**
 * The HTTP status nginx answers a WebSocket upgrade of the tunnel with (101,
 * or 503 from a draining gateway); the socket is dropped right after.
 */
async function upgradeStatus(url: string, caFile: string): Promise<number> {
  const ca = await readFile(caFile);
  return new Promise((resolve, reject) => {
    const request = https.request(url.replace(/^wss:/, 'https:'), {
      ca,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        'Sec-WebSocket-Protocol': SUBPROTOCOL,
      },
    });
    request.once('upgrade', (response, socket) => {
      socket.destroy();
      resolve(response.statusCode ?? 0);
    });
    request.once('response', (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.once('error', reject);
    request.end();
  });
}

describe('full chain: reflector connect → tinyproxy → nginx (TLS) → two gateway replicas → OpenSMTPD, Dovecot, INN', { skip: requirements.skip, timeout: 180_000 }, () => {
  let dir: string;
  let ca: TestCa;
  let keys: ReflectorKeys;
  let smtpd: OpenSmtpd;
  let dovecot: Dovecot;
  let innd: Innd;
  const replicas: Replica[] = [];
  let nginx: ReflectorNginx;
  let tinyproxy: RunningProxy;
  let client: ClientProcess;
  let attachment: Buffer;
  let attachmentFile: string;
  const runId = `${process.pid}.${Date.now()}`;
  const popMessage = buildMimeMessage({
    from: 'Operator <operator@mail.example.com>',
    to: 'Alice <alice@mail.example.com>',
    subject: 'waiting in the mailbox',
    date: 'Tue, 01 Dec 2026 09:00:00 +0000',
    messageId: `pop3.${runId}@mail.example.com`,
    boundary: `=_reflector_pop3_${runId}`,
    attachment: randomBytes(2 * MiB),
    attachmentName: 'mailbox.bin',
  });

  before(async () => {
    requirements.assertAvailable();
    dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-full-chain-'));
    ca = await makeTestCa(dir);
    keys = await makeReflectorKeys(path.join(dir, 'keys'));
    // Side by side; each one that started is kept (and stopped in after()) even if another failed.
    const started = await Promise.allSettled([
      startOpenSmtpd().then((server) => (smtpd = server)),
      startDovecot({ user: 'alice', password: 'pop3 secret', messages: [popMessage] }).then((server) => (dovecot = server)),
      startInnd({ groups: [NEWSGROUP] }).then((server) => (innd = server)),
    ]);
    for (const outcome of started) if (outcome.status === 'rejected') throw outcome.reason;
    const services = { smtp: smtpd.target, pop3: dovecot.target, nntp: innd.target };
    for (const name of REPLICA_NAMES) {
      // Same options, so the same server.yaml: the replicas differ only by --replica (and the port they get).
      const server = await startServerProcess({ keys, services, trustProxy: 'loopback', args: ['--replica', name], name: `reflector server ${name}` });
      replicas.push({ name, server });
    }
    nginx = await startReflectorNginx({
      tls: { cert: ca.cert, key: ca.key },
      upstreams: replicas.map(({ server }) => server.address.port),
      replicas: Object.fromEntries(replicas.map(({ name, server }) => [name, server.address.port])),
    });
    tinyproxy = await startTinyproxy({ bindOutgoing: CLIENT_EGRESS });
    client = await startClientProcess({
      keys,
      url: nginx.url,
      forwards: [{ service: 'smtp' }, { service: 'pop3' }, { service: 'nntp' }],
      args: ['--proxy', tinyproxy.url, '--ca', ca.caCert],
    });
    attachment = randomBytes(3 * MiB);
    attachmentFile = path.join(dir, 'payload.bin');
    await writeFile(attachmentFile, attachment);
  });

  after(async () => {
    await client?.stop();
    await tinyproxy?.stop();
    await nginx?.stop();
    for (const { server } of replicas) await server.stop();
    await Promise.all([smtpd?.stop(), dovecot?.stop(), innd?.stop()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The replicas that authenticated the client so far. */
  const authenticatedOn = (): Replica[] => replicas.filter(({ server }) => logEvents(server.process, 'auth.success').length > 0);

  async function sendWithSwaks(label: string): Promise<{ messageId: string; stored: Buffer }> {
    const messageId = `${label}.${runId}@client.example.com`;
    await swaksSendWithAttachment({
      port: client.ports.smtp!,
      from: 'alice@client.example.com',
      to: 'bob@mail.example.com',
      messageId,
      subject: `${label} through the full chain`,
      body: 'The attachment is 3 MiB of random bytes.',
      attachmentFile,
      attachmentName: 'payload.bin',
    });
    const stored = await smtpd.waitForMessage((content) => messageIdOf(content) === messageId, `with Message-ID <${messageId}>`);
    return { messageId, stored: stored.content };
  }

  it('swaks sends a 3 MiB attachment through the chain; the maildir copy decodes to the same SHA-256', async () => {
    const { stored } = await sendWithSwaks('smtp-first');
    const received = extractAttachment(stored, 'payload.bin');
    assert.equal(received.length, attachment.length, 'attachment length');
    assert.equal(sha256(received), sha256(attachment), 'attachment SHA-256');
    // One session, on one replica, seen from the proxy's egress address through X-Forwarded-For.
    const [holder, ...others] = authenticatedOn();
    assert.ok(holder !== undefined && others.length === 0, 'exactly one replica holds the session');
    const auth = logEvents(holder.server.process, 'auth.success')[0]!;
    assert.equal(auth.address, CLIENT_EGRESS, `the gateway logged the address tinyproxy connected from: ${JSON.stringify(auth)}`);
    assert.match(await tinyproxy.log(), new RegExp(`CONNECT 127\\.0\\.0\\.1:${nginx.port} `), 'tinyproxy carried the CONNECT to nginx');
  });

  it('curl retrieves a POP3 message through the chain byte for byte', async () => {
    const account = { port: client.ports.pop3!, user: dovecot.user, password: dovecot.password };
    const received = await curlRetrieve(account, 1, path.join(dir, 'retr-1.eml'));
    assert.equal(received.length, popMessage.length, 'message length');
    assert.ok(received.equals(popMessage), `SHA-256 ${sha256(received)}, expected ${sha256(popMessage)}`);
  });

  it('nntplib posts an article through the chain and reads it back unchanged', async () => {
    const body = Buffer.from([...TRICKY_LINES, ''].join(CRLF) + base64Lines(randomBytes(256 * KiB)) + `.${CRLF}-- ${CRLF}signature${CRLF}`, 'latin1');
    const messageId = `article.${runId}@client.example.com`;
    const { article, headers: sentHeaders } = buildArticle({
      from: 'Alice <alice@client.example.com>',
      newsgroup: NEWSGROUP,
      subject: 'posted through the full chain',
      messageId,
      body,
    });
    const exchange = await nntplibPostAndRead({ port: client.ports.nntp!, group: NEWSGROUP, messageId, article });
    assert.match(exchange.post, /^240 /, 'article posted');
    assert.match(exchange.articleResponse, /^220 /);
    assert.equal(exchange.articleMessageId, `<${messageId}>`);
    const readBack = splitHeaderBody(exchange.article.toString('latin1'));
    const readBody = Buffer.from(readBack.body, 'latin1');
    assert.equal(readBody.length, body.length, 'body length');
    assert.equal(sha256(readBody), sha256(body), 'body SHA-256');
    const stored = parseHeaders(readBack.headers);
    for (const [name, value] of sentHeaders) {
      assert.deepEqual(
        stored.filter(([storedName]) => storedName.toLowerCase() === name.toLowerCase()).map(([, storedValue]) => storedValue),
        [value],
        `header ${name} as posted`,
      );
    }
    assert.ok(exchange.overSubjects.includes('posted through the full chain'), `OVER subjects: ${exchange.overSubjects.join(', ')}`);
  });

  it('SIGTERM to the replica holding the session: an open SMTP conversation finishes there, the next message goes through the other replica', async (t) => {
    const [holder, ...others] = authenticatedOn();
    assert.ok(holder !== undefined && others.length === 0, 'exactly one replica holds the session');
    const standby = replicas.find((replica) => replica !== holder)!;
    const goawaysBefore = logEvents(client.process, 'session.goaway').length;
    const opensBefore = logEvents(client.process, 'session.open').length;

    // A conversation open on the holder when the signal arrives.
    const socket = await connectLocal(client.ports.smtp!);
    const inflight = new SmtpConversation(socket);
    await inflight.reply(220);
    await inflight.command('EHLO client.example.com', 250);

    const sigtermAt = Date.now();
    holder.server.process.signal('SIGTERM');
    const next = await sendWithSwaks('smtp-after-sigterm');
    const acceptedAt = Date.now();
    assert.equal(sha256(extractAttachment(next.stored, 'payload.bin')), sha256(attachment), 'attachment SHA-256 of the next message');

    // While the holder drains (the conversation keeps it up), it answers new
    // upgrades with 503; the site's proxy_next_upstream passes them on, so no
    // new connection through nginx sees the 503 (round robin alone would hand
    // every other one to the draining replica).
    await waitForLogEvent(holder.server.process, 'server.draining');
    const statuses = [await upgradeStatus(nginx.url, ca.caCert), await upgradeStatus(nginx.url, ca.caCert)];
    assert.deepEqual(statuses, [101, 101], 'upgrades through nginx while a replica drains');

    // The open conversation finishes on the draining holder.
    const inflightId = `inflight.${runId}@client.example.com`;
    const inflightMessage = Buffer.from(
      [
        'From: Alice <alice@client.example.com>',
        'To: Bob <bob@mail.example.com>',
        'Subject: begun before the SIGTERM, ended during the drain',
        'Date: Tue, 01 Dec 2026 10:00:00 +0000',
        `Message-ID: <${inflightId}>`,
        '',
        ...TRICKY_LINES,
        '',
      ].join(CRLF),
      'latin1',
    );
    // DATA by hand: dot-stuffed, then the lone dot.
    const dotStuffed = inflightMessage.toString('latin1').replace(/^\./gm, '..');
    await inflight.command('MAIL FROM:<alice@client.example.com>', 250);
    await inflight.command('RCPT TO:<bob@mail.example.com>', 250);
    await inflight.command('DATA', 354);
    socket.write(Buffer.from(`${dotStuffed}.${CRLF}`, 'latin1'));
    await inflight.reply(250);
    await inflight.command('QUIT', 221);
    socket.destroy();
    const stored = await smtpd.waitForMessage((content) => messageIdOf(content) === inflightId, `with Message-ID <${inflightId}>`);
    assert.deepEqual(
      prependedHeaders(stored.content, inflightMessage).map(([name]) => name),
      ['Return-Path', 'Delivered-To', 'Received'],
      'the in-flight message is stored byte for byte below the trace headers',
    );

    const exit = await holder.server.process.waitForExit(30_000);
    const exitedAt = Date.now();
    assert.deepEqual(exit, { code: 0, signal: null }, `${holder.name} drained and exited 0`);

    // Where each part went.
    assert.equal(logEvents(client.process, 'session.goaway').length, goawaysBefore + 1, 'the client saw one GOAWAY');
    const opens = logEvents(client.process, 'session.open');
    assert.equal(opens.length, opensBefore + 1, 'the client opened one new session');
    const standbyAuth = logEvents(standby.server.process, 'auth.success');
    assert.equal(standbyAuth.length, 1, `${standby.name} authenticated the client once`);
    assert.equal(standbyAuth[0]!.address, CLIENT_EGRESS, 'through tinyproxy and nginx');
    const standbyStreams = logEvents(standby.server.process, 'stream.open');
    assert.ok(standbyStreams.length >= 1, `the next message went through ${standby.name}`);
    // Every stream on the holder (the in-flight conversation included) ended with FIN both ways.
    const holderCloses = await settledStreamCloses(holder.server.process);
    assert.deepEqual(
      holderCloses.filter((entry) => entry.outcome !== 'fin'),
      [],
      `streams on ${holder.name} that did not end with FIN`,
    );

    const reconnectedAt = Number(opens.at(-1)!.time);
    t.diagnostic(`SIGTERM to ${holder.name} → client session open on ${standby.name}: ${reconnectedAt - sigtermAt} ms`);
    t.diagnostic(`SIGTERM to ${holder.name} → next message (3 MiB attachment) accepted via ${standby.name}: ${acceptedAt - sigtermAt} ms`);
    t.diagnostic(`SIGTERM to ${holder.name} → ${holder.name} drained and exited 0: ${exitedAt - sigtermAt} ms`);
  });
});
