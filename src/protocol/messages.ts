/**
 * Requests and replies on every subject (see subjects.ts), msgpack on the wire. Each request type
 * has a schema that checks shape and bounds where the bytes enter; replies are either the body or
 * `{ error: { code, message } }`.
 */
import { decode, encode } from '@msgpack/msgpack';
import { isErrorCode, TidemarkError, type WireError } from './errors.js';
// Types only: subscription-messages.ts imports this module at load time, so no value may come back.
import type { SubscriptionMetadata } from './subscription-messages.js';
import { array, bool, bytes, int, object, oneOf, optional, str, stringMap, type Infer, type Schema } from './validate.js';

/** Upper bound on any request's time budget, ms. */
export const REQUEST_TIMEOUT_MS_MAX = 300_000;
/** Upper bound on how long a fetch may wait for data, ms. */
export const FETCH_WAIT_MS_MAX = 30_000;
/** Partitions per topic, upper bound. */
export const TOPIC_PARTITIONS_MAX = 10_000;
export const REPLICATION_FACTOR_MAX = 16;
/** Topic config: entries and key/value length bounds. */
export const TOPIC_CONFIG_ENTRIES_MAX = 64;
export const TOPIC_CONFIG_LENGTH_MAX = 1024;
/** Partitions named in one offsets request. */
export const OFFSETS_PARTITIONS_MAX = TOPIC_PARTITIONS_MAX;
/** Largest single payload we accept before a NATS limit would refuse it anyway, bytes. */
export const PAYLOAD_BYTES_MAX = 64 * 1024 * 1024;

const timeoutMs = int(1, REQUEST_TIMEOUT_MS_MAX);
const offset = int(0, Number.MAX_SAFE_INTEGER);
const topicName = str(249);
const partitionIndex = int(0, TOPIC_PARTITIONS_MAX - 1);

// --- requests -------------------------------------------------------------------------------

/** Partition batches in one produce request (Kafka's ProduceRequest carries many too). */
export const PRODUCE_PARTITIONS_MAX = TOPIC_PARTITIONS_MAX;

/**
 * One produce request carries batches for any number of one topic's partitions led by the broker
 * it is sent to (subject `tm.<c>.b.<broker>.produce.<topic>`), each with its own outcome, so a
 * producer writing to many partitions sends one request per leader broker, not one per partition.
 * An entry may name a partition twice: its batches are appended in the order listed.
 * acks: 0 = no reply, 1 = after the leader's append, -1 ("all") = after the high watermark passes it.
 */
export const produceRequest = object({
  /** acks=all: the leader answers REQUEST_TIMED_OUT if a batch is not committed within it of arrival. */
  timeoutMs,
  acks: oneOf(0, 1, -1),
  /**
   * The topic producer epoch this producer was granted (producer-messages.ts); a leader that knows
   * a higher one refuses every entry PRODUCER_FENCED. Absent: 0 (a producer that never attached).
   */
  accessEpoch: optional(int(0, Number.MAX_SAFE_INTEGER)),
  partitions: array(
    object({
      partition: partitionIndex,
      batch: bytes(PAYLOAD_BYTES_MAX),
      /**
       * The leader epoch the client's metadata shows for the partition: an older one than the
       * leader's is refused FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH (both retriable).
       * Absent: not checked.
       */
      leaderEpoch: optional(int(0, 2 ** 31 - 1)),
    }),
    PRODUCE_PARTITIONS_MAX,
  ),
});
export type ProduceRequest = Infer<typeof produceRequest>;

export const fetchRequest = object({
  timeoutMs,
  offset,
  /** Reply size bound, bytes; the first batch is returned even if larger so readers progress. */
  maxBytes: int(1, PAYLOAD_BYTES_MAX),
  /** How long to wait for data when there is none at `offset`, ms. 0 = answer at once. */
  maxWaitMs: int(0, FETCH_WAIT_MS_MAX),
});
export type FetchRequest = Infer<typeof fetchRequest>;

export const offsetsRequest = object({
  timeoutMs,
  partitions: array(object({ topic: topicName, partition: partitionIndex }), OFFSETS_PARTITIONS_MAX),
});
export type OffsetsRequest = Infer<typeof offsetsRequest>;

export const metadataRequest = object({
  timeoutMs,
  /** Topics to describe; all when absent. */
  topics: optional(array(topicName, 1000)),
  /**
   * The newest metadata offset the client has seen: a broker behind it holds the request until it
   * catches up (or the budget runs out), so a client never reads metadata older than it already had.
   */
  minOffset: optional(int(-1, Number.MAX_SAFE_INTEGER)),
  /**
   * The client found a topic or partition missing and asks whether that is so: the broker first
   * fetches, without waiting, what the controller has committed, and says in `caughtUp` whether it
   * then has all of it. Costs the broker one controller round trip; only sent after a miss.
   */
  confirm: optional(bool),
});
export type MetadataRequest = Infer<typeof metadataRequest>;

export const createTopicRequest = object({
  timeoutMs,
  name: topicName,
  partitions: int(1, TOPIC_PARTITIONS_MAX),
  replicationFactor: int(1, REPLICATION_FACTOR_MAX),
  config: stringMap(TOPIC_CONFIG_ENTRIES_MAX, TOPIC_CONFIG_LENGTH_MAX),
});
export type CreateTopicRequest = Infer<typeof createTopicRequest>;

export const deleteTopicRequest = object({ timeoutMs, name: topicName });
export type DeleteTopicRequest = Infer<typeof deleteTopicRequest>;

/** Sets and deletes config keys of a topic (Kafka's incremental alter configs). */
export const alterConfigRequest = object({
  timeoutMs,
  name: topicName,
  set: stringMap(TOPIC_CONFIG_ENTRIES_MAX, TOPIC_CONFIG_LENGTH_MAX),
  delete: array(str(TOPIC_CONFIG_LENGTH_MAX), TOPIC_CONFIG_ENTRIES_MAX),
});
export type AlterConfigRequest = Infer<typeof alterConfigRequest>;

/** Grows a topic to `totalCount` partitions. */
export const createPartitionsRequest = object({ timeoutMs, name: topicName, totalCount: int(1, TOPIC_PARTITIONS_MAX) });
export type CreatePartitionsRequest = Infer<typeof createPartitionsRequest>;

/**
 * Leader election on demand (Kafka's ElectLeaders): `preferred` moves each partition's leadership to
 * its first replica when that one is alive and in sync; `unclean` gives an offline partition a
 * leader from any live replica, accepting the loss of what only the ISR had.
 */
export const electLeadersRequest = object({
  timeoutMs,
  type: oneOf('preferred', 'unclean'),
  /** All topics when absent. */
  topic: optional(topicName),
  /** All partitions of `topic` when absent. */
  partitions: optional(array(partitionIndex, TOPIC_PARTITIONS_MAX)),
});
export type ElectLeadersRequest = Infer<typeof electLeadersRequest>;

// --- replies --------------------------------------------------------------------------------

/** One partition's answer to its batch (what the partition leader says). */
export interface ProduceReply {
  baseOffset: number;
  logStartOffset: number;
}

/** The answer to a produce request: one entry per request entry, in the same order. */
export interface ProduceResponse {
  partitions: Array<{ partition: number } & ({ baseOffset: number; logStartOffset: number; error?: undefined } | { error: WireError })>;
}

export interface FetchReply {
  highWatermark: number;
  logStartOffset: number;
  /** Whole batches, concatenated; the first may start before the requested offset. */
  records: Uint8Array;
}

export interface PartitionOffsets {
  topic: string;
  partition: number;
  error?: WireError;
  logStartOffset: number;
  logEndOffset: number;
  highWatermark: number;
  /** Answered by the leader: its leader epoch and what it knows of every replica (itself included). */
  leaderEpoch?: number;
  replicas?: ReplicaState[];
}

export interface ElectLeadersResult {
  topic: string;
  partition: number;
  /** The leader after the election (or the unchanged one). */
  leader: number;
  error?: WireError;
}

export interface ElectLeadersReply {
  results: ElectLeadersResult[];
  metadataOffset: number;
}

/** What the leader knows of one replica of a partition it leads. */
export interface ReplicaState {
  brokerId: number;
  /** The replica's log end offset as of its last fetch (-1: not heard from since this leadership began). */
  logEndOffset: number;
  /** ms since the replica was last caught up to the leader's log end (-1: never). */
  lagMs: number;
}

export interface OffsetsReply {
  partitions: PartitionOffsets[];
}

export interface PartitionMetadata {
  partition: number;
  /** Broker id of the leader, -1 when the partition has none. */
  leader: number;
  leaderEpoch: number;
  replicas: number[];
  isr: number[];
}

export interface TopicMetadata {
  name: string;
  topicId: string;
  config: Record<string, string>;
  partitions: PartitionMetadata[];
  /**
   * The topic's subscriptions as the metadata log registers them, sorted by name. Absent when it
   * has none (and from brokers that predate subscriptions): read it as `?? []`.
   */
  subscriptions?: SubscriptionMetadata[];
  /** The topic's producer epoch (issue 12); absent: 0. */
  producerEpoch?: number;
  /** The topic's exclusive producer, if any: its name and access mode. */
  exclusiveProducer?: { name: string; accessMode: string };
}

export interface BrokerMetadata {
  id: number;
  /** Registration epoch. */
  epoch: number;
  rack: string;
  fenced: boolean;
}

export interface MetadataReply {
  /** The answering broker's metadata offset. */
  offset: number;
  /**
   * Only in answer to `confirm`: the broker fetched from the controller after the request arrived
   * and has everything it had committed, so a topic or partition missing from this reply does not
   * exist (the client fails at once instead of retrying). Absent or false: the broker may lag.
   */
  caughtUp?: boolean;
  brokers: BrokerMetadata[];
  topics: TopicMetadata[];
}

/** Replies of the admin changes carry the metadata offset of their commit (read-your-writes). */
export interface CreateTopicReply {
  topic: TopicMetadata;
  metadataOffset: number;
}

export interface DeleteTopicReply {
  metadataOffset: number;
}

// --- schemas for replies (the SDK validates what it receives, too) --------------------------

export const wireErrorSchema: Schema<WireError> = (v, path) => {
  const o = object({ code: str(64), message: str(4096), logRange: optional(object({ logStartOffset: offset, logEndOffset: offset })) })(v, path);
  if (!isErrorCode(o.code)) throw new TidemarkError('INVALID_REQUEST', `${path}.code: unknown error code ${o.code}`);
  return o.logRange === undefined ? { code: o.code, message: o.message } : { code: o.code, message: o.message, logRange: o.logRange };
};

export const produceReply: Schema<ProduceReply> = object({ baseOffset: offset, logStartOffset: offset });
export const produceResponse: Schema<ProduceResponse> = object({
  partitions: array((v, path) => {
    const o = object({ partition: partitionIndex, baseOffset: optional(offset), logStartOffset: optional(offset), error: optional(wireErrorSchema) })(v, path);
    if (o.error !== undefined) return { partition: o.partition, error: o.error };
    if (o.baseOffset === undefined || o.logStartOffset === undefined) throw new TidemarkError('INVALID_REQUEST', `${path}: neither offsets nor an error`);
    return { partition: o.partition, baseOffset: o.baseOffset, logStartOffset: o.logStartOffset };
  }, PRODUCE_PARTITIONS_MAX),
});
export const fetchReply: Schema<FetchReply> = object({
  highWatermark: offset,
  logStartOffset: offset,
  records: bytes(PAYLOAD_BYTES_MAX),
});
const partitionMetadata: Schema<PartitionMetadata> = object({
  partition: partitionIndex,
  leader: int(-1, 2 ** 31 - 1),
  leaderEpoch: int(-1, 2 ** 31 - 1),
  replicas: array(int(0, 2 ** 31 - 1), REPLICATION_FACTOR_MAX),
  isr: array(int(0, 2 ** 31 - 1), REPLICATION_FACTOR_MAX),
});
/**
 * subscription-messages.ts's `subscriptionMetadata` schema, repeated here because that module
 * imports this one (an import back would run before its constants exist). Same bounds: names of
 * 1-128 of [A-Za-z0-9._-]; at most 256 per topic (TOPIC_SUBSCRIPTIONS_MAX).
 */
const SUBSCRIPTION_NAME = /^[A-Za-z0-9._-]{1,128}$/;
const subscriptionMetadataSchema: Schema<SubscriptionMetadata> = (v, path) => {
  const o = object({
    name: str(128),
    id: int(0, Number.MAX_SAFE_INTEGER),
    initialPosition: oneOf('earliest', 'latest'),
    partitionsAtCreation: int(1, TOPIC_PARTITIONS_MAX),
  })(v, path);
  if (!SUBSCRIPTION_NAME.test(o.name) || o.name === '.' || o.name === '..') throw new TidemarkError('INVALID_REQUEST', `${path}.name: invalid subscription name`);
  return o;
};
const topicMetadata: Schema<TopicMetadata> = (v, path) => {
  const o = object({
    name: topicName,
    topicId: str(64),
    config: stringMap(TOPIC_CONFIG_ENTRIES_MAX, TOPIC_CONFIG_LENGTH_MAX),
    partitions: array(partitionMetadata, TOPIC_PARTITIONS_MAX),
    subscriptions: optional(array(subscriptionMetadataSchema, 256)),
    producerEpoch: optional(int(0, Number.MAX_SAFE_INTEGER)),
    exclusiveProducer: optional(object({ name: str(128), accessMode: str(32) })),
  })(v, path);
  const { subscriptions, producerEpoch, exclusiveProducer, ...rest } = o;
  return {
    ...rest,
    ...(subscriptions === undefined || subscriptions.length === 0 ? {} : { subscriptions }),
    ...(producerEpoch === undefined || producerEpoch === 0 ? {} : { producerEpoch }),
    ...(exclusiveProducer === undefined ? {} : { exclusiveProducer }),
  };
};
export const metadataReply: Schema<MetadataReply> = object({
  offset: int(-1, Number.MAX_SAFE_INTEGER),
  caughtUp: optional(bool),
  brokers: array(object({ id: int(0, 2 ** 31 - 1), epoch: int(0, Number.MAX_SAFE_INTEGER), rack: str(255), fenced: bool }), 10_000),
  topics: array(topicMetadata, 100_000),
});
export const createTopicReply: Schema<CreateTopicReply> = object({ topic: topicMetadata, metadataOffset: int(-1, Number.MAX_SAFE_INTEGER) });
export const deleteTopicReply: Schema<DeleteTopicReply> = object({ metadataOffset: int(-1, Number.MAX_SAFE_INTEGER) });
const replicaState: Schema<ReplicaState> = object({
  brokerId: int(0, 2 ** 31 - 1),
  logEndOffset: int(-1, Number.MAX_SAFE_INTEGER),
  lagMs: int(-1, Number.MAX_SAFE_INTEGER),
});
export const electLeadersReply: Schema<ElectLeadersReply> = object({
  results: array(
    (v, path) => {
      const o = object({ topic: topicName, partition: partitionIndex, leader: int(-1, 2 ** 31 - 1), error: optional(wireErrorSchema) })(v, path);
      const { error, ...rest } = o;
      return error === undefined ? rest : { ...rest, error };
    },
    100_000,
  ),
  metadataOffset: int(-1, Number.MAX_SAFE_INTEGER),
});
export const offsetsReply: Schema<OffsetsReply> = object({
  partitions: array(
    (v, path) => {
      const o = object({
        topic: topicName,
        partition: partitionIndex,
        logStartOffset: int(-1, Number.MAX_SAFE_INTEGER),
        logEndOffset: int(-1, Number.MAX_SAFE_INTEGER),
        highWatermark: int(-1, Number.MAX_SAFE_INTEGER),
        error: optional(wireErrorSchema),
        leaderEpoch: optional(int(0, 2 ** 31 - 1)),
        replicas: optional(array(replicaState, REPLICATION_FACTOR_MAX)),
      })(v, path);
      const { error, leaderEpoch, replicas, ...rest } = o;
      const out: PartitionOffsets = error === undefined ? rest : { ...rest, error };
      if (leaderEpoch !== undefined) out.leaderEpoch = leaderEpoch;
      if (replicas !== undefined) out.replicas = replicas;
      return out;
    },
    OFFSETS_PARTITIONS_MAX,
  ),
});

// --- encoding -------------------------------------------------------------------------------

/** Decodes and checks a request; throws INVALID_REQUEST on bad msgpack, shape or bounds. */
export function decodeRequest<T>(data: Uint8Array, schema: Schema<T>): T {
  let value: unknown;
  try {
    value = decode(data);
  } catch (cause) {
    throw new TidemarkError('INVALID_REQUEST', 'request is not valid msgpack', { cause });
  }
  return schema(value, '');
}

/** Room for a message's fields besides its binary ones, bytes. */
const ENVELOPE_BYTES = 1024;

/**
 * Encodes a message. The encoder's buffer is sized for the message's binary fields up front: the
 * default (2 KiB, doubling) re-copied a 1 MiB batch about ten times (bench/produce.ts profile).
 */
export function encodeMessage(body: object): Uint8Array {
  let binaryBytes = 0;
  for (const value of Object.values(body)) if (value instanceof Uint8Array) binaryBytes += value.length;
  return encode(body, { ignoreUndefined: true, initialBufferSize: binaryBytes + ENVELOPE_BYTES });
}

export function encodeError(error: WireError): Uint8Array {
  const { code, message, logRange } = error;
  return encode({ error: logRange === undefined ? { code, message } : { code, message, logRange } });
}

/** Decodes a reply: the body if it passes its schema, or throws the TidemarkError it carries. */
export function decodeReply<T>(data: Uint8Array, schema: Schema<T>): T {
  let value: unknown;
  try {
    value = decode(data);
  } catch (cause) {
    throw new TidemarkError('INTERNAL', 'reply is not valid msgpack', { cause });
  }
  if (typeof value === 'object' && value !== null && 'error' in value) {
    throw TidemarkError.fromWire(wireErrorSchema((value as { error: unknown }).error, 'error'));
  }
  try {
    return schema(value, '');
  } catch (cause) {
    throw new TidemarkError('INTERNAL', `malformed reply: ${(cause as Error).message}`, { cause });
  }
}
