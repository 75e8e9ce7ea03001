/**
 * `reflector quickstart`: a local gateway to try Reflector. The first run
 * creates the state folder (git-ignored), a host key, a client key and a
 * server.yaml; every run starts the gateway and prints how to connect.
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigError } from '../shared/errors.js';
import { generateIdentity, loadPrivateKeyFile, writeIdentityFiles } from '../shared/keys.js';
import type { LogFlags } from './log-flags.js';
import { runServer, type RunningServer } from './run-server.js';

export interface QuickstartFlags extends LogFlags {
  /** The state folder. */
  dir: string;
  /** The gateway's port; on later runs, only given to move it. */
  port?: number;
}

const QUICKSTART_SERVICES = { smtp: 25, pop3: 110, nntp: 119 } as const;

function quickstartYaml(port: number): string {
  const services = Object.entries(QUICKSTART_SERVICES)
    .map(([name, servicePort]) => `  ${name}: 127.0.0.1:${servicePort}`)
    .join('\n');
  return `# Written by \`reflector quickstart\`: a local gateway to try Reflector.
# See deploy/server.example.yaml for every setting.
listen: { host: 127.0.0.1, port: ${port} }
path: /tunnel
hostKey: host.jwk
services:
${services}
  status: 127.0.0.1:${port}   # the gateway's own HTTP listener (/healthz)
clients:
  - name: dev
    keyFile: client.jwk.pub
    services: ["*"]
log: { level: info, format: pretty }
`;
}

/** Quotes a path for the printed command line when the shell would split or expand it. */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new ConfigError(`${file}: cannot be checked (${(error as NodeJS.ErrnoException).code})`, { cause: error });
  }
}

async function ensureIdentity(file: string): Promise<void> {
  if (!(await exists(file))) await writeIdentityFiles(file, await generateIdentity());
}

/** Writes server.yaml on the first run; later, only moves it to an explicitly requested port. */
async function ensureServerYaml(file: string, port: number | undefined): Promise<void> {
  if (!(await exists(file))) {
    await writeFile(file, quickstartYaml(port ?? 8080), { mode: 0o600 });
    return;
  }
  if (port === undefined) return;
  const doc = parseDocument(await readFile(file, 'utf8'));
  const previous: unknown = doc.getIn(['listen', 'port']);
  if (previous === port || doc.errors.length > 0) return; // a broken file is reported by loadServerConfig
  doc.setIn(['listen', 'port'], port);
  if (doc.getIn(['services', 'status']) === `127.0.0.1:${String(previous)}`) doc.setIn(['services', 'status'], `127.0.0.1:${port}`);
  await writeFile(file, doc.toString());
}

/** Prepares the state folder, starts the gateway and prints the connect command; the gateway runs on. */
export async function quickstart(flags: QuickstartFlags): Promise<RunningServer> {
  const dir = flags.dir;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(path.join(dir, '.gitignore'), '*\n');
  await ensureIdentity(path.join(dir, 'host.jwk'));
  await ensureIdentity(path.join(dir, 'client.jwk'));
  const configPath = path.join(dir, 'server.yaml');
  await ensureServerYaml(configPath, flags.port);

  const hint = (port: number): string =>
    `pass --port to pick another, e.g. reflector quickstart --port ${port < 65000 ? port + 10 : 18080}`;
  const running = await runServer(configPath, flags, hint);
  const host = await loadPrivateKeyFile(running.config.hostKey);
  const { port } = running.address;
  const printableHost = running.address.host.includes(':') ? `[${running.address.host}]` : running.address.host;
  const tunnelUrl = `ws://${printableHost}:${port}${running.config.path}`;
  process.stdout.write(
    `${[
      '',
      `Reflector gateway listening on ${running.url}`,
      `host key thumbprint: ${host.thumbprint}`,
      '',
      'In another terminal, connect a client:',
      `  npx reflector connect ${tunnelUrl} --identity ${shellWord(path.join(dir, 'client.jwk'))} --server-key ${host.thumbprint} -L 127.0.0.1:${port + 1}=status -L 127.0.0.1:2525=smtp`,
      'then try the tunnel:',
      `  curl http://127.0.0.1:${port + 1}/healthz`,
      '',
    ].join('\n')}\n`,
  );
  return running;
}
