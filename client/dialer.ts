/**
 * How the client reaches the gateway: directly or through an HTTP proxy
 * (CONNECT), then TLS for wss:// with the trust the user chose. It hands `ws`
 * a socket that is already connected end to end, so every failure before the
 * HTTP upgrade is one of our own sentences, not a bare errno.
 *
 *   wss://gw/tunnel ──NO_PROXY?──> direct: TCP ──────────────┐
 *                      └ proxy ──> TCP to proxy, CONNECT gw ─┴─> TLS (servername, --ca | default store,
 *                                                                     --insecure: warn) ──> ws upgrade
 *
 * Which proxy applies (flag, config, HTTPS_PROXY…) is decided when the options
 * are resolved (shared/proxy-config.ts); NO_PROXY is matched here, per URL.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net, { BlockList, isIP } from 'node:net';
import tls from 'node:tls';
import type { ClientOptions } from '../shared/client-config.js';
import type { ProxyAuthOptions } from '../shared/proxy-config.js';
import { ConfigError } from '../shared/errors.js';
import { ConnectError } from './connect-error.js';
import { connectThroughProxy, describeSocketError, type ProxyCredentials } from './proxy-connect.js';
import { connectTcp } from './tcp-connect.js';

export interface DialOptions {
  /** PEM file whose certificates replace the default trust store (read at every dial). */
  ca?: string;
  /** Accept any certificate; `onInsecure` is told on every dial. */
  insecure?: boolean;
  /** `http://[USER:PASSWORD@]HOST[:PORT]`; absent: direct. */
  proxy?: string;
  /** NO_PROXY-style list of hosts that bypass `proxy`. */
  noProxy?: string;
  proxyAuth?: ProxyAuthOptions;
  /** Deadline for TCP, the proxy exchange and the TLS handshake together. */
  timeoutMs: number;
  onInsecure?: (message: string) => void;
}

/** The dial settings of a client, plus where the --insecure warning goes. */
export function dialOptionsFor(options: ClientOptions, onInsecure?: (message: string) => void): Omit<DialOptions, 'timeoutMs'> {
  return {
    ...(options.ca === undefined ? {} : { ca: options.ca }),
    ...(options.insecure === true ? { insecure: true } : {}),
    ...(options.proxy === undefined ? {} : { proxy: options.proxy }),
    ...(options.noProxy === undefined ? {} : { noProxy: options.noProxy }),
    ...(options.proxyAuth === undefined ? {} : { proxyAuth: options.proxyAuth }),
    ...(onInsecure === undefined ? {} : { onInsecure }),
  };
}

// ---------------------------------------------------------------- NO_PROXY

/**
 * Does NO_PROXY exempt `host:port`? The list is comma (or space) separated,
 * case-insensitive, like curl's:
 * - `*` alone exempts every host;
 * - a name matches itself and its subdomains (`example.com` and `.example.com`
 *   both match `example.com` and `www.example.com`; `*.example.com` too);
 * - an IP address matches itself, a CIDR (`10.0.0.0/8`, `fd00::/8`) its range;
 * - `NAME:PORT` or `[IPv6]:PORT` matches that port only (Go and Python do this; curl ignores ports).
 * Host names are not resolved: `localhost` does not match `127.0.0.1`.
 */
export function bypassesProxy(host: string, port: number, noProxy: string | undefined): boolean {
  if (noProxy === undefined) return false;
  const bare = host.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
  const family = isIP(bare);
  for (const raw of noProxy.split(/[\s,]+/)) {
    let entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return true;
    let entryPort: number | undefined;
    const withPort = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry) ?? /^([^:]+):(\d+)$/.exec(entry);
    if (withPort !== null) {
      entry = withPort[1]!;
      entryPort = withPort[2] === undefined ? undefined : Number(withPort[2]);
    }
    if (entryPort !== undefined && entryPort !== port) continue;
    const slash = entry.indexOf('/');
    if (slash > 0) {
      if (family !== 0 && cidrContains(entry.slice(0, slash), Number(entry.slice(slash + 1)), bare, family)) return true;
      continue;
    }
    if (isIP(entry) !== 0) {
      if (family !== 0 && sameAddress(entry, bare)) return true;
      continue;
    }
    const domain = entry.replace(/^\*?\./, '').replace(/\.$/, '');
    if (domain !== '' && family === 0 && (bare === domain || bare.endsWith(`.${domain}`))) return true;
  }
  return false;
}

function cidrContains(network: string, prefix: number, address: string, family: number): boolean {
  const networkFamily = isIP(network);
  if (networkFamily === 0 || networkFamily !== family || !Number.isInteger(prefix)) return false;
  if (prefix < 0 || prefix > (family === 4 ? 32 : 128)) return false;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  const list = new BlockList();
  list.addSubnet(network, prefix, type);
  return list.check(address, type);
}

function sameAddress(a: string, b: string): boolean {
  const family = isIP(a);
  if (family !== isIP(b)) return false;
  const list = new BlockList();
  list.addAddress(a, family === 4 ? 'ipv4' : 'ipv6');
  return list.check(b, family === 4 ? 'ipv4' : 'ipv6');
}

/** The proxy to use for `url`, or undefined to go direct. */
export function proxyFor(url: URL, options: Pick<DialOptions, 'proxy' | 'noProxy'>): URL | undefined {
  if (options.proxy === undefined) return undefined;
  if (bypassesProxy(url.hostname, targetOf(url).port, options.noProxy)) return undefined;
  return new URL(options.proxy);
}

/**
 * Why a ws:// URL deserves a warning, or undefined for wss:// and for this
 * machine (loopback). Reflector's own encryption keeps the payload sealed
 * either way; what crosses the network in clear is the upgrade request (path,
 * headers, the replica cookie) and the traffic's sizes and timing.
 */
export function cleartextUpgradeWarning(url: URL): string | undefined {
  if (url.protocol !== 'ws:') return undefined;
  const { host } = targetOf(url);
  const loopback = host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
  if (loopback) return undefined;
  return `${url.host} is reached over ws://: the tunnel's content stays encrypted end to end, but the upgrade request (path, headers) and the traffic's sizes and timing cross the network in clear; use wss:// for anything but this machine`;
}

// ---------------------------------------------------------------- dialing

function targetOf(url: URL): { host: string; port: number } {
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { host, port: Number(url.port || (url.protocol === 'wss:' ? 443 : 80)) };
}

/**
 * A `createConnection` for `new WebSocket(url, protocols, { createConnection })`:
 * ws passes it to http(s).request, which accepts the socket through the
 * callback. Our socket is already connected (and TLS-established for wss://).
 */
export function createConnectionFor(
  url: string,
  options: DialOptions,
): (requestOptions: unknown, done: (error: Error | null, socket?: net.Socket) => void) => undefined {
  return (requestOptions, done) => {
    // ws passes its handshakeTimeout as `timeout`. The createConnection it replaces (net/tls.connect) arms that
    // as the socket's idle timeout, which ws watches until the HTTP 101 and then clears; a createConnection that
    // ignores it leaves the upgrade with no deadline at all, so a lost answer (from the server, or from a proxy
    // that said 200 to CONNECT and then forwards nothing) would hang the attempt forever, without a word.
    const timeout = (requestOptions as { timeout?: unknown } | undefined)?.timeout;
    dial(new URL(url), options).then(
      (socket) => {
        // Between here and http.ClientRequest attaching its own 'error' handler (next tick), an error must not
        // crash the process; the request reports a failed socket itself.
        socket.on('error', () => undefined);
        if (typeof timeout === 'number' && timeout > 0) socket.setTimeout(timeout);
        done(null, socket);
      },
      (error: Error) => done(error),
    );
    return undefined;
  };
}

/** TCP (direct or through the proxy), then TLS for wss://. Rejects with a one-sentence ConnectError or ConfigError. */
export async function dial(url: URL, options: DialOptions): Promise<net.Socket> {
  const target = targetOf(url);
  const proxy = proxyFor(url, options);
  // Read before any socket opens, so a bad file never leaves one behind.
  const ca = url.protocol === 'wss:' && options.ca !== undefined && options.insecure !== true ? await readCa(options.ca) : undefined;
  const credentials = proxy === undefined ? undefined : await proxyCredentials(proxy, options.proxyAuth);
  // The deadline is for the network: it starts with the first socket, which gets all of it (so its errors
  // say "within 15000 ms", not some remainder); TLS gets what is left.
  const started = Date.now();
  const left = (): number => Math.max(1, options.timeoutMs - (Date.now() - started));
  const socket =
    proxy === undefined
      ? await connectDirect(target, url, options.timeoutMs)
      : await connectThroughProxy({ proxy, target, timeoutMs: options.timeoutMs, ...(credentials ? { credentials } : {}) });
  if (url.protocol !== 'wss:') return socket;
  if (options.insecure === true) {
    options.onInsecure?.(
      `TLS certificate verification is OFF for ${url.host} (--insecure): anyone on the path can impersonate the gateway's TLS; Reflector's own end-to-end encryption and server key pin still apply`,
    );
  }
  return startTls(socket, url, target, { ca, insecure: options.insecure === true, fromFile: options.ca, timeoutMs: left() });
}

function connectDirect(target: { host: string; port: number }, url: URL, timeoutMs: number): Promise<net.Socket> {
  return connectTcp(target, timeoutMs, {
    timedOut: () => new ConnectError(`${url.href}: connection timed out after ${timeoutMs} ms`),
    failed: (error) => {
      const hint = error.code === 'ECONNREFUSED' ? ' (is the server running?)' : '';
      return new ConnectError(`${url.href}: ${describeSocketError(error)}${hint}`, { cause: error });
    },
  });
}

function startTls(
  socket: net.Socket,
  url: URL,
  target: { host: string; port: number },
  trust: { ca: Buffer | undefined; insecure: boolean; fromFile: string | undefined; timeoutMs: number },
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = tls.connect({
      socket,
      // `host` names the certificate check's subject; without it Node would check the proxy's name, or "localhost".
      host: target.host,
      // SNI must not carry an IP address.
      servername: isIP(target.host) === 0 ? target.host : '',
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: !trust.insecure,
      ...(trust.ca === undefined ? {} : { ca: trust.ca }),
    });
    const timer = setTimeout(() => {
      secure.destroy();
      reject(new ConnectError(`${url.href}: TLS handshake did not finish within ${trust.timeoutMs} ms`));
    }, trust.timeoutMs);
    secure.once('secureConnect', () => {
      clearTimeout(timer);
      secure.off('error', onError);
      resolve(secure);
    });
    const onError = (error: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      secure.destroy();
      reject(new ConnectError(`${url.href}: ${describeTlsError(error, target.host, trust.fromFile)}`, { cause: error }));
    };
    secure.once('error', onError);
  });
}

const UNTRUSTED: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed',
  SELF_SIGNED_CERT_IN_CHAIN: 'self-signed certificate in the chain',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'issued by an unknown certificate authority',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'issued by an unknown certificate authority',
  UNABLE_TO_GET_ISSUER_CERT: 'issued by an unknown certificate authority',
  CERT_UNTRUSTED: 'untrusted',
  CERT_HAS_EXPIRED: 'expired',
  CERT_NOT_YET_VALID: 'not yet valid',
  CERT_REVOKED: 'revoked',
};

/** A TLS failure as the user can act on it. */
export function describeTlsError(error: NodeJS.ErrnoException, host: string, caFile: string | undefined): string {
  const code = error.code ?? '';
  const reason = UNTRUSTED[code];
  if (reason !== undefined) {
    const hint =
      caFile === undefined
        ? '; use --ca FILE with the certificate that signed it'
        : ` (it is not signed by a certificate in ${caFile})`;
    return `TLS certificate not trusted (${reason})${hint}`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    // Node: "...: IP: 10.0.0.1 is not in the cert's list: 127.0.0.1" or "...: Host: a. is not in the cert's altnames: DNS:b".
    const names = /cert's (?:list|altnames|CN): (.*)$/.exec(error.message)?.[1];
    return `TLS certificate is not valid for ${host}${names === undefined ? '' : ` (it names ${names})`}`;
  }
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG') {
    return 'TLS handshake failed: the other end does not speak TLS (a ws:// endpoint given as wss://?)';
  }
  if (code === 'ECONNRESET') return 'connection reset during the TLS handshake';
  return `TLS handshake failed: ${error.message}`;
}

async function readCa(file: string): Promise<Buffer> {
  let pem: Buffer;
  try {
    pem = await readFile(file);
  } catch (error) {
    throw new ConfigError(`--ca ${file}: cannot read the file (${(error as NodeJS.ErrnoException).code ?? String(error)})`, { cause: error });
  }
  const blocks = pem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new ConfigError(`--ca ${file}: expected PEM certificates ("-----BEGIN CERTIFICATE-----")`);
  // OpenSSL skips a broken certificate in a CA list silently; say which one it is instead.
  blocks.forEach((block, index) => {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw new ConfigError(`--ca ${file}: certificate ${index + 1} of ${blocks.length} is not a valid PEM certificate (${(error as Error).message})`, {
        cause: error,
      });
    }
  });
  return pem;
}

/**
 * The credentials for this dial: the configured scheme (password from its
 * file, read now, or as given), else Basic from the proxy URL, else none.
 */
export async function proxyCredentials(proxy: URL, auth: ProxyAuthOptions | undefined): Promise<ProxyCredentials | undefined> {
  if (auth === undefined) {
    if (proxy.username === '') return undefined;
    return { scheme: 'basic', user: decodeURIComponent(proxy.username), password: decodeURIComponent(proxy.password) };
  }
  const password = auth.passwordFile === undefined ? (auth.password ?? '') : await readPasswordFile(auth.passwordFile);
  return auth.scheme === 'ntlm'
    ? { scheme: 'ntlm', user: auth.user, domain: auth.domain, password }
    : { scheme: 'basic', user: auth.user, password };
}

async function readPasswordFile(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`--proxy-password-file ${file}: cannot read the file (${(error as NodeJS.ErrnoException).code ?? String(error)})`, {
      cause: error,
    });
  }
  const password = text.split(/\r?\n/)[0] ?? '';
  if (password === '') throw new ConfigError(`--proxy-password-file ${file}: the first line (the password) is empty`);
  return password;
}

/**
 * Reads the files a dial needs (--ca, the proxy password file) once, so a
 * missing or broken file is reported at startup rather than retried.
 */
export async function checkDialFiles(options: Pick<ClientOptions, 'ca' | 'insecure' | 'proxyAuth'>): Promise<void> {
  if (options.ca !== undefined && options.insecure !== true) await readCa(options.ca);
  if (options.proxyAuth?.passwordFile !== undefined) await readPasswordFile(options.proxyAuth.passwordFile);
}
