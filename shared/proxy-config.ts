/**
 * The client's HTTP proxy settings: the proxy URL (a flag, client.yaml, or
 * the environment like curl), the hosts that skip it (NO_PROXY), and the
 * proxy credentials, whose password never comes from a flag. The dial itself
 * is client/dialer.ts and client/proxy-connect.ts.
 */
import { configError, show } from './config-errors.js';
import { ConfigError } from './errors.js';

export const PROXY_AUTH_SCHEMES = ['basic', 'ntlm'] as const;
export type ProxyAuthScheme = (typeof PROXY_AUTH_SCHEMES)[number];
export interface ProxyAuthOptions {
  scheme: ProxyAuthScheme;
  /** The account name, without the domain. */
  user: string;
  /** NTLM domain (`CORP`); empty for a UPN user or Basic. */
  domain: string;
  /** The password, from REFLECTOR_PROXY_PASSWORD or the proxy URL; never from a flag. */
  password?: string;
  /** A file whose first line is the password, read at every connect; wins over `password`. */
  passwordFile?: string;
}
/** Proxy credentials as a client.yaml or the flags give them: never a password. */
export type ProxyAuthInput = Partial<Omit<ProxyAuthOptions, 'password'>>;

/** The resolved proxy settings of a client (part of ClientOptions). */
export interface ProxySettings {
  /** HTTP proxy for the WebSocket (CONNECT): `http://[USER:PASSWORD@]HOST[:PORT]`. Absent: connect directly. */
  proxy?: string;
  /** Hosts that skip the proxy, NO_PROXY syntax: comma list of names (suffix match), IPs, CIDRs, `host:port`, or `*`. */
  noProxy?: string;
  /** Proxy authentication other than Basic credentials in the proxy URL. */
  proxyAuth?: ProxyAuthOptions;
}

/** `proxy:3128` → `http://proxy:3128/`; or why it is not a proxy Reflector can use. */
export function parseProxyUrl(input: string): URL | string {
  let url: URL;
  try {
    url = new URL(/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(input) ? input : `http://${input}`);
  } catch {
    return '';
  }
  if (url.protocol === 'https:') return 'https:// proxies are not supported; the tunnel inside an http:// proxy is still TLS';
  if (url.protocol !== 'http:') return `${url.protocol}// proxies are not supported, only http://`;
  if (url.hostname === '') return 'no host';
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') return 'a proxy URL has no path';
  return url;
}

/** "expected WHAT, got INPUT (REASON)" for a proxy URL parseProxyUrl refused, its password hidden. */
export function badProxyUrl(what: string, input: string, reason: string): string {
  return `expected ${what}, got ${show(redactUrl(input))}${reason === '' ? '' : ` (${reason})`}`;
}

/** The URL with any password replaced by "***", for messages. */
function redactUrl(input: string): string {
  return input.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/, '$1:***@');
}

/**
 * The proxy the environment names for a ws:// or wss:// URL, like curl:
 * wss uses https_proxy, then HTTPS_PROXY; ws uses http_proxy (never
 * HTTP_PROXY, which a CGI request can set); both fall back to all_proxy,
 * ALL_PROXY. Empty values count as unset.
 */
export function proxyFromEnv(url: string, env: NodeJS.ProcessEnv): { variable: string; value: string } | undefined {
  const secure = url.startsWith('wss:');
  const names = secure ? ['https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'] : ['http_proxy', 'all_proxy', 'ALL_PROXY'];
  for (const variable of names) {
    const value = env[variable];
    if (value !== undefined && value.trim() !== '') return { variable, value: value.trim() };
  }
  return undefined;
}

/**
 * The proxy settings: `proxy` (or the environment when it is unset; "none"
 * means direct), `noProxy` (or NO_PROXY), and the proxy credentials, whose
 * password comes from a file, REFLECTOR_PROXY_PASSWORD, or the proxy URL.
 * `checked` is validated client input (client-config.ts); `url` is the server's.
 */
export function resolveProxy(
  checked: { url?: string; proxy?: string; noProxy?: string; proxyAuth?: ProxyAuthInput },
  source: string,
  env: NodeJS.ProcessEnv,
): ProxySettings {
  let proxy: URL | undefined;
  if (checked.proxy === undefined) {
    const fromEnv = proxyFromEnv(checked.url ?? '', env);
    if (fromEnv !== undefined) {
      const parsed = parseProxyUrl(fromEnv.value);
      if (typeof parsed === 'string') {
        throw new ConfigError(`${fromEnv.variable}: ${badProxyUrl('an http:// proxy URL', fromEnv.value, parsed)}`);
      }
      proxy = parsed;
    }
  } else if (checked.proxy !== 'none') {
    proxy = new URL(checked.proxy);
  }
  const noProxy = checked.noProxy ?? (env.no_proxy || env.NO_PROXY || undefined);
  const auth = checked.proxyAuth ?? {};
  const fail = (message: string) => configError(source, ['proxyAuth'], message);
  if (auth.scheme === undefined) {
    if (auth.user !== undefined || auth.domain !== undefined || auth.passwordFile !== undefined) {
      throw fail('missing the scheme (--proxy-auth basic|ntlm, or "scheme" in the config file)');
    }
    return { ...(proxy === undefined ? {} : { proxy: proxy.href }), ...(noProxy === undefined ? {} : { noProxy }) };
  }
  let user = auth.user ?? (env.REFLECTOR_PROXY_USER || undefined) ?? (proxy?.username ? decodeURIComponent(proxy.username) : undefined);
  let domain = auth.domain ?? (env.REFLECTOR_PROXY_DOMAIN || undefined);
  const slash = user?.indexOf('\\') ?? -1;
  if (user !== undefined && slash >= 0) {
    domain ??= user.slice(0, slash);
    user = user.slice(slash + 1);
  }
  if (user === undefined || user === '') {
    throw fail('missing the proxy user (--proxy-user [DOMAIN\\]USER, REFLECTOR_PROXY_USER, or the user in the proxy URL)');
  }
  const password = (env.REFLECTOR_PROXY_PASSWORD || undefined) ?? (proxy?.password ? decodeURIComponent(proxy.password) : undefined);
  if (auth.passwordFile === undefined && password === undefined) {
    throw fail('missing the proxy password (--proxy-password-file FILE, REFLECTOR_PROXY_PASSWORD, or the password in the proxy URL)');
  }
  return {
    ...(proxy === undefined ? {} : { proxy: proxy.href }),
    ...(noProxy === undefined ? {} : { noProxy }),
    proxyAuth: {
      scheme: auth.scheme,
      user,
      domain: auth.scheme === 'ntlm' ? (domain ?? '') : '',
      ...(auth.passwordFile === undefined ? { password: password! } : { passwordFile: auth.passwordFile }),
    },
  };
}
