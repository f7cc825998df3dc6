import type { TopicConfig } from '../../metadata/topic-config.js';
import type { ProducerSequenceHeader } from './producer-state.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Random, Transport } from '../../runtime/ports.js';
import type { NodeStorage, PartitionStore } from '../../storage/partition-store.js';
import type { PendingBytesBudget } from './pending-budget.js';
import type { NodeMetrics } from '../../metrics/port.js';

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
  /**
   * A follower not caught up with the leader's log end for this long leaves the ISR
   * (Kafka's replica.lag.time.max.ms), ms. @default 10000
   */
  replicaLagTimeMaxMs: number;
  /** Budget of one AlterPartition request to the controller, ms; retried after it. @default 2000 */
  alterPartitionTimeoutMs: number;
  /** A follower's fetch reply size bound, bytes (within NATS max_payload). @default 1048576 */
  replicaFetchMaxBytes: number;
  /** How long the leader holds a follower's fetch when it has nothing new, ms. @default 500 */
  replicaFetchWaitMs: number;
  /**
   * Ceiling of the pause after a failed follower fetch, ms; it doubles per consecutive failure up
   * to 2 s, and the pause is drawn below it (full jitter, runtime/retry.ts). @default 50
   */
  replicaFetchBackoffMs: number;
}

export const DEFAULT_PARTITION_LIMITS: PartitionLimits = {
  pendingAppendsMax: 1024,
  pendingAppendBytesMax: 64 * 1024 * 1024,
  groupCommitBatchesMax: 256,
  fetchWaitersMax: 1024,
  readsInFlightMax: 4,
  readQueueMax: 256,
  retentionCheckIntervalMs: 300_000,
  replicaLagTimeMaxMs: 10_000,
  alterPartitionTimeoutMs: 2_000,
  replicaFetchMaxBytes: 1024 * 1024,
  replicaFetchWaitMs: 500,
  replicaFetchBackoffMs: 50,
};

/** The partition's replication state as committed in metadata. */
export interface PartitionAssignment {
  replicas: readonly number[];
  isr: readonly number[];
  /** Bumped by the controller on every change of the partition (ISR, replicas, leader). */
  partitionEpoch: number;
  /**
   * flush.mode=replicated: ISR members that may have lost committed records in an unclean shutdown
   * (planner.replicatedFlush). The leader takes them out of the ISR; they rejoin once caught up.
   * @default []
   */
  suspects?: readonly number[];
}

export interface PartitionInput extends PartitionAssignment {
  topic: string;
  topicId: string;
  partition: number;
  leaderEpoch: number;
  /** This broker (the leader) and its registration epoch, for AlterPartition. */
  brokerId: number;
  brokerEpoch: number;
  subjects: Subjects;
  config: TopicConfig;
  storage: NodeStorage;
  transport: Transport;
  clock: Clock;
  /** For the jitter of retry waits. */
  random: Random;
  logger: Logger;
  limits: PartitionLimits;
  /** The node-wide bound on pending append bytes, shared by every leader of this node (pending-budget.ts). */
  pendingBudget: PendingBytesBudget;
  /**
   * Told the leader's written log end when it opens and whenever it moves: the node's replica fetch
   * sessions (replica-fetcher/sessions.ts) wake a follower waiting past its fetch offset. Absent: nobody listens.
   */
  replicaWatch?: ReplicaWatch;
  /** Where the writer counts appended records and the reader fetched bytes. @default noMetrics */
  metrics?: NodeMetrics;
}

/** What the leader tells its node about its log: the followers' fetch sessions and the subscriptions listen. */
export interface ReplicaWatch {
  written(topicId: string, partition: number, writtenEnd: number): void;
  /**
   * The leader opened (with its leader epoch), or its high watermark or log start moved: the
   * subscriptions it serves read up to the high watermark (subscription/host.ts).
   */
  committed?(topicId: string, partition: number, leaderEpoch: number, highWatermark: number, logStartOffset: number): void;
  /** The leader stopped serving (leadership moved, the topic went, the node closes). */
  closed?(topicId: string, partition: number, leaderEpoch: number): void;
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
      /** When the request arrived, on the leader's clock, ms. */
      nowMs: number;
      /** The request's budget: an acks=all batch not committed by nowMs + timeoutMs is answered REQUEST_TIMED_OUT, ms. */
      timeoutMs: number;
      /** The leader epoch the client believes current; undefined: not checked. */
      leaderEpoch: number | undefined;
      /**
       * Producer access (issue 12): `epoch` is the producer epoch the request carries (accessEpoch,
       * absent = 0), `known` the topic's producer epoch in the receiving broker's metadata. Refused
       * PRODUCER_FENCED when `epoch` is below either that or the highest this leader knows.
       * Absent: not checked (the broker's own appends, e.g. subscription cursors).
       */
      access?: ProduceAccess;
    }
  | { type: 'FETCH'; replyTo: string; offset: number; maxBytes: number; maxWaitMs: number }
  | {
      type: 'REPLICA_FETCH';
      replyTo: string;
      replicaId: number;
      leaderEpoch: number;
      fetchOffset: number;
      lastFetchedEpoch: number;
      maxBytes: number;
      maxWaitMs: number;
    }
  /** Metadata changed the partition without a new leader epoch (ISR, replicas). */
  | ({ type: 'ASSIGNMENT' } & PartitionAssignment)
  | { type: 'ISR_CHECK' }
  /**
   * The node's one periodic tick (the broker fans it out; no partition keeps a timer of its own for
   * it): leaders with a follower behind check the ISR's lag, and when `retain` every replica applies
   * the topic's retention.
   */
  | NodeTick
  | { type: 'FETCH_EXPIRED'; id: number }
  /** The partition's one produce-deadline timer fired: acks=all batches due by atMs expire. */
  | { type: 'PRODUCE_DEADLINE'; atMs: number }
  /** The log holds everything below logEndOffset (not yet durable under flush.mode=fsync). */
  | { type: 'WRITTEN'; logEndOffset: number }
  /** Everything below logEndOffset is durable under the topic's flush mode. */
  | { type: 'APPENDED'; logEndOffset: number }
  | { type: 'APPEND_FAILED'; message: string }
  | { type: 'RETAINED'; logStartOffset: number }
  | { type: 'CONFIG'; config: TopicConfig }
  | { type: 'STOP' }
  | { type: 'DELETE' };

/** The producer epochs a produce is checked against (PartitionEvent PRODUCE, `access`). */
export interface ProduceAccess {
  /** The epoch the producer was granted (the request's accessEpoch; 0 when absent). */
  epoch: number;
  /** The topic's producer epoch in this broker's metadata image (0: never granted). */
  known: number;
}

export type NodeTick = {
  type: 'TICK';
  nowMs: number;
  retain: boolean;
  /** When each follower broker's fetch session last sent a request to this node, ms. @default {} */
  replicaSeenMs?: Readonly<Record<number, number>>;
};

export type WriterEvent =
  | { type: 'APPEND'; batch: Uint8Array; baseOffset: number; leaderEpoch: number; sync: boolean }
  | { type: 'RETAIN'; retentionMs: number; retentionBytes: number; offsetEnd: number };

export type ReaderEvent = {
  type: 'READ';
  replyTo: string;
  /** A follower's fetch (not counted as a client fetch). @default false */
  replica?: boolean;
  offset: number;
  maxBytes: number;
  endOffset: number;
  highWatermark: number;
  logStartOffset: number;
  logEndOffset: number;
};

export type { PartitionStore };
