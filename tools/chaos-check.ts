/**
 * The chaos run's check, linear in the records acknowledged and small in memory: each
 * acknowledgement costs 16 bytes (offset as a float64, key index as a uint32, sequence as a
 * uint32, in typed arrays that grow by doubling, so at most 32 bytes while growing), and the
 * read-back is streamed partition by partition against them, never held.
 *
 * Rules checked: every acknowledged record is at the partition and offset its acknowledgement
 * named, with its value; and per key, acknowledged records sit at offsets that grow with their
 * send sequence (keys map to one partition).
 */

/** The acknowledgements of one partition, in arrival order. */
class PartitionAcks {
  offsets = new Float64Array(1024);
  keys = new Uint32Array(1024);
  seqs = new Uint32Array(1024);
  length = 0;

  push(offset: number, key: number, seq: number): void {
    if (this.length === this.offsets.length) {
      const grow = <T extends Float64Array | Uint32Array>(a: T): T => {
        const b = new (a.constructor as new (n: number) => T)(a.length * 2);
        b.set(a);
        return b;
      };
      [this.offsets, this.keys, this.seqs] = [grow(this.offsets), grow(this.keys), grow(this.seqs)];
    }
    this.offsets[this.length] = offset;
    this.keys[this.length] = key;
    this.seqs[this.length] = seq;
    this.length++;
  }

  /** Indexes in offset order (a Uint32Array: 4 more bytes per record, only while checking). */
  byOffset(): Uint32Array {
    const order = new Uint32Array(this.length);
    for (let i = 0; i < this.length; i++) order[i] = i;
    return order.sort((a, b) => this.offsets[a]! - this.offsets[b]!);
  }
}

export class AckLog {
  private readonly partitions = new Map<number, PartitionAcks>();
  count = 0;

  add(partition: number, offset: number, key: number, seq: number): void {
    let p = this.partitions.get(partition);
    if (p === undefined) this.partitions.set(partition, (p = new PartitionAcks()));
    p.push(offset, key, seq);
    this.count++;
  }

  partitionIds(): number[] {
    return [...this.partitions.keys()].sort((a, b) => a - b);
  }

  /**
   * Checks one partition against its read-back, a stream of records in offset order (the reader's).
   * `value` is the record's value as the load wrote it: "<key>:<seq>".
   */
  async checkPartition(partition: number, stored: AsyncIterable<{ offset: number; value: string | null | undefined }>): Promise<{ lost: number; disordered: number }> {
    const p = this.partitions.get(partition);
    if (p === undefined) return { lost: 0, disordered: 0 };
    const order = p.byOffset();
    let lost = 0;
    let disordered = 0;
    // Order: walking the acknowledgements in offset order, a key's sequence must only grow.
    const lastSeq = new Map<number, number>();
    for (const i of order) {
      const key = p.keys[i]!;
      const seq = p.seqs[i]!;
      const before = lastSeq.get(key);
      if (before !== undefined && seq < before) disordered++;
      else lastSeq.set(key, seq);
    }
    // Presence: merge the acknowledgements (offset order) with the stored records (offset order).
    let next = 0;
    for await (const r of stored) {
      while (next < order.length && p.offsets[order[next]!]! < r.offset) {
        lost++;
        next++;
      }
      while (next < order.length && p.offsets[order[next]!]! === r.offset) {
        const i = order[next]!;
        if (r.value !== `${p.keys[i]}:${p.seqs[i]}`) lost++;
        next++;
      }
      if (next >= order.length) break;
    }
    lost += order.length - next;
    return { lost, disordered };
  }
}
