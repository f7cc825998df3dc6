import type { RaftStore } from '../quorum/raft-store.js';

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
  /**
   * Only batches that end at or before this offset may go: the leader passes its high watermark,
   * as Kafka deletes only below it (an uncommitted record must not go before it is committed or
   * truncated). Absent: no bound (followers, whose log past the leader's HW is truncated anyway).
   */
  readonly offsetEnd?: number;
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
   * RocksDB write: after a crash either all are visible or none is. `sync` fsyncs the WAL; without
   * it an acknowledged append survives a process crash but not an OS crash or power loss.
   * Mutations (append, truncateTo, applyRetention) apply in call order, so a caller may issue the
   * next append before the previous one resolved; the store may read `batches` until it resolves.
   * A batch whose base offset does not continue the log rejects the call (INVALID_REQUEST) and
   * writes nothing. A batch with a leaderEpoch above the latest cached epoch opens a cache entry.
   * `append([], { sync: true })` is a flush: it resolves once every append resolved before it is
   * durable. The caller hands the batches over and never writes to them again: a store may keep a
   * batch that is most of its buffer by reference (the tail cache does), and copies smaller views.
   */
  append(batches: readonly Uint8Array[], options?: { sync?: boolean }): Promise<void>;
  /**
   * Whole batches, starting with the one that contains `offset` (a mid-batch read returns that
   * batch; the reader skips earlier records), stopping before a batch whose base offset is at or
   * past `endOffset`, and before exceeding `maxBytes` — except that the first batch is always
   * returned so a reader can make progress past a batch larger than maxBytes.
   * Empty when `offset` >= min(endOffset, logEndOffset()); rejects with OFFSET_OUT_OF_RANGE when
   * `offset` < logStartOffset() or > logEndOffset(). Never returns part of an append that has not
   * resolved yet. The returned arrays are the stored bytes: do not modify them.
   */
  read(offset: number, maxBytes: number, endOffset: number): Promise<Uint8Array[]>;
  /**
   * Removes every record at or past `offset`, in whole batches: a batch straddling `offset` goes
   * too, so logEndOffset() ends at its base (<= offset). Removes the epochs starting at or after
   * the new end. Below logStartOffset() it empties the log and restarts it there (start = end =
   * offset). Durable (WAL fsynced) when it resolves. No-op at or past logEndOffset().
   */
  truncateTo(offset: number): Promise<void>;
  /**
   * Empties the log and restarts it at `offset` (Kafka's truncateFullyAndStartAt): every batch and
   * epoch-cache entry goes, logStartOffset() = logEndOffset() = `offset`, sizeBytes() = 0; the next
   * append continues at `offset`. Any offset >= 0, above the current end as well as below it. What a
   * follower does when its log ends below the leader's log start (retention on the leader removed
   * what it would fetch next). One atomic write, durable (WAL fsynced) when it resolves.
   */
  truncateFullyAndStartAt(offset: number): Promise<void>;
  /**
   * Deletes whole batches from the front while the first one qualifies (by time or by size). May
   * delete them all: logEndOffset() never moves, logStartOffset() becomes the first remaining
   * batch's base offset, or logEndOffset() when none remains. Epochs starting before the new log
   * start collapse into one starting there (Kafka's truncateFromStart).
   */
  applyRetention(policy: RetentionPolicy): Promise<{ deletedBatches: number; deletedBytes: number }>;
  /** Leader-epoch cache, oldest first, persisted beside the log. */
  epochs(): readonly EpochEntry[];
  /**
   * Kafka's OffsetsForLeaderEpoch: the largest cached epoch <= `epoch` and its end offset (the start
   * of the next higher epoch, or logEndOffset() for the latest). As in Kafka, an `epoch` below every
   * cached one answers { epoch, endOffset: first cached startOffset }, and an empty cache, a
   * negative `epoch` or one above the latest cached answer { epoch: -1, endOffset: -1 }.
   */
  endOffsetForEpoch(epoch: number): { epoch: number; endOffset: number };
}

export interface NodeStorage {
  /**
   * The last process to use this storage did not close it (kill -9, a crash, an OS crash or power
   * loss): writes it made without sync may be gone. Under flush.mode=replicated such a replica may
   * have lost records it counted toward the high watermark (Kafka's KIP-966 "unclean shutdown");
   * the broker says so when it registers. Until it has ({@link uncleanShutdownReported}), a clean
   * close keeps the storage marked, so a process that starts and stops before registering does not
   * hide the loss from the next one.
   */
  readonly uncleanShutdown: boolean;
  /** The controller has recorded this storage's unclean shutdown (a registration saying so committed). */
  uncleanShutdownReported(): void;
  /** The controller quorum's Raft log and election state (term, vote). */
  readonly raftLog: RaftStore;
  /** The same handle for the same key until it is deleted or the storage closed. */
  openPartition(key: PartitionKey): Promise<PartitionStore>;
  /**
   * Deletes the partition's batches, epochs and counters. Handles already open for it reject from
   * then on (UNKNOWN_TOPIC); openPartition() afterwards starts an empty log.
   */
  deletePartition(key: PartitionKey): Promise<void>;
  /** Lets queued mutations finish, then closes; every call after it rejects (SHUTTING_DOWN). */
  close(): Promise<void>;
}
