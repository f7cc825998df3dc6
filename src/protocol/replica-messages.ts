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
import { bytes, int, object, optional, type Infer, type Schema } from './validate.js';
import { FETCH_WAIT_MS_MAX, PAYLOAD_BYTES_MAX, REQUEST_TIMEOUT_MS_MAX } from './messages.js';

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
