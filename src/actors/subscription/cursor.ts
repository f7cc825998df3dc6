/**
 * A subscription's durable position on one partition (Pulsar's ManagedCursor): the mark-delete
 * position (every offset below it is acknowledged) plus the acknowledged ranges above it.
 *
 * The ranges live in two parallel sorted arrays (starts, ends): disjoint, never touching (an ack
 * that makes two ranges meet merges them) and all strictly above markDelete (a range that starts at
 * markDelete is folded into it). Lookups are binary searches, O(log r); an ack that merges or
 * inserts moves the tail of the arrays (a memmove, cheap for the r <= tens of thousands a cursor
 * holds). `ackedAbove` is kept as a running sum.
 */
import { assert } from '../../protocol/errors.js';

/**
 * Acknowledged ranges a cursor snapshot keeps (Pulsar's managedLedgerMaxUnackedRangesToPersist).
 * Beyond it, the ranges nearest the mark-delete position are persisted and the rest live in
 * memory only: after a leader failover those messages are delivered again.
 */
export const CURSOR_ACK_RANGES_MAX = 10_000;

export interface CursorSnapshot {
  markDelete: number;
  /** [start, end) pairs, flat, ascending, all above markDelete, at most CURSOR_ACK_RANGES_MAX pairs. */
  ranges: number[];
}

export class Cursor {
  private mark: number;
  private starts: number[] = [];
  private ends: number[] = [];
  private ackedAboveCount = 0;

  constructor(markDelete: number, ranges: readonly number[] = []) {
    assert(Number.isSafeInteger(markDelete) && markDelete >= 0, `cursor mark-delete ${markDelete}`);
    assert(ranges.length % 2 === 0, 'cursor ranges come in [start, end) pairs');
    this.mark = markDelete;
    for (let i = 0; i < ranges.length; i += 2) this.ack(ranges[i]!, ranges[i + 1]!);
  }

  /** Every offset below it is acknowledged. */
  get markDelete(): number {
    return this.mark;
  }

  /** Acknowledges [start, end); merges ranges and moves markDelete when the gap closes. Returns whether anything changed. */
  ack(start: number, end: number): boolean {
    if (start < this.mark) start = this.mark;
    if (start >= end) return false;
    // First range that ends at or after `start` (touching counts: it merges), last that starts at or before `end`.
    const first = this.firstEndAtOrAfter(start);
    const last = this.lastStartAtOrBefore(end);
    if (first <= last) {
      // [first, last] overlap or touch the new range: one range replaces them.
      const mergedStart = Math.min(start, this.starts[first]!);
      const mergedEnd = Math.max(end, this.ends[last]!);
      if (first === last && mergedStart === this.starts[first] && mergedEnd === this.ends[first]) return false;
      let removed = 0;
      for (let i = first; i <= last; i++) removed += this.ends[i]! - this.starts[i]!;
      this.starts.splice(first, last - first + 1, mergedStart);
      this.ends.splice(first, last - first + 1, mergedEnd);
      this.ackedAboveCount += mergedEnd - mergedStart - removed;
    } else {
      // No neighbour: insert at `first` (== last + 1).
      this.starts.splice(first, 0, start);
      this.ends.splice(first, 0, end);
      this.ackedAboveCount += end - start;
    }
    this.foldIntoMark();
    return true;
  }

  /** Acknowledges everything below `offset`. */
  ackBelow(offset: number): boolean {
    if (offset <= this.mark) return false;
    // Ranges wholly below `offset` disappear into the mark; one straddling it extends the mark.
    let drop = 0;
    while (drop < this.starts.length && this.ends[drop]! <= offset) {
      this.ackedAboveCount -= this.ends[drop]! - this.starts[drop]!;
      drop++;
    }
    if (drop > 0) {
      this.starts.splice(0, drop);
      this.ends.splice(0, drop);
    }
    this.mark = offset;
    if (this.starts.length > 0 && this.starts[0]! < offset) {
      this.ackedAboveCount -= offset - this.starts[0]!;
      this.starts[0] = offset;
    }
    this.foldIntoMark();
    return true;
  }

  isAcked(offset: number): boolean {
    if (offset < this.mark) return true;
    const i = this.lastStartAtOrBefore(offset);
    return i >= 0 && offset < this.ends[i]!;
  }

  /** The smallest offset >= from that is not acknowledged. */
  nextUnacked(from: number): number {
    if (from < this.mark) return this.mark;
    const i = this.lastStartAtOrBefore(from);
    // Ranges never touch, so the end of the one holding `from` is unacknowledged.
    return i >= 0 && from < this.ends[i]! ? this.ends[i]! : from;
  }

  /** Acknowledged offsets at or above markDelete. */
  ackedAbove(): number {
    return this.ackedAboveCount;
  }

  /** Number of ranges held (in memory). */
  rangeCount(): number {
    return this.starts.length;
  }

  /** Moves to `offset`, forgetting every range (subscription reset). */
  resetTo(offset: number): void {
    assert(Number.isSafeInteger(offset) && offset >= 0, `cursor reset to ${offset}`);
    this.mark = offset;
    this.starts = [];
    this.ends = [];
    this.ackedAboveCount = 0;
  }

  snapshot(): CursorSnapshot {
    const n = Math.min(this.starts.length, CURSOR_ACK_RANGES_MAX);
    const ranges = new Array<number>(n * 2);
    for (let i = 0; i < n; i++) {
      ranges[2 * i] = this.starts[i]!;
      ranges[2 * i + 1] = this.ends[i]!;
    }
    return { markDelete: this.mark, ranges };
  }

  /** A range starting at the mark closes the gap: the mark jumps to its end. */
  private foldIntoMark(): void {
    if (this.starts.length > 0 && this.starts[0] === this.mark) {
      this.ackedAboveCount -= this.ends[0]! - this.starts[0]!;
      this.mark = this.ends[0]!;
      this.starts.shift();
      this.ends.shift();
    }
  }

  /** Index of the first range with end >= offset; starts.length if none. */
  private firstEndAtOrAfter(offset: number): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid]! < offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Index of the last range with start <= offset; -1 if none. */
  private lastStartAtOrBefore(offset: number): number {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo - 1;
  }
}
