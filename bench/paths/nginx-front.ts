/**
 * nginx in front of a reflector server, as in production: TLS with a
 * certificate (self-signed here, made by openssl for 127.0.0.1), the tunnel
 * location proxied with the WebSocket upgrade headers to the server's
 * plain-HTTP loopback listener. The TLS and proxy settings are those of the
 * shipped site, deploy/nginx/reflector.conf (TLS 1.2/1.3, no proxy
 * buffering); replicas, logs and the health locations are left out. One
 * worker: a session is one connection, so one worker carries it either way.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { freePort } from '../lib/net.js';
import { findProgram } from '../lib/programs.js';
import { run, start, type Child } from '../lib/proc.js';
import type { BenchContext } from './types.js';

export interface NginxFront {
  child: Child;
  port: number;
  certFile: string;
  /** What a Node client negotiates with it, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384". */
  tls: string;
}

export async function makeSelfSignedCert(dir: string): Promise<{ certFile: string; keyFile: string }> {
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  const result = await run(findProgram('openssl') ?? 'openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout', keyFile, '-out', certFile,
  ]);
  if (result.code !== 0) throw new Error(`openssl req failed: ${result.stderr.trim()}`);
  return { certFile, keyFile };
}

export async function startNginxTls(ctx: BenchContext, dir: string, upstreamPort: number): Promise<NginxFront> {
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o755);
  const { certFile, keyFile } = await makeSelfSignedCert(dir);
  const port = await freePort();
  const conf = path.join(dir, 'nginx.conf');
  await writeFile(
    conf,
    `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  map $http_upgrade $reflector_connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${certFile};
    ssl_certificate_key ${keyFile};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:reflector_tls:10m;
    location = /tunnel {
      proxy_pass http://127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $reflector_connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_connect_timeout 5s;
      proxy_read_timeout 120s;
      proxy_send_timeout 120s;
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
`,
  );
  const nginx = findProgram('nginx') ?? 'nginx';
  const child = start('nginx', nginx, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', conf], {
    log: path.join(ctx.dir, 'nginx.log'),
  });
  // nginx prints nothing when it starts; the caller's banner check proves the whole path.
  await waitListening(child, port);
  return { child, port, certFile, tls: await negotiated(port, certFile) };
}

/** The TLS version and cipher a Node client (like the reflector client) gets from this nginx. */
async function negotiated(port: number, certFile: string): Promise<string> {
  const ca = await readFile(certFile);
  return new Promise((resolve) => {
    const socket = tls.connect({ port, host: '127.0.0.1', ca }, () => {
      const cipher = socket.getCipher();
      resolve(`${socket.getProtocol() ?? '?'} ${cipher.standardName ?? cipher.name}`);
      socket.end();
    });
    socket.once('error', (error) => resolve(`TLS (could not inspect: ${error.message})`));
  });
}

async function waitListening(child: Child, port: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (!child.alive) throw new Error(`nginx exited before listening; see ${child.log}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ port, host: '127.0.0.1' }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`nginx did not listen on ${port} within 10 s; see ${child.log}`);
}
