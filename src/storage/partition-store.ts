/**
 * Storage ports. One RocksDB instance per node holds every partition log (by key prefix) and the
 * metadata log; an in-memory implementation serves unit tests and the simulator.
 */

/** A partition replica's identity on disk: the topic's immutable id (not its name) and index. */
export interface PartitionKey {
  /** 32 lowercase hex chars (16 random bytes), assigned at topic creation. */
  readonly topicId: string;
  readonly partition: number;
}

/** Leader-epoch cache entry: the first offset written in `epoch` (Kafka's leader-epoch-checkpoint). */
export interface EpochEntry {
  readonly epoch: number;
  readonly startOffset: number;
}

export interface RetentionPolicy {
  /** Delete whole batches whose maxTimestamp is older than now - retentionMs; -1 = keep forever. */
  readonly retentionMs: number;
  /** Delete the oldest whole batches while the log stays at or above this size; -1 = no limit. */
  readonly retentionBytes: number;
  readonly nowMs: number;
}

export interface PartitionStore {
  readonly key: PartitionKey;
  /** First offset still stored (retention and truncation from the front move it). */
  logStartOffset(): number;
  /** Offset the next appended record gets. */
  logEndOffset(): number;
  /** Bytes of batches stored. */
  sizeBytes(): number;
  /**
   * Appends batches already stamped (see `stampBatch`) with consecutive base offsets starting at
   * logEndOffset(). All of them, their epoch-cache entries and the counters land in one atomic
   * RocksDB write: after a crash either all are visible or none is. `sync` fsyncs the WAL.
   */
  append(batches: readonly Uint8Array[], options?: { sync?: boolean }): Promise<void>;
  /**
   * Whole batches, starting with the one that contains `offset` (a mid-batch read returns that
   * batch; the reader skips earlier records), stopping before a batch whose base offset is at or
   * past `endOffset`, and before exceeding `maxBytes` — except that the first batch is always
   * returned so a reader can make progress past a batch larger than maxBytes.
   */
  read(offset: number, maxBytes: number, endOffset: number): Promise<Uint8Array[]>;
  /** Removes every batch with baseOffset >= offset and the epochs starting at or after it. */
  truncateTo(offset: number): Promise<void>;
  /** Deletes whole batches from the front per the policy; never the last batch of a non-empty log's end (LEO is kept). */
  applyRetention(policy: RetentionPolicy): Promise<{ deletedBatches: number; deletedBytes: number }>;
  /** Leader-epoch cache, oldest first, persisted beside the log. */
  epochs(): readonly EpochEntry[];
  /**
   * Kafka's OffsetsForLeaderEpoch: the largest cached epoch <= `epoch` and its end offset (the start
   * of the next higher epoch, or logEndOffset() for the latest). { epoch: -1, endOffset: -1 } if none.
   */
  endOffsetForEpoch(epoch: number): { epoch: number; endOffset: number };
}

/** The node's metadata log (local today; the controller quorum's Raft log replaces its writer next). */
export interface MetadataLogStore {
  /** Index of the last entry, -1 when empty. */
  lastIndex(): number;
  /** Appends entries at lastIndex()+1.. in one atomic write. */
  append(entries: readonly Uint8Array[], options?: { sync?: boolean }): Promise<void>;
  /** Entries from `fromIndex` on, at most `max` of them. */
  read(fromIndex: number, max: number): Promise<Uint8Array[]>;
}

export interface NodeStorage {
  openPartition(key: PartitionKey): Promise<PartitionStore>;
  /** Deletes the partition's batches, epochs and counters. */
  deletePartition(key: PartitionKey): Promise<void>;
  readonly metadataLog: MetadataLogStore;
  close(): Promise<void>;
}
