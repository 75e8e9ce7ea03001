import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { plaintextScratch, RecordBufferPool } from '../../shared/record-buffers.js';

describe('RecordBufferPool', () => {
  it('hands out buffers of the requested length and reuses a released one', () => {
    const pool = new RecordBufferPool(1024, 4);
    const first = pool.acquire(100);
    assert.equal(first.length, 100);
    assert.equal(pool.lentCount, 1);
    first.fill(1);
    pool.release(first);
    assert.equal(pool.freeCount, 1);
    const second = pool.acquire(1024);
    assert.equal(second.length, 1024);
    assert.equal(second.buffer, first.buffer, 'the released memory is reused');
    assert.equal(pool.freeCount, 0);
  });

  it('never lends one buffer twice at the same time', () => {
    const pool = new RecordBufferPool(64, 8);
    const lent = Array.from({ length: 5 }, () => pool.acquire(64));
    assert.equal(new Set(lent.map((b) => b.buffer)).size, 5);
  });

  it('ignores a second release, so a buffer is never pooled twice', () => {
    const pool = new RecordBufferPool(64, 8);
    const buffer = pool.acquire(10);
    pool.release(buffer);
    pool.release(buffer);
    assert.equal(pool.freeCount, 1);
    const a = pool.acquire(10);
    const b = pool.acquire(10);
    assert.notEqual(a.buffer, b.buffer);
  });

  it('gives a larger request a buffer of its own and does not pool it', () => {
    const pool = new RecordBufferPool(64, 8);
    const big = pool.acquire(65);
    assert.equal(big.length, 65);
    assert.equal(pool.lentCount, 0);
    pool.release(big);
    assert.equal(pool.freeCount, 0);
  });

  it('keeps at most maxFree buffers for reuse', () => {
    const pool = new RecordBufferPool(64, 2);
    const lent = Array.from({ length: 5 }, () => pool.acquire(64));
    for (const buffer of lent) pool.release(buffer);
    assert.equal(pool.freeCount, 2);
    assert.equal(pool.lentCount, 0);
  });

  it('ignores buffers it did not lend', () => {
    const pool = new RecordBufferPool(64, 8);
    pool.release(Buffer.alloc(64));
    assert.equal(pool.freeCount, 0);
  });

  it('shares one pool per capacity across callers', () => {
    assert.equal(RecordBufferPool.forCapacity(4096 + 16), RecordBufferPool.forCapacity(4096 + 16));
    assert.notEqual(RecordBufferPool.forCapacity(4096 + 16), RecordBufferPool.forCapacity(8192 + 16));
  });
});

describe('plaintextScratch', () => {
  it('returns the requested length and reuses its memory while it is big enough', () => {
    const a = plaintextScratch(1000);
    assert.equal(a.length, 1000);
    const b = plaintextScratch(10);
    assert.equal(b.length, 10);
    assert.equal(b.buffer, a.buffer);
    const c = plaintextScratch(1_000_000);
    assert.equal(c.length, 1_000_000);
  });
});
