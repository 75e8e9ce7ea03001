import assert from 'node:assert/strict';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { GC_PACING_BYTES, gcPacingEnabled, recordBytesPassed } from '../../shared/gc-pacer.js';

/** Counts young collections (scavenges) while `work` runs. */
async function countMinorGcs(work: () => void): Promise<number> {
  let minor = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if ((entry as unknown as { detail: { kind: number } }).detail.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor += 1;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  work();
  // GC entries are delivered asynchronously.
  await new Promise((resolve) => setTimeout(resolve, 50));
  observer.disconnect();
  return minor;
}

describe('gc pacing', () => {
  it('is on by default and leaves the global scope without gc()', () => {
    assert.equal(gcPacingEnabled, true);
    assert.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined');
  });

  it('runs one young collection per GC_PACING_BYTES of records, and none below it', async () => {
    // Start from a known position: pass whatever is left of the current interval.
    recordBytesPassed(GC_PACING_BYTES);
    const below = await countMinorGcs(() => {
      for (let i = 0; i < 10; i++) recordBytesPassed(GC_PACING_BYTES / 20);
    });
    const over = await countMinorGcs(() => {
      for (let i = 0; i < 100; i++) recordBytesPassed(GC_PACING_BYTES / 20);
    });
    assert.ok(over >= 5, `expected at least 5 young collections for 5 intervals, saw ${over}`);
    // Below one interval our pacing asks for none (V8 may still run one of its own).
    assert.ok(below <= 1, `expected no paced collection below one interval, saw ${below}`);
  });
});
