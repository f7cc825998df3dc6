/**
 * Metadata records: every metadata change is one of these, appended to the metadata log and
 * applied in order (Kafka KRaft's TopicRecord / PartitionRecord / RemoveTopicRecord /
 * RegisterBrokerRecord, plus FenceBroker / UnfenceBroker). The controller quorum replicates them
 * in its Raft log, one proposal per entry (or, when too large for one, as a transaction of several:
 * BeginTransaction / TransactionPart, see transactions.ts), and every voter applies them with
 * `applyRecord`.
 */
import { decode, encode } from '@msgpack/msgpack';
import { TOPIC_CONFIG_ENTRIES_MAX, TOPIC_CONFIG_LENGTH_MAX, TOPIC_PARTITIONS_MAX, REPLICATION_FACTOR_MAX } from '../protocol/messages.js';
import { INITIAL_POSITIONS, isValidSubscriptionName } from '../protocol/subscription-messages.js';
import { TidemarkError } from '../protocol/errors.js';
import { ACCESS_MODES, PRODUCER_EPOCH_MAX } from '../protocol/producer-messages.js';
import { optional, array, bool, int, object, oneOf, str, stringMap, type Schema } from '../protocol/validate.js';

const brokerId = int(0, 2 ** 31 - 1);

export const registerBrokerRecord = object({
  type: oneOf('RegisterBroker'),
  brokerId,
  /** Bumped on every registration; requests carrying an older one are refused (issue 3). */
  brokerEpoch: int(0, Number.MAX_SAFE_INTEGER),
  rack: str(255),
  /** A broker registers fenced and is unfenced once it has caught up with metadata. */
  fenced: bool,
  /** Random per broker process start: a retried registration of the same process is recognised. */
  incarnation: str(64),
});
export const topicRecord = object({
  type: oneOf('Topic'),
  topicId: str(32),
  name: str(249),
  config: stringMap(TOPIC_CONFIG_ENTRIES_MAX, TOPIC_CONFIG_LENGTH_MAX),
});
export const partitionRecord = object({
  type: oneOf('Partition'),
  topicId: str(32),
  partition: int(0, TOPIC_PARTITIONS_MAX - 1),
  replicas: array(brokerId, REPLICATION_FACTOR_MAX),
  isr: array(brokerId, REPLICATION_FACTOR_MAX),
  /** -1 = no leader */
  leader: int(-1, 2 ** 31 - 1),
  leaderEpoch: int(0, 2 ** 31 - 1),
  /** Bumped on every change of this partition (ISR, replicas, leader). */
  partitionEpoch: int(0, 2 ** 31 - 1),
  /**
   * flush.mode=replicated: ISR members that restarted after an unclean shutdown and may have lost
   * records they counted toward the high watermark (absent: none). See planner.planUncleanRestart.
   */
  suspects: optional(array(brokerId, REPLICATION_FACTOR_MAX)),
});
export const removeTopicRecord = object({ type: oneOf('RemoveTopic'), topicId: str(32) });
/** A topic's whole new config (after an alter). */
export const topicConfigRecord = object({ type: oneOf('TopicConfig'), topicId: str(32), config: stringMap(TOPIC_CONFIG_ENTRIES_MAX, TOPIC_CONFIG_LENGTH_MAX) });
const subscriptionName: Schema<string> = (v, path) => {
  const s = str(128)(v, path);
  if (!isValidSubscriptionName(s)) throw new TidemarkError('INVALID_REQUEST', `${path}: invalid subscription name`);
  return s;
};
/**
 * A subscription registered on a topic (issue 11): one entry per create, never per ack (cursors
 * live at the partition leaders). Its id is the metadata offset of the entry that created it, so a
 * subscription deleted and created again under the same name is a new one; `id` is written only by
 * snapshots (imageRecords), which must keep the original offset; absent, the entry's offset is it.
 */
export const subscriptionRecord = object({
  type: oneOf('Subscription'),
  topicId: str(32),
  name: subscriptionName,
  initialPosition: oneOf(...INITIAL_POSITIONS),
  /** Partitions the topic had at creation; later ones start at their log start. */
  partitionsAtCreation: int(1, TOPIC_PARTITIONS_MAX),
  id: optional(int(0, Number.MAX_SAFE_INTEGER)),
});
/**
 * A topic's producer access changed (issue 12): its producer epoch, the epoch of its last fencing
 * and its exclusive producer (absent: none). One entry per change of exclusive owner, never per
 * record; the whole state each time, so the image keeps the last one.
 */
export const producerAccessRecord = object({
  type: oneOf('ProducerAccess'),
  topicId: str(32),
  epoch: int(0, PRODUCER_EPOCH_MAX),
  fencedEpoch: int(0, PRODUCER_EPOCH_MAX),
  owner: optional(object({ name: str(128), sessionId: str(64), accessMode: oneOf(...ACCESS_MODES) })),
});
/** A subscription deleted: its cursors go with it. */
export const removeSubscriptionRecord = object({ type: oneOf('RemoveSubscription'), topicId: str(32), name: subscriptionName });
/** The controller stops trusting a broker (missed heartbeats, or a new registration replaced it). */
export const fenceBrokerRecord = object({ type: oneOf('FenceBroker'), brokerId, brokerEpoch: int(0, Number.MAX_SAFE_INTEGER) });
/** A registered broker has caught up with metadata and may lead partitions. */
export const unfenceBrokerRecord = object({ type: oneOf('UnfenceBroker'), brokerId, brokerEpoch: int(0, Number.MAX_SAFE_INTEGER) });

/**
 * Metadata transactions (Kafka KIP-868): the records of one change too large for one Raft entry
 * travel in `parts` consecutive entries. The first starts with BeginTransaction, each later one
 * with TransactionPart (its number); the image applies the records only when the last part is
 * applied. Any other entry in between (the no-op a new Raft leader appends first, or any ordinary
 * entry) aborts the open transaction, so a change cut off by a leader change never shows. See
 * transactions.ts.
 */
export const TRANSACTION_PARTS_MAX = 256;
export const beginTransactionRecord = object({ type: oneOf('BeginTransaction'), parts: int(2, TRANSACTION_PARTS_MAX) });
export const transactionPartRecord = object({ type: oneOf('TransactionPart'), part: int(1, TRANSACTION_PARTS_MAX - 1) });

export type BeginTransactionRecord = ReturnType<typeof beginTransactionRecord>;
export type TransactionPartRecord = ReturnType<typeof transactionPartRecord>;
export type RegisterBrokerRecord = ReturnType<typeof registerBrokerRecord>;
export type TopicRecord = ReturnType<typeof topicRecord>;
export type PartitionRecord = ReturnType<typeof partitionRecord>;
export type RemoveTopicRecord = ReturnType<typeof removeTopicRecord>;
export type TopicConfigRecord = ReturnType<typeof topicConfigRecord>;
export type FenceBrokerRecord = ReturnType<typeof fenceBrokerRecord>;
export type UnfenceBrokerRecord = ReturnType<typeof unfenceBrokerRecord>;
export type SubscriptionRecord = ReturnType<typeof subscriptionRecord>;
export type RemoveSubscriptionRecord = ReturnType<typeof removeSubscriptionRecord>;
export type ProducerAccessRecord = ReturnType<typeof producerAccessRecord>;
export type MetadataRecord =
  | RegisterBrokerRecord
  | TopicRecord
  | TopicConfigRecord
  | PartitionRecord
  | RemoveTopicRecord
  | FenceBrokerRecord
  | UnfenceBrokerRecord
  | SubscriptionRecord
  | RemoveSubscriptionRecord
  | ProducerAccessRecord
  | BeginTransactionRecord
  | TransactionPartRecord;

const schemas: Record<MetadataRecord['type'], Schema<MetadataRecord>> = {
  RegisterBroker: registerBrokerRecord,
  Topic: topicRecord,
  Partition: partitionRecord,
  RemoveTopic: removeTopicRecord,
  TopicConfig: topicConfigRecord,
  FenceBroker: fenceBrokerRecord,
  UnfenceBroker: unfenceBrokerRecord,
  Subscription: subscriptionRecord,
  RemoveSubscription: removeSubscriptionRecord,
  ProducerAccess: producerAccessRecord,
  BeginTransaction: beginTransactionRecord,
  TransactionPart: transactionPartRecord,
};

/**
 * A metadata log entry: the records one proposal commits together (all or none). One Raft entry
 * carries one of these; the image's offset is the Raft index of the last entry applied.
 */
export function encodeEntry(records: readonly MetadataRecord[]): Uint8Array {
  return encode(records);
}

export function decodeEntry(bytes: Uint8Array): MetadataRecord[] {
  const value = decode(bytes);
  if (!Array.isArray(value)) throw new Error('metadata entry is not a list of records');
  return value.map((r: unknown) => {
    const type = typeof r === 'object' && r !== null ? (r as { type?: unknown }).type : undefined;
    const schema = typeof type === 'string' ? schemas[type as MetadataRecord['type']] : undefined;
    if (schema === undefined) throw new Error(`unknown metadata record type ${String(type)}`);
    return schema(r, 'record');
  });
}
