/** The performance issue's targets, computed from medians of this run only. */
import { formatNumber } from './report.js';
import type { Results } from './results.js';

const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
  a === undefined || b === undefined || b === 0 ? undefined : a / b;

export function evaluateTargets(results: Results, expected: { streams: number }): void {
  const tput = (row: string): number | undefined => results.median('throughput-1', row);
  const rtt = (row: string): number | undefined => results.median('rtt-median', row);

  const vsSsh = ratio(tput('reflector'), tput('ssh-aes128-gcm'));
  results.addTarget({
    name: 'single-stream throughput vs ssh -L aes128-gcm',
    detail: vsSsh === undefined ? 'not measured' : `${formatNumber(vsSsh, 2)}× (${formatNumber(tput('reflector')!)} / ${formatNumber(tput('ssh-aes128-gcm')!)} MB/s)`,
    value: vsSsh ?? null,
    target: '≥ 1.0×',
    met: vsSsh === undefined ? null : vsSsh >= 1.0,
  });

  const vsDirect = ratio(tput('reflector'), tput('direct'));
  results.addTarget({
    name: 'single-stream throughput vs direct TCP',
    detail: vsDirect === undefined ? 'not measured' : `${formatNumber(vsDirect, 2)}× (${formatNumber(tput('reflector')!)} / ${formatNumber(tput('direct')!)} MB/s)`,
    value: vsDirect ?? null,
    target: '≥ 0.3×',
    met: vsDirect === undefined ? null : vsDirect >= 0.3,
  });

  const direct = rtt('direct');
  const added = (row: string): number | undefined => (rtt(row) === undefined || direct === undefined ? undefined : rtt(row)! - direct);
  const reflectorAdded = added('reflector');
  const sshAdded = added('ssh-aes128-gcm');
  const chachaAdded = added('ssh-chacha20');
  results.addTarget({
    name: 'added round-trip latency (path − direct), median',
    detail:
      reflectorAdded === undefined || sshAdded === undefined
        ? 'not measured'
        : `Reflector +${formatNumber(reflectorAdded)} µs; ssh -L aes128-gcm +${formatNumber(sshAdded)} µs` +
          (chachaAdded === undefined ? '' : `, chacha20 +${formatNumber(chachaAdded)} µs`),
    value: reflectorAdded ?? null,
    target: '≤ ssh -L aes128-gcm',
    met: reflectorAdded === undefined || sshAdded === undefined ? null : reflectorAdded <= sshAdded,
  });

  const rate = results.median('handshakes-per-s', 'reflector server');
  const capacity = results.median('handshake-capacity', 'reflector server');
  results.addTarget({
    name: 'full handshakes per second on this machine',
    detail:
      rate === undefined
        ? 'not measured'
        : `${formatNumber(rate)}/s measured (load generator on the same 2 cores); ${formatNumber(capacity ?? NaN)}/s per server core from its CPU time`,
    value: rate ?? null,
    target: '≥ 1,000/s',
    met: rate === undefined ? null : rate >= 1000,
  });

  const open = Math.min(results.median('streams-open', 'reflector client') ?? 0, results.median('streams-open', 'reflector server') ?? 0);
  const perStream = ['reflector client', 'reflector server'].map((row) => results.median('stream-rss', row));
  const worst = perStream.every((v) => v !== undefined) ? Math.max(...(perStream as number[])) : undefined;
  results.addTarget({
    name: `${expected.streams.toLocaleString('en-US')} concurrent streams in one process, memory per idle stream`,
    detail:
      worst === undefined
        ? `${open} streams open; memory not measured`
        : `${open.toLocaleString('en-US')} open; RSS per stream client ${formatNumber(perStream[0]!, 1)} KiB, server ${formatNumber(perStream[1]!, 1)} KiB`,
    value: worst ?? null,
    target: `${expected.streams.toLocaleString('en-US')} streams, ≤ 16 KiB each`,
    met: worst === undefined ? null : open >= expected.streams && worst <= 16,
  });
}
