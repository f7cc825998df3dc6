/**
 * What flush() waits for, in O(1) per send: sends are counted by generation, and flush() closes
 * the current generation and waits until no send of it or of an earlier one is unsettled.
 * (It used to keep a settle promise, a `.then` and a Set entry per send: three promises and a
 * closure that lived as long as the send, a large part of the producer's GC time under load.)
 */
import { assert } from '../protocol/errors.js';

interface Waiter {
  readonly generation: number;
  resolve(): void;
}

export class SettleTracker {
  private generation = 0;
  /** Unsettled sends of the current generation. */
  private current = 0;
  /** Closed generations that still have unsettled sends, by count; keys ascend (Map keeps insertion order). */
  private readonly older = new Map<number, number>();
  /** flush() calls waiting, oldest first (their generations ascend). */
  private readonly waiters: Waiter[] = [];

  /** A send begins; returns the generation to pass to `settled` once, when it settles. */
  begin(): number {
    this.current++;
    return this.generation;
  }

  settled(generation: number): void {
    if (generation === this.generation) {
      this.current--;
      assert(this.current >= 0, 'a send settled twice');
      return;
    }
    const left = this.older.get(generation);
    assert(left !== undefined && left > 0, 'a send settled twice');
    if (left > 1) {
      this.older.set(generation, left - 1);
      return;
    }
    this.older.delete(generation);
    const oldest = this.older.size === 0 ? Infinity : this.older.keys().next().value!;
    while (this.waiters.length > 0 && this.waiters[0]!.generation < oldest) this.waiters.shift()!.resolve();
  }

  /** Resolves once every send begun before this call has settled. */
  allSettled(): Promise<void> {
    if (this.current === 0 && this.older.size === 0) return Promise.resolve();
    const generation = this.generation++;
    if (this.current > 0) this.older.set(generation, this.current);
    this.current = 0;
    return new Promise<void>((resolve) => this.waiters.push({ generation, resolve }));
  }
}
