/**
 * The controller's partition-level decisions as pure functions: ISR changes asked by leaders
 * (Kafka's AlterPartition), controlled shutdown, and leader elections (preferred and unclean).
 */
import type { AlterPartitionRequest } from '../protocol/controller-messages.js';
import { TidemarkError, type WireError } from '../protocol/errors.js';
import type { ElectLeadersRequest, ElectLeadersResult } from '../protocol/messages.js';
import type { MetadataImage, PartitionInfo, TopicInfo } from './image.js';
import { cleanCandidates, partitionChange, planBrokerLeaves, replicatedFlush, type Eligible } from './planner.js';
import type { MetadataRecord } from './records.js';

/**
 * An ISR change from the partition's leader. Refused when the request is not from the current
 * leader of the current epoch (FENCED_LEADER_EPOCH), when the partition changed since the leader
 * looked (INVALID_UPDATE_VERSION), or when it adds a replica that may not join (fenced, shutting
 * down, not a replica).
 */
export function planAlterPartition(image: MetadataImage, request: AlterPartitionRequest, eligible: Eligible): MetadataRecord[] {
  const topic = image.topicsById.get(request.topicId);
  const p = topic?.partitions[request.partition];
  if (topic === undefined || p === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `unknown partition ${request.topicId}/${request.partition}`);
  const broker = image.brokers.get(request.brokerId);
  if (broker === undefined || broker.epoch !== request.brokerEpoch) {
    throw new TidemarkError('STALE_BROKER_EPOCH', `broker ${request.brokerId} epoch ${request.brokerEpoch} is not its registration`);
  }
  if (p.leader !== request.brokerId || p.leaderEpoch !== request.leaderEpoch) {
    throw new TidemarkError('FENCED_LEADER_EPOCH', `leader ${request.brokerId} epoch ${request.leaderEpoch}; the partition has leader ${p.leader} epoch ${p.leaderEpoch}`);
  }
  if (p.partitionEpoch !== request.partitionEpoch) {
    throw new TidemarkError('INVALID_UPDATE_VERSION', `partition epoch ${request.partitionEpoch}; current ${p.partitionEpoch}`);
  }
  const isr = [...new Set(request.isr)];
  if (!isr.includes(request.brokerId)) throw new TidemarkError('INVALID_REQUEST', 'the ISR must contain its leader');
  for (const id of isr) {
    if (!p.replicas.includes(id)) throw new TidemarkError('INVALID_REQUEST', `broker ${id} is not a replica`);
    if (!p.isr.includes(id) && !eligible(id)) throw new TidemarkError('INVALID_REQUEST', `broker ${id} may not join the ISR (fenced or shutting down)`);
  }
  return [partitionChange(topic.topicId, p, { isr })];
}

/**
 * Controlled shutdown of a broker: every partition it leads moves to another eligible ISR member,
 * and it leaves every ISR it is in (unless it is the last member). Partitions nobody else can lead
 * stay with it; `remaining` counts them.
 */
export function planControlledShutdown(image: MetadataImage, brokerId: number, eligible: Eligible): { records: MetadataRecord[]; remaining: number } {
  let remaining = 0;
  const records = planBrokerLeaves(image, brokerId, (topic, p, isr) => {
    const next = cleanCandidates({ isr, suspects: p.suspects }, eligible)[0];
    if (next === undefined) remaining++;
    return next === undefined ? undefined : { leader: next, isr: replicatedFlush(topic) ? p.isr : isr };
  });
  return { records, remaining };
}

function electOne(topic: TopicInfo, p: PartitionInfo, type: ElectLeadersRequest['type'], eligible: Eligible): MetadataRecord | WireError {
  if (type === 'preferred') {
    const preferred = p.replicas[0]!;
    if (p.leader === preferred) return { code: 'ELECTION_NOT_NEEDED', message: `broker ${preferred} already leads` };
    if (!cleanCandidates(p, eligible).includes(preferred)) {
      return { code: 'ELIGIBLE_LEADERS_NOT_AVAILABLE', message: `preferred replica ${preferred} is not in sync or not alive` };
    }
    return partitionChange(topic.topicId, p, { leader: preferred });
  }
  if (p.leader >= 0 && eligible(p.leader)) return { code: 'ELECTION_NOT_NEEDED', message: `broker ${p.leader} leads` };
  const clean = cleanCandidates(p, eligible)[0];
  if (clean !== undefined) return partitionChange(topic.topicId, p, { leader: clean });
  const alive = p.replicas.find((id) => eligible(id));
  if (alive === undefined) return { code: 'ELIGIBLE_LEADERS_NOT_AVAILABLE', message: 'no replica is alive' };
  return partitionChange(topic.topicId, p, { leader: alive, isr: [alive], suspects: [] });
}

/** Leader elections on demand; per-partition results, and the records of those that happen. */
export function planElectLeaders(
  image: MetadataImage,
  request: { type: ElectLeadersRequest['type']; topic?: string | undefined; partitions?: readonly number[] | undefined },
  eligible: Eligible,
): { records: MetadataRecord[]; results: ElectLeadersResult[] } {
  const topics = [...image.topicsById.values()].filter((t) => request.topic === undefined || t.name === request.topic);
  if (request.topic !== undefined && topics.length === 0) throw new TidemarkError('UNKNOWN_TOPIC', `topic "${request.topic}" does not exist`);
  const records: MetadataRecord[] = [];
  const results: ElectLeadersResult[] = [];
  for (const topic of topics) {
    const wanted = request.partitions === undefined ? undefined : new Set(request.partitions);
    for (const p of topic.partitions) {
      if (wanted !== undefined && !wanted.has(p.partition)) continue;
      const outcome = electOne(topic, p, request.type, eligible);
      if ('code' in outcome) {
        results.push({ topic: topic.name, partition: p.partition, leader: p.leader, error: outcome });
      } else {
        records.push(outcome);
        results.push({ topic: topic.name, partition: p.partition, leader: (outcome as { leader: number }).leader });
      }
    }
  }
  return { records, results };
}

/** Automatic preferred-leader election: partitions whose first replica is in sync, eligible and not leading. */
export function planPreferredElections(image: MetadataImage, eligible: Eligible): MetadataRecord[] {
  const records: MetadataRecord[] = [];
  for (const topic of image.topicsById.values()) {
    for (const p of topic.partitions) {
      const preferred = p.replicas[0]!;
      if (p.leader !== preferred && cleanCandidates(p, eligible).includes(preferred)) records.push(partitionChange(topic.topicId, p, { leader: preferred }));
    }
  }
  return records;
}

