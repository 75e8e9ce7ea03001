/**
 * `npm run bench -- --profile`: the reflector children under `node --cpu-prof`,
 * one workload at a time (bulk, small round trips, handshakes), each in fresh
 * processes so every profile holds one workload. Prints and returns the top
 * self-time functions of each process.
 */
import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { renderProfile, summarizeProfile } from '../lib/cpuprofile.js';
import { runLoad } from '../lib/load.js';
import { ReflectorPath, makeReflectorKeys, startReflectorServer } from '../paths/reflector.js';
import type { BenchContext } from '../paths/types.js';

export interface ProfileSettings {
  bulkBytes: number;
  rttExchanges: number;
  handshakeSeconds: number;
}

async function profiles(dir: string, roles: Map<number, string>): Promise<Array<{ role: string; file: string }>> {
  const found: Array<{ role: string; file: string }> = [];
  for (const file of await readdir(dir)) {
    const pid = Number(/^CPU\.\d+\.\d+\.(\d+)\./.exec(file)?.[1]);
    if (roles.has(pid)) found.push({ role: roles.get(pid)!, file: path.join(dir, file) });
  }
  return found.sort((a, b) => a.role.localeCompare(b.role));
}

async function profiledPath(ctx: BenchContext, phase: string, work: (port: number) => Promise<string>): Promise<string> {
  const dir = path.join(ctx.dir, 'profiles', phase);
  await mkdir(dir, { recursive: true });
  const sub: BenchContext = { ...ctx, dir: path.join(ctx.dir, phase), nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${dir}`] };
  await mkdir(sub.dir, { recursive: true });
  const reflector = new ReflectorPath(false);
  const { port } = await reflector.setup(sub);
  const roles = new Map(reflector.processes().map((p) => [p.pid, `reflector ${p.role}`]));
  let what: string;
  try {
    what = await work(port);
  } finally {
    await reflector.teardown();
  }
  const parts = [`## ${phase}: ${what}`, ''];
  for (const { role, file } of await profiles(dir, roles)) parts.push(renderProfile(role, await summarizeProfile(file)));
  return parts.join('\n');
}

export async function runProfile(ctx: BenchContext, s: ProfileSettings): Promise<string> {
  const sections: string[] = [];
  sections.push(
    await profiledPath(ctx, 'bulk', async (port) => {
      const out = await runLoad<{ mbPerS: number }>(ctx, 'bulk', { port, bytes: s.bulkBytes, streams: 1 }, 600_000);
      return `${s.bulkBytes / 2 ** 30} GiB single stream at ${out.mbPerS.toFixed(0)} MB/s`;
    }),
  );
  sections.push(
    await profiledPath(ctx, 'rtt', async (port) => {
      const out = await runLoad<{ us: { median: number } }>(ctx, 'rtt', { port, count: s.rttExchanges, size: 64 }, 600_000);
      return `${s.rttExchanges} sequential 64-byte round trips, median ${out.us.median.toFixed(0)} µs`;
    }),
  );

  const dir = path.join(ctx.dir, 'profiles', 'handshakes');
  await mkdir(dir, { recursive: true });
  const keys = await makeReflectorKeys(path.join(ctx.dir, 'profile-handshakes'));
  const server = await startReflectorServer({ ...ctx, nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${dir}`] }, keys, 'profile-handshake-server', {
    maxUnauthenticatedPerAddress: 100_000,
    maxSessionsPerClient: 1_000_000,
  });
  let what: string;
  try {
    const out = await runLoad<{ perSecond: number }>(
      ctx,
      'handshakes',
      { url: `ws://127.0.0.1:${server.port}/tunnel`, identity: keys.clientFile, 'server-key': keys.hostThumbprint, seconds: s.handshakeSeconds, concurrency: 16 },
      s.handshakeSeconds * 1000 + 60_000,
    );
    what = `${s.handshakeSeconds} s of full handshakes, ${out.perSecond.toFixed(0)}/s`;
  } finally {
    await server.child.stop('SIGINT', 5_000);
  }
  const parts = [`## handshakes: ${what}`, ''];
  for (const { role, file } of await profiles(dir, new Map([[server.child.pid, 'reflector server']]))) {
    parts.push(renderProfile(role, await summarizeProfile(file)));
  }
  sections.push(parts.join('\n'));
  return sections.join('\n');
}
