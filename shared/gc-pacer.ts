/**
 * Keeps bulk transfer out of back-to-back full garbage collections.
 *
 * Node hands every socket read (and node:crypto every cipher output) to
 * JavaScript as a new ArrayBuffer outside the V8 heap. V8 counts that external
 * memory, allocated since the last full collection, against the old
 * generation's limit; the buffers die young, but only a collection notices.
 * Our hot path allocates so little on the V8 heap itself that young
 * collections (scavenges) become rare, so at a few hundred MB/s the external
 * count reaches the limit first and V8 runs a full mark-compact every 20-60 ms
 * (`node --trace-gc`: "Mark-Compact … GC in old space requested"). Measured in
 * a long-running client and server: 4.8 and 6.7-8.5 CPU-s per GiB instead of
 * 2.0 and 1.9, throughput down from ~340 to ~140 MB/s. A scavenge frees the
 * same buffers for a fraction of a millisecond, so every so many bytes of
 * records we ask for one.
 *
 * How many bytes: a scavenge costs ~0.3 ms, so asking too often costs CPU
 * too (every 1 MiB: +0.6 CPU-s/GiB per process). How much external memory V8
 * tolerates depends on its heap state: after an idle spell its limits are
 * tight and 4 MiB is too far apart. So the interval adapts: a full collection
 * while records flow halves it (down to MIN), and a long calm run of paced
 * intervals doubles it again (up to MAX).
 *
 * `gc` is exposed only inside a throwaway vm context (the global scope is left
 * alone). REFLECTOR_GC_PACING=off turns pacing off, for comparison.
 */
import { constants, PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';

const KiB = 1024;
/**
 * Not lower: with 16 streams on a congested session, reads wait in the streams'
 * queues, and scavenges every 512 KiB promoted them (a full run: 16 streams at
 * 7.4 CPU-s/GiB with a 512 KiB floor, 4.6 with this one).
 */
export const GC_PACING_MIN_BYTES = 2 * 1024 * KiB;
export const GC_PACING_MAX_BYTES = 8 * 1024 * KiB;
const INITIAL_BYTES = 4 * 1024 * KiB;
/** Paced intervals without a full collection before the interval doubles. */
const CALM_INTERVALS_TO_GROW = 256;

type MinorGc = () => void;

function loadMinorGc(): MinorGc | undefined {
  if (process.env.REFLECTOR_GC_PACING === 'off') return undefined;
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as ((options: { type: 'minor' }) => void) | undefined;
    if (typeof gc !== 'function') return undefined;
    return () => gc({ type: 'minor' });
  } catch {
    // A runtime without V8 flags or the gc extension: run without pacing.
    return undefined;
  }
}

const minorGc = loadMinorGc();
let intervalBytes = INITIAL_BYTES;
let sinceLastCollection = 0;
let calmIntervals = 0;
/** Set by traffic, cleared when the observer runs: a full collection counts only while records flow. */
let trafficSinceLastLook = false;

function onFullCollection(): void {
  intervalBytes = Math.max(GC_PACING_MIN_BYTES, intervalBytes / 2);
  calmIntervals = 0;
}

if (minorGc !== undefined) {
  const observer = new PerformanceObserver((list) => {
    const busy = trafficSinceLastLook;
    trafficSinceLastLook = false;
    if (!busy) return;
    for (const entry of list.getEntries()) {
      if ((entry as unknown as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
        onFullCollection();
        return;
      }
    }
  });
  // An observer holds no handle: it never keeps a process alive.
  observer.observe({ entryTypes: ['gc'] });
}

/** Whether pacing is active in this process. */
export const gcPacingEnabled = minorGc !== undefined;

/** The current interval, in record bytes between two young collections. */
export function gcPacingInterval(): number {
  return intervalBytes;
}

/** Counts bytes of records that just went through the record layer. */
export function recordBytesPassed(bytes: number): void {
  if (minorGc === undefined) return;
  trafficSinceLastLook = true;
  sinceLastCollection += bytes;
  if (sinceLastCollection < intervalBytes) return;
  sinceLastCollection = 0;
  minorGc();
  calmIntervals += 1;
  if (calmIntervals >= CALM_INTERVALS_TO_GROW && intervalBytes < GC_PACING_MAX_BYTES) {
    intervalBytes *= 2;
    calmIntervals = 0;
  }
}
