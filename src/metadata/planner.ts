/**
 * The controller's decisions as pure functions: given the image and a request, the records to
 * commit, or a typed error. The same functions serve the local controller now and the elected
 * controller of the quorum later.
 */
import { TidemarkError } from '../protocol/errors.js';
import type { CreateTopicRequest, DeleteTopicRequest } from '../protocol/messages.js';
import { isValidTopicName } from '../protocol/subjects.js';
import { topicByName, type MetadataImage, type PartitionInfo, type TopicInfo } from './image.js';
import type { MetadataRecord } from './records.js';
import { parseTopicConfig } from './topic-config.js';

export interface PlacementBroker {
  id: number;
  /** '' when the broker has no rack. */
  rack: string;
}

/**
 * Brokers in placement order: sorted by id within each rack, racks taken in turn (Kafka's
 * rack-alternated list), so any RF consecutive brokers span min(RF, racks) racks when racks hold
 * equal numbers of brokers. Without racks this is simply the brokers sorted by id.
 */
export function rackAlternated(brokers: readonly PlacementBroker[]): number[] {
  const byRack = new Map<string, number[]>();
  for (const b of [...brokers].sort((x, y) => x.id - y.id)) {
    const list = byRack.get(b.rack) ?? [];
    list.push(b.id);
    byRack.set(b.rack, list);
  }
  const racks = [...byRack.keys()].sort();
  const out: number[] = [];
  for (let i = 0; out.length < brokers.length; i++) {
    for (const rack of racks) {
      const id = byRack.get(rack)![i];
      if (id !== undefined) out.push(id);
    }
  }
  return out;
}

/**
 * Placement: the partitions' replica slots are dealt round-robin over the brokers in
 * rack-alternated order from a random start (slot k = p * RF + r goes to broker (start + k) mod n),
 * so every broker holds the same number of replicas give or take one, and a partition's RF
 * consecutive slots are distinct brokers on as many racks as the order allows. Within each
 * partition the leader is the broker of its window that leads least so far, which spreads leaders
 * the same way (checked by a property test over many shapes).
 */
export function placeReplicas(brokers: readonly PlacementBroker[], partitions: number, replicationFactor: number, start: number): number[][] {
  const order = rackAlternated(brokers);
  const n = order.length;
  const leaderships = new Map(order.map((id) => [id, 0]));
  return Array.from({ length: partitions }, (_, p) => {
    const window = Array.from({ length: replicationFactor }, (_, r) => order[(start + p * replicationFactor + r) % n]!);
    const leader = window.reduce((best, b) => (leaderships.get(b)! < leaderships.get(best)! ? b : best));
    leaderships.set(leader, leaderships.get(leader)! + 1);
    return [leader, ...window.filter((b) => b !== leader)];
  });
}

export function planCreateTopic(
  image: MetadataImage,
  request: Pick<CreateTopicRequest, 'name' | 'partitions' | 'replicationFactor' | 'config'>,
  topicId: string,
  start: number,
): MetadataRecord[] {
  if (!isValidTopicName(request.name)) {
    throw new TidemarkError('INVALID_TOPIC', `invalid topic name "${request.name}": use 1-249 of [a-zA-Z0-9._-]`);
  }
  if (topicByName(image, request.name) !== undefined) {
    throw new TidemarkError('TOPIC_ALREADY_EXISTS', `topic "${request.name}" already exists`);
  }
  parseTopicConfig(request.config);
  const brokers = [...image.brokers.values()].filter((b) => !b.fenced).map((b) => ({ id: b.id, rack: b.rack }));
  if (request.replicationFactor > brokers.length) {
    throw new TidemarkError(
      'INVALID_REPLICATION_FACTOR',
      `replication factor ${request.replicationFactor} is larger than the ${brokers.length} live broker(s)`,
    );
  }
  const placement = placeReplicas(brokers, request.partitions, request.replicationFactor, start);
  return [
    { type: 'Topic', topicId, name: request.name, config: request.config },
    ...placement.map((replicas, partition): MetadataRecord => ({
      type: 'Partition',
      topicId,
      partition,
      replicas,
      isr: replicas,
      leader: replicas[0]!,
      leaderEpoch: 0,
      partitionEpoch: 0,
    })),
  ];
}

export function planDeleteTopic(image: MetadataImage, request: Pick<DeleteTopicRequest, 'name'>): MetadataRecord[] {
  const topic = topicByName(image, request.name);
  if (topic === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `topic "${request.name}" does not exist`);
  return [{ type: 'RemoveTopic', topicId: topic.topicId }];
}

export function partitionChange(topicId: string, p: PartitionInfo, change: Partial<Pick<PartitionInfo, 'leader' | 'isr'>>): MetadataRecord {
  const leader = change.leader ?? p.leader;
  return {
    type: 'Partition',
    topicId,
    partition: p.partition,
    replicas: [...p.replicas],
    isr: [...(change.isr ?? p.isr)],
    leader,
    leaderEpoch: leader === p.leader ? p.leaderEpoch : p.leaderEpoch + 1,
    partitionEpoch: p.partitionEpoch + 1,
  };
}

/** Topics with unclean.leader.election.enable=true (a topic whose config no longer parses is clean). */
export function uncleanEnabled(topic: TopicInfo): boolean {
  try {
    return parseTopicConfig(topic.config).uncleanLeaderElection;
  } catch {
    return false;
  }
}

/** A broker that may lead or join an ISR: registered, unfenced, and (as the caller says) not shutting down. */
export type Eligible = (brokerId: number) => boolean;

export const unfencedIn =
  (image: MetadataImage, excluded: ReadonlySet<number> = new Set()): Eligible =>
  (id) =>
    image.brokers.get(id)?.fenced === false && !excluded.has(id);

/**
 * Fencing a broker (its session expired): it leaves every ISR, and each partition it led gets a
 * new leader from the rest of the ISR among live brokers. When none is left the partition goes
 * offline (leader -1) and keeps the fenced broker as its last ISR member, so that broker, holding
 * every committed record, can lead again when it returns; unclean election (`unclean` true for a
 * topic) takes any live replica instead, accepting loss.
 */
export function planFenceBroker(
  image: MetadataImage,
  brokerId: number,
  unclean: (topic: TopicInfo) => boolean = uncleanEnabled,
  eligible: Eligible = unfencedIn(image),
): MetadataRecord[] {
  const broker = image.brokers.get(brokerId);
  if (broker === undefined || broker.fenced) return [];
  const live = (id: number) => id !== brokerId && eligible(id);
  return [
    { type: 'FenceBroker', brokerId, brokerEpoch: broker.epoch },
    ...planBrokerLeaves(image, brokerId, (topic, p, isr) => {
      const next = isr.find(live) ?? (unclean(topic) ? p.replicas.find(live) : undefined);
      if (next !== undefined) return { leader: next, isr: isr.includes(next) ? isr : [next] };
      return { leader: -1, isr: isr.length > 0 ? isr : [brokerId] };
    }),
  ];
}

/**
 * A broker leaves (fenced, or in controlled shutdown): it is taken out of every ISR, except as the
 * last member of an offline partition's ISR (it can lead cleanly when it returns), and each
 * partition it leads gets what `handOff` decides from the ISR without it, or stays as it is when
 * `handOff` returns undefined.
 */
export function planBrokerLeaves(
  image: MetadataImage,
  brokerId: number,
  handOff: (topic: TopicInfo, p: PartitionInfo, isr: number[]) => Pick<PartitionInfo, 'leader' | 'isr'> | undefined,
): MetadataRecord[] {
  const records: MetadataRecord[] = [];
  for (const topic of image.topicsById.values()) {
    for (const p of topic.partitions) {
      if (!p.isr.includes(brokerId) && p.leader !== brokerId) continue;
      const isr = p.isr.filter((id) => id !== brokerId);
      const change = p.leader === brokerId ? handOff(topic, p, isr) : isr.length > 0 ? { isr } : undefined;
      if (change !== undefined) records.push(partitionChange(topic.topicId, p, change));
    }
  }
  return records;
}

/**
 * Unfencing a broker: offline partitions it can lead cleanly (it is in their ISR) get it as
 * leader; with unclean election enabled, so do offline partitions it is merely a replica of.
 */
export function planUnfenceBroker(image: MetadataImage, brokerId: number, unclean: (topic: TopicInfo) => boolean = uncleanEnabled): MetadataRecord[] {
  const broker = image.brokers.get(brokerId);
  if (broker === undefined || !broker.fenced) return [];
  const records: MetadataRecord[] = [{ type: 'UnfenceBroker', brokerId, brokerEpoch: broker.epoch }];
  for (const topic of image.topicsById.values()) {
    for (const p of topic.partitions) {
      if (p.leader !== -1 || !p.replicas.includes(brokerId)) continue;
      if (p.isr.includes(brokerId)) records.push(partitionChange(topic.topicId, p, { leader: brokerId }));
      else if (unclean(topic)) records.push(partitionChange(topic.topicId, p, { leader: brokerId, isr: [brokerId] }));
    }
  }
  return records;
}

/**
 * Adding partitions to a topic (Kafka's CreatePartitions): new partitions are placed like a new
 * topic's, with the topic's replication factor, over live brokers. Fewer partitions than now is
 * refused: removing a partition deletes its records and moves keys to other partitions, breaking
 * per-key order, so it is never done silently (the seed's author says the same).
 */
export function planCreatePartitions(image: MetadataImage, name: string, totalCount: number, start: number): MetadataRecord[] {
  const topic = topicByName(image, name);
  if (topic === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `topic "${name}" does not exist`);
  const current = topic.partitions.length;
  if (totalCount < current) {
    throw new TidemarkError(
      'INVALID_PARTITIONS',
      `topic "${name}" has ${current} partitions; decreasing to ${totalCount} is refused: it would delete the records of the removed partitions and move their keys, breaking per-key order`,
    );
  }
  if (totalCount === current) throw new TidemarkError('INVALID_PARTITIONS', `topic "${name}" already has ${current} partitions`);
  const replicationFactor = topic.partitions[0]?.replicas.length ?? 1;
  const brokers = [...image.brokers.values()].filter((b) => !b.fenced).map((b) => ({ id: b.id, rack: b.rack }));
  if (replicationFactor > brokers.length) {
    throw new TidemarkError('INVALID_REPLICATION_FACTOR', `replication factor ${replicationFactor} is larger than the ${brokers.length} live broker(s)`);
  }
  return placeReplicas(brokers, totalCount - current, replicationFactor, start).map((replicas, i): MetadataRecord => ({
    type: 'Partition',
    topicId: topic.topicId,
    partition: current + i,
    replicas,
    isr: replicas,
    leader: replicas[0]!,
    leaderEpoch: 0,
    partitionEpoch: 0,
  }));
}

/**
 * Sets and deletes topic config keys; the result must be a valid config (INVALID_CONFIG otherwise).
 * Turning unclean.leader.election.enable on elects a live replica for each offline partition at
 * once, as Kafka's controller does.
 */
export function planAlterConfig(
  image: MetadataImage,
  name: string,
  set: Readonly<Record<string, string>>,
  remove: readonly string[],
  eligible: Eligible = unfencedIn(image),
): MetadataRecord[] {
  const topic = topicByName(image, name);
  if (topic === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `topic "${name}" does not exist`);
  const config: Record<string, string> = { ...topic.config, ...set };
  for (const key of remove) delete config[key];
  const parsed = parseTopicConfig(config);
  const records: MetadataRecord[] = [{ type: 'TopicConfig', topicId: topic.topicId, config }];
  if (parsed.uncleanLeaderElection && !uncleanEnabled(topic)) {
    for (const p of topic.partitions) {
      const next = p.leader === -1 ? p.replicas.find(eligible) : undefined;
      if (next !== undefined) records.push(partitionChange(topic.topicId, p, { leader: next, isr: [next] }));
    }
  }
  return records;
}
