/**
 * HTTP CONNECT proxies for the system tests, the kinds clients meet on
 * corporate networks: tinyproxy (no authentication) and squid (none, Basic
 * through basic_ncsa_auth, or NTLM through ntlm_fake_auth, which accepts any
 * password for any user — it checks the message exchange, not the secret).
 *
 * Each runs in the foreground as a child of the test, config and logs in its
 * own temp dir, listening on a 127.0.0.1 port picked at run time, and is
 * stopped by its PID.
 */
import { chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, runOk, ServiceProcess, sleep, waitForPort } from './child-process.js';
import { program, type Requirement } from './requirements.js';

export const TINYPROXY_REQUIREMENTS: readonly Requirement[] = [program('tinyproxy', 'tinyproxy')];
export const SQUID_REQUIREMENTS: readonly Requirement[] = [
  program('squid', 'squid'),
  program('/usr/lib/squid/basic_ncsa_auth', 'squid'),
  program('/usr/lib/squid/ntlm_fake_auth', 'squid'),
  // basic_ncsa_auth's password file is made with `openssl passwd -apr1`.
  program('openssl', 'openssl'),
];

export interface RunningProxy {
  readonly process: ServiceProcess;
  readonly port: number;
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly dir: string;
  /** The proxy's record of requests (tinyproxy: its log; squid: access.log). */
  log(): Promise<string>;
  /** Everything it logged, for a failure message (squid: the tails of access.log and cache.log). */
  diagnostics(): Promise<string>;
  /** SIGTERM by PID, wait, remove the dir. */
  stop(): Promise<void>;
}

const isRoot = (): boolean => process.getuid?.() === 0;

export interface TinyproxyOptions {
  /**
   * Source address for the connections tinyproxy opens (its `Bind`), e.g.
   * 127.0.0.9: the next hop then sees that address, as a gateway sees a
   * client's real address, distinct from nginx's own 127.0.0.1.
   */
  bindOutgoing?: string;
}

/** tinyproxy allowing CONNECT to any port from 127.0.0.1, no authentication. */
export async function startTinyproxy(options: TinyproxyOptions = {}): Promise<RunningProxy> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-tinyproxy-'));
  const port = await freePort();
  const logFile = path.join(dir, 'tinyproxy.log');
  const conf = [
    ...(isRoot() ? ['User nobody', 'Group nogroup'] : []),
    `Port ${port}`,
    'Listen 127.0.0.1',
    ...(options.bindOutgoing === undefined ? [] : [`Bind ${options.bindOutgoing}`]),
    'Timeout 600',
    'LogLevel Connect',
    `LogFile "${logFile}"`,
    `PidFile "${path.join(dir, 'tinyproxy.pid')}"`,
    'MaxClients 64',
    'Allow 127.0.0.1',
    // No ConnectPort line: CONNECT to every port is allowed.
    '',
  ].join('\n');
  await writeFile(path.join(dir, 'tinyproxy.conf'), conf);
  if (isRoot()) await chown(dir, 65534, 65534); // nobody writes its log here after dropping root
  const child = new ServiceProcess({ name: 'tinyproxy', command: 'tinyproxy', args: ['-d', '-c', path.join(dir, 'tinyproxy.conf')] });
  return started(child, port, dir, () => readFile(logFile, 'utf8').catch(() => ''));
}

export type SquidAuth =
  | { scheme: 'none' }
  /** basic_ncsa_auth with these users (user → password). */
  | { scheme: 'basic'; users: Record<string, string>; realm?: string }
  /** ntlm_fake_auth: any user, any password, but a real Type 1/2/3 exchange on one connection. */
  | { scheme: 'ntlm' };

export interface SquidOptions {
  auth: SquidAuth;
  /** When set, CONNECT to any other port is refused with 403 (as squid's default SSL_ports rule does). */
  allowConnectPorts?: readonly number[];
}

/** squid, CONNECT from 127.0.0.1 only, no cache, with the chosen proxy authentication. */
export async function startSquid(options: SquidOptions): Promise<RunningProxy> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-squid-'));
  const port = await freePort();
  const file = (name: string) => path.join(dir, name);
  const auth = options.auth;
  const authLines: string[] = [];
  if (auth.scheme === 'basic') {
    const lines: string[] = [];
    for (const [user, password] of Object.entries(auth.users)) {
      const { stdout } = await runOk('openssl', ['passwd', '-apr1', password]);
      lines.push(`${user}:${stdout.trim()}`);
    }
    await writeFile(file('htpasswd'), `${lines.join('\n')}\n`, { mode: 0o644 });
    authLines.push(
      `auth_param basic program /usr/lib/squid/basic_ncsa_auth ${file('htpasswd')}`,
      // startup=: the helpers run from the start, rather than being forked by the first request (under load, that
      // fork is what a first request waits for).
      'auth_param basic children 2 startup=2',
      `auth_param basic realm ${auth.realm ?? 'reflector-test-proxy'}`,
    );
  } else if (auth.scheme === 'ntlm') {
    authLines.push('auth_param ntlm program /usr/lib/squid/ntlm_fake_auth', 'auth_param ntlm children 2 startup=2', 'auth_param ntlm keep_alive on');
  }
  const conf = [
    `http_port 127.0.0.1:${port}`,
    `pid_filename ${file('squid.pid')}`,
    `cache_log ${file('cache.log')}`,
    `access_log stdio:${file('access.log')}`,
    `coredump_dir ${dir}`,
    'netdb_filename none',
    'cache deny all',
    'cache_mem 8 MB',
    'shutdown_lifetime 1 seconds',
    ...authLines,
    'acl localhostsrc src 127.0.0.1/32',
    'http_access deny !localhostsrc',
    ...(options.allowConnectPorts === undefined
      ? []
      : [`acl allowed_ports port ${options.allowConnectPorts.join(' ')}`, 'acl CONNECT method CONNECT', 'http_access deny CONNECT !allowed_ports']),
    ...(auth.scheme === 'none' ? ['http_access allow localhostsrc'] : ['acl authed proxy_auth REQUIRED', 'http_access allow authed']),
    'http_access deny all',
    '',
  ].join('\n');
  await writeFile(file('squid.conf'), conf);
  if (isRoot()) {
    const { stdout } = await runOk('id', ['-u', 'proxy']);
    const { stdout: group } = await runOk('id', ['-g', 'proxy']);
    await chown(dir, Number(stdout.trim()), Number(group.trim())); // squid drops to "proxy" and writes its logs here
  }
  // -n: a service name of its own, so squids running side by side share nothing.
  const child = new ServiceProcess({ name: `squid (${auth.scheme})`, command: 'squid', args: ['-N', '-n', `reflector${port}`, '-f', file('squid.conf')] });
  const accessLog = () => readFile(file('access.log'), 'utf8').catch(() => '');
  const cacheLog = () => readFile(file('cache.log'), 'utf8').catch(() => '');
  const diagnostics = async () => `--- access.log (tail) ---\n${(await accessLog()).slice(-4000)}\n--- cache.log (tail) ---\n${(await cacheLog()).slice(-4000)}`;
  // Ready when squid itself says it accepts on our port: a port that merely answers could be another
  // process's that took it between freePort() and squid's bind.
  const accepting = new RegExp(`Accepting HTTP Socket connections at .* local=127\\.0\\.0\\.1:${port} `);
  return started(child, port, dir, accessLog, diagnostics, async () => accepting.test(await cacheLog()));
}

async function started(
  child: ServiceProcess,
  port: number,
  dir: string,
  log: () => Promise<string>,
  diagnostics: () => Promise<string> = log,
  /** Readiness beyond the port answering (squid: its own "Accepting" line for this port). */
  ready: () => Promise<boolean> = async () => true,
  timeoutMs = 20_000,
): Promise<RunningProxy> {
  const stop = async (): Promise<void> => {
    await child.stop({ timeoutMs: 10_000 });
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + timeoutMs;
    await waitForPort(port, child, '127.0.0.1', timeoutMs);
    while (!(await ready())) {
      if (!child.running) throw child.failure(`exited before it was ready on 127.0.0.1:${port}`);
      if (Date.now() > deadline) throw child.failure(`not ready on 127.0.0.1:${port} after ${timeoutMs} ms`);
      await sleep(50);
    }
  } catch (error) {
    const text = await diagnostics();
    await stop();
    throw new Error(`${(error as Error).message}\n--- log ---\n${text.slice(-8000)}`);
  }
  return { process: child, port, url: `http://127.0.0.1:${port}`, dir, log, diagnostics, stop };
}
