/**
 * Producer access modes (issue 12; Pulsar's four): who may write to a topic, across all its
 * partitions. Messages on the wire, msgpack, checked where they enter.
 *
 *   tm.<c>.admin.producer-attach.<topic>     the controller: a producer asks to write (Shared), to be the
 *                                            topic's one writer (Exclusive, ExclusiveWithFencing), or to
 *                                            queue for it (WaitForExclusive: long-polled, asked again)
 *   tm.<c>.admin.producer-heartbeat.<topic>  the controller: a producer's session is alive (every producer)
 *   tm.<c>.admin.producer-detach.<topic>     the controller: a producer closed
 *   tm.<c>.b.<broker>.fence.<topic>   a partition leader: write a fence (a control record with the
 *                                     topic's new producer epoch) to the partitions it leads
 *
 * Safety rests on one number, the topic's **producer epoch**, kept in the metadata log (one entry
 * per change of exclusive owner, never per record). Every exclusive grant raises it. Every produce
 * request carries the epoch its producer was granted (`accessEpoch`), and a partition leader
 * refuses PRODUCER_FENCED a request whose epoch is below the highest it knows: from its metadata,
 * or from a fence record in its log. A new exclusive producer writes a fence to every partition,
 * committed (acks=all), before its first record, so no leader, however stale its metadata, takes a
 * write of an older epoch after the new producer's first acknowledgement; fence records are
 * replicated, so a new leader after a failover knows them too.
 *
 * Sessions (who is attached, who waits) are the controller's memory, as broker heartbeats are:
 * they decide Pulsar's polite refusals (PRODUCER_BUSY) and hand-overs, never safety. A producer not
 * heard from for the cluster's producer session timeout loses its claim; a new controller gives
 * every producer one full timeout to find it before granting an Exclusive claim.
 */
import { FETCH_WAIT_MS_MAX, PRODUCE_PARTITIONS_MAX, REQUEST_TIMEOUT_MS_MAX, TOPIC_PARTITIONS_MAX } from './messages.js';
import { TidemarkError } from './errors.js';
import { int, object, oneOf, optional, array, str, bool, type Infer, type Schema } from './validate.js';

export const ACCESS_MODES = ['Shared', 'Exclusive', 'ExclusiveWithFencing', 'WaitForExclusive'] as const;
export type AccessMode = (typeof ACCESS_MODES)[number];

/** Producer names: 1-128 of [A-Za-z0-9._-]. */
const PRODUCER_NAME = /^[A-Za-z0-9._-]{1,128}$/;
export function isValidProducerName(name: string): boolean {
  return PRODUCER_NAME.test(name);
}

/** The highest producer epoch a topic can reach. */
export const PRODUCER_EPOCH_MAX = Number.MAX_SAFE_INTEGER;
/** Producer sessions the controller keeps per topic (Shared ones, the owner, waiters). Beyond it: BUSY. */
export const TOPIC_PRODUCERS_MAX = 1_000;
/** Producer sessions the controller keeps in all (per node). Beyond it: BUSY. */
export const NODE_PRODUCERS_MAX = 100_000;

const timeoutMs = int(1, REQUEST_TIMEOUT_MS_MAX);
const epoch = int(0, PRODUCER_EPOCH_MAX);
const topic = str(249);
/** Random per producer instance: a retried attach of the same instance is recognised as it. */
const sessionId = str(64);
const producerName: Schema<string> = (v, path) => {
  const s = str(128)(v, path);
  if (!isValidProducerName(s)) throw new TidemarkError('INVALID_REQUEST', `${path}: invalid producer name`);
  return s;
};

export const producerAttachRequest = object({
  timeoutMs,
  topic,
  accessMode: oneOf(...ACCESS_MODES),
  producerName,
  sessionId,
  /**
   * WaitForExclusive: how long the controller may hold this request while the producer waits
   * before answering `waiting`; the producer then asks again (which also keeps its place).
   */
  maxWaitMs: int(0, FETCH_WAIT_MS_MAX),
  /**
   * WaitForExclusive: the topic's producer epoch when this producer began to wait. A fencing
   * (ExclusiveWithFencing) above it fences the waiter, even on a controller that never saw it wait.
   */
  waitingSince: optional(epoch),
});
export type ProducerAttachRequest = Infer<typeof producerAttachRequest>;

export interface ProducerAttachReply {
  /** granted: write with `epoch`. waiting: a WaitForExclusive producer holds place `position` (0 = next); ask again. */
  status: 'granted' | 'waiting';
  /** The producer epoch to write with (granted), or the topic's current one (waiting). */
  epoch: number;
  /** Granted an exclusive claim: write a fence to every partition (fence request) before the first record. */
  fence: boolean;
  /** Waiting: how many producers wait before this one. */
  position?: number;
  /** How often to heartbeat, ms (a third of the cluster's producer session timeout). */
  heartbeatIntervalMs: number;
}
export const producerAttachReply: Schema<ProducerAttachReply> = object({
  status: oneOf('granted', 'waiting'),
  epoch,
  fence: bool,
  position: optional(int(0, NODE_PRODUCERS_MAX)),
  heartbeatIntervalMs: int(1, REQUEST_TIMEOUT_MS_MAX),
});

/**
 * Every producer heartbeats while open. It says everything the controller needs to take the
 * session on after a controller change: a new controller that never saw the producer registers it
 * (or answers PRODUCER_FENCED when the topic's epoch has moved past `epoch`, or, for an owner, when
 * the metadata names another owner).
 */
export const producerHeartbeatRequest = object({ timeoutMs, topic, accessMode: oneOf(...ACCESS_MODES), producerName, sessionId, epoch });
export type ProducerHeartbeatRequest = Infer<typeof producerHeartbeatRequest>;
export interface ProducerHeartbeatReply {
  epoch: number;
}
export const producerHeartbeatReply: Schema<ProducerHeartbeatReply> = object({ epoch });

/** A producer closed: its session goes, and an exclusive claim passes to the first waiter. Idempotent. */
export const producerDetachRequest = object({ timeoutMs, topic, sessionId });
export type ProducerDetachRequest = Infer<typeof producerDetachRequest>;
export interface ProducerDetachReply {
  metadataOffset: number;
}
export const producerDetachReply: Schema<ProducerDetachReply> = object({ metadataOffset: int(-1, Number.MAX_SAFE_INTEGER) });

/**
 * Fence the topic's partitions this broker leads at `accessEpoch`: each leader appends one control
 * record holding the epoch and answers once it is committed (acks=all), with its offset. Refused
 * PRODUCER_FENCED when the leader knows a higher epoch. Answered as a produce request is
 * (ProduceResponse, one outcome per entry, in order).
 */
export const fenceRequest = object({
  timeoutMs,
  accessEpoch: epoch,
  partitions: array(
    object({
      partition: int(0, TOPIC_PARTITIONS_MAX - 1),
      /** The leader epoch the client's metadata shows (checked as produce checks it). Absent: not checked. */
      leaderEpoch: optional(int(0, 2 ** 31 - 1)),
    }),
    PRODUCE_PARTITIONS_MAX,
  ),
});
export type FenceRequest = Infer<typeof fenceRequest>;

/** The metadata image's view of a topic's producer access (TopicInfo.producerAccess). */
export interface ProducerAccessInfo {
  /** The topic's producer epoch: 0 until the first exclusive grant, raised by each one. */
  epoch: number;
  /** The epoch of the last ExclusiveWithFencing grant (0: none): waiters from before it are fenced. */
  fencedEpoch: number;
  /** The exclusive producer, if any. */
  owner?: { name: string; sessionId: string; accessMode: AccessMode };
}
export const NO_PRODUCER_ACCESS: ProducerAccessInfo = { epoch: 0, fencedEpoch: 0 };
