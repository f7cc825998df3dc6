/**
 * The controller's decisions as pure functions: given the image and a request, the records to
 * commit, or a typed error. The same functions serve the local controller now and the elected
 * controller of the quorum later.
 */
import { TidemarkError } from '../protocol/errors.js';
import type { CreateTopicRequest, DeleteTopicRequest } from '../protocol/messages.js';
import { isValidTopicName } from '../protocol/subjects.js';
import { isValidSubscriptionName, TOPIC_SUBSCRIPTIONS_MAX, type CreateSubscriptionRequest, type DeleteSubscriptionRequest, type SubscriptionMetadata } from '../protocol/subscription-messages.js';
import { subscriptionOf, topicByName, type MetadataImage, type PartitionInfo, type TopicInfo } from './image.js';
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

/** A change of one partition; its suspects stay suspects only while they stay in the ISR. */
export function partitionChange(topicId: string, p: PartitionInfo, change: Partial<Pick<PartitionInfo, 'leader' | 'isr' | 'suspects'>>): MetadataRecord {
  const leader = change.leader ?? p.leader;
  const isr = [...(change.isr ?? p.isr)];
  const suspects = (change.suspects ?? p.suspects).filter((id) => isr.includes(id));
  return {
    type: 'Partition',
    topicId,
    partition: p.partition,
    replicas: [...p.replicas],
    isr,
    leader,
    leaderEpoch: leader === p.leader ? p.leaderEpoch : p.leaderEpoch + 1,
    partitionEpoch: p.partitionEpoch + 1,
    ...(suspects.length > 0 ? { suspects } : {}),
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

/**
 * Topics under flush.mode=replicated, whose replicas count what they wrote before it is durable, so
 * a power loss can take back records a replica reported. For them (Kafka's KIP-966, adapted):
 * - the controller never takes a replica out of the ISR for leaving (fenced, controlled shutdown):
 *   the one leaving may be the copy that keeps a committed record another member lost, or is about
 *   to lose, in a power loss nobody has noticed yet. Only a live leader shrinks the ISR, after making
 *   its own log durable (leader machine);
 * - a broker that restarts after an unclean shutdown becomes a suspect in each of their ISRs
 *   ({@link planUncleanRestart}); a suspect is not elected while a member that is not one exists
 *   ({@link cleanCandidates}), the leader removes it, and it rejoins once caught up;
 * - when every member is a suspect, the controller elects the one with the most log (latest epoch,
 *   then log end) once all have reported it ({@link planRecoveryElections}).
 * (A topic whose config no longer parses is fsync.)
 */
export function replicatedFlush(topic: TopicInfo): boolean {
  try {
    return parseTopicConfig(topic.config).flushMode === 'replicated';
  } catch {
    return false;
  }
}

/** ISR members that a clean election may choose among, in ISR order: eligible, and not suspects. */
export function cleanCandidates(p: Pick<PartitionInfo, 'isr' | 'suspects'>, eligible: Eligible): number[] {
  return p.isr.filter((id) => eligible(id) && !p.suspects.includes(id));
}

/**
 * A broker registers after an unclean shutdown: in every flush.mode=replicated ISR it is in, it
 * becomes a suspect. It is not removed here: the other members may have lost power too without
 * anyone noticing yet, and it may be the copy that kept what they lost. Call with the image after
 * its old registration was fenced (so it leads nothing).
 */
export function planUncleanRestart(image: MetadataImage, brokerId: number): MetadataRecord[] {
  const records: MetadataRecord[] = [];
  for (const topic of image.topicsById.values()) {
    if (!replicatedFlush(topic)) continue;
    for (const p of topic.partitions) {
      if (!p.isr.includes(brokerId) || p.suspects.includes(brokerId)) continue;
      records.push(partitionChange(topic.topicId, p, { suspects: [...p.suspects, brokerId] }));
    }
  }
  return records;
}

/** A broker's report of its copy of a partition, for recovery elections. */
export interface LogEndReport {
  brokerEpoch: number;
  lastEpoch: number;
  logEndOffset: number;
}

/** Offline partitions whose every ISR member is a suspect: their recovery needs log-end reports. */
export function awaitingRecovery(image: MetadataImage): Array<{ topic: TopicInfo; p: PartitionInfo }> {
  const out: Array<{ topic: TopicInfo; p: PartitionInfo }> = [];
  for (const topic of image.topicsById.values()) {
    if (!replicatedFlush(topic)) continue;
    for (const p of topic.partitions) {
      if (p.leader === -1 && p.isr.length > 0 && p.isr.every((id) => p.suspects.includes(id))) out.push({ topic, p });
    }
  }
  return out;
}

/**
 * Recovery election (KIP-966's, by log): an offline partition whose ISR members are all suspects
 * gets as leader the member with the latest last epoch, then the longest log, once every member is
 * eligible and has reported its copy from its current registration. That member holds every
 * committed record any of them still holds (logs agree up to each epoch's end); it leads alone and
 * is no longer a suspect, the others rejoin once they catch up. `reports(brokerId, topicId,
 * partition)` gives the latest report.
 */
export function planRecoveryElections(
  image: MetadataImage,
  reports: (brokerId: number, topicId: string, partition: number) => LogEndReport | undefined,
  eligible: Eligible,
): MetadataRecord[] {
  const records: MetadataRecord[] = [];
  for (const { topic, p } of awaitingRecovery(image)) {
    let best: { id: number; r: LogEndReport } | undefined;
    let ready = true;
    for (const id of p.isr) {
      const r = reports(id, topic.topicId, p.partition);
      if (!eligible(id) || r === undefined || r.brokerEpoch !== image.brokers.get(id)?.epoch) {
        ready = false;
        break;
      }
      if (best === undefined || r.lastEpoch > best.r.lastEpoch || (r.lastEpoch === best.r.lastEpoch && r.logEndOffset > best.r.logEndOffset)) best = { id, r };
    }
    if (ready && best !== undefined) records.push(partitionChange(topic.topicId, p, { leader: best.id, isr: [best.id], suspects: [] }));
  }
  return records;
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
      const next = cleanCandidates({ isr, suspects: p.suspects }, live)[0] ?? (unclean(topic) ? p.replicas.find(live) : undefined);
      const kept = replicatedFlush(topic) ? p.isr : isr;
      if (next !== undefined) return isr.includes(next) ? { leader: next, isr: kept } : { leader: next, isr: [next], suspects: [] };
      return { leader: -1, isr: kept.length > 0 ? kept : [brokerId] };
    }),
  ];
}

/**
 * A broker leaves (fenced, or in controlled shutdown): it is taken out of every ISR, except as the
 * last member of an offline partition's ISR (it can lead cleanly when it returns) and of the ISRs
 * of flush.mode=replicated topics ({@link replicatedFlush}), and each
 * partition it leads gets what `handOff` decides from the ISR without it, or stays as it is when
 * `handOff` returns undefined.
 */
export function planBrokerLeaves(
  image: MetadataImage,
  brokerId: number,
  handOff: (topic: TopicInfo, p: PartitionInfo, isr: number[]) => Partial<Pick<PartitionInfo, 'leader' | 'isr' | 'suspects'>> | undefined,
): MetadataRecord[] {
  const records: MetadataRecord[] = [];
  for (const topic of image.topicsById.values()) {
    for (const p of topic.partitions) {
      if (!p.isr.includes(brokerId) && p.leader !== brokerId) continue;
      const isr = p.isr.filter((id) => id !== brokerId);
      const leaves = isr.length > 0 && !replicatedFlush(topic);
      const change = p.leader === brokerId ? handOff(topic, p, isr) : leaves ? { isr } : undefined;
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
      if (p.isr.includes(brokerId)) {
        if (!p.suspects.includes(brokerId)) records.push(partitionChange(topic.topicId, p, { leader: brokerId }));
      } else if (unclean(topic)) records.push(partitionChange(topic.topicId, p, { leader: brokerId, isr: [brokerId], suspects: [] }));
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

/**
 * Registering a subscription (issue 11). Idempotent: a subscription of that name already on the
 * topic is returned as it is (`existing`, its original initial position and partition count, even
 * when the request asks for another initial position) and nothing is committed; Pulsar's
 * createSubscription answers 409 instead, but the first subscribe of every consumer of a group
 * races to create it, so "exists" is success here. The records do not carry the id: it is the
 * offset of the entry that commits them.
 */
export function planCreateSubscription(
  image: MetadataImage,
  request: Pick<CreateSubscriptionRequest, 'topic' | 'name' | 'initialPosition'>,
): { records: MetadataRecord[]; existing?: SubscriptionMetadata } {
  const topic = topicByName(image, request.topic);
  if (topic === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `topic "${request.topic}" does not exist`);
  if (!isValidSubscriptionName(request.name)) {
    throw new TidemarkError('INVALID_REQUEST', `invalid subscription name "${request.name}": use 1-128 of [a-zA-Z0-9._-]`);
  }
  const existing = subscriptionOf(topic, request.name);
  if (existing !== undefined) return { records: [], existing };
  if (topic.subscriptions.length >= TOPIC_SUBSCRIPTIONS_MAX) {
    throw new TidemarkError('INVALID_REQUEST', `topic "${request.topic}" has ${topic.subscriptions.length} subscriptions, the most one topic may have (${TOPIC_SUBSCRIPTIONS_MAX})`);
  }
  return {
    records: [
      {
        type: 'Subscription',
        topicId: topic.topicId,
        name: request.name,
        initialPosition: request.initialPosition,
        partitionsAtCreation: Math.max(1, topic.partitions.length),
      },
    ],
  };
}

/**
 * Deleting a subscription. An unknown one is refused with UNKNOWN_SUBSCRIPTION (as Kafka's
 * DeleteConsumerGroups says GROUP_ID_NOT_FOUND and Pulsar 404): a mistyped name is reported, not
 * silently "deleted". The controller's image is the committed truth, so the SDK treats this
 * refusal as final (no retry), as deleteTopic does with UNKNOWN_TOPIC; see AdminClient.
 */
export function planDeleteSubscription(image: MetadataImage, request: Pick<DeleteSubscriptionRequest, 'topic' | 'name'>): MetadataRecord[] {
  const topic = topicByName(image, request.topic);
  if (topic === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `topic "${request.topic}" does not exist`);
  if (subscriptionOf(topic, request.name) === undefined) {
    throw new TidemarkError('UNKNOWN_SUBSCRIPTION', `topic "${request.topic}" has no subscription "${request.name}"`, {
      context: { topic: request.topic },
    });
  }
  return [{ type: 'RemoveSubscription', topicId: topic.topicId, name: request.name }];
}
