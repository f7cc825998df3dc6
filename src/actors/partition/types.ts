import type { TopicConfig } from '../../metadata/topic-config.js';
import type { ProducerSequenceHeader } from './producer-state.js';
import type { Clock, Logger, Transport } from '../../runtime/ports.js';
import type { NodeStorage, PartitionStore } from '../../storage/partition-store.js';

/** Per-partition bounds; every queue a client can fill has one. */
export interface PartitionLimits {
  /** Batches accepted but not yet on disk. Beyond it, produce gets BUSY. @default 1024 */
  pendingAppendsMax: number;
  /** Bytes accepted but not yet on disk. @default 67108864 (64 MiB) */
  pendingAppendBytesMax: number;
  /** Batches written together in one RocksDB write (group commit). @default 256 */
  groupCommitBatchesMax: number;
  /** Fetches parked waiting for data. Beyond it, a fetch is answered empty at once. @default 1024 */
  fetchWaitersMax: number;
  /** Reads running against storage at once. @default 4 */
  readsInFlightMax: number;
  /** Reads queued behind them. Beyond it, fetch gets BUSY. @default 256 */
  readQueueMax: number;
  /** How often retention runs, ms. @default 300000 */
  retentionCheckIntervalMs: number;
}

export const DEFAULT_PARTITION_LIMITS: PartitionLimits = {
  pendingAppendsMax: 1024,
  pendingAppendBytesMax: 64 * 1024 * 1024,
  groupCommitBatchesMax: 256,
  fetchWaitersMax: 1024,
  readsInFlightMax: 4,
  readQueueMax: 256,
  retentionCheckIntervalMs: 300_000,
};

export interface PartitionInput {
  topic: string;
  topicId: string;
  partition: number;
  leaderEpoch: number;
  config: TopicConfig;
  storage: NodeStorage;
  transport: Transport;
  clock: Clock;
  logger: Logger;
  limits: PartitionLimits;
}

/** What the partition exposes to queries (offsets, describe) through its snapshot. */
export interface PartitionOffsetsView {
  logStartOffset: number;
  logEndOffset: number;
  highWatermark: number;
}

export type PartitionEvent =
  | {
      type: 'PRODUCE';
      /** Absent for acks=0. */
      replyTo: string | undefined;
      acks: 0 | 1 | -1;
      batch: Uint8Array;
      recordCount: number;
      /** Idempotent-producer fields of the batch header; absent when the batch has none. */
      producer: ProducerSequenceHeader | undefined;
    }
  | { type: 'FETCH'; replyTo: string; offset: number; maxBytes: number; maxWaitMs: number }
  | { type: 'FETCH_EXPIRED'; id: number }
  | { type: 'APPENDED'; logEndOffset: number }
  | { type: 'APPEND_FAILED'; message: string }
  | { type: 'RETAINED'; logStartOffset: number }
  | { type: 'CONFIG'; config: TopicConfig }
  | { type: 'STOP' }
  | { type: 'DELETE' };

export type WriterEvent =
  | { type: 'APPEND'; batch: Uint8Array; baseOffset: number; leaderEpoch: number }
  | { type: 'RETAIN'; retentionMs: number; retentionBytes: number };

export type ReaderEvent = {
  type: 'READ';
  replyTo: string;
  offset: number;
  maxBytes: number;
  endOffset: number;
  highWatermark: number;
  logStartOffset: number;
};

export type { PartitionStore };
