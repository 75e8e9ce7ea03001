/**
 * Messages and articles the system tests send, and the small amount of MIME
 * and header parsing needed to compare what a server stored with what a
 * client sent: the headers a server adds are accounted for, everything else
 * must match byte for byte.
 */
import { createHash } from 'node:crypto';

export const CRLF = '\r\n';

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Base64 in 76-character lines, CRLF-terminated, as MIME writes it. */
export function base64Lines(data: Buffer): string {
  const text = data.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < text.length; i += 76) lines.push(text.slice(i, i + 76));
  return lines.join(CRLF) + CRLF;
}

/**
 * Lines every mail and news path must carry unchanged: dot-stuffing (a lone
 * ".", leading dots), trailing spaces, a tab, a 998-octet line (the SMTP
 * limit), and lines that look like headers or SMTP commands.
 */
export const TRICKY_LINES: readonly string[] = [
  'Lines that must survive the trip unchanged:',
  '.',
  '..',
  '.leading dot',
  '..two leading dots',
  ' . a space then a dot',
  'trailing spaces   ',
  'a\ttab',
  'QUIT',
  'From: not a header, only a body line',
  `${'x'.repeat(997)}.`,
  '',
  'end of text part',
];

export interface MimeMessageOptions {
  from: string;
  to: string;
  subject: string;
  messageId: string;
  /** RFC 5322 date; fixed so that the MTA adds no Date header of its own. */
  date: string;
  attachment: Buffer;
  attachmentName: string;
  boundary: string;
}

/** A multipart/mixed message with CRLF line ends: a text part of TRICKY_LINES and a base64 attachment. */
export function buildMimeMessage(options: MimeMessageOptions): Buffer {
  const text = [
    `From: ${options.from}`,
    `To: ${options.to}`,
    `Subject: ${options.subject}`,
    `Date: ${options.date}`,
    `Message-ID: <${options.messageId}>`,
    'MIME-Version: 1.0',
    `Content-Type: multipart/mixed; boundary="${options.boundary}"`,
    '',
    'This is a multi-part message in MIME format.',
    '',
    `--${options.boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Transfer-Encoding: 7bit',
    '',
    ...TRICKY_LINES,
    `--${options.boundary}`,
    `Content-Type: application/octet-stream; name="${options.attachmentName}"`,
    `Content-Disposition: attachment; filename="${options.attachmentName}"`,
    'Content-Transfer-Encoding: base64',
    '',
  ].join(CRLF);
  return Buffer.concat([
    Buffer.from(text + CRLF, 'latin1'),
    Buffer.from(base64Lines(options.attachment), 'latin1'),
    Buffer.from(`--${options.boundary}--${CRLF}`, 'latin1'),
  ]);
}

/** Unfolds a header block ("Name: value" with continuation lines) into [name, value] pairs. */
export function parseHeaders(block: string): Array<[string, string]> {
  const headers: Array<[string, string]> = [];
  for (const line of block.split(/\r?\n/)) {
    if (line === '') continue;
    if (/^[ \t]/.test(line) && headers.length > 0) {
      headers[headers.length - 1]![1] += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`not a header line: ${JSON.stringify(line.slice(0, 80))}`);
    headers.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
  }
  return headers;
}

/** Splits at the first empty line; works with LF or CRLF line ends. */
export function splitHeaderBody(message: string): { headers: string; body: string } {
  const match = /\r?\n\r?\n/.exec(message);
  if (match === null) return { headers: message, body: '' };
  return { headers: message.slice(0, match.index), body: message.slice(match.index + match[0].length) };
}

/**
 * Extracts and decodes the base64 part whose filename is `filename` from a
 * multipart message (as a maildir stores it: LF or CRLF line ends).
 */
export function extractAttachment(message: Buffer, filename: string): Buffer {
  const text = message.toString('latin1');
  const top = splitHeaderBody(text);
  const contentType = parseHeaders(top.headers).find(([name]) => name.toLowerCase() === 'content-type')?.[1] ?? '';
  const boundary = /boundary="?([^";]+)"?/i.exec(contentType)?.[1];
  if (boundary === undefined) throw new Error(`no multipart boundary in Content-Type: ${contentType}`);
  const parts = top.body.split(new RegExp(`(?:^|\\r?\\n)--${boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  for (const part of parts.slice(1)) {
    if (part.startsWith('--')) break; // the closing delimiter
    const { headers, body } = splitHeaderBody(part.replace(/^[ \t]*\r?\n/, ''));
    const fields = parseHeaders(headers);
    const described = fields
      .filter(([name]) => /^content-(disposition|type)$/i.test(name))
      .map(([, text]) => text)
      .join('; ');
    if (!described.includes(`"${filename}"`)) continue;
    const encoding = fields.find(([name]) => name.toLowerCase() === 'content-transfer-encoding')?.[1] ?? '';
    if (encoding.toLowerCase() !== 'base64') throw new Error(`attachment ${filename} is ${encoding || '7bit'}, expected base64`);
    return Buffer.from(body.replace(/[\r\n\t ]/g, ''), 'base64');
  }
  throw new Error(`no MIME part with filename "${filename}"`);
}

/** Header names OpenSMTPD prepends when it delivers to a maildir (trace and delivery headers). */
export const MTA_PREPENDED_HEADERS: ReadonlySet<string> = new Set(['return-path', 'delivered-to', 'received']);

/**
 * A maildir copy is what the client sent, with CRLF stored as LF, below the
 * headers the MTA prepends. Returns those prepended headers (parsed), or
 * throws describing the first difference.
 */
export function prependedHeaders(stored: Buffer, sent: Buffer, allowed: ReadonlySet<string> = MTA_PREPENDED_HEADERS): Array<[string, string]> {
  const expected = Buffer.from(sent.toString('latin1').replaceAll(CRLF, '\n'), 'latin1');
  if (stored.length < expected.length || !stored.subarray(stored.length - expected.length).equals(expected)) {
    throw new Error(`the stored message does not end with the sent message (${describeDifference(stored, expected)})`);
  }
  const prefix = stored.subarray(0, stored.length - expected.length).toString('latin1');
  if (prefix !== '' && !prefix.endsWith('\n')) throw new Error(`the stored prefix does not end a line: ${JSON.stringify(prefix.slice(-80))}`);
  const headers = parseHeaders(prefix);
  const unexpected = headers.filter(([name]) => !allowed.has(name.toLowerCase()));
  if (unexpected.length > 0) throw new Error(`the MTA added unexpected headers: ${unexpected.map(([name]) => name).join(', ')}`);
  return headers;
}

/** Where two byte strings first differ, aligned at their ends (for messages with prepended headers). */
function describeDifference(stored: Buffer, expected: Buffer): string {
  const n = Math.min(stored.length, expected.length);
  for (let i = 1; i <= n; i += 1) {
    if (stored[stored.length - i] !== expected[expected.length - i]) {
      const at = expected.length - i;
      return `stored ${stored.length} bytes, sent ${expected.length} (LF-normalized); first difference from the end at sent offset ${at}: sent ${JSON.stringify(expected.subarray(Math.max(0, at - 20), at + 20).toString('latin1'))}, stored ${JSON.stringify(stored.subarray(Math.max(0, stored.length - i - 20), stored.length - i + 20).toString('latin1'))}`;
    }
  }
  return `stored ${stored.length} bytes is shorter than the ${expected.length} sent`;
}

export interface ArticleOptions {
  from: string;
  newsgroup: string;
  subject: string;
  messageId: string;
  body: Buffer;
}

/** A Usenet article with CRLF line ends. */
export function buildArticle(options: ArticleOptions): { article: Buffer; headers: Array<[string, string]> } {
  const headers: Array<[string, string]> = [
    ['From', options.from],
    ['Newsgroups', options.newsgroup],
    ['Subject', options.subject],
    ['Message-ID', `<${options.messageId}>`],
  ];
  const head = headers.map(([name, value]) => `${name}: ${value}${CRLF}`).join('');
  return { article: Buffer.concat([Buffer.from(`${head}${CRLF}`, 'latin1'), options.body]), headers };
}
