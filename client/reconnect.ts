/**
 * Reconnect policy: exponential backoff with full jitter, so a fleet of clients
 * cut off together does not come back together. Owns no socket and no timer.
 */
export interface BackoffOptions {
  initialDelayMs: number;
  maxDelayMs: number;
  /** 0 means retry forever. */
  maxAttempts: number;
  random?: () => number;
}

export class Backoff {
  private failures = 0;
  constructor(private readonly options: BackoffOptions) {}

  get attempts(): number {
    return this.failures;
  }

  /** True once maxAttempts consecutive attempts failed. */
  get exhausted(): boolean {
    return this.options.maxAttempts > 0 && this.failures >= this.options.maxAttempts;
  }

  /** Records a failed attempt and returns how long to wait before the next one. */
  nextDelay(): number {
    const ceiling = Math.min(this.options.maxDelayMs, this.options.initialDelayMs * 2 ** this.failures);
    this.failures += 1;
    const random = this.options.random ?? Math.random;
    // The first retry comes quickly (a blip is the common case); later ones spread out.
    return Math.round(ceiling / 2 + (random() * ceiling) / 2);
  }

  /** A session was established: start over. */
  reset(): void {
    this.failures = 0;
  }
}
