/**
 * How `reflector connect` shows what it is doing:
 *
 *  - on a terminal, one live line, redrawn in place every second:
 *      ● connected to gw.example.com:443 · server key 3q2-7wEj… · 2 streams · ↓ 1.2 MiB/s ↑ 4.0 KiB/s
 *      ○ reconnecting in 3 s — connect ECONNREFUSED 127.0.0.1:8080 · 0 streams
 *    Log lines still appear: each one clears the live line, prints, and redraws it.
 *  - with --status-json, one JSON object per line on stdout, on every state
 *    change and once a second while something changes (for scripts);
 *  - otherwise (--quiet, not a terminal, --stdio) nothing here: log lines only.
 *
 * StatusTracker turns the client's 'state' events and `status` into snapshots
 * (with byte rates); the renderers only format and write them.
 */
import type { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import type { ClientState, ClientStatus } from './client.js';

/** What the tracker reads from a client. Byte counters are shown when the client reports them. */
export interface StatusSource {
  readonly events: EventEmitter;
  readonly status: ClientStatus & { bytesIn?: number; bytesOut?: number };
}

export interface StatusSnapshot {
  time: string;
  state: ClientState;
  /** host:port of the gateway. */
  server: string;
  serverKey?: string;
  streams: number;
  lastError?: string;
  /** Seconds until the next attempt while reconnecting (0: attempting now). */
  retryInS?: number;
  /** Bytes from the gateway to local sockets / from local sockets to the gateway, since start. */
  bytesIn?: number;
  bytesOut?: number;
  /** Bytes per second over the last few seconds, each way. */
  rateIn?: number;
  rateOut?: number;
}

const RATE_WINDOW_MS = 3_000;

export class StatusTracker {
  private retryAt: number | undefined;
  private readonly samples: Array<{ at: number; bytesIn: number; bytesOut: number }> = [];
  private readonly onState = (status: ClientStatus): void => {
    if (status.retryInMs !== undefined) this.retryAt = this.now() + status.retryInMs;
    else if (status.state !== 'reconnecting') this.retryAt = undefined;
    this.listener?.();
  };
  private listener: (() => void) | undefined;

  constructor(
    private readonly source: StatusSource,
    private readonly server: string,
    private readonly now: () => number = Date.now,
  ) {
    source.events.on('state', this.onState);
  }

  /** Called on every state change of the client. */
  onChange(listener: () => void): void {
    this.listener = listener;
  }

  snapshot(): StatusSnapshot {
    const now = this.now();
    const status = this.source.status;
    const snapshot: StatusSnapshot = {
      time: new Date(now).toISOString(),
      state: status.state,
      server: this.server,
      streams: status.streams,
    };
    if (status.serverKey !== undefined) snapshot.serverKey = status.serverKey;
    if (status.lastError !== undefined && status.state !== 'connected') snapshot.lastError = status.lastError;
    if (status.state === 'reconnecting' && this.retryAt !== undefined) {
      snapshot.retryInS = Math.max(0, Math.ceil((this.retryAt - now) / 1000));
    }
    if (status.bytesIn !== undefined && status.bytesOut !== undefined) {
      snapshot.bytesIn = status.bytesIn;
      snapshot.bytesOut = status.bytesOut;
      this.samples.push({ at: now, bytesIn: status.bytesIn, bytesOut: status.bytesOut });
      while (this.samples.length > 2 && now - this.samples[0]!.at > RATE_WINDOW_MS) this.samples.shift();
      const first = this.samples[0]!;
      const seconds = (now - first.at) / 1000;
      snapshot.rateIn = seconds > 0 ? Math.max(0, (status.bytesIn - first.bytesIn) / seconds) : 0;
      snapshot.rateOut = seconds > 0 ? Math.max(0, (status.bytesOut - first.bytesOut) / seconds) : 0;
    }
    return snapshot;
  }

  close(): void {
    this.source.events.off('state', this.onState);
    this.listener = undefined;
  }
}

/** `1.2 MiB/s`, `512 B/s`. */
export function formatRate(bytesPerSecond: number): string {
  const units = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s'];
  let value = bytesPerSecond;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(value)} ${units[0]}` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The live line's text, cut to `columns - 1` characters so it never wraps. */
export function formatStatusLine(snapshot: StatusSnapshot, columns = 80): string {
  const streams = `${snapshot.streams} stream${snapshot.streams === 1 ? '' : 's'}`;
  const rates =
    snapshot.rateIn !== undefined && snapshot.rateOut !== undefined
      ? ` · ↓ ${formatRate(snapshot.rateIn)} ↑ ${formatRate(snapshot.rateOut)}`
      : '';
  let text: string;
  switch (snapshot.state) {
    case 'connecting':
      text = `… connecting to ${snapshot.server}`;
      break;
    case 'connected':
      text = `● connected to ${snapshot.server}${snapshot.serverKey ? ` · server key ${snapshot.serverKey.slice(0, 8)}…` : ''} · ${streams}${rates}`;
      break;
    case 'reconnecting': {
      const when = snapshot.retryInS === undefined || snapshot.retryInS === 0 ? 'reconnecting now' : `reconnecting in ${snapshot.retryInS} s`;
      text = `○ ${when}${snapshot.lastError ? ` — ${snapshot.lastError}` : ''} · ${streams}`;
      break;
    }
    case 'closed':
      text = `✕ closed${snapshot.lastError ? ` — ${snapshot.lastError}` : ''}`;
      break;
  }
  const max = Math.max(10, columns - 1);
  const chars = [...text.replace(/[\r\n\t]+/g, ' ')];
  return chars.length <= max ? chars.join('') : `${chars.slice(0, max - 1).join('')}…`;
}

/** A terminal (or anything that looks like one): where the live line is drawn. */
export interface TerminalLike {
  write(text: string): unknown;
  readonly columns?: number;
}

const CLEAR_LINE = '\r\x1b[2K';

/** One line at the bottom of a terminal, redrawn in place; log lines pass above it. */
export class LiveStatusLine {
  private text = '';
  private shown = false;

  constructor(private readonly out: TerminalLike) {}

  /** Replaces the line's text and draws it. */
  render(text: string): void {
    this.text = text;
    this.out.write(`${CLEAR_LINE}${text}`);
    this.shown = true;
  }

  /** Erases the line (before something else prints). */
  clear(): void {
    if (!this.shown) return;
    this.out.write(CLEAR_LINE);
    this.shown = false;
  }

  /** Draws the last text again (after something else printed). */
  redraw(): void {
    if (this.text !== '') this.render(this.text);
  }

  /** Leaves the last text on screen and moves to a new line (on exit). */
  finish(): void {
    if (this.shown) this.out.write('\n');
    this.shown = false;
    this.text = '';
  }

  /**
   * A stream for the logger: every log line first clears the live line, goes
   * to `target` (stderr), then the live line is drawn again below it.
   */
  logDestination(target: NodeJS.WritableStream & { isTTY?: boolean }): Writable & { isTTY?: boolean } {
    const destination: Writable & { isTTY?: boolean } = new Writable({
      decodeStrings: false,
      write: (chunk: string | Buffer, _encoding, callback) => {
        this.clear();
        target.write(chunk);
        this.redraw();
        callback();
      },
    });
    destination.isTTY = target.isTTY === true;
    return destination;
  }
}

export interface StatusReporterOptions {
  mode: 'line' | 'json';
  out: TerminalLike;
  /** The live line, when mode is 'line' (it may exist before the client, to wrap the logger). */
  line?: LiveStatusLine;
  intervalMs?: number;
}

/** Writes the client's status in `mode` until stop(). */
export class StatusReporter {
  private readonly timer: NodeJS.Timeout;
  private readonly line: LiveStatusLine | undefined;
  private lastJson = '';
  private pending: NodeJS.Immediate | undefined;

  constructor(
    private readonly tracker: StatusTracker,
    private readonly options: StatusReporterOptions,
  ) {
    this.line = options.mode === 'line' ? (options.line ?? new LiveStatusLine(options.out)) : undefined;
    // A change often comes as two events in one turn (state, then its retry delay): report once, after both.
    tracker.onChange(() => {
      if (this.pending) return;
      this.pending = setImmediate(() => {
        this.pending = undefined;
        this.report(true);
      });
    });
    this.timer = setInterval(() => this.report(false), options.intervalMs ?? 1000);
    this.timer.unref();
    this.report(true);
  }

  /** Writes the final state (a JSON line, or the live line left on screen) and stops. */
  stop(): void {
    clearInterval(this.timer);
    if (this.pending) clearImmediate(this.pending);
    this.report(true);
    this.tracker.close();
    this.line?.finish();
  }

  private report(changed: boolean): void {
    const snapshot = this.tracker.snapshot();
    if (this.line) {
      this.line.render(formatStatusLine(snapshot, this.options.out.columns || 80)); // a pty without a size reports 0
      return;
    }
    // JSON: a line on every state change, and on ticks only when something besides the clock moved.
    const { time: _time, ...comparable } = snapshot;
    const key = JSON.stringify(comparable);
    if (!changed && key === this.lastJson) return;
    this.lastJson = key;
    this.options.out.write(`${JSON.stringify(snapshot)}\n`);
  }
}
