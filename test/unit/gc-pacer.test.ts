import assert from 'node:assert/strict';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import vm from 'node:vm';
import { describe, it } from 'node:test';
import { GC_PACING_MAX_BYTES, GC_PACING_MIN_BYTES, gcPacingEnabled, gcPacingInterval, recordBytesPassed } from '../../shared/gc-pacer.js';

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

  it('runs one young collection per interval of records, and none below it', async () => {
    const interval = gcPacingInterval();
    assert.ok(interval >= GC_PACING_MIN_BYTES && interval <= GC_PACING_MAX_BYTES);
    // Start from a known position: pass whatever is left of the current interval.
    recordBytesPassed(interval);
    const below = await countMinorGcs(() => {
      for (let i = 0; i < 10; i++) recordBytesPassed(interval / 20);
    });
    const over = await countMinorGcs(() => {
      for (let i = 0; i < 100; i++) recordBytesPassed(interval / 20);
    });
    assert.ok(over >= 5, `expected at least 5 young collections for 5 intervals, saw ${over}`);
    // Below one interval our pacing asks for none (V8 may still run one of its own).
    assert.ok(below <= 1, `expected no paced collection below one interval, saw ${below}`);
  });

  it('halves the interval when a full collection happens while records flow, never below the minimum', async () => {
    // The pacer exposed gc in fresh contexts; a full collection here stands for V8's own.
    const fullGc = vm.runInNewContext('gc') as () => void;
    const before = gcPacingInterval();
    recordBytesPassed(1);
    fullGc();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(gcPacingInterval(), Math.max(GC_PACING_MIN_BYTES, before / 2));
    for (let i = 0; i < 20; i++) {
      recordBytesPassed(1);
      fullGc();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(gcPacingInterval(), GC_PACING_MIN_BYTES);
  });

  it('ignores full collections while no records flow (idle-time GC says nothing about the hot path)', async () => {
    const fullGc = vm.runInNewContext('gc') as () => void;
    // Let the observer see any traffic from the test above first.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const before = gcPacingInterval();
    fullGc();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(gcPacingInterval(), before);
  });
});
