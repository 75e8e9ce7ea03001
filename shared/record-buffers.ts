/**
 * Reused buffers for the record hot path. A fresh 64-128 KiB buffer per record
 * is an ArrayBuffer outside the V8 heap; at a few hundred MB/s those
 * allocations make V8 run a full mark-compact every 50-80 ms (measured with
 * --trace-gc in a long bulk transfer), which cost more CPU than the cipher.
 * So the bytes of each record are written twice into the same few buffers:
 *
 *  - plaintextScratch(): where the mux assembles a record's frames. The sealer
 *    consumes it synchronously, so one buffer serves every session.
 *  - RecordBufferPool: sealed records handed to the WebSocket. Each is held
 *    until ws reports the write done, then comes back to the pool.
 */

let scratch = Buffer.allocUnsafe(0);

/**
 * A buffer of at least `bytes` bytes, valid until the next call: fill it, use
 * it, and keep no reference (nothing here is asynchronous).
 */
export function plaintextScratch(bytes: number): Buffer {
  if (scratch.length < bytes) scratch = Buffer.allocUnsafe(bytes);
  return scratch.subarray(0, bytes);
}

/** Buffers of one capacity; a request larger than that gets a buffer of its own. */
export class RecordBufferPool {
  static readonly #byCapacity = new Map<number, RecordBufferPool>();

  /** The process-wide pool for buffers of `capacity` bytes (one per negotiated record size). */
  static forCapacity(capacity: number): RecordBufferPool {
    let pool = RecordBufferPool.#byCapacity.get(capacity);
    if (pool === undefined) {
      pool = new RecordBufferPool(capacity);
      RecordBufferPool.#byCapacity.set(capacity, pool);
    }
    return pool;
  }

  readonly #free: ArrayBuffer[] = [];
  /** Lent and not yet returned: a second release of the same buffer is ignored, never pooled twice. */
  readonly #lent = new Set<ArrayBuffer>();

  /**
   * @param capacity bytes per pooled buffer
   * @param maxFree buffers kept for reuse; more than that are left to the GC
   *   (the default holds 2 MiB of 128 KiB records, one session's congestion mark)
   */
  constructor(
    readonly capacity: number,
    readonly maxFree = 16,
  ) {}

  get freeCount(): number {
    return this.#free.length;
  }
  get lentCount(): number {
    return this.#lent.size;
  }

  /** A buffer of exactly `length` bytes; give it back with release() once nothing reads it any more. */
  acquire(length: number): Buffer {
    if (length > this.capacity) return Buffer.allocUnsafe(length);
    const arrayBuffer = this.#free.pop() ?? new ArrayBuffer(this.capacity);
    this.#lent.add(arrayBuffer);
    return Buffer.from(arrayBuffer, 0, length);
  }

  /** Returns a buffer from acquire(); anything else (an oversize buffer, a second release) is ignored. */
  release(buffer: Buffer): void {
    const arrayBuffer = buffer.buffer as ArrayBuffer;
    if (!this.#lent.delete(arrayBuffer)) return;
    if (this.#free.length < this.maxFree) this.#free.push(arrayBuffer);
  }
}
