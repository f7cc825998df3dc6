/** Pure views of the metadata image for replies, and the lookup of a partition's leader actor. */
import type { AnyActorRef } from 'xstate';
import { topicByName, type MetadataImage, type TopicInfo } from '../../metadata/image.js';
import { TidemarkError } from '../../protocol/errors.js';
import type { MetadataReply, TopicMetadata } from '../../protocol/messages.js';

export function topicMetadata(topic: TopicInfo): TopicMetadata {
  return {
    name: topic.name,
    topicId: topic.topicId,
    config: { ...topic.config },
    partitions: topic.partitions.map((p) => ({
      partition: p.partition,
      leader: p.leader,
      leaderEpoch: p.leaderEpoch,
      replicas: [...p.replicas],
      isr: [...p.isr],
    })),
    // Only when there are some: replies without them are what they were before subscriptions.
    ...(topic.subscriptions.length > 0 ? { subscriptions: topic.subscriptions.map((s) => ({ ...s })) } : {}),
    ...(topic.producerAccess.epoch > 0 ? { producerEpoch: topic.producerAccess.epoch } : {}),
    ...(topic.producerAccess.owner === undefined ? {} : { exclusiveProducer: { name: topic.producerAccess.owner.name, accessMode: topic.producerAccess.owner.accessMode } }),
  };
}

export function metadataReply(image: MetadataImage, topics: readonly string[] | undefined, caughtUp: boolean): MetadataReply {
  const wanted = topics === undefined ? undefined : new Set(topics);
  return {
    offset: image.offset,
    caughtUp,
    brokers: [...image.brokers.values()].map((b) => ({ id: b.id, epoch: b.epoch, rack: b.rack, fenced: b.fenced })),
    topics: [...image.topicsById.values()].filter((t) => wanted === undefined || wanted.has(t.name)).map(topicMetadata),
  };
}

export function partitionActorId(topicId: string, partition: number): string {
  return `partition:${topicId}/${partition}`;
}

/** The part of an xstate actor system the lookups use. */
export interface ActorLookup {
  get(systemId: string): unknown;
}

/** The actor leading `topic`/`partition` on this broker, or the typed error a client should see. */
export function leaderActorOf(image: MetadataImage, system: ActorLookup, brokerId: number, topicName: string, partition: number): AnyActorRef {
  const topic = topicByName(image, topicName);
  const info = topic?.partitions[partition];
  if (topic === undefined || info === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `unknown topic-partition ${topicName}/${partition}`);
  if (info.leader !== brokerId) throw new TidemarkError('NOT_LEADER', `broker ${brokerId} does not lead ${topicName}/${partition} (leader: ${info.leader})`);
  const actor = system.get(partitionActorId(topic.topicId, partition)) as AnyActorRef | undefined;
  if (actor === undefined) throw new TidemarkError('LEADER_NOT_AVAILABLE', `${topicName}/${partition} is still loading`);
  return actor;
}
