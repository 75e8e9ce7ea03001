/**
 * POP3 through the tunnel, with real programs at both ends: Dovecot behind
 * `reflector server`, curl and Python's poplib retrieving through
 * `reflector connect -L`. Each message comes back byte for byte as it was
 * placed in the maildir, including one larger than many flow-control windows
 * and lines that need dot-stuffing.
 *
 * Needs (Debian): dovecot-core, dovecot-pop3d, curl, python3 (poplib); root.
 * Skipped with a message when they are missing, failed under CI.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CURL_REQUIREMENTS, curlList, curlRetrieve, POPLIB_REQUIREMENTS, poplibSession, type Pop3Account } from './harness/mail-clients.js';
import { buildMimeMessage, CRLF, sha256, TRICKY_LINES } from './harness/mail-messages.js';
import { DOVECOT_REQUIREMENTS, startDovecot, type Dovecot } from './harness/mail-servers.js';
import { gate } from './harness/requirements.js';
import { settledStreamCloses, startTunnel, type Tunnel } from './harness/reflector-processes.js';

const MiB = 1024 * 1024;
const requirements = gate('POP3 system test (pop3-through-tunnel)', [...DOVECOT_REQUIREMENTS, ...CURL_REQUIREMENTS, ...POPLIB_REQUIREMENTS]);

/**
 * A raw client that pipelines every command and half-closes at once (what
 * `nc -N` does), then reads until the server's FIN: the server must see the
 * FIN only after the commands, and every reply must come back.
 */
function pipelinedThenHalfClose(port: number, commands: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
    socket.end(commands);
  });
}

function plainMessage(subject: string, lines: readonly string[]): Buffer {
  return Buffer.from(
    [
      'From: Operator <operator@mail.example.com>',
      'To: Alice <alice@mail.example.com>',
      `Subject: ${subject}`,
      'Date: Tue, 01 Dec 2026 09:00:00 +0000',
      `Message-ID: <${subject.replace(/\W+/g, '-')}@mail.example.com>`,
      '',
      ...lines,
    ].join(CRLF) + CRLF,
    'latin1',
  );
}

describe('POP3 through the tunnel: Dovecot behind the gateway, curl and poplib in front', { skip: requirements.skip, timeout: 300_000 }, () => {
  const messages = [
    plainMessage('dot-stuffing', TRICKY_LINES),
    buildMimeMessage({
      from: 'Operator <operator@mail.example.com>',
      to: 'Alice <alice@mail.example.com>',
      subject: 'three MiB attachment',
      date: 'Tue, 01 Dec 2026 09:01:00 +0000',
      messageId: 'three-mib@mail.example.com',
      boundary: '=_reflector_pop3',
      attachment: randomBytes(3 * MiB),
      attachmentName: 'three.bin',
    }),
    plainMessage('last one', ['short', '.', 'bye']),
  ];
  let dovecot: Dovecot;
  let tunnel: Tunnel;
  let account: Pop3Account;

  before(async () => {
    requirements.assertAvailable();
    dovecot = await startDovecot({ user: 'alice', password: 'pop3 secret', messages });
    tunnel = await startTunnel({ services: { pop3: dovecot.target } });
    account = { port: tunnel.port('pop3'), user: dovecot.user, password: dovecot.password };
  });

  after(async () => {
    await tunnel?.stop();
    await dovecot?.stop();
  });

  it('curl lists every message with its exact size through the tunnel', async () => {
    const listing = await curlList(account);
    assert.deepEqual(
      listing.trim().split(/\r?\n/),
      messages.map((message, index) => `${index + 1} ${message.length}`),
    );
  });

  it('curl pop3:// retrieves each message byte for byte as it sits in the maildir', async () => {
    for (const [index, message] of messages.entries()) {
      const received = await curlRetrieve(account, index + 1, path.join(tunnel.keys.dir, `retr-${index + 1}.eml`));
      assert.equal(received.length, message.length, `message ${index + 1} length`);
      assert.ok(received.equals(message), `message ${index + 1}: SHA-256 ${sha256(received)}, expected ${sha256(message)}`);
    }
  });

  it('poplib (STAT, LIST, UIDL, RETR) gets the same bytes through the tunnel', async () => {
    const session = await poplibSession(account, 'retrieve-all');
    assert.match(session.welcome, /^\+OK/);
    assert.deepEqual(session.stat, [messages.length, messages.reduce((sum, message) => sum + message.length, 0)]);
    assert.equal(session.uidl.length, messages.length);
    assert.equal(session.messages?.length, messages.length);
    for (const [index, message] of messages.entries()) {
      assert.ok(session.messages![index]!.equals(message), `message ${index + 1} differs (poplib)`);
    }
    assert.match(session.quit, /^\+OK/);
  });

  it('pipelined commands followed at once by a half-close get the same replies through the tunnel as directly', async () => {
    const commands = `CAPA\r\nUSER ${account.user}\r\nPASS ${account.password}\r\nSTAT\r\nRETR 1\r\nQUIT\r\n`;
    const direct = await pipelinedThenHalfClose(dovecot.target.port, commands);
    const tunnelled = await pipelinedThenHalfClose(account.port, commands);
    assert.match(direct.toString('latin1'), /\+OK Logging out\.\r\n$/, 'the direct exchange ran to QUIT');
    assert.equal(tunnelled.toString('latin1'), direct.toString('latin1'));
  });

  it('a DELE then QUIT through the tunnel removes the message from the maildir', async () => {
    const before = await dovecot.messageFiles();
    const deleting = await poplibSession(account, 'delete-first');
    assert.match(deleting.dele ?? '', /^\+OK/);
    assert.match(deleting.quit, /^\+OK/);
    const after = await poplibSession(account, 'retrieve-all');
    assert.equal(after.stat[0], messages.length - 1);
    assert.ok(after.messages![0]!.equals(messages[1]!), 'message 2 is now message 1');
    assert.equal((await dovecot.messageFiles()).length, before.length - 1, 'one file fewer in the maildir');
  });

  it('every POP3 stream through the gateway ended with a clean FIN in both directions', async () => {
    const closes = await settledStreamCloses(tunnel.server.process);
    assert.ok(closes.length >= messages.length + 4, `stream.close entries: ${closes.length}`);
    assert.deepEqual(
      closes.filter((entry) => entry.outcome !== 'fin'),
      [],
      'streams that did not end with FIN',
    );
  });
});
