/**
 * Follower -> leader replication (subject `tm.<c>.b.<leader>.replica-fetch.<topic>.<p>`), Kafka's
 * follower Fetch with KIP-320 divergence detection. The follower's `fetchOffset` is its log end
 * offset (counting only what it has made durable under the topic's flush.mode), so every fetch
 * also acknowledges what the follower holds; the leader's high watermark moves on it.
 *
 * `leaderEpoch` is the epoch the follower believes current: a leader with a newer one answers
 * FENCED_LEADER_EPOCH, one with an older one UNKNOWN_LEADER_EPOCH. `lastFetchedEpoch` is the epoch
 * of the follower's last batch: when the leader's log for that epoch ends before `fetchOffset`
 * (the follower holds records the leader does not), the reply carries `divergingEpoch` and no
 * records, and the follower truncates to min(endOffset, its own end of that epoch) and fetches again.
 */
import { encode } from '@msgpack/msgpack';
import type { WireError } from './errors.js';
import { array, bytes, int, object, optional, str, type Infer, type Schema } from './validate.js';
import { FETCH_WAIT_MS_MAX, PAYLOAD_BYTES_MAX, REQUEST_TIMEOUT_MS_MAX, TOPIC_PARTITIONS_MAX, wireErrorSchema } from './messages.js';

const offset = int(0, Number.MAX_SAFE_INTEGER);
const epoch = int(-1, 2 ** 31 - 1);

export const replicaFetchRequest = object({
  timeoutMs: int(1, REQUEST_TIMEOUT_MS_MAX),
  replicaId: int(0, 2 ** 31 - 1),
  leaderEpoch: int(0, 2 ** 31 - 1),
  fetchOffset: offset,
  /** -1 when the follower's log is empty. */
  lastFetchedEpoch: epoch,
  maxBytes: int(1, PAYLOAD_BYTES_MAX),
  maxWaitMs: int(0, FETCH_WAIT_MS_MAX),
});
export type ReplicaFetchRequest = Infer<typeof replicaFetchRequest>;

export interface ReplicaFetchReply {
  highWatermark: number;
  logStartOffset: number;
  logEndOffset: number;
  /** Whole batches from fetchOffset, concatenated, as stamped by the leader. */
  records: Uint8Array;
  /** Present when the follower's log diverges: truncate, then fetch again. */
  divergingEpoch?: { epoch: number; endOffset: number };
}

export const replicaFetchReply: Schema<ReplicaFetchReply> = (v, path) => {
  const o = object({
    highWatermark: offset,
    logStartOffset: offset,
    logEndOffset: offset,
    records: bytes(PAYLOAD_BYTES_MAX),
    divergingEpoch: optional(object({ epoch, endOffset: int(-1, Number.MAX_SAFE_INTEGER) })),
  })(v, path);
  const { divergingEpoch, ...rest } = o;
  return divergingEpoch === undefined ? rest : { ...rest, divergingEpoch };
};

// --- replica fetch sessions (KIP-227), subject `tm.<c>.b.<leader>.replica-fetch` ---------------
//
// One request carries every partition a follower broker copies from a leader broker. A new session
// (`sessionId` 0) lists every partition the follower waits on; the leader answers with a fresh
// session id, and each later request (epoch 1, 2, ...) lists only partitions whose fetch state
// changed since the previous request, plus those to forget. An idle request lists nothing and
// touches no partition on the leader. See docs/protocol.md, "Replica fetch sessions".

/** Partitions named in one session request (listed plus removed), and in one session. */
export const REPLICA_SESSION_PARTITIONS_MAX = 20_000;

const topicId = str(64);
const partitionIndex = int(0, TOPIC_PARTITIONS_MAX - 1);

export const replicaSessionPartition = object({
  topicId,
  partition: partitionIndex,
  /** The leader epoch the follower believes current. */
  leaderEpoch: int(0, 2 ** 31 - 1),
  /** The follower's log end (durable records only under flush.mode=fsync). */
  fetchOffset: offset,
  lastFetchedEpoch: epoch,
});
export type ReplicaSessionPartition = Infer<typeof replicaSessionPartition>;

export const replicaFetchSessionRequest = object({
  timeoutMs: int(1, REQUEST_TIMEOUT_MS_MAX),
  replicaId: int(0, 2 ** 31 - 1),
  /** 0: start a new session (the request lists every partition). */
  sessionId: int(0, 2 ** 31 - 1),
  /** 0 with a new session; then the leader's reply count so far in this session. */
  sessionEpoch: int(0, 2 ** 31 - 1),
  /** Bound on the records of the whole reply, bytes. */
  maxBytes: int(1, PAYLOAD_BYTES_MAX),
  maxWaitMs: int(0, FETCH_WAIT_MS_MAX),
  partitions: array(replicaSessionPartition, REPLICA_SESSION_PARTITIONS_MAX),
  removed: array(object({ topicId, partition: partitionIndex }), REPLICA_SESSION_PARTITIONS_MAX),
});
export type ReplicaFetchSessionRequest = Infer<typeof replicaFetchSessionRequest>;

/**
 * One partition's answer: the fetch state it answers (echoed, so the follower applies it only to
 * that exact state), and either the leader's reply (records, divergence) or the partition's error.
 */
export interface ReplicaSessionPartitionReply extends ReplicaSessionPartition {
  data?: ReplicaFetchReply;
  error?: WireError;
}

export interface ReplicaFetchSessionReply {
  sessionId: number;
  /** Only partitions with something to say: records, divergence or an error. */
  partitions: ReplicaSessionPartitionReply[];
}

export const replicaFetchSessionReply: Schema<ReplicaFetchSessionReply> = object({
  sessionId: int(1, 2 ** 31 - 1),
  partitions: array((v, path) => {
    const o = object({
      topicId,
      partition: partitionIndex,
      leaderEpoch: int(0, 2 ** 31 - 1),
      fetchOffset: offset,
      lastFetchedEpoch: epoch,
      data: optional(replicaFetchReply),
      error: optional(wireErrorSchema),
    })(v, path);
    const { data, error, ...rest } = o;
    const out: ReplicaSessionPartitionReply = rest;
    if (data !== undefined) out.data = data;
    if (error !== undefined) out.error = error;
    return out;
  }, REPLICA_SESSION_PARTITIONS_MAX),
});

/** Encodes a session reply with its buffer sized for the records it carries. */
export function encodeSessionReply(reply: ReplicaFetchSessionReply): Uint8Array {
  let binaryBytes = 0;
  for (const p of reply.partitions) binaryBytes += (p.data?.records.length ?? 0) + 160;
  return encode(reply, { ignoreUndefined: true, initialBufferSize: binaryBytes + 1024 });
}
