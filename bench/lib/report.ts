/** bench/results/<date>.json (everything) and <date>.md (the tables a reader wants). */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Machine } from './machine.js';
import type { FigureRecord, Results } from './results.js';

export interface RunInfo {
  startedAt: Date;
  finishedAt: Date;
  command: string;
  mode: 'full' | 'smoke';
  machine: Machine;
  versions: Record<string, string>;
  settings: Record<string, unknown>;
  notes: string[];
}

export function resultStem(date: Date, mode: 'full' | 'smoke'): string {
  const stamp = date.toISOString().replace(/:\d\d\.\d+Z$/, 'Z').replace(':', '');
  return mode === 'smoke' ? `${stamp}-smoke` : stamp;
}

export async function writeResults(dir: string, info: RunInfo, results: Results): Promise<{ json: string; md: string }> {
  await mkdir(dir, { recursive: true });
  const stem = resultStem(info.startedAt, info.mode);
  const json = path.join(dir, `${stem}.json`);
  const md = path.join(dir, `${stem}.md`);
  const document = {
    schema: 1,
    startedAt: info.startedAt.toISOString(),
    durationSeconds: Math.round((info.finishedAt.getTime() - info.startedAt.getTime()) / 1000),
    command: info.command,
    mode: info.mode,
    machine: info.machine,
    versions: info.versions,
    settings: info.settings,
    paths: [...results.paths.values()],
    figures: Object.fromEntries([...results.figures].map(([id, figure]) => [id, figure])),
    targets: results.targets,
    failures: results.failures,
    noise: results.noise,
    notes: info.notes,
  };
  await writeFile(json, `${JSON.stringify(document, null, 2)}\n`);
  await writeFile(md, renderMarkdown(info, results));
  return { json, md };
}

export function formatNumber(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function cell(figure: FigureRecord, row: string): string {
  const entry = figure.rows[row];
  if (entry === undefined) return '–';
  if (entry.runs.length === 0) return entry.errors.length > 0 ? 'failed' : '–';
  const d = figure.digits ?? 0;
  const range = entry.runs.length > 1 ? ` [${formatNumber(entry.min, d)}–${formatNumber(entry.max, d)}]` : '';
  const failed = entry.errors.length > 0 ? ` (${entry.errors.length} failed)` : '';
  return `**${formatNumber(entry.median, d)}**${range}${failed}`;
}

/** Figures as rows, one column per path or role. */
export function figureTable(figures: FigureRecord[], columns: Array<{ id: string; label: string }>): string {
  const head = `| figure | unit | ${columns.map((c) => c.label).join(' | ')} |`;
  const rule = `|---|---|${columns.map(() => '---:').join('|')}|`;
  const rows = figures.map((f) => `| ${f.title} | ${f.unit} | ${columns.map((c) => cell(f, c.id)).join(' | ')} |`);
  return [head, rule, ...rows].join('\n');
}

function renderMarkdown(info: RunInfo, results: Results): string {
  const minutes = (info.finishedAt.getTime() - info.startedAt.getTime()) / 60_000;
  const m = info.machine;
  const out: string[] = [];
  out.push(`# Reflector benchmark, ${info.startedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC${info.mode === 'smoke' ? ' (smoke: tiny sizes, not for comparison)' : ''}`);
  out.push('');
  out.push(`Command: \`${info.command}\` (${minutes.toFixed(1)} min). Every figure: **median** [min–max] over the repetitions; paths interleaved in rotating order.`);
  out.push('');
  out.push('## Machine and versions');
  out.push('');
  out.push(`- ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB RAM; ${m.os}, kernel ${m.kernel}; load average at start ${m.loadAverageAtStart.join(' / ')}`);
  out.push(`- ${Object.entries(info.versions).map(([k, v]) => `${k} ${v}`).join('; ')}`);
  if (results.noise.length > 0) {
    const background = results.noise.map((n) => n.backgroundCores).sort((a, b) => a - b);
    const mid = background[Math.floor(background.length / 2)]!;
    const noisy = results.noise.filter((n) => !n.quietBefore).length;
    const waited = results.noise.reduce((sum, n) => sum + n.waitedMs, 0) / 1000;
    out.push(
      `- Noise: other processes on the machine used a median of ${formatNumber(mid, 2)} cores (max ${formatNumber(background[background.length - 1]!, 2)}) while the ${results.noise.length} measurements ran; ` +
        `${noisy} of them started without a quiet machine (the harness waited ${formatNumber(waited)} s in all; per-measurement figures in the JSON, \`noise\`).`,
    );
  }
  out.push(`- Settings: ${Object.entries(info.settings).map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join('; ')}`);
  out.push('');
  out.push('## Paths');
  out.push('');
  out.push('| path | what | details | status |');
  out.push('|---|---|---|---|');
  for (const p of results.paths.values()) {
    out.push(`| ${p.id} | ${p.label} | ${p.details ?? ''} | ${p.status}${p.reason ? `: ${p.reason.replace(/\n/g, ' ')}` : ''} |`);
  }
  out.push('');

  const pathColumns = [...results.paths.values()].filter((p) => p.status !== 'skipped').map((p) => ({ id: p.id, label: p.id }));
  const group = (ids: string[]): FigureRecord[] => ids.map((id) => results.figures.get(id)).filter((f): f is FigureRecord => f !== undefined);
  const perPath = group([...results.figures.keys()].filter((id) => /^(throughput|cpu-per|rtt|ttfb|stall)/.test(id)));
  if (perPath.length > 0) {
    out.push('## Through each path');
    out.push('');
    out.push(figureTable(perPath, pathColumns));
    out.push('');
  }
  const handshake = group(['handshakes-per-s', 'handshake-server-cpu', 'handshake-capacity', 'handshake-latency']);
  if (handshake.length > 0) {
    out.push('## Handshakes');
    out.push('');
    out.push(figureTable(handshake, [{ id: 'reflector server', label: 'reflector server' }]));
    out.push('');
  }
  const memory = group(['session-rss', 'session-heap', 'streams-open', 'stream-rss', 'stream-heap']);
  if (memory.length > 0) {
    out.push('## Memory');
    out.push('');
    out.push(
      figureTable(memory, [
        { id: 'reflector client', label: 'reflector client' },
        { id: 'reflector server', label: 'reflector server' },
      ]),
    );
    out.push('');
  }
  if (results.targets.length > 0) {
    out.push('## Targets (ratios of medians from this run)');
    out.push('');
    out.push('| target | value | goal | met |');
    out.push('|---|---|---|---|');
    for (const t of results.targets) {
      out.push(`| ${t.name} | ${t.detail} | ${t.target} | ${t.met === null ? 'n/a' : t.met ? 'yes' : '**no**'} |`);
    }
    out.push('');
  }
  if (results.failures.length > 0) {
    out.push('## Failures');
    out.push('');
    for (const failure of results.failures) out.push(`- ${failure.replace(/\n/g, ' ')}`);
    out.push('');
  }
  if (info.notes.length > 0) {
    out.push('## How it was measured');
    out.push('');
    for (const note of info.notes) out.push(`- ${note}`);
    out.push('');
  }
  return `${out.join('\n')}\n`;
}
