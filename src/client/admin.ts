/**
 * Topic and cluster administration. Create, delete and create-partitions go to the active
 * controller (`subjects.admin(op)`); list and describe read metadata, and describe also asks each
 * leading broker for its partitions' offsets; describeCluster collects every node's status.
 * Each call is retried here, in one place (retry.ts), and nowhere below.
 */
import { TidemarkError } from '../protocol/errors.js';
import {
  createTopicReply,
  deleteTopicReply,
  type AlterConfigRequest,
  type CreatePartitionsRequest,
  type CreateTopicRequest,
  type DeleteTopicRequest,
  type OffsetsRequest,
  offsetsReply,
  type PartitionMetadata,
  type PartitionOffsets,
  type TopicMetadata,
} from '../protocol/messages.js';
import { nodeStatus, type StatusRequest } from '../protocol/controller-messages.js';
import type { Subjects } from '../protocol/subjects.js';
import type { Clock, Random } from '../runtime/ports.js';
import type { MetadataCache } from './metadata.js';
import { isRetriable, retry, type RetryPolicy } from './retry.js';
import type { Rpc } from './rpc.js';

export type CreateTopicOptions = {
  /** Topic name: 1-249 of [a-zA-Z0-9._-], not "." or "..". Required. */
  name: string;
  /**
   * @default 1
   */
  partitions?: number;
  /**
   * @default 1
   */
  replicationFactor?: number;
  /**
   * Topic config entries (e.g. `retention.ms`).
   * @default {}
   */
  config?: Record<string, string>;
};

export type { TopicMetadata, PartitionMetadata };

export interface PartitionDescription extends PartitionMetadata {
  /** First offset still stored; -1 when the partition has no leader to ask. */
  logStartOffset: number;
  /** Offset the next record will get; -1 when unknown. */
  logEndOffset: number;
  /** Offsets below it are committed (replicated to the ISR) and readable; -1 when unknown. */
  highWatermark: number;
}

export interface TopicDescription {
  name: string;
  topicId: string;
  config: Record<string, string>;
  partitions: PartitionDescription[];
}

export interface Admin {
  /** Creates a topic; resolves with its metadata as the controller committed it. */
  createTopic(options: CreateTopicOptions): Promise<TopicMetadata>;
  /**
   * Deletes a topic and all its records. Rejects UNKNOWN_TOPIC when the controller does not know it,
   * also when an earlier attempt of this call deleted it and the reply was lost.
   */
  deleteTopic(name: string): Promise<void>;
  /** Names of every topic, sorted. */
  listTopics(): Promise<string[]>;
  /** Metadata of one topic merged with its partitions' offsets. Throws UNKNOWN_TOPIC if absent. */
  describeTopic(name: string): Promise<TopicDescription>;
  /**
   * Grows a topic to `totalCount` partitions. Fewer than now is refused (INVALID_PARTITIONS): it
   * would delete records and move keys. Resolves once brokers' metadata shows the new count.
   */
  createPartitions(name: string, totalCount: number): Promise<TopicMetadata>;
  /**
   * Sets and deletes topic config keys (`retention.ms`, `retention.bytes`, `max.message.bytes`);
   * partitions pick the change up as soon as their broker sees it. Resolves once brokers do.
   */
  alterTopicConfig(name: string, change: { set?: Record<string, string>; delete?: string[] }): Promise<TopicMetadata>;
  /** The controller voters (role, term, log), the active controller, and the brokers (epoch, fenced). */
  describeCluster(): Promise<ClusterDescription>;
}

export interface ClusterDescription {
  /** The active controller's id, -1 when none is known (an election is running, or no quorum). */
  controllerId: number;
  voters: Array<{ id: number; role: string; term: number; leaderId: number; commitIndex: number; lastIndex: number }>;
  brokers: Array<{ id: number; epoch: number; rack: string; fenced: boolean; metadataOffset: number; partitionsLed: number; reachable: boolean }>;
  /** The newest metadata offset any broker has applied. */
  metadataOffset: number;
}

/** How long describeCluster waits for every node's status, ms. */
const CLUSTER_STATUS_WAIT_MS = 300;
/** Nodes answering one status request, upper bound. */
const CLUSTER_NODES_MAX = 10_000;

export type AdminDeps = {
  rpc: Rpc;
  subjects: Subjects;
  metadata: MetadataCache;
  clock: Clock;
  random: Random;
  policy: RetryPolicy;
  requestTimeoutMs: number;
  signal: AbortSignal;
};

export class AdminClient implements Admin {
  constructor(private readonly deps: AdminDeps) {}

  async createTopic(options: CreateTopicOptions): Promise<TopicMetadata> {
    const { rpc, subjects } = this.deps;
    const reply = await this.retry((remainingMs) =>
      rpc.request(
        subjects.admin('create-topic'),
        {
          timeoutMs: this.timeoutMs(remainingMs),
          name: options.name,
          partitions: options.partitions ?? 1,
          replicationFactor: options.replicationFactor ?? 1,
          config: options.config ?? {},
        } satisfies CreateTopicRequest,
        createTopicReply,
      ),
    );
    this.deps.metadata.observe(reply.metadataOffset);
    this.deps.metadata.invalidate(options.name);
    await this.propagated(options.name, (t) => t?.topicId === reply.topic.topicId);
    return reply.topic;
  }

  /**
   * The controller answers once the change is committed; brokers learn it a moment later. The
   * change's commit offset is noted in the metadata cache (later metadata requests are answered
   * only by brokers that have it), and this waits, in the same retry layer, until metadata shows
   * the change: it is visible to the next call, as a user expects.
   */
  private async propagated(name: string, visible: (topic: TopicMetadata | undefined) => boolean): Promise<void> {
    await this.retry(async () => {
      const reply = await this.deps.metadata.fetch([name]);
      if (!visible(reply.topics.find((t) => t.name === name))) {
        throw new TidemarkError('LEADER_NOT_AVAILABLE', `brokers do not show the change to topic "${name}" yet`);
      }
    });
  }

  async deleteTopic(name: string): Promise<void> {
    const { rpc, subjects } = this.deps;
    // UNKNOWN_TOPIC from the controller is final (its image is the committed truth), not metadata
    // lag: retrying it only delays the answer, e.g. after a lost reply to a delete that did happen.
    const reply = await this.retry(
      (remainingMs) =>
        rpc.request(subjects.admin('delete-topic'), { timeoutMs: this.timeoutMs(remainingMs), name } satisfies DeleteTopicRequest, deleteTopicReply),
      (error) => isRetriable(error) && !(error instanceof TidemarkError && error.code === 'UNKNOWN_TOPIC'),
    );
    this.deps.metadata.observe(reply.metadataOffset);
    this.deps.metadata.invalidate(name);
    await this.propagated(name, (t) => t === undefined);
  }

  async listTopics(): Promise<string[]> {
    const reply = await this.retry(() => this.deps.metadata.fetch());
    return reply.topics.map((t) => t.name).sort();
  }

  async describeTopic(name: string): Promise<TopicDescription> {
    // A topic missing from metadata is an answer, not a failure to retry for 30 s; offsets calls
    // that fail with UNKNOWN_TOPIC (a new partition not yet on its broker) are retried.
    const described = await this.retry(async (remainingMs) => {
      const reply = await this.deps.metadata.fetch([name]);
      const topic = reply.topics.find((t) => t.name === name);
      return topic === undefined ? undefined : this.withOffsets(topic, this.timeoutMs(remainingMs));
    });
    if (described === undefined) {
      throw new TidemarkError('UNKNOWN_TOPIC', `topic "${name}" does not exist`, { context: { topic: name } });
    }
    return described;
  }

  private async withOffsets(topic: TopicMetadata, timeoutMs: number): Promise<TopicDescription> {
    const byLeader = new Map<number, number[]>();
    for (const p of topic.partitions) {
      if (p.leader < 0) continue;
      const list = byLeader.get(p.leader) ?? [];
      list.push(p.partition);
      byLeader.set(p.leader, list);
    }
    const offsets = new Map<number, PartitionOffsets>();
    await Promise.all(
      [...byLeader].map(async ([brokerId, partitions]) => {
        const reply = await this.deps.rpc.request(
          this.deps.subjects.offsets(brokerId),
          { timeoutMs, partitions: partitions.map((partition) => ({ topic: topic.name, partition })) } satisfies OffsetsRequest,
          offsetsReply,
        );
        for (const o of reply.partitions) {
          if (o.topic !== topic.name) continue;
          if (o.error !== undefined) throw TidemarkError.fromWire(o.error, { topic: o.topic, partition: o.partition, brokerId });
          offsets.set(o.partition, o);
        }
      }),
    );
    return {
      name: topic.name,
      topicId: topic.topicId,
      config: topic.config,
      partitions: topic.partitions
        .map((p) => {
          const o = offsets.get(p.partition);
          return {
            ...p,
            logStartOffset: o?.logStartOffset ?? -1,
            logEndOffset: o?.logEndOffset ?? -1,
            highWatermark: o?.highWatermark ?? -1,
          };
        })
        .sort((a, b) => a.partition - b.partition),
    };
  }

  async createPartitions(name: string, totalCount: number): Promise<TopicMetadata> {
    const { rpc, subjects } = this.deps;
    const reply = await this.retry((remainingMs) =>
      rpc.request(
        subjects.admin('create-partitions'),
        { timeoutMs: this.timeoutMs(remainingMs), name, totalCount } satisfies CreatePartitionsRequest,
        createTopicReply,
      ),
    );
    this.deps.metadata.observe(reply.metadataOffset);
    this.deps.metadata.invalidate(name);
    await this.propagated(name, (t) => t !== undefined && t.partitions.length >= totalCount);
    return reply.topic;
  }

  async alterTopicConfig(name: string, change: { set?: Record<string, string>; delete?: string[] }): Promise<TopicMetadata> {
    const { rpc, subjects } = this.deps;
    const reply = await this.retry((remainingMs) =>
      rpc.request(
        subjects.admin('alter-config'),
        { timeoutMs: this.timeoutMs(remainingMs), name, set: change.set ?? {}, delete: change.delete ?? [] } satisfies AlterConfigRequest,
        createTopicReply,
      ),
    );
    this.deps.metadata.observe(reply.metadataOffset);
    this.deps.metadata.invalidate(name);
    const wanted = JSON.stringify(reply.topic.config);
    await this.propagated(name, (t) => t !== undefined && JSON.stringify(t.config) === wanted);
    return reply.topic;
  }

  async describeCluster(): Promise<ClusterDescription> {
    const { rpc, subjects } = this.deps;
    const [statuses, metadata] = await Promise.all([
      rpc.requestMany(subjects.status(), { timeoutMs: CLUSTER_STATUS_WAIT_MS } satisfies StatusRequest, nodeStatus, CLUSTER_NODES_MAX),
      this.retry(() => this.deps.metadata.fetch([])),
    ]);
    const voters = statuses
      .filter((s) => s.voter !== undefined)
      .map((s) => ({ id: s.nodeId, ...s.voter! }))
      .sort((a, b) => a.id - b.id);
    const leader = voters.filter((v) => v.role === 'leader').sort((a, b) => b.term - a.term)[0];
    const byId = new Map(statuses.map((s) => [s.nodeId, s]));
    const brokers = metadata.brokers
      .map((b) => {
        const live = byId.get(b.id)?.broker;
        return { ...b, metadataOffset: live?.metadataOffset ?? -1, partitionsLed: live?.partitionsLed ?? 0, reachable: live !== undefined };
      })
      .sort((a, b) => a.id - b.id);
    return {
      controllerId: leader?.id ?? -1,
      voters,
      brokers,
      metadataOffset: Math.max(-1, ...statuses.map((s) => s.broker?.metadataOffset ?? -1)),
    };
  }

  private timeoutMs(remainingMs: number): number {
    return Math.max(1, Math.min(this.deps.requestTimeoutMs, remainingMs));
  }

  private retry<T>(attempt: (remainingMs: number) => Promise<T>, retryIf?: (error: unknown) => boolean): Promise<T> {
    const { clock, random, policy, signal } = this.deps;
    return retry(attempt, { clock, random, policy, signal, ...(retryIf === undefined ? {} : { retryIf }) });
  }
}
