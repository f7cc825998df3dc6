/**
 * The newest batches of one partition, in memory, so the reads that follow a write closely (a
 * follower's fetch right after the leader's append, a consumer at the head) are served without a
 * RocksDB iterator (an allocation and a thread-pool round trip each).
 *
 * Two bounds: TAIL_CACHE_BYTES_MAX per partition, and the node's {@link TailCacheBudget}, shared
 * by every partition of the node's storage (TigerBeetle's static budgets: a node with 2,000
 * partitions must not hold 2,000 x 8 MiB). A push evicts this partition's own oldest batches to
 * stay under its bound; when the node's budget has no room either, it evicts more of its own, and
 * if even an empty cache cannot get the room, the batch is not cached and reads of it go to
 * RocksDB. A partition never takes room from another. The cache always holds a contiguous run of
 * batches ending at the log end (or nothing), and the store keeps it exact under truncation,
 * retention, restart and close, calling it inside its mutations; every byte it lets go goes back to
 * the budget.
 */
import { assert } from '../protocol/errors.js';

/**
 * Bytes one partition's tail cache holds. A producer keeps up to 5 batches of up to 1 MiB in flight
 * per partition, so the followers' next fetch is up to ~5 MiB behind the leader's log end; a bound
 * below that sent those fetches to RocksDB iterators (6 % of the leader's CPU in the RF 3 profile).
 * @default 8 MiB
 */
export const TAIL_CACHE_BYTES_MAX = 8 * 1024 * 1024;

/**
 * A batch whose buffer is at most this many times its own size is kept by reference (charged the
 * whole buffer); a smaller view (one batch of a fetch reply, a message inside a socket read) is
 * copied, so a cached batch never pins much more memory than it is charged for.
 */
const SHARE_BUFFER_RATIO_MAX = 4;

/** Bytes of batches all partitions of one node keep in their tail caches together. @default 64 MiB */
export const NODE_TAIL_CACHE_BYTES_MAX = 64 * 1024 * 1024;

/** Evicted slots compacted away once this many pile up at the front. */
const COMPACT_AFTER_ENTRIES = 1024;

const NO_BYTES = new Uint8Array(0);

/** One node's room for tail caches, bytes. Made by the node's storage, once; never module-wide. */
export class TailCacheBudget {
  private used = 0;

  constructor(readonly bytesMax: number = NODE_TAIL_CACHE_BYTES_MAX) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 0, 'tail cache budget is a byte count');
  }

  /** Bytes the node's tail caches hold now. */
  get bytesUsed(): number {
    return this.used;
  }

  /** Takes `bytes` if they fit. */
  tryTake(bytes: number): boolean {
    if (this.used + bytes > this.bytesMax) return false;
    this.used += bytes;
    return true;
  }

  giveBack(bytes: number): void {
    this.used -= bytes;
    assert(this.used >= 0, 'tail cache budget gave back more than it lent');
  }
}

export class TailCache {
  private bases: number[] = [];
  private ends: number[] = [];
  /** Evicted slots (before `first`) hold NO_BYTES so their memory goes at once. */
  private batches: Uint8Array[] = [];
  /** Bytes each batch is charged: its length when copied, its whole buffer when shared. */
  private charges: number[] = [];
  private first = 0;
  private bytes = 0;

  constructor(
    private readonly budget: TailCacheBudget,
    private readonly bytesMax: number = TAIL_CACHE_BYTES_MAX,
  ) {}

  /** Bytes this partition's cache holds (all of them taken from the budget). */
  get bytesHeld(): number {
    return this.bytes;
  }

  /**
   * A batch appended at the log end. The caller hands it over: it is never written to again (the
   * leader stamps a batch before its append; a follower's come from a reply nobody else holds).
   * A batch that is most of its buffer (a produce request's, read off the socket into its own
   * buffer) is kept as it is, with no copy; a small view is copied (SHARE_BUFFER_RATIO_MAX).
   */
  push(base: number, end: number, batch: Uint8Array): void {
    const shared = batch.buffer.byteLength <= SHARE_BUFFER_RATIO_MAX * batch.byteLength;
    const charge = shared ? batch.buffer.byteLength : batch.byteLength;
    // This partition's own bound (a single batch over it is still kept, alone).
    while (this.count() > 0 && this.bytes + charge > this.bytesMax) this.dropOldest();
    // The node's: make room from our own oldest; with none left, do not cache (reads go to RocksDB).
    while (!this.budget.tryTake(charge)) {
      if (this.count() === 0) return;
      this.dropOldest();
    }
    this.bases.push(base);
    this.ends.push(end);
    this.batches.push(shared ? batch : batch.slice());
    this.charges.push(charge);
    this.bytes += charge;
    if (this.first > COMPACT_AFTER_ENTRIES) this.compact();
  }

  /** Truncation: batches based at or past `offset` go. */
  truncate(offset: number): void {
    while (this.count() > 0 && this.bases[this.bases.length - 1]! >= offset) {
      this.release(this.charges[this.charges.length - 1]!);
      this.bases.pop();
      this.ends.pop();
      this.batches.pop();
      this.charges.pop();
    }
  }

  /** Retention: batches based before `start` go. */
  dropBefore(start: number): void {
    while (this.count() > 0 && this.bases[this.first]! < start) this.dropOldest();
  }

  /** Everything goes (a restart of the log, a deleted partition, a closed store). */
  clear(): void {
    this.release(this.bytes);
    this.bases = [];
    this.ends = [];
    this.batches = [];
    this.charges = [];
    this.first = 0;
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

  private count(): number {
    return this.bases.length - this.first;
  }

  private dropOldest(): void {
    this.release(this.charges[this.first]!);
    this.batches[this.first] = NO_BYTES;
    this.first++;
  }

  private release(bytes: number): void {
    this.bytes -= bytes;
    this.budget.giveBack(bytes);
  }

  private compact(): void {
    this.bases = this.bases.slice(this.first);
    this.ends = this.ends.slice(this.first);
    this.batches = this.batches.slice(this.first);
    this.charges = this.charges.slice(this.first);
    this.first = 0;
  }
}
