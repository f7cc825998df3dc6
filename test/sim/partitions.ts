/**
 * What committed metadata says about each partition, as the checkers learn it from every image any
 * node holds: its topic and config (flush mode, unclean election, min.insync.replicas), its
 * replicas, and the newest state seen (the highest partition epoch: leader, leader epoch, ISR).
 * Committed images only ever move forward, so "newest" is the controller's latest decision as far
 * as any node has applied it.
 */
import type { MetadataImage } from '../../src/metadata/image.js';
import { parseTopicConfig, type TopicConfig } from '../../src/metadata/topic-config.js';
import type { Trace } from './trace.js';

export const partitionKey = (topicId: string, partition: number) => `${topicId}/${partition}`;

export interface PartitionFacts {
  readonly pid: string;
  readonly topic: string;
  readonly topicId: string;
  readonly partition: number;
  readonly config: TopicConfig;
  readonly replicas: readonly number[];
  /** Newest state seen (highest partition epoch). */
  leader: number;
  leaderEpoch: number;
  isr: readonly number[];
  partitionEpoch: number;
  /** Simulated ms when the newest leader epoch was first seen. */
  leaderSinceMs: number;
}

export class PartitionBook {
  private readonly byPid = new Map<string, PartitionFacts>();

  constructor(
    private readonly now: () => number,
    private readonly trace: Trace,
  ) {}

  /** Folds an image in (each image object once: the caller dedupes). */
  learn(image: MetadataImage): void {
    for (const topic of image.topicsById.values()) {
      let config: TopicConfig | undefined;
      for (const p of topic.partitions) {
        const pid = partitionKey(topic.topicId, p.partition);
        const known = this.byPid.get(pid);
        if (known !== undefined && known.partitionEpoch >= p.partitionEpoch) continue;
        config ??= parseTopicConfig(topic.config);
        if (known === undefined) {
          this.byPid.set(pid, {
            pid,
            topic: topic.name,
            topicId: topic.topicId,
            partition: p.partition,
            config,
            replicas: p.replicas,
            leader: p.leader,
            leaderEpoch: p.leaderEpoch,
            isr: p.isr,
            partitionEpoch: p.partitionEpoch,
            leaderSinceMs: this.now(),
          });
        } else {
          const leaderSinceMs = p.leaderEpoch === known.leaderEpoch ? known.leaderSinceMs : this.now();
          Object.assign(known, { leader: p.leader, leaderEpoch: p.leaderEpoch, isr: p.isr, partitionEpoch: p.partitionEpoch, leaderSinceMs });
        }
        if (p.replicas.length > 1 || known !== undefined) {
          this.trace.event('metadata', `${topic.name}/${p.partition} epoch ${p.leaderEpoch}.${p.partitionEpoch}: leader ${p.leader}, ISR ${p.isr.join(',')} of ${p.replicas.join(',')}`);
        }
      }
    }
  }

  get(pid: string): PartitionFacts | undefined {
    return this.byPid.get(pid);
  }

  all(): IterableIterator<PartitionFacts> {
    return this.byPid.values();
  }
}

/** Whether a power loss may take back what a replica counted (`flush.mode=replicated`). */
export const volatileReplicas = (facts: PartitionFacts | undefined) => facts?.config.flushMode === 'replicated';
/** Whether clean-election guarantees hold for the partition (no unclean election possible). */
export const clean = (facts: PartitionFacts | undefined) => facts !== undefined && !facts.config.uncleanLeaderElection;
