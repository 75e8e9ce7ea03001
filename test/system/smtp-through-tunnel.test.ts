/**
 * SMTP through the tunnel, with real programs at both ends: OpenSMTPD behind
 * `reflector server`, and swaks and curl sending through `reflector connect
 * -L`. A 5 MiB attachment crosses the tunnel (many records, many flow-control
 * windows) and lands in the MTA's maildir unchanged.
 *
 * Needs (Debian): opensmtpd, swaks, curl; root (smtpd drops privileges itself).
 * Skipped with a message when they are missing, failed under CI.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CURL_REQUIREMENTS, curlSendMail, SWAKS_REQUIREMENTS, swaksSendWithAttachment } from './harness/mail-clients.js';
import { buildMimeMessage, extractAttachment, parseHeaders, prependedHeaders, sha256, splitHeaderBody } from './harness/mail-messages.js';
import { OPENSMTPD_REQUIREMENTS, startOpenSmtpd, type OpenSmtpd } from './harness/mail-servers.js';
import { gate } from './harness/requirements.js';
import { startTunnel, waitForLogEvent, type Tunnel } from './harness/reflector-processes.js';

const MiB = 1024 * 1024;
const ATTACHMENT_BYTES = 5 * MiB;
const requirements = gate('SMTP system test (smtp-through-tunnel)', [...OPENSMTPD_REQUIREMENTS, ...SWAKS_REQUIREMENTS, ...CURL_REQUIREMENTS]);

/** The Message-ID header of a stored message, without angle brackets. */
function messageIdOf(content: Buffer): string | undefined {
  const { headers } = splitHeaderBody(content.subarray(0, 64 * 1024).toString('latin1'));
  const value = parseHeaders(headers).find(([name]) => name.toLowerCase() === 'message-id')?.[1];
  return value?.replace(/^<|>$/g, '');
}

describe('SMTP through the tunnel: OpenSMTPD behind the gateway, swaks and curl in front', { skip: requirements.skip, timeout: 300_000 }, () => {
  let smtpd: OpenSmtpd;
  let tunnel: Tunnel;
  let attachment: Buffer;
  let attachmentFile: string;
  const runId = `${process.pid}.${Date.now()}`;

  before(async () => {
    requirements.assertAvailable();
    smtpd = await startOpenSmtpd();
    tunnel = await startTunnel({ services: { smtp: smtpd.target } });
    attachment = randomBytes(ATTACHMENT_BYTES);
    attachmentFile = path.join(tunnel.keys.dir, 'payload.bin');
    await writeFile(attachmentFile, attachment);
  });

  after(async () => {
    await tunnel?.stop();
    await smtpd?.stop();
  });

  it('swaks sends a 5 MiB attachment through reflector connect -L; the maildir copy decodes to the same SHA-256', async () => {
    const messageId = `swaks.${runId}@client.example.com`;
    await swaksSendWithAttachment({
      port: tunnel.port('smtp'),
      from: 'alice@client.example.com',
      to: 'bob@mail.example.com',
      messageId,
      subject: 'five MiB through the tunnel',
      body: 'The attachment is 5 MiB of random bytes.',
      attachmentFile,
      attachmentName: 'payload.bin',
    });
    const stored = await smtpd.waitForMessage((content) => messageIdOf(content) === messageId, `with Message-ID <${messageId}>`);
    const received = extractAttachment(stored.content, 'payload.bin');
    assert.equal(received.length, ATTACHMENT_BYTES, 'attachment length');
    assert.equal(sha256(received), sha256(attachment), 'attachment SHA-256');
    // The bytes went through the gateway: its audit log counts them (base64 makes 5 MiB about 6.8 MB).
    const closed = await waitForLogEvent(tunnel.server.process, 'stream.close', (entry) => Number(entry.bytesToBackend) > (ATTACHMENT_BYTES * 4) / 3);
    assert.equal(closed.outcome, 'fin', `both halves closed cleanly (FIN) in ${JSON.stringify(closed)}`);
  });

  it('curl sends a prepared MIME message through the tunnel; the maildir copy is that message byte for byte below the MTA trace headers', async () => {
    const messageId = `curl.${runId}@client.example.com`;
    const sent = buildMimeMessage({
      from: 'Alice <alice@client.example.com>',
      to: 'Bob <bob@mail.example.com>',
      subject: 'byte-identical through the tunnel',
      date: 'Tue, 01 Dec 2026 10:00:00 +0000',
      messageId,
      boundary: `=_reflector_${runId}`,
      attachment,
      attachmentName: 'payload.bin',
    });
    const file = path.join(tunnel.keys.dir, 'message.eml');
    await writeFile(file, sent);
    await curlSendMail({ port: tunnel.port('smtp'), from: 'alice@client.example.com', to: 'bob@mail.example.com', file });

    const stored = await smtpd.waitForMessage((content) => messageIdOf(content) === messageId, `with Message-ID <${messageId}>`);
    // Maildir stores lines with LF; every other byte must be what curl sent.
    const added = prependedHeaders(stored.content, sent);
    assert.deepEqual(
      added.map(([name]) => name),
      ['Return-Path', 'Delivered-To', 'Received'],
      'OpenSMTPD prepends exactly its trace headers',
    );
    assert.equal(sha256(extractAttachment(stored.content, 'payload.bin')), sha256(attachment), 'attachment SHA-256');
  });
});
