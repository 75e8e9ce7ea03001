/**
 * nginx for the system tests: any http { } or stream { } configuration in a
 * temp dir (startNginx), or the shipped deploy/nginx/reflector.conf rendered
 * with test ports, certificate and upstreams (startReflectorNginx) — so the
 * tests exercise the file operators install.
 *
 * Runs in the foreground (`daemon off`) as a child of the test, everything
 * (pid, logs, temp paths) under its own dir, on 127.0.0.1 ports picked at run
 * time; stopped by its PID.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, ServiceProcess, waitForPort } from './child-process.js';
import { REPO_ROOT } from './reflector-processes.js';
import { program, type Requirement } from './requirements.js';

export const NGINX_REQUIREMENTS: readonly Requirement[] = [program('nginx', 'nginx')];
/** The stream module (raw TCP proxying) is a separate Debian package. */
export const NGINX_STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';
export const NGINX_STREAM_REQUIREMENTS: readonly Requirement[] = [
  ...NGINX_REQUIREMENTS,
  // A shared object, not an executable: present is enough.
  { what: NGINX_STREAM_MODULE, remedy: 'apt-get install libnginx-mod-stream', present: () => existsSync(NGINX_STREAM_MODULE) },
];

export interface NginxOptions {
  /** Configuration inside http { } (server blocks, maps, upstreams). */
  http?: string;
  /** Configuration inside stream { } (loads the stream module). */
  stream?: string;
  /** Ports the configuration listens on (127.0.0.1): start() resolves once all accept connections. */
  ports: readonly number[];
  /** Where nginx.conf, logs and temp paths go; default a new temp dir (removed by stop()). */
  dir?: string;
}

export interface RunningNginx {
  readonly dir: string;
  readonly process: ServiceProcess;
  /** $dir/access.log and $dir/error.log (the http access log of startNginx; a site may log elsewhere). */
  readonly accessLogFile: string;
  readonly errorLogFile: string;
  readFile(name: string): Promise<string>;
  /** SIGTERM by PID, wait, then remove the dir if start() made it. */
  stop(): Promise<void>;
}

/** Starts nginx with `options.http` / `options.stream`; resolves once every port in `options.ports` accepts. */
export async function startNginx(options: NginxOptions): Promise<RunningNginx> {
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'reflector-nginx-')));
  await mkdir(dir, { recursive: true });
  const file = (name: string) => path.join(dir, name);
  const conf = [
    ...(options.stream === undefined ? [] : [`load_module ${NGINX_STREAM_MODULE};`]),
    'worker_processes 1;',
    'daemon off;',
    `pid ${file('nginx.pid')};`,
    `error_log ${file('error.log')} info;`,
    'events { worker_connections 512; }',
    'http {',
    `  access_log ${file('access.log')};`,
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `  ${kind}_temp_path ${file(`tmp-${kind}`)};`),
    indent(options.http ?? '', '  '),
    '}',
    ...(options.stream === undefined ? [] : ['stream {', indent(options.stream, '  '), '}']),
    '',
  ].join('\n');
  await writeFile(file('nginx.conf'), conf);
  const child = new ServiceProcess({
    name: 'nginx',
    command: 'nginx',
    // -e: the error log before the config is read (the default is /var/log/nginx).
    args: ['-p', dir, '-e', file('error.log'), '-c', file('nginx.conf')],
  });
  const stop = async (): Promise<void> => {
    await child.stop({ timeoutMs: 10_000 });
    if (ownDir) await rm(dir, { recursive: true, force: true });
  };
  try {
    for (const port of options.ports) await waitForPort(port, child);
  } catch (error) {
    const log = await readFile(file('error.log'), 'utf8').catch(() => '');
    await stop();
    throw new Error(`${(error as Error).message}\n--- nginx error.log ---\n${log.slice(-4000)}`);
  }
  return {
    dir,
    process: child,
    accessLogFile: file('access.log'),
    errorLogFile: file('error.log'),
    readFile: (name) => readFile(path.isAbsolute(name) ? name : file(name), 'utf8'),
    stop,
  };
}

function indent(text: string, prefix: string): string {
  return text
    .split('\n')
    .map((line) => (line === '' ? line : prefix + line))
    .join('\n');
}

// ---------------------------------------------------------------- the shipped site

export const REFLECTOR_SITE = path.join(REPO_ROOT, 'deploy', 'nginx', 'reflector.conf');

export interface ReflectorSiteOptions {
  /** The TLS port nginx listens on (127.0.0.1). */
  port: number;
  tls: { cert: string; key: string };
  /** Ports of the gateways behind it (127.0.0.1), one server line each in the pool new sessions go to. */
  upstreams: readonly number[];
  /**
   * Replica name → its port (one of `upstreams`), as the site's map routes
   * resumes: a request with `X-Reflector-Replica: NAME` goes to that port
   * first, and to the other upstreams as `backup`. Default: no names (every
   * request goes to the pool).
   */
  replicas?: Readonly<Record<string, number>>;
  /** The public tunnel path; default /tunnel. */
  publicPath?: string;
  /** The gateway's `path`; when it differs from publicPath, nginx rewrites (proxy_pass with a URI). Default /tunnel. */
  gatewayPath?: string;
  /** Refuse (403) tunnel requests without this header value, as the site's commented example does. */
  requireHeader?: { name: string; value: string };
  /** Where the site's access log goes. */
  accessLog: string;
}

/** Replaces exactly one match of `pattern` or throws: the shipped file changed under the harness. */
function replaceOnce(text: string, pattern: RegExp, replacement: string, what: string): string {
  const matches = text.match(new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`)) ?? [];
  if (matches.length !== 1) {
    throw new Error(`${REFLECTOR_SITE}: expected one ${what} (${pattern}), found ${matches.length}; update test/system/harness/nginx.ts`);
  }
  return text.replace(pattern, replacement);
}

/** The site's upstream for the resumes of replica `name` (gw-1 → reflector_gw_1, as in the shipped file). */
export function replicaUpstreamName(name: string): string {
  return `reflector_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/**
 * The shipped upstream blocks and replica map, regenerated for the test's
 * gateways: the pool (reflector_gateway), one upstream per named replica
 * (that replica, then the others as backup) and the map from
 * X-Reflector-Replica to those upstreams. Every other line of the site is
 * the shipped one.
 */
function renderUpstreams(site: string, options: ReflectorSiteOptions): string {
  const line = (port: number, backup = false) => `    server 127.0.0.1:${port}${backup ? ' backup' : ''};`;
  const pool = ['upstream reflector_gateway {', ...options.upstreams.map((port) => line(port)), '}'].join('\n');
  const replicas = Object.entries(options.replicas ?? {});
  for (const [name, port] of replicas) {
    if (!options.upstreams.includes(port)) throw new Error(`replica ${name}: port ${port} is not one of the upstreams ${options.upstreams.join(', ')}`);
  }
  const perReplica = replicas.map(([name, port]) =>
    [`upstream ${replicaUpstreamName(name)} {`, line(port), ...options.upstreams.filter((other) => other !== port).map((other) => line(other, true)), '}'].join('\n'),
  );
  const map = [
    'map $http_x_reflector_replica $reflector_upstream {',
    '    default reflector_gateway;',
    ...replicas.map(([name]) => `    ${name} ${replicaUpstreamName(name)};`),
    '}',
  ].join('\n');
  // The shipped per-replica upstreams (every upstream block but the pool) go; ours follow the pool.
  const shippedPerReplica = /^upstream (?!reflector_gateway )\S+ \{[^}]*\}\n/gm;
  if ((site.match(shippedPerReplica) ?? []).length === 0) {
    throw new Error(`${REFLECTOR_SITE}: expected per-replica upstream blocks (upstream reflector_gw_1 { ... }); update test/system/harness/nginx.ts`);
  }
  site = site.replace(shippedPerReplica, '');
  site = replaceOnce(site, /^upstream reflector_gateway \{[^}]*\}/m, [pool, ...perReplica].join('\n'), 'upstream reflector_gateway block');
  return replaceOnce(site, /^map \$http_x_reflector_replica \$reflector_upstream \{[^}]*\}/m, map, 'X-Reflector-Replica map');
}

/** deploy/nginx/reflector.conf with the test's ports, certificate, upstreams and paths. */
export async function renderReflectorSite(options: ReflectorSiteOptions): Promise<string> {
  let site = await readFile(REFLECTOR_SITE, 'utf8');
  const publicPath = options.publicPath ?? '/tunnel';
  const gatewayPath = options.gatewayPath ?? '/tunnel';
  site = renderUpstreams(site, options);
  site = replaceOnce(site, /listen 443 ssl;/, `listen 127.0.0.1:${options.port} ssl;`, 'IPv4 listen line');
  site = replaceOnce(site, /\n\s*listen \[::\]:443 ssl;/, '', 'IPv6 listen line');
  site = replaceOnce(site, /ssl_certificate\s+\S+;/, `ssl_certificate ${options.tls.cert};`, 'ssl_certificate line');
  site = replaceOnce(site, /ssl_certificate_key\s+\S+;/, `ssl_certificate_key ${options.tls.key};`, 'ssl_certificate_key line');
  site = replaceOnce(site, /ssl_session_cache\s+\S+;/, 'ssl_session_cache off;', 'ssl_session_cache line');
  site = replaceOnce(site, /access_log \/var\/log\/nginx\/\S+ reflector;/, `access_log ${options.accessLog} reflector;`, 'access_log line');
  site = replaceOnce(site, /location = \/tunnel \{/, `location = ${publicPath} {`, 'tunnel location');
  if (gatewayPath !== publicPath) {
    // The first proxy_pass after the tunnel location is the tunnel's. With a
    // variable in proxy_pass, a URI replaces the whole request URI: the same
    // as a rewrite here, since the location is an exact match.
    const start = site.indexOf(`location = ${publicPath} {`);
    const pass = 'proxy_pass http://$reflector_upstream;';
    const at = site.indexOf(pass, start);
    if (at < 0) throw new Error(`${REFLECTOR_SITE}: no "${pass}" in the tunnel location; update test/system/harness/nginx.ts`);
    site = `${site.slice(0, at)}proxy_pass http://$reflector_upstream${gatewayPath};${site.slice(at + pass.length)}`;
  }
  if (options.requireHeader !== undefined) {
    const variable = `$http_${options.requireHeader.name.toLowerCase().replaceAll('-', '_')}`;
    site = replaceOnce(
      site,
      /# if \(\$http_x_gateway_token != "CHANGE-ME"\) \{ return 403; \}/,
      `if (${variable} != "${options.requireHeader.value}") { return 403; }`,
      'commented header check',
    );
  }
  return site;
}

export interface ReflectorNginx extends RunningNginx {
  readonly port: number;
  /** wss://127.0.0.1:PORT + the public tunnel path. */
  readonly url: string;
  /** https://127.0.0.1:PORT (for /healthz, /readyz). */
  readonly origin: string;
  /** The site's access log (format `reflector`: address, request, status, X-Forwarded-For). */
  accessLog(): Promise<string>;
}

/** nginx running deploy/nginx/reflector.conf in front of `upstreams`, on a free port. */
export async function startReflectorNginx(options: Omit<ReflectorSiteOptions, 'port' | 'accessLog'> & { dir?: string }): Promise<ReflectorNginx> {
  const dir = options.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'reflector-nginx-')));
  const port = await freePort();
  const accessLog = path.join(dir, 'reflector.access.log');
  const http = await renderReflectorSite({ ...options, port, accessLog });
  const running = await startNginx({ http, ports: [port], dir });
  return {
    ...running,
    stop: async () => {
      await running.stop();
      if (options.dir === undefined) await rm(dir, { recursive: true, force: true });
    },
    port,
    url: `wss://127.0.0.1:${port}${options.publicPath ?? '/tunnel'}`,
    origin: `https://127.0.0.1:${port}`,
    accessLog: () => readFile(accessLog, 'utf8').catch(() => ''),
  };
}
