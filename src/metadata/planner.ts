/**
 * The controller's decisions as pure functions: given the image and a request, the records to
 * commit, or a typed error. The same functions serve the local controller now and the elected
 * controller of the quorum later.
 */
import { TidemarkError } from '../protocol/errors.js';
import type { CreateTopicRequest, DeleteTopicRequest } from '../protocol/messages.js';
import { isValidTopicName } from '../protocol/subjects.js';
import { topicByName, type MetadataImage } from './image.js';
import type { MetadataRecord } from './records.js';
import { parseTopicConfig } from './topic-config.js';

/**
 * Placement: the partitions' replica slots are dealt round-robin over the sorted brokers from a
 * random start (slot k = p * RF + r goes to broker (start + k) mod n), so every broker holds the
 * same number of replicas give or take one, and a partition's RF consecutive slots are distinct
 * brokers. Within each partition the leader is the broker of its window that leads least so far,
 * which spreads leaders the same way (checked by a property test over many shapes).
 */
export function placeReplicas(brokerIds: readonly number[], partitions: number, replicationFactor: number, start: number): number[][] {
  const sorted = [...brokerIds].sort((a, b) => a - b);
  const n = sorted.length;
  const leaderships = new Map(sorted.map((id) => [id, 0]));
  return Array.from({ length: partitions }, (_, p) => {
    const window = Array.from({ length: replicationFactor }, (_, r) => sorted[(start + p * replicationFactor + r) % n]!);
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
  const brokers = [...image.brokers.keys()];
  if (request.replicationFactor > brokers.length) {
    throw new TidemarkError(
      'INVALID_REPLICATION_FACTOR',
      `replication factor ${request.replicationFactor} is larger than the ${brokers.length} registered broker(s)`,
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
