/**
 * Reflector as users run it: `reflector server --config …` and
 * `reflector connect … -L port=bench`, each its own process, built by
 * `npm run build` (dist/bin/reflector.js), keys and configs in the scratch dir.
 * With `viaNginx`, the client dials wss:// to nginx (TLS, WebSocket upgrade)
 * and nginx proxies to the server on plain HTTP, as deployed behind a reverse proxy.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Limits } from '../../shared/config-schema.js';
import { generateIdentity, writeIdentityFiles } from '../../shared/keys.js';
import { freePort, waitForBanner } from '../lib/net.js';
import { run, start, type Child } from '../lib/proc.js';
import { missing } from '../lib/programs.js';
import { startNginxTls, type NginxFront } from './nginx-front.js';
import type { BenchContext, BenchPath, PathEndpoint } from './types.js';

export const SERVICE = 'bench';

export interface ReflectorKeys {
  dir: string;
  hostFile: string;
  hostThumbprint: string;
  clientFile: string;
}

/** A host key and a client key (Ed25519 JWKs, as `reflector keygen` writes them). */
export async function makeReflectorKeys(dir: string): Promise<ReflectorKeys> {
  await mkdir(dir, { recursive: true });
  const host = await generateIdentity();
  const client = await generateIdentity();
  const hostFile = path.join(dir, 'host.jwk');
  const clientFile = path.join(dir, 'client.jwk');
  await writeIdentityFiles(hostFile, host);
  await writeIdentityFiles(clientFile, client);
  return { dir, hostFile, hostThumbprint: host.thumbprint, clientFile };
}

/**
 * Writes server.yaml (JSON is YAML) for one bench service and one client.
 * Limits stay at the product's defaults unless a figure needs more (10,000
 * streams, 1,000 sessions, handshake load from one address).
 */
export async function writeServerConfig(
  keys: ReflectorKeys,
  options: { port: number; targetPort: number; limits?: Partial<Limits>; name?: string; aead?: string },
): Promise<string> {
  const file = path.join(keys.dir, `${options.name ?? 'server'}.yaml`);
  const config = {
    listen: { host: '127.0.0.1', port: options.port },
    path: '/tunnel',
    hostKey: keys.hostFile,
    trustProxy: 'loopback',
    ...(options.aead ? { aead: options.aead } : {}),
    services: { [SERVICE]: `127.0.0.1:${options.targetPort}` },
    clients: [{ name: 'bench', keyFile: `${keys.clientFile}.pub`, services: [SERVICE] }],
    ...(options.limits ? { limits: options.limits } : {}),
    log: { level: 'info', format: 'json' },
  };
  await writeFile(file, `${JSON.stringify(config, null, 2)}\n`);
  return file;
}

function reflectorBin(ctx: BenchContext): string {
  return path.join(ctx.repo, 'dist', 'bin', 'reflector.js');
}

/** `reflector server --config FILE` on a fresh port; resolves once it listens. */
export async function startReflectorServer(
  ctx: BenchContext,
  keys: ReflectorKeys,
  name: string,
  limits?: Partial<Limits>,
  variant: ReflectorVariant = PRODUCT_DEFAULTS,
): Promise<{ child: Child; port: number }> {
  const port = await freePort();
  const config = await writeServerConfig(keys, {
    port,
    targetPort: ctx.targetPort,
    name,
    ...(limits || variant.limits ? { limits: { ...variant.limits, ...limits } } : {}),
    ...(variant.aead ? { aead: variant.aead } : {}),
  });
  const child = start(`${name} (reflector server)`, process.execPath, [...ctx.nodeFlags, reflectorBin(ctx), 'server', '--config', config], {
    log: path.join(ctx.dir, `${name}.log`),
    env: { ...process.env, ...variant.env },
  });
  await child.waitForLog((line) => line.includes('"event":"server.listening"'), 'server.listening');
  return { child, port };
}

/** Whether the built CLI has `connect --ca FILE` (added after the bench was first written). */
async function cliHasCaFlag(ctx: BenchContext): Promise<boolean> {
  const help = await run(process.execPath, [reflectorBin(ctx), 'connect', '--help']);
  return /--ca\b/.test(help.stdout + help.stderr);
}

/**
 * `reflector connect URL -L 127.0.0.1:PORT=bench`; resolves once its session
 * is open. `caFile` is trusted for wss:// (with --ca, or through Node's
 * NODE_EXTRA_CA_CERTS where the CLI has no --ca).
 */
export async function startReflectorClient(
  ctx: BenchContext,
  keys: ReflectorKeys,
  name: string,
  url: string,
  caFile?: string,
  variant: ReflectorVariant = PRODUCT_DEFAULTS,
): Promise<{ child: Child; port: number; trust?: string }> {
  const port = await freePort();
  let env: NodeJS.ProcessEnv = {};
  let trust: string | undefined;
  const caArgs: string[] = [];
  if (caFile !== undefined) {
    if (await cliHasCaFlag(ctx)) {
      caArgs.push('--ca', caFile);
      trust = '--ca';
    } else {
      env = { NODE_EXTRA_CA_CERTS: caFile };
      trust = 'NODE_EXTRA_CA_CERTS';
    }
  }
  const args = [
    ...ctx.nodeFlags,
    reflectorBin(ctx),
    'connect',
    url,
    '--identity',
    keys.clientFile,
    '--server-key',
    keys.hostThumbprint,
    '--known-servers',
    path.join(keys.dir, 'known_servers'),
    '-L',
    `127.0.0.1:${port}=${SERVICE}`,
    ...caArgs,
    ...(variant.aead ? ['--aead', variant.aead] : []),
  ];
  const child = start(`${name} (reflector connect)`, process.execPath, args, {
    log: path.join(ctx.dir, `${name}.log`),
    env: { ...process.env, ...env, ...variant.env },
  });
  await child.waitForLog((line) => line.includes('"event":"session.open"'), 'session.open');
  return { child, port, ...(trust ? { trust } : {}) };
}

/** How a path's two reflectors are run: the product defaults, or with some switches turned back. */
export interface ReflectorVariant {
  /** Path id suffix and what the results call it. */
  id?: string;
  label?: string;
  /** `aead` in the server config and `--aead` for the client (default: the product default). */
  aead?: string;
  /** Extra environment for both reflector processes. */
  env?: Record<string, string>;
  /** Server limits other than the product defaults (they reach the client in WELCOME). */
  limits?: Partial<Limits>;
}

const PRODUCT_DEFAULTS: ReflectorVariant = {};

/**
 * The hot-path switches of the performance work turned back (OpenSSL AEAD,
 * which allocates per record, and no GC pacing), measured in the same run as
 * the defaults so their effect is a ratio, not a comparison across days.
 */
export const BEFORE_HOT_PATH_WORK: ReflectorVariant = {
  id: 'reflector-no-pacing-node-aead',
  label: 'Reflector, aead node and REFLECTOR_GC_PACING=off',
  aead: 'node',
  env: { REFLECTOR_GC_PACING: 'off' },
};

/** Experiments with the server's limits, run only when `--paths` names them. */
export const LIMIT_VARIANTS: ReflectorVariant[] = [
  ...[256, 512, 2048].map((kib) => ({
    id: `reflector-window-${kib}k`,
    label: `Reflector, limits.windowBytes ${kib} KiB`,
    limits: { windowBytes: kib * 1024 },
  })),
  { id: 'reflector-no-resume', label: 'Reflector, limits.resumeWindowMs 0 (nothing kept for a resume)', limits: { resumeWindowMs: 0 } },
];

export class ReflectorPath implements BenchPath {
  readonly id: string;
  readonly label: string;
  private server: Child | undefined;
  private client: Child | undefined;
  private nginx: NginxFront | undefined;
  private trust: string | undefined;

  constructor(
    private readonly viaNginx: boolean,
    private readonly variant: ReflectorVariant = PRODUCT_DEFAULTS,
  ) {
    this.id = variant.id ?? (viaNginx ? 'reflector-nginx-tls' : 'reflector');
    this.label = variant.label ?? (viaNginx ? 'Reflector behind nginx (TLS)' : 'Reflector (client → server → target)');
  }

  unavailable(): string | undefined {
    return this.viaNginx
      ? missing([
          { program: 'nginx', pkg: 'nginx' },
          { program: 'openssl', pkg: 'openssl' },
        ])
      : undefined;
  }

  async setup(ctx: BenchContext): Promise<PathEndpoint> {
    const keys = await makeReflectorKeys(path.join(ctx.dir, this.id));
    const server = await startReflectorServer(ctx, keys, `${this.id}-server`, undefined, this.variant);
    this.server = server.child;
    let url = `ws://127.0.0.1:${server.port}/tunnel`;
    if (this.viaNginx) {
      this.nginx = await startNginxTls(ctx, path.join(ctx.dir, 'nginx'), server.port);
      url = `wss://127.0.0.1:${this.nginx.port}/tunnel`;
    }
    const client = await startReflectorClient(ctx, keys, `${this.id}-client`, url, this.nginx?.certFile, this.variant);
    this.client = client.child;
    this.trust = client.trust;
    await waitForBanner(client.port);
    return { port: client.port };
  }

  async teardown(): Promise<void> {
    await this.client?.stop();
    await this.nginx?.child.stop('SIGQUIT');
    await this.server?.stop('SIGINT', 2_000);
  }

  details(): string {
    const records =
      this.variant === PRODUCT_DEFAULTS
        ? 'ChaCha20-Poly1305 records (aead: auto, product default), product default limits'
        : `ChaCha20-Poly1305 records, aead ${this.variant.aead ?? 'auto'}, environment ${JSON.stringify(this.variant.env ?? {})}, ${
            this.variant.limits ? `limits ${JSON.stringify(this.variant.limits)}` : 'product default limits'
          }`;
    return this.nginx
      ? `${records}; client → nginx: ${this.nginx.tls}, self-signed certificate trusted with ${this.trust}; nginx → server: plain HTTP/1.1 upgrade`
      : `${records}; ws:// on loopback`;
  }

  processes(): Array<{ role: string; pid: number }> {
    const list: Array<{ role: string; pid: number }> = [];
    if (this.client) list.push({ role: 'client', pid: this.client.pid });
    if (this.nginx) list.push({ role: 'nginx', pid: this.nginx.child.pid });
    if (this.server) list.push({ role: 'server', pid: this.server.pid });
    return list;
  }
}
