/**
 * The metadata image: what every node knows about the cluster, the result of applying the
 * committed metadata records in order. `applyRecord` is pure and total over valid records.
 */
import type { SubscriptionMetadata } from '../protocol/subscription-messages.js';
import { NO_PRODUCER_ACCESS, type ProducerAccessInfo } from '../protocol/producer-messages.js';
import type { MetadataRecord, PartitionRecord } from './records.js';

export interface BrokerInfo {
  readonly id: number;
  readonly epoch: number;
  readonly rack: string;
  readonly incarnation: string;
  /** A fenced broker leads nothing and is not given new replicas. Registration starts fenced. */
  readonly fenced: boolean;
}

export interface PartitionInfo {
  readonly partition: number;
  readonly replicas: readonly number[];
  readonly isr: readonly number[];
  readonly leader: number;
  readonly leaderEpoch: number;
  readonly partitionEpoch: number;
  /** ISR members that may have lost committed records in an unclean shutdown (flush.mode=replicated). */
  readonly suspects: readonly number[];
}

export interface TopicInfo {
  readonly topicId: string;
  readonly name: string;
  readonly config: Readonly<Record<string, string>>;
  readonly partitions: readonly PartitionInfo[];
  /** Its subscriptions (the registry: name, id, initial position), sorted by name. */
  readonly subscriptions: readonly SubscriptionMetadata[];
  /** Its producer epoch and exclusive producer (issue 12). */
  readonly producerAccess: ProducerAccessInfo;
}

export interface MetadataImage {
  /** Index of the last record applied, -1 for the empty image. */
  readonly offset: number;
  readonly brokers: ReadonlyMap<number, BrokerInfo>;
  readonly topicsById: ReadonlyMap<string, TopicInfo>;
  readonly topicIdsByName: ReadonlyMap<string, string>;
}

export const emptyImage: MetadataImage = {
  offset: -1,
  brokers: new Map(),
  topicsById: new Map(),
  topicIdsByName: new Map(),
};

/** A topic's subscription by name. */
export function subscriptionOf(topic: TopicInfo, name: string): SubscriptionMetadata | undefined {
  return topic.subscriptions.find((s) => s.name === name);
}

export function topicByName(image: MetadataImage, name: string): TopicInfo | undefined {
  const id = image.topicIdsByName.get(name);
  return id === undefined ? undefined : image.topicsById.get(id);
}

function partitionInfo(r: PartitionRecord): PartitionInfo {
  return {
    partition: r.partition,
    replicas: r.replicas,
    isr: r.isr,
    leader: r.leader,
    leaderEpoch: r.leaderEpoch,
    partitionEpoch: r.partitionEpoch,
    suspects: r.suspects ?? [],
  };
}

export function applyRecord(image: MetadataImage, record: MetadataRecord, offset: number): MetadataImage {
  switch (record.type) {
    case 'RegisterBroker': {
      const brokers = new Map(image.brokers);
      brokers.set(record.brokerId, { id: record.brokerId, epoch: record.brokerEpoch, rack: record.rack, fenced: record.fenced, incarnation: record.incarnation });
      return { ...image, offset, brokers };
    }
    case 'FenceBroker':
    case 'UnfenceBroker': {
      const broker = image.brokers.get(record.brokerId);
      // A record about an older registration changes nothing.
      if (broker === undefined || broker.epoch !== record.brokerEpoch) return { ...image, offset };
      const brokers = new Map(image.brokers);
      brokers.set(record.brokerId, { ...broker, fenced: record.type === 'FenceBroker' });
      return { ...image, offset, brokers };
    }
    case 'Topic': {
      const topicsById = new Map(image.topicsById);
      topicsById.set(record.topicId, { topicId: record.topicId, name: record.name, config: record.config, partitions: [], subscriptions: [], producerAccess: NO_PRODUCER_ACCESS });
      const topicIdsByName = new Map(image.topicIdsByName);
      topicIdsByName.set(record.name, record.topicId);
      return { ...image, offset, topicsById, topicIdsByName };
    }
    case 'TopicConfig': {
      const topic = image.topicsById.get(record.topicId);
      if (topic === undefined) return { ...image, offset };
      const topicsById = new Map(image.topicsById);
      topicsById.set(record.topicId, { ...topic, config: record.config });
      return { ...image, offset, topicsById };
    }
    case 'Partition': {
      const topic = image.topicsById.get(record.topicId);
      if (topic === undefined) return { ...image, offset };
      const partitions = [...topic.partitions];
      partitions[record.partition] = partitionInfo(record);
      const topicsById = new Map(image.topicsById);
      topicsById.set(record.topicId, { ...topic, partitions });
      return { ...image, offset, topicsById };
    }
    case 'Subscription': {
      const topic = image.topicsById.get(record.topicId);
      // Created again under a name it has: the planner never does this; the later entry wins.
      if (topic === undefined) return { ...image, offset };
      const subscription: SubscriptionMetadata = {
        name: record.name,
        id: record.id ?? offset,
        initialPosition: record.initialPosition,
        partitionsAtCreation: record.partitionsAtCreation,
      };
      const subscriptions = [...topic.subscriptions.filter((s) => s.name !== record.name), subscription].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      const topicsById = new Map(image.topicsById);
      topicsById.set(record.topicId, { ...topic, subscriptions });
      return { ...image, offset, topicsById };
    }
    case 'ProducerAccess': {
      const topic = image.topicsById.get(record.topicId);
      if (topic === undefined) return { ...image, offset };
      const producerAccess: ProducerAccessInfo = {
        epoch: record.epoch,
        fencedEpoch: record.fencedEpoch,
        ...(record.owner === undefined ? {} : { owner: { ...record.owner } }),
      };
      const topicsById = new Map(image.topicsById);
      topicsById.set(record.topicId, { ...topic, producerAccess });
      return { ...image, offset, topicsById };
    }
    case 'RemoveSubscription': {
      const topic = image.topicsById.get(record.topicId);
      if (topic === undefined || !topic.subscriptions.some((s) => s.name === record.name)) return { ...image, offset };
      const topicsById = new Map(image.topicsById);
      topicsById.set(record.topicId, { ...topic, subscriptions: topic.subscriptions.filter((s) => s.name !== record.name) });
      return { ...image, offset, topicsById };
    }
    // Transaction markers are consumed by transactions.ts before records reach the image.
    case 'BeginTransaction':
    case 'TransactionPart':
      return { ...image, offset };
    case 'RemoveTopic': {
      const topic = image.topicsById.get(record.topicId);
      if (topic === undefined) return { ...image, offset };
      const topicsById = new Map(image.topicsById);
      topicsById.delete(record.topicId);
      const topicIdsByName = new Map(image.topicIdsByName);
      topicIdsByName.delete(topic.name);
      return { ...image, offset, topicsById, topicIdsByName };
    }
  }
}

/** Records that rebuild `image` from the empty one: what a metadata snapshot carries. */
export function imageRecords(image: MetadataImage): MetadataRecord[] {
  const records: MetadataRecord[] = [];
  for (const b of image.brokers.values()) {
    records.push({ type: 'RegisterBroker', brokerId: b.id, brokerEpoch: b.epoch, rack: b.rack, fenced: b.fenced, incarnation: b.incarnation });
  }
  for (const t of image.topicsById.values()) {
    records.push({ type: 'Topic', topicId: t.topicId, name: t.name, config: { ...t.config } });
    for (const p of t.partitions) {
      records.push({
        type: 'Partition',
        topicId: t.topicId,
        partition: p.partition,
        replicas: [...p.replicas],
        isr: [...p.isr],
        leader: p.leader,
        leaderEpoch: p.leaderEpoch,
        partitionEpoch: p.partitionEpoch,
        ...(p.suspects.length > 0 ? { suspects: [...p.suspects] } : {}),
      });
    }
    for (const s of t.subscriptions) {
      records.push({ type: 'Subscription', topicId: t.topicId, name: s.name, initialPosition: s.initialPosition, partitionsAtCreation: s.partitionsAtCreation, id: s.id });
    }
    const a = t.producerAccess;
    if (a.epoch > 0 || a.owner !== undefined) {
      records.push({ type: 'ProducerAccess', topicId: t.topicId, epoch: a.epoch, fencedEpoch: a.fencedEpoch, ...(a.owner === undefined ? {} : { owner: { ...a.owner } }) });
    }
  }
  return records;
}

export function applyRecords(image: MetadataImage, records: readonly MetadataRecord[], offset: number): MetadataImage {
  let next = image;
  for (let i = 0; i < records.length; ) {
    const record = records[i]!;
    // A run of Partition records of one topic (a topic's creation: up to TOPIC_PARTITIONS_MAX) is
    // applied with one copy of its partition list, not one copy per record.
    let end = i + 1;
    while (record.type === 'Partition' && end < records.length && records[end]!.type === 'Partition' && (records[end] as PartitionRecord).topicId === record.topicId) end++;
    if (end - i === 1) {
      next = applyRecord(next, record, offset);
    } else {
      next = applyPartitionRun(next, records.slice(i, end) as PartitionRecord[], offset);
    }
    i = end;
  }
  if (next.offset !== offset) next = { ...next, offset };
  return next;
}

function applyPartitionRun(image: MetadataImage, run: readonly PartitionRecord[], offset: number): MetadataImage {
  const topic = image.topicsById.get(run[0]!.topicId);
  if (topic === undefined) return { ...image, offset };
  const partitions = [...topic.partitions];
  for (const record of run) partitions[record.partition] = partitionInfo(record);
  const topicsById = new Map(image.topicsById);
  topicsById.set(topic.topicId, { ...topic, partitions });
  return { ...image, offset, topicsById };
}
