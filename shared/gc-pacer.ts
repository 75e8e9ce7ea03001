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
 * same buffers in a fraction of a millisecond, so after every few MiB of
 * records we ask for one.
 *
 * `gc` is exposed only inside a throwaway vm context (the global scope is left
 * alone). REFLECTOR_GC_PACING=off turns pacing off, for comparison.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

/** Record bytes (sealed plus opened, process-wide) between two young collections. */
export const GC_PACING_BYTES = 4 * 1024 * 1024;

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
let sinceLastCollection = 0;

/** Whether pacing is active in this process. */
export const gcPacingEnabled = minorGc !== undefined;

/** Counts bytes of records that just went through the record layer. */
export function recordBytesPassed(bytes: number): void {
  if (minorGc === undefined) return;
  sinceLastCollection += bytes;
  if (sinceLastCollection < GC_PACING_BYTES) return;
  sinceLastCollection = 0;
  minorGc();
}
