/**
 * The benchmark harness of the performance issue: one command sets up every
 * path on loopback (installing nothing), measures each figure through each
 * path with the repetitions interleaved, and writes bench/results/<date>.md
 * and .json.
 *
 *   npm run bench                        full run (~6 min on a quiet 2-core VM, up to ~9 on a busy one)
 *   npm run bench -- --reps 5            more repetitions (see --help for the rest)
 *   npm run bench -- --profile           node --cpu-prof on the reflector children; top self-time functions
 *   npm run bench:smoke                  tiny sizes, 1 repetition, results in a temp dir; exits 1 if a path failed
 *
 * Processes: the target (bench/load/target.ts), the load generator
 * (bench/load/client.ts, one long-lived process driven over IPC), and each path's own
 * processes (reflector server/client from dist/, nginx, sshd/ssh). Nothing
 * shares a process with what it measures.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineHandshakeFigures, runHandshakeFigures, type HandshakeSettings } from './figures/handshakes.js';
import { defineMemoryFigures, runMemoryFigures, type MemorySettings } from './figures/memory.js';
import { definePathFigures, runPathFigures, type ActivePath, type PathFigureSettings } from './figures/path-figures.js';
import { runProfile } from './figures/profile.js';
import { LoadWorker } from './lib/load.js';
import { QuietGate } from './lib/quiet.js';
import { describeMachine, describeVersions } from './lib/machine.js';
import { start, stopAll } from './lib/proc.js';
import { resultStem, writeResults } from './lib/report.js';
import { Results } from './lib/results.js';
import { evaluateTargets } from './lib/targets.js';
import { DirectPath } from './paths/direct.js';
import { BEFORE_HOT_PATH_WORK, ReflectorPath, LIMIT_VARIANTS } from './paths/reflector.js';
import { SshPath } from './paths/ssh.js';
import type { BenchContext, BenchPath } from './paths/types.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

interface Settings {
  path: PathFigureSettings;
  handshakes: HandshakeSettings;
  memory: MemorySettings;
}

function settingsFor(smoke: boolean, reps: number | undefined): Settings {
  if (smoke) {
    const r = reps ?? 1;
    return {
      path: { reps: r, warmupBytes: 0, bulkBytes: 16 * MiB, parallelBytes: 16 * MiB, parallelStreams: 16, rttExchanges: 200, ttfbStreams: 20, stallSeconds: 0.5 },
      handshakes: { reps: r, seconds: 1, concurrency: 4 },
      memory: { reps: r, sessions: 20, streams: 200 },
    };
  }
  const r = reps ?? 3;
  return {
    path: { reps: r, warmupBytes: 256 * MiB, bulkBytes: GiB, parallelBytes: GiB, parallelStreams: 16, rttExchanges: 5000, ttfbStreams: 200, stallSeconds: 3 },
    handshakes: { reps: r, seconds: 5, concurrency: 16 },
    memory: { reps: r, sessions: 1000, streams: 10_000 },
  };
}

const USAGE = `npm run bench [-- OPTIONS]        full run; writes bench/results/<date>.md and .json
npm run bench:smoke                  tiny sizes, 1 repetition, results in $TMPDIR/reflector-bench-smoke; exit 1 if a path failed

  --reps N          repetitions per figure (default 3; smoke 1)
  --paths A,B       only these paths: direct, reflector, reflector-no-pacing-node-aead, reflector-nginx-tls, ssh-chacha20, ssh-aes128-gcm;
                    on request only: reflector-window-256k, reflector-window-512k, reflector-window-2048k (limits.windowBytes),
                    reflector-no-resume (limits.resumeWindowMs 0)
  --paths-only      skip the handshake and memory figures
  --figures A,B     only these figure groups: paths, handshakes, memory (default all; --paths-only = paths)
  --profile         node --cpu-prof on the reflector children (bulk, round trips, handshakes); writes <date>-profile.md
  --node-flags 'F'  extra node flags for the reflector children (e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof')
  --out DIR         write results here instead
  --keep            keep the scratch directory (keys, configs, every process's log)
`;

interface Args {
  smoke: boolean;
  profile: boolean;
  keep: boolean;
  reps?: number;
  out?: string;
  /** Only these path ids (direct, reflector, reflector-nginx-tls, ssh-chacha20, ssh-aes128-gcm). */
  paths?: string[];
  /** Skip the handshake and memory figures. */
  pathsOnly: boolean;
  /** Extra node flags for the reflector children, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p". */
  nodeFlags: string[];
  /** Only these figure groups (paths, handshakes, memory); undefined = all. */
  figures?: string[];
}

const FIGURE_GROUPS = ['paths', 'handshakes', 'memory'];

/** The command line as a reader would type it again, for the results files. */
function benchCommand(args: Args): string {
  return args.smoke ? 'npm run bench:smoke' : `npm run bench -- ${process.argv.slice(2).join(' ')}`.trimEnd().replace(/ --$/, '');
}

function parseArgs(argv: string[]): Args {
  const args: Args = { smoke: false, profile: false, keep: false, pathsOnly: false, nodeFlags: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--smoke') args.smoke = true;
    else if (arg === '--profile') args.profile = true;
    else if (arg === '--keep') args.keep = true;
    else if (arg === '--reps') args.reps = Number(argv[++i]);
    else if (arg === '--out') args.out = argv[++i];
    else if (arg === '--paths') args.paths = (argv[++i] ?? '').split(',');
    else if (arg === '--paths-only') args.pathsOnly = true;
    else if (arg === '--figures') args.figures = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (arg === '--node-flags') args.nodeFlags = (argv[++i] ?? '').split(' ').filter(Boolean);
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    else throw new Error(`unknown argument ${arg} (expected --smoke, --profile, --reps N, --paths ID,ID, --paths-only, --figures A,B, --out DIR, --keep)`);
  }
  if (args.figures !== undefined) {
    const unknown = args.figures.filter((f) => !FIGURE_GROUPS.includes(f));
    if (unknown.length > 0 || args.figures.length === 0) throw new Error(`--figures takes a comma-separated list of ${FIGURE_GROUPS.join(', ')}`);
  }
  if (args.pathsOnly) args.figures = ['paths'];
  if (args.reps !== undefined && !(Number.isInteger(args.reps) && args.reps >= 1)) throw new Error('--reps needs a positive integer');
  return args;
}

function say(text: string): void {
  process.stderr.write(`${text}\n`);
}

async function startTarget(ctx: Pick<BenchContext, 'repo' | 'dir'>): Promise<{ targetPort: number; targetPid: number }> {
  const target = start('target', process.execPath, ['--import', 'tsx', path.join(ctx.repo, 'bench', 'load', 'target.ts')], {
    log: path.join(ctx.dir, 'target.log'),
  });
  const line = await target.waitForLog((l) => l.includes('"event":"listening"'), 'target listening');
  return { targetPort: (JSON.parse(line) as { port: number }).port, targetPid: target.pid };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const repo = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
  if (!existsSync(path.join(repo, 'dist', 'bin', 'reflector.js'))) {
    say('dist/bin/reflector.js is missing: run `npm run build` first (npm run bench does).');
    return 2;
  }
  const mode = args.smoke ? 'smoke' : 'full';
  const settings = settingsFor(args.smoke, args.reps);
  const startedAt = new Date();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-bench-'));
  const base = {
    repo,
    dir,
    nodeFlags: args.nodeFlags,
    load: new LoadWorker(repo, path.join(dir, 'load.log')),
    // A smoke run checks that everything works; a full run waits (up to 3 s, 90 s in all) for a quiet machine before each measurement.
    quiet: new QuietGate(args.smoke ? 0 : 3_000, args.smoke ? 0 : 90_000),
  };
  const cleanup = async (): Promise<void> => {
    await stopAll();
    if (!args.keep) await rm(dir, { recursive: true, force: true });
  };
  const interrupted = (): void => {
    say('interrupted: stopping the bench processes');
    void cleanup().then(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);

  try {
    say(`reflector bench (${mode}); scratch dir ${dir}`);
    const ctx: BenchContext = { ...base, ...(await startTarget(base)) };

    if (args.profile) {
      const report = await runProfile(ctx, {
        bulkBytes: args.smoke ? 64 * MiB : 2 * GiB,
        rttExchanges: args.smoke ? 500 : 20_000,
        handshakeSeconds: args.smoke ? 1 : 10,
      });
      const outDir = args.out ?? path.join(repo, 'bench', 'results');
      await mkdir(outDir, { recursive: true });
      const file = path.join(outDir, `${resultStem(startedAt, mode)}-profile.md`);
      await writeFile(file, `# Reflector CPU profile, ${startedAt.toISOString().slice(0, 16)} UTC\n\nCommand: \`${benchCommand(args)}\`. Self time per function from \`node --cpu-prof\` on the reflector child processes.\n\n${report}`);
      process.stdout.write(`${report}\nwrote ${file}\n`);
      return 0;
    }

    const results = new Results();
    const wants = (group: string): boolean => args.figures === undefined || args.figures.includes(group);
    const paths: BenchPath[] = !wants('paths') ? [] : [
      new DirectPath(),
      new ReflectorPath(false),
      new ReflectorPath(false, BEFORE_HOT_PATH_WORK),
      new ReflectorPath(true),
      new SshPath('chacha20-poly1305@openssh.com'),
      new SshPath('aes128-gcm@openssh.com'),
      // Experiments, run only when named.
      ...LIMIT_VARIANTS.filter((variant) => args.paths?.includes(variant.id ?? '')).map((variant) => new ReflectorPath(false, variant)),
    ].filter((p) => args.paths === undefined || args.paths.includes(p.id));
    const active: ActivePath[] = [];
    for (const p of paths) {
      const reason = p.unavailable();
      if (reason !== undefined) {
        results.setPath({ id: p.id, label: p.label, status: 'skipped', reason });
        say(`path ${p.id}: ${reason}`);
        continue;
      }
      try {
        const { port } = await p.setup(ctx);
        results.setPath({ id: p.id, label: p.label, status: 'ok', details: p.details() });
        active.push({ path: p, port });
        say(`path ${p.id}: ready on 127.0.0.1:${port}`);
      } catch (error) {
        results.setPath({ id: p.id, label: p.label, status: 'ok' });
        results.pathFailed(p.id, `setup failed: ${(error as Error).message}`);
        say(`path ${p.id}: setup FAILED: ${(error as Error).message}`);
      }
    }

    if (wants('paths')) {
      definePathFigures(results, settings.path);
      say('figures through each path (repetitions interleaved):');
      await runPathFigures(ctx, active, results, settings.path);
      for (const p of paths) await p.teardown();
    }

    if (wants('handshakes')) {
      defineHandshakeFigures(results, settings.handshakes);
      say('handshakes:');
      await runHandshakeFigures(ctx, results, settings.handshakes);
    }

    if (wants('memory')) {
      defineMemoryFigures(results, settings.memory);
      say('memory:');
      await runMemoryFigures(ctx, results, settings.memory);
    }

    evaluateTargets(results, { streams: settings.memory.streams });
    // Smoke results are not for comparison: they stay out of bench/results/.
    const outDir = args.out ?? (args.smoke ? path.join(os.tmpdir(), 'reflector-bench-smoke') : path.join(repo, 'bench', 'results'));
    const finishedAt = new Date();
    const written = await writeResults(
      outDir,
      {
        startedAt,
        finishedAt,
        command: benchCommand(args),
        mode,
        machine: describeMachine(),
        versions: await describeVersions(repo),
        settings: { ...settings.path, handshakes: settings.handshakes, memory: settings.memory },
        notes: NOTES,
      },
      results,
    );
    say(`wrote ${written.md}\nwrote ${written.json}`);
    process.stdout.write(await readFile(written.md, 'utf8'));
    if (results.failures.length > 0) {
      say(`${results.failures.length} failure(s):\n${results.failures.map((f) => `  - ${f}`).join('\n')}`);
      return 1;
    }
    return 0;
  } finally {
    await cleanup();
  }
}

const NOTES = [
  'Each reflector runs as its own child process from `dist/` (`node dist/bin/reflector.js server --config …` / `connect …`), like ssh and sshd; the target (bench/load/target.ts) and the load generator (bench/load/client.ts, driven over IPC, one measurement at a time) are two more processes. Nothing is pinned to a core.',
  'Warm-up: before the first measurement every path carries one unrecorded pass of each workload (bulk, 16 streams, 1,000 round trips, 50 new streams), so JIT compilation and TCP window growth are not measured.',
  'Noise control: before each measurement the harness waits up to 3 s (90 s in all per run) for the machine to be quiet (other processes below 0.3 cores over 0.4 s) and records how much CPU other processes used while it ran.',
  'Throughput: the load generator writes N bytes (256 KiB writes of random data) and half-closes; the target counts until EOF and answers the count; the time runs until that answer arrives, so every byte reached the target. MB = 10^6 bytes.',
  'CPU per GiB: user+system time of all the tunnel\'s processes (and their children: sshd forks per connection, nginx has a worker) from /proc/<pid>/stat, divided by GiB moved.',
  'Round trip: one connection, 64-byte write, wait for the 64-byte echo, repeat sequentially (200 warm-up exchanges not counted). Added latency = path median − direct median.',
  'Connect → first byte: the target speaks first (one banner byte, like SMTP), so this is TCP connect to the local listener + stream open through the tunnel + backend connect + the first byte back, on a session that is already up.',
  'Handshakes: the load process runs the product\'s client handshake (client/session.ts establishSession) against a `reflector server` child; per-address and per-key session limits are lifted for the run, everything else is default. The server is one Node process (one core for JavaScript); the load generator needs about as much CPU per handshake as the server, on the same 2 cores.',
  'Memory: probes (bench/load/probe.ts) run the same library objects as the CLI in their own processes with --expose-gc; RSS from /proc/<pid>/status, heap = V8 heapUsed after full GCs, per item = (after − before) / count, with the sessions or connections held idle by the load process.',
  'Stalled reader: the reader asks the target for 1 GiB and never reads; RSS of every tunnel process (and children) is sampled every 50 ms; the figure is the peak of the sum minus the sum before.',
  'nginx path: nginx terminates TLS with a self-signed ECDSA P-256 certificate made by openssl at run time and proxies the upgrade to the reflector server with the TLS and proxy settings of deploy/nginx/reflector.conf (TLS 1.2/1.3, proxy_buffering off); the reflector client trusts the certificate with `connect --ca` (or NODE_EXTRA_CA_CERTS if the built CLI has no --ca); the negotiated TLS version and cipher are in the paths table.',
  'ssh paths: sshd on a loopback port with a throwaway ed25519 host key and an authorized throwaway client key; `ssh -N -L … -o Ciphers=<cipher>`; OpenSSH default key exchange; no compression.',
];

main().then(
  (code) => process.exit(code),
  async (error: unknown) => {
    say(`bench failed: ${(error as Error)?.stack ?? error}`);
    await stopAll();
    process.exit(1);
  },
);
