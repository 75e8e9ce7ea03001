/**
 * What one bench run found: each path's status, each figure's value per
 * row (a path, or a process role) for every repetition, and the targets.
 */
import { spread, type Spread } from './stats.js';

export type PathStatus = 'ok' | 'skipped' | 'failed';

export interface PathRecord {
  id: string;
  label: string;
  status: PathStatus;
  reason?: string;
  details?: string;
}

export interface FigureDef {
  id: string;
  title: string;
  unit: string;
  better: 'higher' | 'lower';
  /** How many digits after the point the tables show. */
  digits?: number;
  note?: string;
}

export interface FigureRow extends Spread {
  errors: string[];
  /** Per-repetition details that do not fit one number (role breakdowns, sample counts). */
  details: unknown[];
}

export interface FigureRecord extends FigureDef {
  rows: Record<string, FigureRow>;
}

export interface TargetRecord {
  name: string;
  /** How the value was computed, in words and numbers. */
  detail: string;
  value: number | null;
  target: string;
  met: boolean | null;
}

/** How noisy the machine was while one measurement ran. */
export interface NoiseRecord {
  figure: string;
  row: string;
  rep: number;
  /** False when other processes were still busy after the quiet wait ran out. */
  quietBefore: boolean;
  waitedMs: number;
  wallSeconds: number;
  benchCores: number;
  backgroundCores: number;
}

export class Results {
  readonly noise: NoiseRecord[] = [];
  readonly paths = new Map<string, PathRecord>();
  readonly figures = new Map<string, FigureRecord>();
  readonly targets: TargetRecord[] = [];
  readonly failures: string[] = [];

  setPath(record: PathRecord): void {
    this.paths.set(record.id, record);
  }

  pathFailed(id: string, reason: string): void {
    const record = this.paths.get(id);
    if (record && record.status === 'ok') {
      record.status = 'failed';
      record.reason = reason;
    }
    this.failures.push(`${id}: ${reason}`);
  }

  define(def: FigureDef): void {
    if (!this.figures.has(def.id)) this.figures.set(def.id, { ...def, rows: {} });
  }

  private row(figure: string, row: string): FigureRow {
    const record = this.figures.get(figure);
    if (!record) throw new Error(`figure ${figure} was not defined`);
    record.rows[row] ??= { ...spread([]), errors: [], details: [] };
    return record.rows[row];
  }

  add(figure: string, row: string, value: number, detail?: unknown): void {
    const entry = this.row(figure, row);
    const next = spread([...entry.runs, value]);
    Object.assign(entry, next);
    if (detail !== undefined) entry.details.push(detail);
  }

  fail(figure: string, row: string, message: string): void {
    this.row(figure, row).errors.push(message);
    this.failures.push(`${figure} / ${row}: ${message}`);
  }

  /** The median of a figure's row, or undefined when it has no value. */
  median(figure: string, row: string): number | undefined {
    const entry = this.figures.get(figure)?.rows[row];
    return entry && entry.runs.length > 0 ? entry.median : undefined;
  }

  noted(record: NoiseRecord): void {
    this.noise.push(record);
  }

  addTarget(target: TargetRecord): void {
    this.targets.push(target);
  }
}
