/** Pure views of the metadata image for replies. */
import type { MetadataImage, TopicInfo } from '../../metadata/image.js';
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
  };
}

export function metadataReply(image: MetadataImage, topics: readonly string[] | undefined): MetadataReply {
  const wanted = topics === undefined ? undefined : new Set(topics);
  return {
    offset: image.offset,
    brokers: [...image.brokers.values()].map((b) => ({ id: b.id, epoch: b.epoch, rack: b.rack, fenced: b.fenced })),
    topics: [...image.topicsById.values()].filter((t) => wanted === undefined || wanted.has(t.name)).map(topicMetadata),
  };
}

export function partitionActorId(topicId: string, partition: number): string {
  return `partition:${topicId}/${partition}`;
}
