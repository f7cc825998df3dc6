/**
 * The batches a consumer received lately, decoded, so a leader that hands out one stored batch in
 * slices (a Shared subscription spreads a batch over consumers whose permits are fewer than its
 * records) sends its bytes once: the consumer says which it holds (`cached` in its consume
 * request) and gets only the deliveries for those. Bounded per partition, in batches and in bytes
 * (its share of the consumer's bound; at least its newest batch), the oldest going first. A
 * partition's batches are only ever evicted by a reply of that partition's own session (one
 * request in flight), so a batch a request says it holds is still here when the reply comes.
 */
import { decodeBatch, readBatchHeader, type StoredRecord } from '../protocol/batch.js';
import { CACHED_BATCHES_MAX } from '../protocol/subscription-messages.js';

export interface Entry {
  partition: number;
  baseOffset: number;
  records: StoredRecord[];
  bytes: number;
}

export class BatchCache {
  /** Insertion order is the eviction order. */
  private readonly entries = new Map<string, Entry>();
  private readonly byPartition = new Map<number, Entry[]>();
  private bytes = 0;

  /** Partitions the consumer reads: each may hold its share of bytesMax. */
  partitions = 1;

  constructor(
    /** Stored bytes of the batches held over all partitions, at most (plus each partition's newest). */
    private readonly bytesMax: number,
    /** Batches held per partition, at most (the request carries at most CACHED_BATCHES_MAX). */
    private readonly perPartitionMax = Math.min(4, CACHED_BATCHES_MAX),
  ) {}

  /** Decodes a batch (already verified) of a reply; `put` it once the reply's deliveries are resolved. */
  static decode(partition: number, batch: Uint8Array): Entry {
    return { partition, baseOffset: readBatchHeader(batch).baseOffset, records: decodeBatch(batch), bytes: batch.length };
  }

  /** Keeps a decoded batch of `partition`, evicting that partition's oldest beyond its bounds. */
  put(entry: Entry): void {
    const key = `${entry.partition}/${entry.baseOffset}`;
    if (this.entries.has(key)) this.remove(this.entries.get(key)!);
    this.entries.set(key, entry);
    let list = this.byPartition.get(entry.partition);
    if (list === undefined) this.byPartition.set(entry.partition, (list = []));
    list.push(entry);
    this.bytes += entry.bytes;
    const share = this.bytesMax / Math.max(1, this.partitions);
    let held = list.reduce((a, e) => a + e.bytes, 0);
    while (list.length > 1 && (list.length > this.perPartitionMax || held > share)) {
      held -= list[0]!.bytes;
      this.remove(list[0]!);
    }
  }

  /** The record at `offset` in `entries` (a reply's own batches), else in a held batch of `partition`. */
  record(partition: number, offset: number, entries: readonly Entry[] = []): StoredRecord | undefined {
    for (const e of entries) {
      if (offset >= e.baseOffset && offset < e.baseOffset + e.records.length) return e.records[offset - e.baseOffset];
    }
    for (const e of this.byPartition.get(partition) ?? []) {
      if (offset >= e.baseOffset && offset < e.baseOffset + e.records.length) return e.records[offset - e.baseOffset];
    }
    return undefined;
  }

  /** Base offsets of the batches held for `partition` (what a consume request says it has). */
  held(partition: number): number[] {
    return (this.byPartition.get(partition) ?? []).map((e) => e.baseOffset);
  }

  /** The partition left this consumer (or its batches can no longer be trusted). */
  dropPartition(partition: number): void {
    for (const e of [...(this.byPartition.get(partition) ?? [])]) this.remove(e);
  }

  private remove(e: Entry): void {
    this.entries.delete(`${e.partition}/${e.baseOffset}`);
    const list = this.byPartition.get(e.partition);
    if (list !== undefined) {
      const i = list.indexOf(e);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.byPartition.delete(e.partition);
    }
    this.bytes -= e.bytes;
  }
}
