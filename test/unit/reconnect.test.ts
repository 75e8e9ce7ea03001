import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from '../../client/reconnect.js';

describe('Backoff', () => {
  it('makes the first retry within the initial delay', () => {
    const backoff = new Backoff({ initialDelayMs: 200, maxDelayMs: 30_000, maxAttempts: 0, random: () => 1 });
    assert.equal(backoff.nextDelay(), 200);
  });

  it('doubles the ceiling per failure up to the maximum', () => {
    const backoff = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, maxAttempts: 0, random: () => 1 });
    const delays = Array.from({ length: 6 }, () => backoff.nextDelay());
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
  });

  it('spreads delays between half the ceiling and the ceiling (jitter)', () => {
    const low = new Backoff({ initialDelayMs: 1000, maxDelayMs: 1000, maxAttempts: 0, random: () => 0 });
    assert.equal(low.nextDelay(), 500);
  });

  it('is exhausted after maxAttempts failures and never when maxAttempts is 0', () => {
    const limited = new Backoff({ initialDelayMs: 1, maxDelayMs: 1, maxAttempts: 2 });
    limited.nextDelay();
    assert.equal(limited.exhausted, false);
    limited.nextDelay();
    assert.equal(limited.exhausted, true);
    const forever = new Backoff({ initialDelayMs: 1, maxDelayMs: 1, maxAttempts: 0 });
    for (let i = 0; i < 100; i++) forever.nextDelay();
    assert.equal(forever.exhausted, false);
  });

  it('starts over after reset()', () => {
    const backoff = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, maxAttempts: 3, random: () => 1 });
    backoff.nextDelay();
    backoff.nextDelay();
    backoff.reset();
    assert.equal(backoff.attempts, 0);
    assert.equal(backoff.nextDelay(), 100);
  });
});
