/**
 * A FIFO with O(1) shift. `Array.prototype.shift` is O(n) on large arrays; with tens of thousands
 * of sends waiting for admission it was 29% of the producer's CPU (bench/produce.ts profile).
 */
export class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    // Compact once the dead prefix is at least half the array: amortised O(1).
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Removes every item `drop` picks, keeping the others in order; returns how many went. O(n). */
  removeWhere(drop: (item: T) => boolean): number {
    const kept = this.items.slice(this.head).filter((item) => !drop(item as T));
    const removed = this.length - kept.length;
    this.items = kept;
    this.head = 0;
    return removed;
  }
}
