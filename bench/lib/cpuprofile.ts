/** Self time per function (and per file) from a V8 .cpuprofile, as written by `node --cpu-prof`. */
import { readFile } from 'node:fs/promises';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  where: string;
  ms: number;
  /** Share of the non-idle time. */
  share: number;
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  busyMs: number;
  byFunction: SelfTime[];
  byComponent: SelfTime[];
}

/** node_modules/ws/lib/sender.js → ws/lib/sender.js; file:///…/dist/shared/x.js → dist/shared/x.js. */
export function shortUrl(url: string): string {
  if (url === '') return '(native)';
  const modules = url.lastIndexOf('node_modules/');
  if (modules >= 0) return url.slice(modules + 'node_modules/'.length);
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return url.slice(dist + 1);
  return url.replace(/^file:\/\//, '');
}

/**
 * Which part of the stack a frame belongs to: an npm package, a Reflector
 * directory, a Node subsystem, or V8 itself. Native frames (syscalls made by
 * socket writes, OpenSSL) are attributed to their own line.
 */
export function component(url: string, functionName: string): string {
  if (url === '') {
    if (functionName === '(garbage collector)') return 'V8 garbage collector';
    if (functionName === '(program)') return 'V8/Node outside JS (program)';
    return `native: ${functionName}`;
  }
  const modules = url.lastIndexOf('node_modules/');
  if (modules >= 0) {
    const rest = url.slice(modules + 'node_modules/'.length).split('/');
    return `npm ${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return `reflector ${url.slice(dist + 1).split('/').slice(0, 2).join('/')}`;
  if (url.startsWith('node:internal/crypto')) return 'node:crypto (JS side)';
  if (/^node:(net|stream|internal\/streams\/|internal\/stream_base_commons)/.test(url)) return 'node streams/net (JS side)';
  if (url.startsWith('node:internal/modules') || url.startsWith('node:internal/vm')) return 'module loading (start-up)';
  return url.replace(/^node:(internal\/)?/, 'node:').split('/')[0]!;
}

export async function summarizeProfile(file: string, top = 20): Promise<ProfileSummary> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i += 1) {
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  let totalUs = 0;
  let idleUs = 0;
  const functions = new Map<string, { name: string; where: string; us: number }>();
  const components = new Map<string, number>();
  for (const [id, us] of selfUs) {
    totalUs += us;
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const name = frame.functionName || '(anonymous)';
    const where = frame.url === '' ? '(native)' : `${shortUrl(frame.url)}:${frame.lineNumber + 1}`;
    const key = `${name} ${where}`;
    const entry = functions.get(key) ?? { name, where, us: 0 };
    entry.us += us;
    functions.set(key, entry);
    const part = component(frame.url, frame.functionName);
    components.set(part, (components.get(part) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs || 1;
  const rank = (list: Array<{ name: string; where: string; us: number }>): SelfTime[] =>
    list
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => ({ name: e.name, where: e.where, ms: e.us / 1000, share: e.us / busyUs }));
  return {
    totalMs: totalUs / 1000,
    idleMs: idleUs / 1000,
    busyMs: (totalUs - idleUs) / 1000,
    byFunction: rank([...functions.values()]),
    byComponent: rank([...components].map(([name, us]) => ({ name, where: '', us }))),
  };
}

export function renderProfile(title: string, summary: ProfileSummary): string {
  const pct = (share: number): string => `${(share * 100).toFixed(1)}%`;
  const lines = [
    `### ${title}`,
    '',
    `busy ${summary.busyMs.toFixed(0)} ms of ${summary.totalMs.toFixed(0)} ms sampled (idle ${summary.idleMs.toFixed(0)} ms)`,
    '',
    '| self time | share of busy | function | where |',
    '|---:|---:|---|---|',
    ...summary.byFunction.map((f) => `| ${f.ms.toFixed(0)} ms | ${pct(f.share)} | \`${f.name}\` | ${f.where} |`),
    '',
    '| self time | share of busy | component |',
    '|---:|---:|---|',
    ...summary.byComponent.slice(0, 12).map((f) => `| ${f.ms.toFixed(0)} ms | ${pct(f.share)} | ${f.name} |`),
    '',
  ];
  return lines.join('\n');
}
