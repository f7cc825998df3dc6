/**
 * A subscription's durable position on one partition (Pulsar's ManagedCursor): the mark-delete
 * position (every offset below it is acknowledged) plus the acknowledged ranges above it.
 *
 * INTERFACE FIXED BY THE HOST; the bodies are to be written (see the brief).
 */

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
  constructor(markDelete: number, ranges: readonly number[] = []) {
    void markDelete;
    void ranges;
    throw new Error('todo');
  }

  /** Every offset below it is acknowledged. */
  get markDelete(): number {
    throw new Error('todo');
  }

  /** Acknowledges [start, end); merges ranges and moves markDelete when the gap closes. Returns whether anything changed. */
  ack(start: number, end: number): boolean {
    void start;
    void end;
    throw new Error('todo');
  }

  /** Acknowledges everything below `offset`. */
  ackBelow(offset: number): boolean {
    void offset;
    throw new Error('todo');
  }

  isAcked(offset: number): boolean {
    void offset;
    throw new Error('todo');
  }

  /** The smallest offset >= from that is not acknowledged. */
  nextUnacked(from: number): number {
    void from;
    throw new Error('todo');
  }

  /** Acknowledged offsets at or above markDelete. */
  ackedAbove(): number {
    throw new Error('todo');
  }

  /** Number of ranges held (in memory). */
  rangeCount(): number {
    throw new Error('todo');
  }

  /** Moves to `offset`, forgetting every range (subscription reset). */
  resetTo(offset: number): void {
    void offset;
    throw new Error('todo');
  }

  snapshot(): CursorSnapshot {
    throw new Error('todo');
  }
}
