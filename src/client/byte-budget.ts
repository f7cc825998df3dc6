/**
 * A byte semaphore: how the producer bounds the record bytes it holds (open batches, batches
 * queued, in flight, waiting to retry). Takers wait in FIFO order, so a big record is never
 * starved by small ones. A taker larger than the whole budget gets in when nothing else is held,
 * so an oversized (but batch-sized) record cannot deadlock the producer.
 */
import { assert } from '../protocol/errors.js';

interface Waiter {
  bytes: number;
  resolve(): void;
}

export class ByteBudget {
  private used = 0;
  private readonly waiters: Waiter[] = [];

  constructor(readonly bytesMax: number) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax > 0, 'byte budget must be a positive integer');
  }

  get usedBytes(): number {
    return this.used;
  }

  /** Takes `bytes` now if they fit and nobody waits ahead; returns whether it did. */
  tryTake(bytes: number): boolean {
    if (this.waiters.length > 0 || !this.fits(bytes)) return false;
    this.used += bytes;
    return true;
  }

  /** Resolves once `bytes` are taken (in FIFO order with other takers). */
  take(bytes: number): Promise<void> {
    if (this.tryTake(bytes)) return Promise.resolve();
    return new Promise<void>((resolve) => this.waiters.push({ bytes, resolve }));
  }

  release(bytes: number): void {
    this.used -= bytes;
    assert(this.used >= 0, 'released more bytes than were taken');
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) {
      const w = this.waiters.shift()!;
      this.used += w.bytes;
      w.resolve();
    }
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.bytesMax;
  }
}
