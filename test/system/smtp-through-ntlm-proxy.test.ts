/**
 * SMTP through a corporate proxy that demands NTLM: `reflector connect
 * --proxy ... --proxy-auth ntlm` (user and domain as flags, the password in
 * REFLECTOR_PROXY_PASSWORD) → squid with ntlm_fake_auth (a real Type 1 →
 * 407 challenge → Type 3 exchange on one kept-alive connection) → `reflector
 * server` → OpenSMTPD. swaks sends a 5 MiB attachment, and a prepared
 * message that must land in the maildir byte for byte.
 *
 * Needs (Debian): squid, openssl, opensmtpd, swaks; root. Skipped with a
 * message when missing, failed under CI.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sleep } from './harness/child-process.js';
import { SQUID_REQUIREMENTS, startSquid, type RunningProxy } from './harness/http-proxies.js';
import { SWAKS_REQUIREMENTS, swaksSendMessage, swaksSendWithAttachment } from './harness/mail-clients.js';
import { buildMimeMessage, extractAttachment, parseHeaders, prependedHeaders, sha256, splitHeaderBody } from './harness/mail-messages.js';
import { OPENSMTPD_REQUIREMENTS, startOpenSmtpd, type OpenSmtpd } from './harness/mail-servers.js';
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

const MiB = 1024 * 1024;
const ATTACHMENT_BYTES = 5 * MiB;
const NTLM_USER = 'alice';
const NTLM_DOMAIN = 'CORP';
const NTLM_PASSWORD = 'Winter2026!'; // ntlm_fake_auth accepts any; it must never show up in a log
const requirements = gate('SMTP through an NTLM proxy system test (smtp-through-ntlm-proxy)', [
  ...SQUID_REQUIREMENTS,
  ...OPENSMTPD_REQUIREMENTS,
  ...SWAKS_REQUIREMENTS,
]);

function messageIdOf(content: Buffer): string | undefined {
  const { headers } = splitHeaderBody(content.subarray(0, 64 * 1024).toString('latin1'));
  return parseHeaders(headers)
    .find(([name]) => name.toLowerCase() === 'message-id')?.[1]
    ?.replace(/^<|>$/g, '');
}

async function waitForProxyLog(proxy: RunningProxy, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = await proxy.log();
    if (pattern.test(log)) return log;
    if (Date.now() > deadline) throw new Error(`${pattern} not in squid's access.log after ${timeoutMs} ms:\n${log}`);
    await sleep(100);
  }
}

describe('SMTP through squid requiring NTLM: swaks → reflector connect --proxy-auth ntlm → squid → gateway → OpenSMTPD', { skip: requirements.skip, timeout: 180_000 }, () => {
  let dir: string;
  let keys: ReflectorKeys;
  let smtpd: OpenSmtpd;
  let server: ServerProcess;
  let squid: RunningProxy;
  let client: ClientProcess;
  let attachment: Buffer;
  let attachmentFile: string;
  const runId = `${process.pid}.${Date.now()}`;

  before(async () => {
    requirements.assertAvailable();
    dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-ntlm-smtp-'));
    keys = await makeReflectorKeys(path.join(dir, 'keys'));
    smtpd = await startOpenSmtpd();
    server = await startServerProcess({ keys, services: { smtp: smtpd.target } });
    squid = await startSquid({ auth: { scheme: 'ntlm' } });
    client = await startClientProcess({
      keys,
      url: server.url,
      forwards: [{ service: 'smtp' }],
      args: ['--proxy', squid.url, '--proxy-auth', 'ntlm', '--proxy-user', NTLM_USER, '--proxy-domain', NTLM_DOMAIN],
      env: { REFLECTOR_PROXY_PASSWORD: NTLM_PASSWORD },
    });
    attachment = randomBytes(ATTACHMENT_BYTES);
    attachmentFile = path.join(dir, 'payload.bin');
    await writeFile(attachmentFile, attachment);
  });

  after(async () => {
    await client?.stop();
    await squid?.stop();
    await server?.stop();
    await smtpd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('swaks sends a 5 MiB attachment through the NTLM-authenticated tunnel; the maildir copy decodes to the same SHA-256', async () => {
    const messageId = `swaks-ntlm.${runId}@client.example.com`;
    await swaksSendWithAttachment({
      port: client.ports.smtp!,
      from: 'alice@client.example.com',
      to: 'bob@mail.example.com',
      messageId,
      subject: 'five MiB through an NTLM proxy',
      body: 'The attachment is 5 MiB of random bytes.',
      attachmentFile,
      attachmentName: 'payload.bin',
    });
    const stored = await smtpd.waitForMessage((content) => messageIdOf(content) === messageId, `with Message-ID <${messageId}>`);
    const received = extractAttachment(stored.content, 'payload.bin');
    assert.equal(received.length, ATTACHMENT_BYTES, 'attachment length');
    assert.equal(sha256(received), sha256(attachment), 'attachment SHA-256');
    const closed = await waitForLogEvent(server.process, 'stream.close', (entry) => Number(entry.bytesToBackend) > (ATTACHMENT_BYTES * 4) / 3);
    assert.equal(closed.outcome, 'fin', `both halves closed cleanly (FIN) in ${JSON.stringify(closed)}`);
  });

  it('swaks sends a prepared message with the 5 MiB attachment; the maildir copy is that message byte for byte below the MTA trace headers', async () => {
    const messageId = `swaks-data-ntlm.${runId}@client.example.com`;
    const message = buildMimeMessage({
      from: 'Alice <alice@client.example.com>',
      to: 'Bob <bob@mail.example.com>',
      subject: 'byte-identical through an NTLM proxy',
      date: 'Tue, 01 Dec 2026 10:00:00 +0000',
      messageId,
      boundary: `=_reflector_ntlm_${runId}`,
      attachment,
      attachmentName: 'payload.bin',
    });
    await swaksSendMessage({ port: client.ports.smtp!, from: 'alice@client.example.com', to: 'bob@mail.example.com', message, file: path.join(dir, 'message.eml') });
    const stored = await smtpd.waitForMessage((content) => messageIdOf(content) === messageId, `with Message-ID <${messageId}>`);
    assert.deepEqual(
      prependedHeaders(stored.content, message).map(([name]) => name),
      ['Return-Path', 'Delivered-To', 'Received'],
      'OpenSMTPD prepends exactly its trace headers',
    );
    assert.equal(sha256(extractAttachment(stored.content, 'payload.bin')), sha256(attachment), 'attachment SHA-256');
  });

  it('squid challenged the CONNECT (407) and then tunnelled it as the NTLM user; the password appears in no log', async () => {
    const closes = await settledStreamCloses(server.process);
    assert.deepEqual(
      closes.filter((entry) => entry.outcome !== 'fin'),
      [],
      'SMTP streams that did not end with FIN',
    );
    await client.stop(); // squid writes the tunnel's access.log line when it closes
    const log = await waitForProxyLog(squid, new RegExp(`TCP_TUNNEL/200 \\d+ CONNECT 127\\.0\\.0\\.1:${server.address.port} \\S*${NTLM_USER} `));
    assert.match(log, new RegExp(`TCP_DENIED/407 \\d+ CONNECT 127\\.0\\.0\\.1:${server.address.port} `), 'the Type 1 message got a challenge first');
    // One tunnel carried the one session that carried both messages (squid counts only the bytes towards the client).
    assert.equal(log.split('\n').filter((line) => line.includes('TCP_TUNNEL/200')).length, 1, `one CONNECT tunnel:\n${log}`);
    assert.equal(logEvents(server.process, 'auth.success').length, 1, 'one session on the gateway');
    assert.ok(!client.process.output().includes(NTLM_PASSWORD), 'the proxy password is not in the client output');
  });
});
