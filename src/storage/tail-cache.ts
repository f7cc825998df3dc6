/**
 * The newest batches of one partition, in memory, so the reads that follow a write closely (a
 * follower's fetch right after the leader's append, a consumer at the head) are served without a
 * RocksDB iterator (an allocation and a thread-pool round trip each). Bounded by
 * TAIL_CACHE_BYTES_MAX per partition (the newest batch is always kept); kept exact under
 * truncation and retention by the store, which calls it inside its mutations.
 */

/** Bytes of batches one partition keeps in its tail cache. @default 2 MiB */
export const TAIL_CACHE_BYTES_MAX = 2 * 1024 * 1024;

export class TailCache {
  private bases: number[] = [];
  private ends: number[] = [];
  private batches: Uint8Array[] = [];
  private first = 0;
  private bytes = 0;

  constructor(private readonly bytesMax: number = TAIL_CACHE_BYTES_MAX) {}

  /** A batch appended at the log end (copied: the caller keeps its buffer). */
  push(base: number, end: number, batch: Uint8Array): void {
    this.bases.push(base);
    this.ends.push(end);
    this.batches.push(batch.slice());
    this.bytes += batch.length;
    while (this.bytes > this.bytesMax && this.bases.length - this.first > 1) {
      this.bytes -= this.batches[this.first]!.length;
      this.first++;
    }
    if (this.first > 1024) this.compact();
  }

  /** Truncation: batches based at or past `offset` go. */
  truncate(offset: number): void {
    while (this.bases.length > this.first && this.bases[this.bases.length - 1]! >= offset) {
      this.bytes -= this.batches[this.batches.length - 1]!.length;
      this.bases.pop();
      this.ends.pop();
      this.batches.pop();
    }
  }

  /** Retention: batches based before `start` go. */
  dropBefore(start: number): void {
    while (this.first < this.bases.length && this.bases[this.first]! < start) {
      this.bytes -= this.batches[this.first]!.length;
      this.first++;
    }
  }

  clear(): void {
    this.bases = [];
    this.ends = [];
    this.batches = [];
    this.first = 0;
    this.bytes = 0;
  }

  /**
   * What the store's read() returns, when the cache holds the batch containing `offset` (and
   * everything after it, as it always does); undefined when it does not reach back that far.
   */
  read(offset: number, maxBytes: number, bound: number): Uint8Array[] | undefined {
    if (this.first >= this.bases.length || offset < this.bases[this.first]!) return undefined;
    if (offset >= bound) return [];
    let i = this.first;
    // Binary search for the batch containing offset.
    let hi = this.bases.length - 1;
    while (i < hi) {
      const mid = (i + hi + 1) >> 1;
      if (this.bases[mid]! <= offset) i = mid;
      else hi = mid - 1;
    }
    if (offset >= this.ends[i]!) return [];
    const out: Uint8Array[] = [];
    let bytes = 0;
    for (let j = i; j < this.bases.length && this.bases[j]! < bound; j++) {
      const b = this.batches[j]!;
      if (out.length > 0 && bytes + b.length > maxBytes) break;
      out.push(b);
      bytes += b.length;
    }
    return out;
  }

  private compact(): void {
    this.bases = this.bases.slice(this.first);
    this.ends = this.ends.slice(this.first);
    this.batches = this.batches.slice(this.first);
    this.first = 0;
  }
}
