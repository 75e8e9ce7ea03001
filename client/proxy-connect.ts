/**
 * HTTP CONNECT through a forward proxy, on one raw socket that is handed back
 * connected to the target (wstunnel's `connect_with_http_proxy`). The caller
 * wraps it in TLS for wss:// or gives it to the WebSocket as it is.
 *
 *   connect ──CONNECT (+ Basic)────────────────────────────> 200 ──> socket
 *      │     CONNECT + NTLM Type 1 ──> 407 NTLM <Type 2> ──┐
 *      │     (drain the 407 body, same socket)             │
 *      │     CONNECT + NTLM Type 3 <───────────────────────┘──> 200 ──> socket
 *      │
 *      └ refused / unreachable / no answer within timeoutMs: ConnectError    407: ProxyAuthError (fatal)
 *
 * NTLM authenticates the connection, not the request: Type 1 and Type 3 must
 * travel on the same kept-alive socket, which is why this is not
 * https-proxy-agent (it sends Basic only, and answers a 407 on a new socket).
 */
import net from 'node:net';
import { ConnectError, ProxyAuthError } from './connect-error.js';
import { NtlmMessageError, parseType2Message, type1Header, type3Header } from './ntlm.js';
import { connectTcp } from './tcp-connect.js';

export type ProxyCredentials =
  | { scheme: 'basic'; user: string; password: string }
  | { scheme: 'ntlm'; user: string; domain: string; password: string; workstation?: string };

export interface ProxyConnectOptions {
  /** The proxy, `http://host:port`; any credentials in it are ignored here (pass `credentials`). */
  proxy: URL;
  target: { host: string; port: number };
  credentials?: ProxyCredentials;
  /** One deadline for reaching the proxy and finishing the whole CONNECT exchange (every NTLM round). */
  timeoutMs: number;
}

/** Longest response head accepted from a proxy, and longest 407 body drained. */
const MAX_HEAD_BYTES = 64 * 1024;
const MAX_BODY_BYTES = 1024 * 1024;

interface ProxyResponse {
  status: number;
  reason: string;
  headers: Map<string, string[]>;
  /** True when the proxy said it closes the connection after this response. */
  closes: boolean;
}

/** `http://proxy.example:3128`: how a proxy is named in messages (never with credentials). */
export function describeProxy(proxy: URL): string {
  return `${proxy.protocol}//${proxy.host}`;
}

/** `host:port`, with IPv6 in brackets, as the CONNECT request line and Host header want it. */
export function authority(target: { host: string; port: number }): string {
  return `${net.isIPv6(target.host) ? `[${target.host}]` : target.host}:${target.port}`;
}

/**
 * Opens a tunnel to `target` through the proxy; resolves with the socket once the proxy answered 2xx.
 * One deadline, `timeoutMs`, covers reaching the proxy and every round of the exchange (CONNECT, each
 * NTLM 407 round): a proxy that stops answering fails the attempt with a ConnectError naming the proxy
 * and the request it left unanswered, the socket is destroyed, and the caller's reconnect loop retries.
 */
export async function connectThroughProxy(options: ProxyConnectOptions): Promise<net.Socket> {
  const name = describeProxy(options.proxy);
  const started = Date.now();
  const socket = await openSocket(options.proxy, name, options.timeoutMs);
  const target = authority(options.target);
  const reader = new ResponseReader(socket, name);
  const deadline = setTimeout(
    () => {
      const what = reader.answering ? 'did not finish its answer to' : 'did not answer';
      socket.destroy(new ConnectError(`proxy ${name} ${what} ${reader.step} to ${target} within ${options.timeoutMs} ms`));
    },
    Math.max(1, options.timeoutMs - (Date.now() - started)),
  );
  try {
    await exchange(socket, reader, options, name);
    reader.release();
    return socket;
  } catch (error) {
    socket.destroy();
    throw error;
  } finally {
    clearTimeout(deadline);
  }
}

async function exchange(socket: net.Socket, reader: ResponseReader, options: ProxyConnectOptions, name: string): Promise<void> {
  const target = authority(options.target);
  const { credentials } = options;
  const send = (step: string, authorization?: string): void => {
    const lines = [`CONNECT ${target} HTTP/1.1`, `Host: ${target}`, 'User-Agent: reflector', 'Proxy-Connection: keep-alive'];
    if (authorization !== undefined) lines.push(`Proxy-Authorization: ${authorization}`);
    reader.expectAnswer(step);
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  };

  if (credentials?.scheme === 'ntlm') {
    send('the NTLM CONNECT (type 1)', type1Header());
    const challenge = await reader.next();
    if (challenge.status !== 407) return accept(challenge, name, target, credentials);
    const token = (challenge.headers.get('proxy-authenticate') ?? []).find((value) => /^NTLM\s+\S/i.test(value));
    if (token === undefined) throw authRequired(challenge, name, credentials);
    if (challenge.closes) {
      throw new ConnectError(`proxy ${name} closed the connection after its NTLM challenge; NTLM needs a kept-alive connection`);
    }
    let parsed;
    try {
      parsed = parseType2Message(token);
    } catch (error) {
      if (!(error instanceof NtlmMessageError)) throw error;
      throw new ConnectError(`proxy ${name} sent a malformed NTLM challenge: ${error.message}`, { cause: error });
    }
    send('the NTLM CONNECT (type 3)', type3Header(parsed, credentials));
    return accept(await reader.next(), name, target, credentials);
  }

  if (credentials === undefined) send('the CONNECT');
  else send('the CONNECT with Basic credentials', `Basic ${Buffer.from(`${credentials.user}:${credentials.password}`).toString('base64')}`);
  return accept(await reader.next(), name, target, credentials);
}

/** The final answer to a CONNECT: 2xx opens the tunnel, anything else is a one-sentence error. */
function accept(response: ProxyResponse, name: string, target: string, credentials: ProxyCredentials | undefined): void {
  if (response.status >= 200 && response.status < 300) return;
  if (response.status === 407) throw authRequired(response, name, credentials);
  throw new ConnectError(`proxy ${name} refused CONNECT to ${target}: ${response.status} ${response.reason}`.trimEnd());
}

/** 407: which schemes the proxy offers, and what to pass — or that it refused what we sent. */
function authRequired(response: ProxyResponse, name: string, credentials: ProxyCredentials | undefined): ProxyAuthError {
  const offered = offeredSchemes(response);
  const offers = offered.length > 0 ? `it offers: ${offered.join(', ')}` : 'it offers no scheme';
  const ntlm = offered.some((scheme) => scheme.toUpperCase() === 'NTLM');
  const basic = offered.some((scheme) => scheme.toUpperCase() === 'BASIC');
  if (credentials === undefined) {
    const hint = ntlm
      ? '; pass --proxy-auth ntlm --proxy-user DOMAIN\\USER with the password in REFLECTOR_PROXY_PASSWORD or --proxy-password-file'
      : basic
        ? '; put the user and password in the proxy URL (http://USER:PASSWORD@host:port) or pass --proxy-auth basic --proxy-user USER'
        : '; Reflector speaks Basic and NTLM proxy authentication only';
    return new ProxyAuthError(`proxy ${name} requires authentication (${offers})${hint}`);
  }
  const used = credentials.scheme === 'ntlm' ? 'NTLM' : 'Basic';
  if (!offered.some((scheme) => scheme.toUpperCase() === used.toUpperCase())) {
    const hint = ntlm ? '; pass --proxy-auth ntlm' : basic ? '; pass --proxy-auth basic' : '';
    return new ProxyAuthError(`proxy ${name} does not accept ${used} authentication (${offers})${hint}`);
  }
  const who = credentials.scheme === 'ntlm' && credentials.domain !== '' ? `${credentials.domain}\\${credentials.user}` : credentials.user;
  return new ProxyAuthError(`proxy ${name} refused the credentials of ${who} (${used})`);
}

/** The scheme names of every `Proxy-Authenticate` challenge, in the order the proxy sent them. */
export function offeredSchemes(response: { headers: Map<string, string[]> }): string[] {
  const schemes: string[] = [];
  for (const value of response.headers.get('proxy-authenticate') ?? []) {
    const scheme = /^\s*([A-Za-z][\w-]*)/.exec(value)?.[1];
    if (scheme !== undefined && !schemes.some((seen) => seen.toUpperCase() === scheme.toUpperCase())) schemes.push(scheme);
  }
  return schemes;
}

function openSocket(proxy: URL, name: string, timeoutMs: number): Promise<net.Socket> {
  const host = proxy.hostname.startsWith('[') ? proxy.hostname.slice(1, -1) : proxy.hostname;
  return connectTcp({ host, port: Number(proxy.port || 80) }, timeoutMs, {
    timedOut: () => new ConnectError(`proxy ${name} unreachable: no answer within ${timeoutMs} ms`),
    failed: (error) => new ConnectError(`proxy ${name} unreachable: ${describeSocketError(error)}`, { cause: error }),
  });
}

/** errno → a few words. */
export function describeSocketError(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not found';
    case 'ECONNRESET':
      return 'connection reset';
    case 'ETIMEDOUT':
      return 'connection timed out';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'no route to host';
    default:
      return error.message;
  }
}

/**
 * Reads HTTP/1.x responses off the socket one at a time: the head, then the
 * body by Content-Length or chunked encoding (a 407 body must be drained
 * before the next request on the same socket). After a 2xx to CONNECT there
 * is no body: whatever followed the head belongs to the tunnel and is put back.
 */
class ResponseReader {
  private buffered: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;
  private ended = false;
  /** The request the proxy has yet to answer, and whether some of its answer has arrived: for the deadline's message. */
  step = 'the CONNECT';
  answering = false;
  // 'readable' rather than 'data': removing the listener leaves the socket neither flowing nor paused, so
  // whoever takes it next (http.ClientRequest for ws://) starts it with its own 'data' listener.
  private readonly onReadable = (): void => {
    for (let chunk = this.socket.read() as Buffer | null; chunk !== null; chunk = this.socket.read() as Buffer | null) {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
      this.answering = true;
    }
    this.wake();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.wake();
  };
  private readonly onError = (error: Error): void => {
    this.failure =
      error instanceof ConnectError
        ? error
        : new ConnectError(`proxy ${this.name} failed during CONNECT: ${describeSocketError(error as NodeJS.ErrnoException)}`, { cause: error });
    this.wake();
  };

  constructor(
    private readonly socket: net.Socket,
    private readonly name: string,
  ) {
    socket.on('readable', this.onReadable);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  /** Request `step` is going out: nothing of its answer has arrived yet. */
  expectAnswer(step: string): void {
    this.step = step;
    this.answering = this.buffered.length > 0;
  }

  /** Stops reading and puts back any bytes past the last response (they are the tunnel's). */
  release(): void {
    this.socket.off('readable', this.onReadable);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    if (this.buffered.length > 0) this.socket.unshift(this.buffered);
    this.buffered = Buffer.alloc(0);
  }

  async next(): Promise<ProxyResponse> {
    const headEnd = await this.waitFor(() => {
      const at = this.buffered.indexOf('\r\n\r\n');
      if (at < 0 && this.buffered.length > MAX_HEAD_BYTES) throw this.malformed('a response head over 64 KiB');
      return at < 0 ? undefined : at;
    });
    const head = this.buffered.subarray(0, headEnd).toString('latin1');
    this.buffered = this.buffered.subarray(headEnd + 4);
    const [statusLine = '', ...lines] = head.split('\r\n');
    const match = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
    if (match === null) throw this.malformed(`"${statusLine.slice(0, 60)}" instead of an HTTP status line`);
    const headers = new Map<string, string[]>();
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon <= 0) throw this.malformed(`a header line without a colon`);
      const key = line.slice(0, colon).trim().toLowerCase();
      headers.set(key, [...(headers.get(key) ?? []), line.slice(colon + 1).trim()]);
    }
    const status = Number(match[1]);
    const connection = [...(headers.get('connection') ?? []), ...(headers.get('proxy-connection') ?? [])].join(',').toLowerCase();
    const response: ProxyResponse = {
      status,
      reason: match[2] ?? '',
      headers,
      closes:
        connection.split(',').some((token) => token.trim() === 'close') ||
        (statusLine.startsWith('HTTP/1.0') && !connection.includes('keep-alive')),
    };
    if (status >= 200 && status < 300) return response; // CONNECT success has no body
    await this.drainBody(headers);
    return response;
  }

  private async drainBody(headers: Map<string, string[]>): Promise<void> {
    const encoding = (headers.get('transfer-encoding') ?? []).join(',').toLowerCase();
    if (encoding.includes('chunked')) {
      for (;;) {
        const lineEnd = await this.waitFor(() => {
          const at = this.buffered.indexOf('\r\n');
          return at < 0 ? undefined : at;
        });
        const size = Number.parseInt(this.buffered.subarray(0, lineEnd).toString('latin1'), 16);
        if (!Number.isFinite(size) || size < 0 || size > MAX_BODY_BYTES) throw this.malformed('a bad chunk size');
        this.buffered = this.buffered.subarray(lineEnd + 2);
        await this.skip(size + 2);
        if (size === 0) return; // (trailers are not used by proxies here)
      }
    }
    const length = Number((headers.get('content-length') ?? ['0'])[0]);
    if (!Number.isSafeInteger(length) || length < 0 || length > MAX_BODY_BYTES) throw this.malformed('a bad Content-Length');
    await this.skip(length);
  }

  private async skip(bytes: number): Promise<void> {
    await this.waitFor(() => (this.buffered.length >= bytes ? true : undefined));
    this.buffered = this.buffered.subarray(bytes);
  }

  /** Resolves with `check()`'s first defined result, re-checking whenever data arrives. */
  private waitFor<T>(check: () => T | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const attempt = (): boolean => {
        try {
          const value = check();
          if (value !== undefined) {
            resolve(value);
            return true;
          }
        } catch (error) {
          reject(error);
          return true;
        }
        if (this.failure !== undefined) {
          reject(this.failure);
          return true;
        }
        if (this.ended) {
          reject(new ConnectError(`proxy ${this.name} closed the connection during CONNECT`));
          return true;
        }
        return false;
      };
      if (attempt()) return;
      this.waiter = () => {
        if (attempt()) this.waiter = undefined;
      };
    });
  }

  private wake(): void {
    this.waiter?.();
  }

  private malformed(what: string): ConnectError {
    return new ConnectError(`proxy ${this.name} sent a malformed response to CONNECT (${what})`);
  }
}
