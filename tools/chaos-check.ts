/**
 * The check behind tools/chaos.ts, pure so a test can make it fail: every acknowledged record must
 * be read back at the (partition, offset) its acknowledgement named, with its value, and each key's
 * acknowledged records must sit in send order within a partition.
 *
 * Memory, the bound: an acknowledgement is kept as a 4-byte fingerprint (key and sequence number
 * packed into 31 bits, the top bit marks "judged by the read-back") in a Uint32Array slot indexed
 * by its offset, in chunks of CHUNK_SLOTS allocated only where acknowledgements land. So 4 bytes per
 * offset up to each partition's highest acknowledged offset: 4 bytes per acknowledged record, plus
 * 4 per unacknowledged record that landed below it (failed sends), plus less than one chunk
 * (256 KiB) per partition. Everything else is per key, or capped (PROBLEMS_MAX). Time is linear:
 * one pass for the acknowledgements, one for the read-back, one over the slots.
 */
import assert from 'node:assert/strict';

/** Offsets per chunk of a partition's fingerprint store (4 bytes each: 256 KiB a chunk). */
export const CHUNK_SLOTS = 1 << 16;
/** Problems kept for the report; the counts go on past it. */
export const PROBLEMS_MAX = 20;

const JUDGED = 0x8000_0000;
const FINGERPRINT_MASK = 0x7fff_ffff;

export type Problem =
  /** Nothing was read back at the acknowledged offset. */
  | { kind: 'missing'; partition: number; offset: number; expected: string }
  /** Another record (or a value that is no record of the load) was read back there. */
  | { kind: 'replaced'; partition: number; offset: number; expected: string; found: string | null }
  /** Two acknowledgements named one offset; the later is counted lost. */
  | { kind: 'same-offset'; partition: number; offset: number; expected: string; other: string }
  /** An acknowledgement named an impossible place (negative or non-integer partition or offset). */
  | { kind: 'invalid'; partition: number; offset: number; expected: string }
  /** A key's record sits at a later offset than a record of that key sent after it. */
  | { kind: 'out-of-order'; partition: number; offset: number; record: string; previousOffset: number; previous: string };

export interface CheckResult {
  acknowledged: number;
  /** Acknowledged records not read back at their offset with their value. */
  lost: number;
  /** Pairs of a key's acknowledged records, adjacent in offset order, whose sequence numbers fall. */
  outOfOrder: number;
  /** The first PROBLEMS_MAX problems found. */
  problems: Problem[];
}

/** The value the load sends for a key's seq-th record; the check reads it back. */
export function recordValue(key: number, seq: number): string {
  return `${key}:${seq}`;
}

interface PartitionAcks {
  chunks: Map<number, Uint32Array>;
  /** Highest acknowledged offset; -1 with none. */
  offsetMax: number;
}

export class AckCheck {
  private readonly partitions = new Map<number, PartitionAcks>();
  private acknowledged = 0;
  private lost = 0;
  private readonly problems: Problem[] = [];
  private finished = false;

  /** @param keys the load's key space: keys are 0..keys-1. */
  constructor(private readonly keys: number) {
    assert(Number.isInteger(keys) && keys > 0, `keys must be a positive integer, got ${keys}`);
  }

  /** Notes an acknowledgement of the key's seq-th record at (partition, offset). */
  ack(key: number, seq: number, partition: number, offset: number): void {
    assert(!this.finished, 'an acknowledgement after finish()');
    assert(Number.isInteger(key) && key >= 0 && key < this.keys, `key ${key} outside 0..${this.keys - 1}`);
    const fp = this.fingerprint(key, seq);
    this.acknowledged++;
    if (!Number.isSafeInteger(partition) || partition < 0 || !Number.isSafeInteger(offset) || offset < 0) {
      this.lose({ kind: 'invalid', partition, offset, expected: recordValue(key, seq) });
      return;
    }
    let p = this.partitions.get(partition);
    if (p === undefined) this.partitions.set(partition, (p = { chunks: new Map(), offsetMax: -1 }));
    const chunkIndex = Math.floor(offset / CHUNK_SLOTS);
    let chunk = p.chunks.get(chunkIndex);
    if (chunk === undefined) p.chunks.set(chunkIndex, (chunk = new Uint32Array(CHUNK_SLOTS)));
    const slot = offset % CHUNK_SLOTS;
    if (chunk[slot] !== 0) {
      this.lose({ kind: 'same-offset', partition, offset, expected: recordValue(key, seq), other: this.describe(chunk[slot]!) });
      return;
    }
    chunk[slot] = fp;
    if (offset > p.offsetMax) p.offsetMax = offset;
  }

  /** Partitions with acknowledgements, ascending. */
  partitionsAcked(): number[] {
    return [...this.partitions.keys()].sort((a, b) => a - b);
  }

  /** One past the partition's highest acknowledged offset: the read-back need not go further. */
  readUntil(partition: number): number {
    return (this.partitions.get(partition)?.offsetMax ?? -1) + 1;
  }

  /** A record read back; any order, each (partition, offset) once. */
  readBack(partition: number, offset: number, value: string | null): void {
    assert(!this.finished, 'a read-back record after finish()');
    const chunk = this.partitions.get(partition)?.chunks.get(Math.floor(offset / CHUNK_SLOTS));
    if (chunk === undefined) return;
    const slot = offset % CHUNK_SLOTS;
    const stored = chunk[slot]!;
    if (stored === 0 || (stored & JUDGED) !== 0) return;
    chunk[slot] = (stored | JUDGED) >>> 0;
    if (this.parse(value) !== stored) {
      this.lose({ kind: 'replaced', partition, offset, expected: this.describe(stored), found: value });
    }
  }

  /** Counts acknowledgements the read-back never reached as lost, and checks each key's order. */
  finish(): CheckResult {
    assert(!this.finished, 'finish() twice');
    this.finished = true;
    let outOfOrder = 0;
    const lastSeq = new Float64Array(this.keys);
    const lastOffset = new Float64Array(this.keys);
    for (const partition of this.partitionsAcked()) {
      const p = this.partitions.get(partition)!;
      lastSeq.fill(-1);
      for (const chunkIndex of [...p.chunks.keys()].sort((a, b) => a - b)) {
        const chunk = p.chunks.get(chunkIndex)!;
        for (let slot = 0; slot < CHUNK_SLOTS; slot++) {
          const stored = chunk[slot]!;
          if (stored === 0) continue;
          const offset = chunkIndex * CHUNK_SLOTS + slot;
          const fp = stored & FINGERPRINT_MASK;
          if ((stored & JUDGED) === 0) {
            chunk[slot] = (stored | JUDGED) >>> 0;
            this.lose({ kind: 'missing', partition, offset, expected: this.describe(fp) });
          }
          const key = (fp - 1) % this.keys;
          const seq = Math.floor((fp - 1) / this.keys);
          const before = lastSeq[key]!;
          if (before > seq) {
            outOfOrder++;
            this.note({ kind: 'out-of-order', partition, offset, record: recordValue(key, seq), previousOffset: lastOffset[key]!, previous: recordValue(key, before) });
          }
          lastSeq[key] = seq;
          lastOffset[key] = offset;
        }
      }
    }
    return { acknowledged: this.acknowledged, lost: this.lost, outOfOrder, problems: [...this.problems] };
  }

  private fingerprint(key: number, seq: number): number {
    const fp = 1 + seq * this.keys + key;
    assert(Number.isInteger(seq) && seq >= 0 && fp <= FINGERPRINT_MASK, `seq ${seq} of key ${key} does not fit a 31-bit fingerprint`);
    return fp;
  }

  /** The fingerprint a read-back value stands for; 0 (no acknowledgement's) if it is no value of the load. */
  private parse(value: string | null): number {
    const m = value === null ? null : /^(\d{1,10}):(\d{1,10})$/.exec(value);
    if (m === null) return 0;
    const key = Number(m[1]);
    const seq = Number(m[2]);
    const fp = 1 + seq * this.keys + key;
    return key < this.keys && fp <= FINGERPRINT_MASK ? fp : 0;
  }

  private describe(stored: number): string {
    const fp = stored & FINGERPRINT_MASK;
    return recordValue((fp - 1) % this.keys, Math.floor((fp - 1) / this.keys));
  }

  private lose(problem: Problem): void {
    this.lost++;
    this.note(problem);
  }

  private note(problem: Problem): void {
    if (this.problems.length < PROBLEMS_MAX) this.problems.push(problem);
  }
}
