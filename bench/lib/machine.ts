/** The machine and the versions of everything measured, for the results header. */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findProgram } from './programs.js';
import { run } from './proc.js';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  os: string;
  loadAverageAtStart: number[];
  virtualization?: string;
}

export function describeMachine(): Machine {
  let osName = os.type();
  try {
    osName = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? osName;
  } catch {
    // not Linux with os-release: keep os.type()
  }
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    kernel: os.release(),
    os: osName,
    loadAverageAtStart: os.loadavg().map((n) => Math.round(n * 100) / 100),
  };
}

async function firstLine(command: string, args: string[]): Promise<string | undefined> {
  const program = findProgram(command);
  if (program === undefined) return undefined;
  const result = await run(program, args, { timeoutMs: 10_000 });
  return (result.stdout + result.stderr).trim().split('\n')[0];
}

function packageVersion(repo: string, name: string): string | undefined {
  try {
    // Read the file itself: some packages do not export ./package.json.
    return (JSON.parse(readFileSync(path.join(repo, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return undefined;
  }
}

export async function describeVersions(repo: string): Promise<Record<string, string>> {
  const pkg = JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as { version: string };
  const commit = (await run('git', ['-C', repo, 'rev-parse', '--short', 'HEAD'])).stdout.trim();
  // Result files are not code: a run with older results deleted or added still measures this commit.
  const status = await run('git', ['-C', repo, 'status', '--porcelain', '--untracked-files=no', '--', '.', ':!bench/results']);
  const changed = status.stdout.split('\n').map((line) => line.slice(3).trim()).filter(Boolean);
  const local = changed.length === 0 ? '' : `, local changes in ${changed.slice(0, 4).join(', ')}${changed.length > 4 ? ` and ${changed.length - 4} more` : ''}`;
  const versions: Record<string, string> = {
    reflector: `${pkg.version} (${commit || 'no git'}${local})`,
    node: process.versions.node,
    v8: process.versions.v8,
    'node OpenSSL': process.versions.openssl ?? 'unknown',
  };
  const npm = await run('npm', ['--version']);
  if (npm.code === 0) versions.npm = npm.stdout.trim();
  for (const name of ['ws', 'bufferutil', '@noble/post-quantum', 'jose']) {
    versions[name] = packageVersion(repo, name) ?? 'not installed';
  }
  const tools: Array<[string, string, string[]]> = [
    ['ssh', 'ssh', ['-V']],
    ['nginx', 'nginx', ['-v']],
    ['openssl', 'openssl', ['version']],
  ];
  for (const [label, command, args] of tools) {
    versions[label] = (await firstLine(command, args))?.replace(/^nginx version: /, '') ?? 'not installed';
  }
  return versions;
}
