/**
 * A reflector (server or client) run through the library API in its own
 * process, for the memory figures: the same objects `reflector server` and
 * `reflector connect` build, plus an IPC channel on which the harness asks for
 * a heap measurement after a full GC (run with --expose-gc). RSS the harness
 * reads itself from /proc.
 *
 *   node --expose-gc --import tsx bench/load/probe.ts server CONFIG.yaml
 *   node --expose-gc --import tsx bench/load/probe.ts client URL IDENTITY THUMBPRINT PORT KNOWN_SERVERS
 *
 * IPC: the probe sends {ready: true}; it answers {cmd: "mem"} with
 * process.memoryUsage() after GC and {cmd: "status"} with its session and stream counts.
 */
import { connect, type ReflectorClient } from '../../client/index.js';
import { createServer, type ReflectorServer } from '../../server/index.js';
import type { ClientOptions } from '../../shared/client-config.js';
import { loadServerConfig } from '../../shared/config-schema.js';
import { createLogger } from '../../shared/logger.js';

type Request = { cmd: 'mem' } | { cmd: 'status' };

const gc = (globalThis as { gc?: () => void }).gc;

async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  if (gc === undefined) throw new Error('run the probe with --expose-gc');
  for (let i = 0; i < 3; i += 1) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return process.memoryUsage();
}

function send(message: unknown): void {
  process.send?.(message);
}

async function startServerProbe(configFile: string): Promise<() => unknown> {
  const config = await loadServerConfig(configFile);
  const server: ReflectorServer = await createServer(config, {
    logger: createLogger({ level: config.log.level, format: config.log.format, name: 'reflector' }),
  });
  return () => {
    const sessions = server.listSessions();
    return { sessions: sessions.length, streams: sessions.reduce((n, s) => n + s.streams, 0) };
  };
}

async function startClientProbe(args: string[]): Promise<() => unknown> {
  const [url, identity, serverKey, port, knownServers] = args as [string, string, string, string, string];
  const options: ClientOptions = {
    url,
    identity,
    serverKey,
    knownServers,
    forwards: [{ host: '127.0.0.1', port: Number(port), service: 'bench' }],
    aead: 'auto',
    reconnect: { initialDelayMs: 200, maxDelayMs: 30_000, maxAttempts: 0 },
    headers: {},
    log: { level: 'info', format: 'json' },
  };
  const client: ReflectorClient = await connect(options, {
    logger: createLogger({ level: 'info', format: 'json', destination: 'stderr', name: 'reflector' }),
  });
  const deadline = Date.now() + 15_000;
  while (client.state !== 'connected') {
    if (Date.now() > deadline) throw new Error(`client probe not connected (state ${client.state})`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return () => ({ state: client.state, streams: client.status.streams });
}

const [role, ...args] = process.argv.slice(2);
const status = role === 'server' ? await startServerProbe(args[0]!) : await startClientProbe(args);
process.on('message', (request: Request) => {
  if (request.cmd === 'mem') {
    settledMemory().then((memory) => send({ memory }), (error: Error) => send({ error: error.message }));
  } else if (request.cmd === 'status') {
    send({ status: status() });
  }
});
process.on('disconnect', () => process.exit(0));
send({ ready: true });
