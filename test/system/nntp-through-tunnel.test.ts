/**
 * NNTP through the tunnel, with real programs at both ends: INN (innd, which
 * hands readers to nnrpd) behind `reflector server`, and Python's nntplib
 * posting an article through `reflector connect -L` and reading it back on a
 * new connection. The body comes back byte for byte; INN adds only its own
 * headers (Path, Injection-*, Xref, ...).
 *
 * Needs (Debian): inn2, python3 (nntplib, Python ≤ 3.12); root (innd runs as
 * `news` through setpriv). Skipped with a message when missing, failed under CI.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { NNTPLIB_REQUIREMENTS, nntplibPostAndRead } from './harness/mail-clients.js';
import { base64Lines, buildArticle, CRLF, parseHeaders, sha256, splitHeaderBody, TRICKY_LINES } from './harness/mail-messages.js';
import { INND_REQUIREMENTS, startInnd, type Innd } from './harness/mail-servers.js';
import { gate } from './harness/requirements.js';
import { settledStreamCloses, startTunnel, type Tunnel } from './harness/reflector-processes.js';

const KiB = 1024;
const requirements = gate('NNTP system test (nntp-through-tunnel)', [...INND_REQUIREMENTS, ...NNTPLIB_REQUIREMENTS]);

describe('NNTP through the tunnel: INN behind the gateway, nntplib in front', { skip: requirements.skip, timeout: 300_000 }, () => {
  let innd: Innd;
  let tunnel: Tunnel;
  const runId = `${process.pid}.${Date.now()}`;

  before(async () => {
    requirements.assertAvailable();
    innd = await startInnd({ groups: ['local.reflector'] });
    tunnel = await startTunnel({ services: { nntp: innd.target } });
  });

  after(async () => {
    await tunnel?.stop();
    await innd?.stop();
  });

  it('nntplib posts an article through reflector connect -L and reads it back unchanged on a new connection', async () => {
    // ~700 KB: several flow-control windows, below INN's default 1,000,000-byte maxartsize.
    const body = Buffer.from([...TRICKY_LINES, ''].join(CRLF) + base64Lines(randomBytes(512 * KiB)) + `.${CRLF}-- ${CRLF}signature${CRLF}`, 'latin1');
    const messageId = `article.${runId}@client.example.com`;
    const { article, headers: sentHeaders } = buildArticle({
      from: 'Alice <alice@client.example.com>', // INN wants a dotted domain
      newsgroup: 'local.reflector',
      subject: 'posted through the tunnel',
      messageId,
      body,
    });

    const exchange = await nntplibPostAndRead({ port: tunnel.port('nntp'), group: 'local.reflector', messageId, article });

    assert.match(exchange.welcome, /^20[01] /, 'a reader greeting after MODE READER');
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
    const path = stored.find(([name]) => name === 'Path')?.[1] ?? '';
    assert.match(path, /reflector-test\.localdomain/, 'INN added its Path');

    assert.equal(exchange.group.name, 'local.reflector');
    assert.ok(exchange.group.count >= 1, `group count ${exchange.group.count}`);
    assert.ok(exchange.overSubjects.includes('posted through the tunnel'), `OVER subjects: ${exchange.overSubjects.join(', ')}`);
  });

  it('every NNTP stream through the gateway ended with a clean FIN in both directions', async () => {
    const closes = await settledStreamCloses(tunnel.server.process);
    assert.ok(closes.length >= 2, `stream.close entries: ${closes.length}`);
    assert.deepEqual(
      closes.filter((entry) => entry.outcome !== 'fin'),
      [],
      'streams that did not end with FIN',
    );
  });
});
