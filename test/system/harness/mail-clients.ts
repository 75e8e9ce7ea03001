/**
 * Real mail and news clients, run as child processes against a local port
 * (a `reflector connect -L` listener, or the server itself for a baseline):
 * swaks and curl for SMTP, curl and Python's poplib for POP3, Python's
 * nntplib for NNTP. Each returns what it saw; the tests compare bytes.
 */
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { run, type RunResult } from './child-process.js';
import { program, pythonModule, SYSTEM_PYTHON, type Requirement } from './requirements.js';

export const SWAKS_REQUIREMENTS: readonly Requirement[] = [program('swaks', 'swaks')];
export const CURL_REQUIREMENTS: readonly Requirement[] = [program('curl', 'curl')];
export const POPLIB_REQUIREMENTS: readonly Requirement[] = [program(SYSTEM_PYTHON, 'python3'), pythonModule('poplib')];
export const NNTPLIB_REQUIREMENTS: readonly Requirement[] = [program(SYSTEM_PYTHON, 'python3'), pythonModule('nntplib')];

const LOOPBACK = '127.0.0.1';

function check(result: RunResult, what: string): RunResult {
  if (result.code !== 0) throw new Error(`${what} exited ${result.code}\n--- stdout ---\n${result.stdout.slice(-4_000)}\n--- stderr ---\n${result.stderr.slice(-4_000)}`);
  return result;
}

// ---------------------------------------------------------------- SMTP

export interface SwaksMessage {
  port: number;
  from: string;
  to: string;
  messageId: string;
  subject: string;
  body: string;
  /** File attached as application/octet-stream (base64). */
  attachmentFile: string;
  attachmentName: string;
}

/** swaks builds a multipart/mixed message with the file attached and sends it; DATA is not echoed. */
export async function swaksSendWithAttachment(message: SwaksMessage): Promise<RunResult> {
  const result = await run(
    'swaks',
    [
      '--server', LOOPBACK,
      '--port', String(message.port),
      '--from', message.from,
      '--to', message.to,
      '--header', `Message-Id: <${message.messageId}>`,
      '--header', `Subject: ${message.subject}`,
      '--body', message.body,
      '--attach-type', 'application/octet-stream',
      '--attach-name', message.attachmentName,
      '--attach', `@${message.attachmentFile}`,
      '--suppress-data',
      '--timeout', '120s',
    ],
    { timeoutMs: 150_000 },
  );
  return check(result, 'swaks');
}

/**
 * swaks sends `message` (a whole message with CRLF line ends) as the DATA,
 * through `--data @file`: swaks dot-stuffs it and always ends DATA with
 * CRLF "." CRLF after the file, so `file` gets the message without its final
 * CRLF, and the MTA receives exactly `message`.
 */
export async function swaksSendMessage(options: { port: number; from: string; to: string; message: Buffer; file: string }): Promise<RunResult> {
  if (!options.message.subarray(-2).equals(Buffer.from('\r\n'))) throw new Error('swaksSendMessage: the message must end with CRLF');
  await writeFile(options.file, options.message.subarray(0, -2));
  const result = await run(
    'swaks',
    [
      '--server', LOOPBACK,
      '--port', String(options.port),
      '--from', options.from,
      '--to', options.to,
      '--data', `@${options.file}`,
      '--suppress-data',
      '--timeout', '120s',
    ],
    { timeoutMs: 150_000 },
  );
  return check(result, 'swaks --data');
}

/** curl uploads `file` byte for byte as the DATA of one message (curl does the dot-stuffing). */
export async function curlSendMail(options: { port: number; from: string; to: string; file: string }): Promise<RunResult> {
  const result = await run(
    'curl',
    ['--silent', '--show-error', '--max-time', '120', `smtp://${LOOPBACK}:${options.port}`, '--mail-from', options.from, '--mail-rcpt', options.to, '--upload-file', options.file],
    { timeoutMs: 150_000 },
  );
  return check(result, 'curl smtp');
}

// ---------------------------------------------------------------- POP3

export interface Pop3Account {
  port: number;
  user: string;
  password: string;
}

/** curl pop3://HOST:PORT/N: RETR of message N, written to `outFile` exactly as curl received it (dot-stuffing undone). */
export async function curlRetrieve(account: Pop3Account, index: number, outFile: string): Promise<Buffer> {
  const result = await run(
    'curl',
    ['--silent', '--show-error', '--max-time', '120', '--user', `${account.user}:${account.password}`, `pop3://${LOOPBACK}:${account.port}/${index}`, '--output', outFile],
    { timeoutMs: 150_000 },
  );
  check(result, 'curl pop3');
  return readFile(outFile);
}

/** curl pop3://HOST:PORT/: the LIST answer ("N SIZE" lines). */
export async function curlList(account: Pop3Account): Promise<string> {
  const result = await run(
    'curl',
    ['--silent', '--show-error', '--max-time', '60', '--user', `${account.user}:${account.password}`, `pop3://${LOOPBACK}:${account.port}/`],
    { timeoutMs: 90_000 },
  );
  return check(result, 'curl pop3 LIST').stdout;
}

const POPLIB_SCRIPT = String.raw`
import base64, json, poplib, sys
port, user, password, action = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
p = poplib.POP3("127.0.0.1", port, timeout=120)
out = {"welcome": p.getwelcome().decode("latin-1")}
p.user(user)
p.pass_(password)
count, size = p.stat()
out["stat"] = [count, size]
out["list"] = [line.decode("latin-1") for line in p.list()[1]]
out["uidl"] = [line.decode("latin-1") for line in p.uidl()[1]]
if action == "retrieve-all":
    # RETR lines come back without their CRLF and with dot-stuffing undone.
    out["messages"] = [base64.b64encode(b"\r\n".join(p.retr(i)[1]) + b"\r\n").decode() for i in range(1, count + 1)]
elif action == "delete-first":
    out["dele"] = p.dele(1).decode("latin-1")
else:
    raise SystemExit("unknown action " + action)
out["quit"] = p.quit().decode("latin-1")
print(json.dumps(out))
`;

export interface PoplibSession {
  welcome: string;
  stat: [number, number];
  list: string[];
  uidl: string[];
  /** retrieve-all: every message, rebuilt with CRLF line ends. */
  messages?: Buffer[];
  dele?: string;
  quit: string;
}

/** One POP3 session with Python's poplib: USER/PASS, STAT, LIST, UIDL, then RETR of all or DELE 1, then QUIT. */
export async function poplibSession(account: Pop3Account, action: 'retrieve-all' | 'delete-first'): Promise<PoplibSession> {
  const result = await run(
    SYSTEM_PYTHON,
    ['-W', 'ignore::DeprecationWarning', '-c', POPLIB_SCRIPT, String(account.port), account.user, account.password, action],
    { timeoutMs: 150_000 },
  );
  check(result, 'python poplib');
  const { messages, ...rest } = JSON.parse(result.stdout) as Omit<PoplibSession, 'messages'> & { messages?: string[] };
  return { ...rest, ...(messages ? { messages: messages.map((text) => Buffer.from(text, 'base64')) } : {}) };
}

// ---------------------------------------------------------------- NNTP

const NNTPLIB_SCRIPT = String.raw`
import base64, io, json, nntplib, sys, time
port, group, message_id = int(sys.argv[1]), sys.argv[2], sys.argv[3]
article = sys.stdin.buffer.read()
out = {}
s = nntplib.NNTP("127.0.0.1", port, readermode=True, timeout=120)
out["welcome"] = s.getwelcome()
out["post"] = s.post(io.BytesIO(article))
out["quit_after_post"] = s.quit()
# Read it back on a new connection, as a newsreader would; innd files the
# article a moment after nnrpd accepts it, so retry 430 for a while.
deadline = time.time() + 30
while True:
    s = nntplib.NNTP("127.0.0.1", port, readermode=True, timeout=120)
    try:
        resp, info = s.article("<" + message_id + ">")
        break
    except nntplib.NNTPTemporaryError:
        s.quit()
        if time.time() > deadline:
            raise
        time.sleep(0.2)
out["article_response"] = resp
out["article_number"] = info.number
out["article_message_id"] = info.message_id
# Lines come back without CRLF and with dot-stuffing undone.
out["article"] = base64.b64encode(b"\r\n".join(info.lines) + b"\r\n").decode()
resp, count, first, last, name = s.group(group)
out["group"] = {"response": resp, "count": count, "first": first, "last": last, "name": name}
resp, overviews = s.over((first, last))
out["over_subjects"] = [ov.get("subject") for _, ov in overviews]
out["quit"] = s.quit()
print(json.dumps(out))
`;

export interface NntplibExchange {
  welcome: string;
  post: string;
  articleResponse: string;
  articleNumber: number;
  articleMessageId: string;
  /** The article as read back (headers, blank line, body), CRLF line ends. */
  article: Buffer;
  group: { response: string; count: number; first: number; last: number; name: string };
  overSubjects: string[];
}

/**
 * Python's nntplib posts `article` (MODE READER, POST), then on a new
 * connection fetches it by Message-ID (ARTICLE), selects the group (GROUP)
 * and reads its overview (OVER).
 */
export async function nntplibPostAndRead(options: { port: number; group: string; messageId: string; article: Buffer }): Promise<NntplibExchange> {
  const result = await runPythonWithInput(
    ['-W', 'ignore::DeprecationWarning', '-c', NNTPLIB_SCRIPT, String(options.port), options.group, options.messageId],
    options.article,
  );
  check(result, 'python nntplib');
  const raw = JSON.parse(result.stdout) as Record<string, unknown>;
  return {
    welcome: raw.welcome as string,
    post: raw.post as string,
    articleResponse: raw.article_response as string,
    articleNumber: raw.article_number as number,
    articleMessageId: raw.article_message_id as string,
    article: Buffer.from(raw.article as string, 'base64'),
    group: raw.group as NntplibExchange['group'],
    overSubjects: raw.over_subjects as string[],
  };
}

function runPythonWithInput(args: string[], input: Buffer): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(SYSTEM_PYTHON, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? -1,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (signal ? `\n[killed by ${signal}]` : ''),
      });
    });
    child.stdin.end(input);
  });
}
