import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { ClientStatus } from '../../client/client.js';
import {
  formatRate,
  formatStatusLine,
  LiveStatusLine,
  StatusReporter,
  StatusTracker,
  type StatusSnapshot,
  type StatusSource,
} from '../../client/status-line.js';

const KEY = '3q2-7wEjVQxk0mZ5n3Zr9d2X1a8Jt3b6QpLs0Yc4hUo';

/** A client stand-in whose status the test sets. */
class FakeClient implements StatusSource {
  readonly events = new EventEmitter();
  status: ClientStatus & { bytesIn?: number; bytesOut?: number } = { state: 'connecting', streams: 0 };
  set(status: Partial<ClientStatus & { bytesIn?: number; bytesOut?: number }>, extra: Partial<ClientStatus> = {}): void {
    this.status = { ...this.status, ...status };
    this.events.emit('state', { ...this.status, ...extra });
  }
}

class FakeTerminal {
  readonly writes: string[] = [];
  columns = 100;
  write(text: string): boolean {
    this.writes.push(text);
    return true;
  }
  get screen(): string {
    return this.writes.join('');
  }
}

const base: StatusSnapshot = { time: '2025-01-01T00:00:00.000Z', state: 'connected', server: 'gw.example.com:443', streams: 2 };

describe('formatStatusLine', () => {
  it('shows the server, a short server key, open streams and bytes/s each way when connected', () => {
    assert.equal(
      formatStatusLine({ ...base, serverKey: KEY, rateIn: 1.5 * 1024 * 1024, rateOut: 4096 }, 200),
      '● connected to gw.example.com:443 · server key 3q2-7wEj… · 2 streams · ↓ 1.5 MiB/s ↑ 4.0 KiB/s',
    );
  });

  it('leaves the rates out when the client does not report bytes', () => {
    assert.equal(formatStatusLine({ ...base, streams: 1 }, 200), '● connected to gw.example.com:443 · 1 stream');
  });

  it('counts down to the next attempt and names the last error while reconnecting', () => {
    const line = formatStatusLine({ ...base, state: 'reconnecting', streams: 0, retryInS: 3, lastError: 'connection refused' }, 200);
    assert.equal(line, '○ reconnecting in 3 s — connection refused · 0 streams');
    assert.match(formatStatusLine({ ...base, state: 'reconnecting', retryInS: 0 }, 200), /^○ reconnecting now/);
  });

  it('says connecting before the first session', () => {
    assert.equal(formatStatusLine({ ...base, state: 'connecting' }, 200), '… connecting to gw.example.com:443');
  });

  it('never wraps: cuts to the terminal width minus one, and keeps one line', () => {
    const line = formatStatusLine({ ...base, state: 'reconnecting', lastError: `a long\nerror ${'x'.repeat(200)}` }, 40);
    assert.equal([...line].length, 39);
    assert.ok(line.endsWith('…'));
    assert.doesNotMatch(line, /\n/);
  });
});

describe('formatRate', () => {
  it('uses binary units with one decimal above bytes', () => {
    assert.equal(formatRate(0), '0 B/s');
    assert.equal(formatRate(1023), '1023 B/s');
    assert.equal(formatRate(1024), '1.0 KiB/s');
    assert.equal(formatRate(3.25 * 1024 ** 3), '3.3 GiB/s');
  });
});

describe('StatusTracker', () => {
  it('turns a retry delay into a countdown and forgets it once connected', () => {
    let now = 10_000;
    const client = new FakeClient();
    const tracker = new StatusTracker(client, 'gw:443', () => now);
    client.set({ state: 'reconnecting', lastError: 'refused' }, { retryInMs: 4_200 });
    assert.equal(tracker.snapshot().retryInS, 5);
    now += 2_000;
    assert.equal(tracker.snapshot().retryInS, 3);
    now += 5_000;
    assert.equal(tracker.snapshot().retryInS, 0, 'attempting now');
    client.set({ state: 'connected', serverKey: KEY });
    const snapshot = tracker.snapshot();
    assert.equal(snapshot.retryInS, undefined);
    assert.equal(snapshot.lastError, undefined, 'an old error is not shown while connected');
    assert.equal(snapshot.serverKey, KEY);
  });

  it('computes bytes/s each way from the byte counters the client reports', () => {
    let now = 0;
    const client = new FakeClient();
    const tracker = new StatusTracker(client, 'gw:443', () => now);
    client.set({ state: 'connected', bytesIn: 0, bytesOut: 0 });
    tracker.snapshot();
    now = 1_000;
    client.status = { ...client.status, bytesIn: 2048, bytesOut: 512 };
    const snapshot = tracker.snapshot();
    assert.equal(snapshot.rateIn, 2048);
    assert.equal(snapshot.rateOut, 512);
    assert.equal(snapshot.bytesIn, 2048);
  });
});

describe('LiveStatusLine', () => {
  it('redraws in place, and a log line clears it, prints above it, and draws it again', () => {
    const terminal = new FakeTerminal();
    const line = new LiveStatusLine(terminal);
    line.render('● connected');
    const logs: string[] = [];
    const destination = line.logDestination({ write: (chunk: string) => logs.push(chunk), isTTY: true } as unknown as NodeJS.WritableStream);
    assert.equal(destination.isTTY, true, 'pretty logs keep their colours');
    destination.write('a log line\n');
    assert.deepEqual(logs, ['a log line\n']);
    assert.deepEqual(terminal.writes, ['\r\x1b[2K● connected', '\r\x1b[2K', '\r\x1b[2K● connected']);
    line.finish();
    assert.equal(terminal.writes.at(-1), '\n');
  });
});

describe('StatusReporter', () => {
  it('writes one JSON line per state change, and on ticks only when something changed', async () => {
    const terminal = new FakeTerminal();
    const client = new FakeClient();
    const reporter = new StatusReporter(new StatusTracker(client, 'gw:443'), { mode: 'json', out: terminal, intervalMs: 5 });
    client.set({ state: 'connected', serverKey: KEY });
    await new Promise((resolve) => setTimeout(resolve, 40)); // several ticks with nothing new
    client.set({ streams: 1 });
    reporter.stop();
    const lines = terminal.screen.trimEnd().split('\n').map((l) => JSON.parse(l) as StatusSnapshot);
    assert.deepEqual(
      lines.map((l) => [l.state, l.streams]),
      [
        ['connecting', 0],
        ['connected', 0],
        ['connected', 1],
      ],
      'initial, connected, and the final line on stop (which has the stream)',
    );
    assert.equal(lines[1]!.server, 'gw:443');
    assert.equal(lines[1]!.serverKey, KEY);
    assert.ok(!Number.isNaN(Date.parse(lines[1]!.time)));
  });

  it('draws the live line on a terminal and leaves it on screen when stopped', () => {
    const terminal = new FakeTerminal();
    const client = new FakeClient();
    client.status = { state: 'connected', streams: 0, serverKey: KEY };
    const reporter = new StatusReporter(new StatusTracker(client, 'gw:443'), { mode: 'line', out: terminal, intervalMs: 60_000 });
    reporter.stop();
    assert.match(terminal.screen, /^\r\x1b\[2K● connected to gw:443 · server key 3q2-7wEj… · 0 streams/);
    assert.ok(terminal.screen.endsWith('\n'));
  });
});
