/**
 * A byte semaphore: how the producer bounds the record bytes it holds (open batches, batches
 * queued, in flight, waiting to retry). Takers wait in FIFO order, so a big record is never
 * starved by small ones. A taker larger than the whole budget gets in when nothing else is held,
 * so an oversized (but batch-sized) record cannot deadlock the producer. A taker that gives up
 * (cancels) leaves the queue having taken nothing, and whoever waited behind it is
 * let in if they now fit.
 */
import { assert } from '../protocol/errors.js';

interface Waiter {
  bytes: number;
  resolve(taken: boolean): void;
}

/** A pending take: `taken` resolves true once the bytes are taken, false after cancel() (nothing taken). */
export interface BudgetWait {
  readonly taken: Promise<boolean>;
  /** Leaves the queue if still in it; a no-op once granted (the bytes are then the taker's to release). */
  cancel(): void;
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

  /** Takers waiting for room. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Takes `bytes` now if they fit and nobody waits ahead; returns whether it did. */
  tryTake(bytes: number): boolean {
    if (this.waiters.length > 0 || !this.fits(bytes)) return false;
    this.used += bytes;
    return true;
  }

  /**
   * Takes `bytes` in FIFO order with other takers. (Not an AbortSignal: one per blocked send cost
   * microseconds on the producer's hot path when memory is full.)
   */
  take(bytes: number): BudgetWait {
    if (this.tryTake(bytes)) return { taken: Promise.resolve(true), cancel: () => undefined };
    let waiter!: Waiter;
    const taken = new Promise<boolean>((resolve) => {
      waiter = { bytes, resolve };
    });
    this.waiters.push(waiter);
    return {
      taken,
      cancel: () => {
        const i = this.waiters.indexOf(waiter);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        waiter.resolve(false);
        this.grant();
      },
    };
  }

  release(bytes: number): void {
    this.used -= bytes;
    assert(this.used >= 0, 'released more bytes than were taken');
    this.grant();
  }

  private grant(): void {
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) {
      const w = this.waiters.shift()!;
      this.used += w.bytes;
      w.resolve(true);
    }
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.bytesMax;
  }
}
