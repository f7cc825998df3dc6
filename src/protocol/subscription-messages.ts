/**
 * Subscriptions: consumers sharing a named, durable cursor per partition (Pulsar's subscriptions,
 * Kafka's consumer groups). Messages on the wire, msgpack, checked where they enter.
 *
 *   tm.<c>.b.<broker>.consume.<topic>.<sub>    one consumer's session poll with this broker, for
 *                                              every partition of the topic it leads (long poll)
 *   tm.<c>.b.<broker>.ack.<topic>.<sub>        acks and nacks; answered once the acks are durable
 *   tm.<c>.b.<broker>.sub-admin.<topic>        describe / reset subscriptions on partitions it leads
 *   tm.<c>.admin.create-subscription.<topic>.<sub>   the controller: register a subscription (idempotent)
 *   tm.<c>.admin.delete-subscription.<topic>.<sub>   the controller: delete one
 *
 * A consume request lists every partition the consumer reads from this broker, each with its
 * permits: how many more messages the consumer can take now (its receive window minus what it
 * holds). The leader never sends more. A partition missing from a later request is detached. The
 * consumer's session lives as long as requests keep coming: none for `sessionTimeoutMs` and the
 * leader drops the consumer and hands its unacknowledged messages on.
 *
 * A reply carries whole record batches as stored (never re-encoded) and, per partition, the
 * deliveries: the offsets inside those batches meant for this consumer, each with its redelivery
 * count, as runs (so a batch of ten thousand small records costs three numbers, not twenty
 * thousand). The consumer decodes the batches and keeps only those offsets.
 */
import { encode } from '@msgpack/msgpack';
import { TidemarkError, type WireError } from './errors.js';
import { FETCH_WAIT_MS_MAX, PAYLOAD_BYTES_MAX, REQUEST_TIMEOUT_MS_MAX, TOPIC_PARTITIONS_MAX, wireErrorSchema } from './messages.js';
import { array, bool, bytes, int, object, oneOf, optional, str, type Infer, type Schema } from './validate.js';

export const SUBSCRIPTION_TYPES = ['Exclusive', 'Failover', 'Shared', 'Key_Shared'] as const;
export type SubscriptionType = (typeof SUBSCRIPTION_TYPES)[number];
export const INITIAL_POSITIONS = ['earliest', 'latest'] as const;
export type InitialPosition = (typeof INITIAL_POSITIONS)[number];

/** Subscription names: like topic names, up to 128 characters ('.' maps to '~' in subjects). */
const SUBSCRIPTION_NAME = /^[A-Za-z0-9._-]{1,128}$/;
export function isValidSubscriptionName(name: string): boolean {
  return SUBSCRIPTION_NAME.test(name) && name !== '.' && name !== '..';
}

/** Subscriptions one topic may have. */
export const TOPIC_SUBSCRIPTIONS_MAX = 256;
/** Messages one consume request may ask for on one partition (a consumer's receive window bound). */
export const CONSUMER_PERMITS_MAX = 100_000;
/** Batches per partition a consumer may say it holds (`cached`). */
export const CACHED_BATCHES_MAX = 8;
/** Acknowledged ranges one ack request may carry per partition. */
export const ACK_RANGES_MAX = 10_000;
/** Negative acks one request may carry per partition. */
export const NACKS_MAX = 10_000;
/** Bounds of a consumer's session timeout, ms. */
export const SESSION_TIMEOUT_MS_MIN = 1_000;
export const SESSION_TIMEOUT_MS_MAX = 300_000;
/** Bounds of the ack timeout (0 = off) and the negative-ack delay, ms. */
export const ACK_TIMEOUT_MS_MAX = 3_600_000;
export const NACK_DELAY_MS_MAX = 3_600_000;

const timeoutMs = int(1, REQUEST_TIMEOUT_MS_MAX);
const offset = int(0, Number.MAX_SAFE_INTEGER);
const partitionIndex = int(0, TOPIC_PARTITIONS_MAX - 1);
const subscriptionName: Schema<string> = (v, path) => {
  const s = str(128)(v, path);
  if (!isValidSubscriptionName(s)) throw new TidemarkError('INVALID_REQUEST', `${path}: invalid subscription name`);
  return s;
};
/** A flat list of [start, end) pairs: start0, end0, start1, end1, ... with start < end, ascending. */
const ranges =
  (maxRanges: number): Schema<number[]> =>
  (v, path) => {
    const flat = array(offset, maxRanges * 2)(v, path);
    if (flat.length % 2 !== 0) throw new TidemarkError('INVALID_REQUEST', `${path}: ranges need an even number of offsets`);
    for (let i = 0; i < flat.length; i += 2) {
      if (flat[i]! >= flat[i + 1]!) throw new TidemarkError('INVALID_REQUEST', `${path}[${i}]: empty range`);
      if (i > 0 && flat[i]! < flat[i - 1]!) throw new TidemarkError('INVALID_REQUEST', `${path}[${i}]: ranges out of order`);
    }
    return flat;
  };

// --- consume --------------------------------------------------------------------------------

export const consumeRequest = object({
  timeoutMs,
  /** Unique per consumer instance (the SDK draws it at random); the leader's key for the session. */
  consumerId: str(64),
  /** Failover orders consumers by priority level, then name. */
  consumerName: str(128),
  /** Lower is preferred (Pulsar's priorityLevel); Failover only. */
  priorityLevel: int(0, 1_000_000),
  /** The first consumer of a subscription on a partition sets its type; others must match. */
  type: oneOf(...SUBSCRIPTION_TYPES),
  /** No request for this long and the consumer is gone, ms. */
  sessionTimeoutMs: int(SESSION_TIMEOUT_MS_MIN, SESSION_TIMEOUT_MS_MAX),
  /** A message delivered and not acknowledged within it is delivered again, ms; 0 = off. */
  ackTimeoutMs: int(0, ACK_TIMEOUT_MS_MAX),
  partitions: array(
    object({
      partition: partitionIndex,
      /** How many more messages the consumer can take from this partition now. */
      permits: int(0, CONSUMER_PERMITS_MAX),
      /**
       * Base offsets of batches of this partition the consumer still holds (decoded) from earlier
       * replies: the leader sends only the deliveries for those, not their bytes again. A Shared
       * subscription hands one stored batch out in slices (a consumer's permits may be fewer than
       * the batch's records), and without this each slice carried the whole batch.
       */
      cached: optional(array(int(0, Number.MAX_SAFE_INTEGER), CACHED_BATCHES_MAX)),
    }),
    TOPIC_PARTITIONS_MAX,
  ),
  /** Reply size bound, bytes; the first batch goes even if larger so a consumer progresses. */
  maxBytes: int(1, PAYLOAD_BYTES_MAX),
  /** How long to hold the request when there is nothing to deliver, ms. */
  maxWaitMs: int(0, FETCH_WAIT_MS_MAX),
  /**
   * The `seq` of the last reply this consumer received from this broker (0: none yet). A reply the
   * consumer did not get (NATS delivers at most once) is seen here: its messages go back to be
   * delivered again, with their redelivery count unchanged.
   */
  received: optional(int(0, Number.MAX_SAFE_INTEGER)),
  /** The consumer closes: its unacknowledged messages go to the others at once. */
  close: optional(bool),
});
export type ConsumeRequest = Infer<typeof consumeRequest>;

export interface ConsumePartitionReply {
  partition: number;
  error?: WireError;
  /** Failover: this consumer is the partition's active one (others get nothing, but stay attached). */
  active?: boolean;
  /** Whole batches as stored, concatenated, except those the request said the consumer holds (`cached`). */
  records?: Uint8Array;
  /**
   * Offsets delivered with their redelivery count, as runs of consecutive offsets sharing a count:
   * firstOffset, length, redeliveryCount, ... ascending and disjoint (`deliveryRuns`, `forEachDelivery`).
   */
  deliveries?: number[];
  /** Records up to the high watermark the subscription has not acknowledged, as the reply left (Kafka's lag). */
  backlog?: number;
}

export interface ConsumeReply {
  /** Numbers the replies to one consumer from one broker; the consumer's next request says it got it (`received`). */
  seq: number;
  partitions: ConsumePartitionReply[];
}

// --- ack ------------------------------------------------------------------------------------

export const ackRequest = object({
  timeoutMs,
  consumerId: str(64),
  partitions: array(
    object({
      partition: partitionIndex,
      /** Individually acknowledged offsets as [start, end) ranges (flat). */
      ranges: optional(ranges(ACK_RANGES_MAX)),
      /** Everything below this offset is acknowledged (Exclusive and Failover only). */
      cumulative: optional(offset),
      /** Negative acks: deliver these again after `nackDelayMs`. */
      nacks: optional(array(offset, NACKS_MAX)),
      nackDelayMs: optional(int(0, NACK_DELAY_MS_MAX)),
    }),
    TOPIC_PARTITIONS_MAX,
  ),
});
export type AckRequest = Infer<typeof ackRequest>;

/** Answered once every ack in the request is durable (replicated like a produce with acks=all). */
export interface AckReply {
  partitions: Array<{ partition: number; error?: WireError }>;
}

// --- describe / reset -----------------------------------------------------------------------

export const RESET_TARGETS = ['earliest', 'latest', 'offset', 'timestamp'] as const;

export const subscriptionAdminRequest = object({
  timeoutMs,
  op: oneOf('describe', 'reset'),
  /** All of the topic's subscriptions when absent (describe only). */
  subscription: optional(subscriptionName),
  partitions: array(partitionIndex, TOPIC_PARTITIONS_MAX),
  /** reset: where the cursor goes; `value` is the offset or the timestamp (ms). */
  target: optional(object({ kind: oneOf(...RESET_TARGETS), value: optional(int(0, Number.MAX_SAFE_INTEGER)) })),
});
export type SubscriptionAdminRequest = Infer<typeof subscriptionAdminRequest>;

export interface ConsumerInfo {
  consumerId: string;
  consumerName: string;
  priorityLevel: number;
  /** Failover: the partition's active consumer. Other types: true. */
  active: boolean;
  /** Messages out to it and not acknowledged. */
  unacked: number;
  /** ms since its last request. */
  idleMs: number;
}

export interface SubscriptionPartitionInfo {
  subscription: string;
  /** Set by the attached consumers; absent while none is attached. */
  type?: SubscriptionType;
  /** Every offset below it is acknowledged (Kafka's committed offset). */
  markDelete: number;
  /** Acknowledged offsets at or above markDelete. */
  ackedAbove: number;
  /** Records up to the high watermark not yet acknowledged. */
  backlog: number;
  /** Delivered and not yet acknowledged. */
  unacked: number;
  consumers: ConsumerInfo[];
}

export interface SubscriptionAdminReply {
  partitions: Array<{ partition: number; error?: WireError; highWatermark?: number; subscriptions?: SubscriptionPartitionInfo[] }>;
}

// --- controller: the registry ----------------------------------------------------------------

export const createSubscriptionRequest = object({
  timeoutMs,
  topic: str(249),
  name: subscriptionName,
  /** Where the cursor starts on partitions that exist now; partitions added later start at their beginning. */
  initialPosition: oneOf(...INITIAL_POSITIONS),
});
export type CreateSubscriptionRequest = Infer<typeof createSubscriptionRequest>;

export const deleteSubscriptionRequest = object({ timeoutMs, topic: str(249), name: subscriptionName });
export type DeleteSubscriptionRequest = Infer<typeof deleteSubscriptionRequest>;

/** A subscription as the metadata log holds it. */
export interface SubscriptionMetadata {
  name: string;
  /** The metadata offset of its creation: a re-created subscription of the same name is a new one. */
  id: number;
  initialPosition: InitialPosition;
  /** Partitions the topic had at creation; higher ones were added later and start at their log start. */
  partitionsAtCreation: number;
}

export interface CreateSubscriptionReply {
  subscription: SubscriptionMetadata;
  /** False when it existed already (the call is idempotent). */
  created: boolean;
  metadataOffset: number;
}

// --- reply schemas (the SDK checks what it receives) ---------------------------------------

const deliveryRunsSchema: Schema<number[]> = (v, path) => {
  const flat = array(int(0, Number.MAX_SAFE_INTEGER), CONSUMER_PERMITS_MAX * 3)(v, path);
  if (flat.length % 3 !== 0) throw new TidemarkError('INVALID_REQUEST', `${path}: delivery runs come in triples`);
  for (let i = 0; i < flat.length; i += 3) if (flat[i + 1]! < 1) throw new TidemarkError('INVALID_REQUEST', `${path}[${i + 1}]: empty run`);
  return flat;
};

/** Deliveries (ascending offsets with their redelivery counts) as runs: firstOffset, length, redeliveryCount, ... */
export function deliveryRuns(deliveries: ReadonlyArray<{ offset: number; redeliveryCount: number }>): number[] {
  const runs: number[] = [];
  for (const d of deliveries) {
    const n = runs.length;
    if (n > 0 && runs[n - 3]! + runs[n - 2]! === d.offset && runs[n - 1] === d.redeliveryCount) runs[n - 2]!++;
    else runs.push(d.offset, 1, d.redeliveryCount);
  }
  return runs;
}

/** Calls `visit` for every delivered offset of `runs`, ascending. */
export function forEachDelivery(runs: readonly number[], visit: (offset: number, redeliveryCount: number) => void): void {
  for (let i = 0; i + 2 < runs.length; i += 3) for (let k = 0; k < runs[i + 1]!; k++) visit(runs[i]! + k, runs[i + 2]!);
}

export const consumeReply: Schema<ConsumeReply> = object({
  seq: int(0, Number.MAX_SAFE_INTEGER),
  partitions: array((v, path) => {
    const o = object({
      partition: partitionIndex,
      error: optional(wireErrorSchema),
      active: optional(bool),
      records: optional(bytes(PAYLOAD_BYTES_MAX)),
      deliveries: optional(deliveryRunsSchema),
      backlog: optional(offset),
    })(v, path);
    const out: ConsumePartitionReply = { partition: o.partition };
    if (o.error !== undefined) out.error = o.error;
    if (o.active !== undefined) out.active = o.active;
    if (o.records !== undefined) out.records = o.records;
    if (o.deliveries !== undefined) out.deliveries = o.deliveries;
    if (o.backlog !== undefined) out.backlog = o.backlog;
    return out;
  }, TOPIC_PARTITIONS_MAX),
});

export const ackReply: Schema<AckReply> = object({
  partitions: array((v, path) => {
    const o = object({ partition: partitionIndex, error: optional(wireErrorSchema) })(v, path);
    return o.error === undefined ? { partition: o.partition } : { partition: o.partition, error: o.error };
  }, TOPIC_PARTITIONS_MAX),
});

const consumerInfo: Schema<ConsumerInfo> = object({
  consumerId: str(64),
  consumerName: str(128),
  priorityLevel: int(0, 1_000_000),
  active: bool,
  unacked: int(0, Number.MAX_SAFE_INTEGER),
  idleMs: int(0, Number.MAX_SAFE_INTEGER),
});

const subscriptionPartitionInfo: Schema<SubscriptionPartitionInfo> = (v, path) => {
  const o = object({
    subscription: subscriptionName,
    type: optional(oneOf(...SUBSCRIPTION_TYPES)),
    markDelete: offset,
    ackedAbove: offset,
    backlog: offset,
    unacked: offset,
    consumers: array(consumerInfo, 100_000),
  })(v, path);
  const { type, ...rest } = o;
  return type === undefined ? rest : { ...rest, type };
};

export const subscriptionAdminReply: Schema<SubscriptionAdminReply> = object({
  partitions: array((v, path) => {
    const o = object({
      partition: partitionIndex,
      error: optional(wireErrorSchema),
      highWatermark: optional(offset),
      subscriptions: optional(array(subscriptionPartitionInfo, TOPIC_SUBSCRIPTIONS_MAX)),
    })(v, path);
    const out: SubscriptionAdminReply['partitions'][number] = { partition: o.partition };
    if (o.error !== undefined) out.error = o.error;
    if (o.highWatermark !== undefined) out.highWatermark = o.highWatermark;
    if (o.subscriptions !== undefined) out.subscriptions = o.subscriptions;
    return out;
  }, TOPIC_PARTITIONS_MAX),
});

export const subscriptionMetadata: Schema<SubscriptionMetadata> = object({
  name: subscriptionName,
  id: int(0, Number.MAX_SAFE_INTEGER),
  initialPosition: oneOf(...INITIAL_POSITIONS),
  partitionsAtCreation: int(1, TOPIC_PARTITIONS_MAX),
});

export const createSubscriptionReply: Schema<CreateSubscriptionReply> = object({
  subscription: subscriptionMetadata,
  created: bool,
  metadataOffset: int(-1, Number.MAX_SAFE_INTEGER),
});

/** Replies carry binary records: size the encoder for them up front (see messages.encodeMessage). */
export function encodeConsumeReply(reply: ConsumeReply): Uint8Array {
  let binaryBytes = 0;
  for (const p of reply.partitions) binaryBytes += (p.records?.length ?? 0) + (p.deliveries?.length ?? 0) * 9;
  return encode(reply, { ignoreUndefined: true, initialBufferSize: binaryBytes + 1024 });
}
