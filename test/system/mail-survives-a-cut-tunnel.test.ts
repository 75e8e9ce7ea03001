/**
 * Real mail through a tunnel that is cut mid-transfer: `reflector connect` →
 * a cut relay → `reflector server` → Dovecot (POP3) and OpenSMTPD (SMTP).
 * The relay resets the connection (as a network change or a proxy would)
 * while curl downloads a 20 MiB message and while swaks sends one with a
 * 10 MiB attachment. The session resumes; neither mail program notices, and
 * both messages arrive byte-exact.
 *
 * The cuts happen at byte thresholds: for the upload, the relay's count of
 * bytes from the client; for the download, the size of curl's output file
 * (the relay counts one direction only).
 *
 * Needs (Debian): opensmtpd, dovecot-core, dovecot-pop3d, swaks, curl; root.
 * Skipped with a message when missing, failed under CI.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startCutRelay, type CutRelay } from '../helpers/cut-relay.js';
import { sleep, waitFor } from '../helpers/fixtures.js';
import { CURL_REQUIREMENTS, curlRetrieve, SWAKS_REQUIREMENTS, swaksSendMessage } from './harness/mail-clients.js';
import { buildMimeMessage, extractAttachment, parseHeaders, prependedHeaders, sha256, splitHeaderBody } from './harness/mail-messages.js';
import { DOVECOT_REQUIREMENTS, OPENSMTPD_REQUIREMENTS, startDovecot, startOpenSmtpd, type Dovecot, type OpenSmtpd } from './harness/mail-servers.js';
import {
  logEvents,
  makeReflectorKeys,
  settledStreamCloses,
  startClientProcess,
  startServerProcess,
  type ClientProcess,
  type ReflectorKeys,
  type ServerProcess,
} from './harness/reflector-processes.js';
import { gate } from './harness/requirements.js';

const MiB = 1024 * 1024;
const requirements = gate('mail through a cut tunnel system test (mail-survives-a-cut-tunnel)', [
  ...OPENSMTPD_REQUIREMENTS,
  ...DOVECOT_REQUIREMENTS,
  ...SWAKS_REQUIREMENTS,
  ...CURL_REQUIREMENTS,
]);

/** Fractions of each transfer at which the tunnel is cut. */
const CUT_AT = [0.25, 0.6];

function messageIdOf(content: Buffer): string | undefined {
  const { headers } = splitHeaderBody(content.subarray(0, 64 * 1024).toString('latin1'));
  return parseHeaders(headers)
    .find(([name]) => name.toLowerCase() === 'message-id')?.[1]
    ?.replace(/^<|>$/g, '');
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0; // curl has not created it yet
  }
}

describe('mail survives a cut tunnel: POP3 and SMTP transfers resume after the connection is reset', { skip: requirements.skip, timeout: 180_000 }, () => {
  let dir: string;
  let keys: ReflectorKeys;
  let smtpd: OpenSmtpd;
  let dovecot: Dovecot;
  let server: ServerProcess;
  let relay: CutRelay;
  let client: ClientProcess;
  const runId = `${process.pid}.${Date.now()}`;
  const popAttachment = randomBytes(15 * MiB); // base64: a message of about 20 MiB
  const popMessage = buildMimeMessage({
    from: 'Operator <operator@mail.example.com>',
    to: 'Alice <alice@mail.example.com>',
    subject: 'twenty MiB to download',
    date: 'Tue, 01 Dec 2026 09:00:00 +0000',
    messageId: `pop3-big.${runId}@mail.example.com`,
    boundary: `=_reflector_pop3_${runId}`,
    attachment: popAttachment,
    attachmentName: 'big.bin',
  });

  before(async () => {
    requirements.assertAvailable();
    dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-mail-cut-'));
    keys = await makeReflectorKeys(path.join(dir, 'keys'));
    smtpd = await startOpenSmtpd();
    dovecot = await startDovecot({ user: 'alice', password: 'pop3 secret', messages: [popMessage] });
    server = await startServerProcess({ keys, services: { smtp: smtpd.target, pop3: dovecot.target } });
    relay = await startCutRelay(server.address.port);
    client = await startClientProcess({ keys, url: relay.url(), forwards: [{ service: 'smtp' }, { service: 'pop3' }] });
  });

  after(async () => {
    await client?.stop();
    await relay?.close();
    await server?.stop();
    await smtpd?.stop();
    await dovecot?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Cuts the relay, then waits until the server logged one more session.resumed; returns how long that took. */
  async function cutAndAwaitResume(what: string): Promise<number> {
    const resumed = logEvents(server.process, 'session.resumed').length;
    const cutTime = Date.now();
    relay.cut();
    await waitFor(() => logEvents(server.process, 'session.resumed').length > resumed, `the session to resume after the cut ${what}`, 30_000, 5);
    return Date.now() - cutTime;
  }

  it('curl downloads a 20 MiB message over POP3 through two cuts, byte for byte', async (t) => {
    const outFile = path.join(dir, 'retr-1.eml');
    const account = { port: client.ports.pop3!, user: dovecot.user, password: dovecot.password };
    const startedAt = Date.now();
    let done = false;
    const download = curlRetrieve(account, 1, outFile).finally(() => (done = true));
    download.catch(() => undefined); // awaited below

    const recoveries: number[] = [];
    const cutAt: number[] = [];
    for (const fraction of CUT_AT) {
      let size = 0;
      const deadline = Date.now() + 60_000;
      while (!done && (size = await sizeOf(outFile)) < popMessage.length * fraction) {
        if (Date.now() > deadline) throw new Error(`curl did not reach ${fraction * 100}% of the download in 60 s (${size} bytes)`);
        await sleep(2);
      }
      assert.ok(!done, `the download finished before the cut at ${fraction * 100}% (too fast to cut mid-transfer)`);
      cutAt.push(size);
      recoveries.push(await cutAndAwaitResume(`at ${fraction * 100}% of the download`));
    }
    const received = await download;
    const elapsed = Date.now() - startedAt;

    assert.equal(received.length, popMessage.length, 'message length');
    assert.ok(received.equals(popMessage), `SHA-256 ${sha256(received)}, expected ${sha256(popMessage)}`);
    assert.equal(sha256(extractAttachment(received, 'big.bin')), sha256(popAttachment), 'attachment SHA-256');
    t.diagnostic(`POP3 ${(popMessage.length / MiB).toFixed(1)} MiB, cut at ${cutAt.map((n) => (n / MiB).toFixed(1)).join(', ')} MiB received`);
    t.diagnostic(`POP3 cut → session.resumed (ms): ${recoveries.join(', ')}; whole download ${elapsed} ms`);
  });

  it('swaks sends a message with a 10 MiB attachment through two cuts; the maildir copy is that message byte for byte', async (t) => {
    const messageId = `swaks-cut.${runId}@client.example.com`;
    const attachment = randomBytes(10 * MiB);
    const message = buildMimeMessage({
      from: 'Alice <alice@client.example.com>',
      to: 'Bob <bob@mail.example.com>',
      subject: 'ten MiB through a cut tunnel',
      date: 'Tue, 01 Dec 2026 10:00:00 +0000',
      messageId,
      boundary: `=_reflector_smtp_${runId}`,
      attachment,
      attachmentName: 'ten.bin',
    });
    const relayedBefore = relay.bytesUp;
    const startedAt = Date.now();
    let done = false;
    const send = swaksSendMessage({
      port: client.ports.smtp!,
      from: 'alice@client.example.com',
      to: 'bob@mail.example.com',
      message,
      file: path.join(dir, 'message.eml'),
    }).finally(() => (done = true));
    send.catch(() => undefined); // awaited below

    const recoveries: number[] = [];
    const cutAt: number[] = [];
    for (const fraction of CUT_AT) {
      await waitFor(() => done || relay.bytesUp - relayedBefore >= message.length * fraction, `${fraction * 100}% of the upload`, 60_000, 1);
      assert.ok(!done, `swaks finished before the cut at ${fraction * 100}% (too fast to cut mid-transfer)`);
      cutAt.push(relay.bytesUp - relayedBefore);
      recoveries.push(await cutAndAwaitResume(`at ${fraction * 100}% of the upload`));
    }
    const result = await send;
    const elapsed = Date.now() - startedAt;
    assert.match(result.stdout + result.stderr, /<- {2}250 .*accepted/i, 'the MTA accepted the message');

    const stored = await smtpd.waitForMessage((content) => messageIdOf(content) === messageId, `with Message-ID <${messageId}>`);
    assert.deepEqual(
      prependedHeaders(stored.content, message).map(([name]) => name),
      ['Return-Path', 'Delivered-To', 'Received'],
      'the maildir copy is the sent message below the trace headers OpenSMTPD prepends',
    );
    assert.equal(sha256(extractAttachment(stored.content, 'ten.bin')), sha256(attachment), 'attachment SHA-256');
    t.diagnostic(`SMTP ${(message.length / MiB).toFixed(1)} MiB, cut at ${cutAt.map((n) => (n / MiB).toFixed(1)).join(', ')} MiB relayed`);
    t.diagnostic(`SMTP cut → session.resumed (ms): ${recoveries.join(', ')}; whole send ${elapsed} ms`);
  });

  it('every stream ended with a clean FIN; each cut was one resume, none refused', async () => {
    const closes = await settledStreamCloses(server.process);
    assert.ok(closes.length >= 2, `stream.close entries: ${closes.length}`);
    assert.deepEqual(
      closes.filter((entry) => entry.outcome !== 'fin'),
      [],
      'streams that did not end with FIN',
    );
    assert.equal(logEvents(server.process, 'session.resumed').length, 2 * CUT_AT.length, 'session.resumed on the server');
    assert.equal(logEvents(client.process, 'session.resumed').length, 2 * CUT_AT.length, 'session.resumed on the client');
    assert.deepEqual(logEvents(server.process, 'session.resume.refused'), [], 'refused resumes (server)');
    assert.deepEqual(logEvents(client.process, 'session.resume.refused'), [], 'refused resumes (client)');
  });
});
