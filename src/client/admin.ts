/**
 * Topic and cluster administration. Create, delete, create-partitions, alter-config and
 * elect-leaders go to the active controller (`subjects.admin(op)`); list and describe read
 * metadata, and describe also asks each leading broker for its partitions' offsets and replica
 * progress; describeCluster collects every node's status.
 * Each call is retried here, in one place (retry.ts), and nowhere below.
 */
import { TidemarkError, type ErrorCode } from '../protocol/errors.js';
import {
  createTopicReply,
  deleteTopicReply,
  electLeadersReply,
  type AlterConfigRequest,
  type CreatePartitionsRequest,
  type CreateTopicRequest,
  type DeleteTopicRequest,
  type ElectLeadersRequest,
  type OffsetsRequest,
  offsetsReply,
  type PartitionMetadata,
  type PartitionOffsets,
  type ReplicaState,
  type TopicMetadata,
} from '../protocol/messages.js';
import { nodeStatus, type StatusRequest } from '../protocol/controller-messages.js';
import type { Subjects } from '../protocol/subjects.js';
import type { Clock, Random } from '../runtime/ports.js';
import type { MetadataCache } from './metadata.js';
import { isRetriable, retry, type RetryPolicy } from '../runtime/retry.js';
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

export type { TopicMetadata, PartitionMetadata, ReplicaState };

/**
 * One partition as `describeTopic` shows it: its metadata (`leader`, `leaderEpoch`, `replicas`,
 * `isr`) and what its leader reports (offsets, and the progress of every replica).
 */
export interface PartitionDescription extends PartitionMetadata {
  /** First offset still stored; -1 when the partition has no leader to ask. */
  logStartOffset: number;
  /** The leader's log end: the offset the next record will get; -1 when unknown. */
  logEndOffset: number;
  /** Offsets below it are committed (replicated to the ISR) and readable; -1 when unknown. */
  highWatermark: number;
  /**
   * Per replica, in `replicas` order, as the leader knows it: `logEndOffset` as of the replica's
   * last fetch (the leader's own for itself; -1 when not heard from since this leadership began)
   * and `lagMs`, ms since the replica was last caught up with the leader's log end (0 for the
   * leader; -1 never). Empty when the partition has no leader.
   */
  replicaStates: ReplicaState[];
}

export type ElectionType = 'preferred' | 'unclean';

export type ElectLeadersOptions = {
  /**
   * `preferred`: give each partition to its first replica when that one is alive and in sync.
   * `unclean`: give a partition with no live leader a leader from any live replica, out of sync
   * ones included, accepting the loss of the records only the old ISR had.
   * @default 'preferred'
   */
  type?: ElectionType;
  /** Only this topic. @default every topic */
  topic?: string;
  /** Only these partitions of `topic` (needs `topic`). @default every partition */
  partitions?: number[];
};

/** The outcome of an election for one partition. */
export interface ElectLeadersResult {
  topic: string;
  partition: number;
  /** The leader after the call: the new one, or the unchanged one when `error` is set (-1: none). */
  leader: number;
  /**
   * Why this partition's leader did not change: `ELECTION_NOT_NEEDED` (it already has the leader
   * asked for, also when an earlier attempt of this call elected it and the reply was lost) or
   * `ELIGIBLE_LEADERS_NOT_AVAILABLE` (no replica may lead: the preferred one is not alive or not
   * in sync; for unclean, no replica is alive) or `UNKNOWN_TOPIC` (a partition asked for that the
   * topic does not have).
   */
  error?: { code: ErrorCode; message: string };
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
  /**
   * Metadata of one topic merged with what each partition's leader reports: offsets (log start,
   * log end, high watermark) and every replica's progress (`replicaStates`). Throws UNKNOWN_TOPIC
   * if absent.
   */
  describeTopic(name: string): Promise<TopicDescription>;
  /**
   * Grows a topic to `totalCount` partitions. Fewer than now is refused (INVALID_PARTITIONS): it
   * would delete records and move keys. Resolves once brokers' metadata shows the new count.
   */
  createPartitions(name: string, totalCount: number): Promise<TopicMetadata>;
  /**
   * Sets and deletes topic config keys (`retention.ms`, `min.insync.replicas`, ...: the keys and
   * their bounds are in docs/operations.md); partitions pick the change up as soon as their broker
   * sees it. Resolves once brokers do.
   */
  alterTopicConfig(name: string, change: { set?: Record<string, string>; delete?: string[] }): Promise<TopicMetadata>;
  /** The controller voters (role, term, log), the active controller, and the brokers (epoch, fenced). */
  describeCluster(): Promise<ClusterDescription>;
  /**
   * Leader elections on demand (Kafka's ElectLeaders), one result per partition considered, sorted
   * by topic and partition. Per-partition refusals are results, not rejections; the call rejects
   * only when it fails as a whole (UNKNOWN_TOPIC, no controller within the retry budget, ...).
   * Resolves once brokers' metadata shows the elections.
   */
  electLeaders(options?: ElectLeadersOptions): Promise<ElectLeadersResult[]>;
}

export interface ClusterDescription {
  /** The active controller's id, -1 when none is known (an election is running, or no quorum). */
  controllerId: number;
  voters: Array<{ id: number; role: string; term: number; leaderId: number; commitIndex: number; lastIndex: number }>;
  brokers: Array<{ id: number; epoch: number; rack: string; fenced: boolean; metadataOffset: number; partitionsLed: number; reachable: boolean }>;
  /** The newest metadata offset any broker has applied. */
  metadataOffset: number;
}

/** The leader's replica states in `replicas` order; a replica it did not report is unknown (-1). */
function replicaStates(replicas: readonly number[], reported: readonly ReplicaState[]): ReplicaState[] {
  const byId = new Map(reported.map((r) => [r.brokerId, r]));
  return replicas.map((brokerId) => {
    const r = byId.get(brokerId);
    return { brokerId, logEndOffset: r?.logEndOffset ?? -1, lagMs: r?.lagMs ?? -1 };
  });
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
          const expected = topic.partitions.find((p) => p.partition === o.partition)?.leaderEpoch;
          if (o.leaderEpoch !== undefined && o.leaderEpoch !== expected) {
            // The leader's view and ours are of different leaderships (one of us lags): ask again.
            throw new TidemarkError('LEADER_NOT_AVAILABLE', `${o.topic}/${o.partition}: broker ${brokerId} leads in epoch ${o.leaderEpoch}, metadata says ${expected}`, {
              context: { topic: o.topic, partition: o.partition, brokerId },
            });
          }
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
            replicaStates: o === undefined ? [] : replicaStates(p.replicas, o.replicas ?? []),
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

  async electLeaders(options: ElectLeadersOptions = {}): Promise<ElectLeadersResult[]> {
    const { rpc, subjects } = this.deps;
    if (options.partitions !== undefined && options.topic === undefined) {
      throw new TidemarkError('INVALID_REQUEST', 'electLeaders: partitions need a topic');
    }
    const request = (remainingMs: number): ElectLeadersRequest => ({
      timeoutMs: this.timeoutMs(remainingMs),
      type: options.type ?? 'preferred',
      // Absent (undefined is not encoded) means every topic / every partition.
      topic: options.topic,
      partitions: options.partitions === undefined ? undefined : [...new Set(options.partitions)],
    });
    // UNKNOWN_TOPIC from the controller is final (its image is the committed truth); see deleteTopic.
    const reply = await this.retry(
      (remainingMs) => rpc.request(subjects.admin('elect-leaders'), request(remainingMs), electLeadersReply),
      (error) => isRetriable(error) && !(error instanceof TidemarkError && error.code === 'UNKNOWN_TOPIC'),
    );
    const topics = [...new Set(reply.results.map((r) => r.topic))];
    this.deps.metadata.observe(reply.metadataOffset);
    for (const topic of topics) this.deps.metadata.invalidate(topic);
    // Read-your-writes: wait until a broker answers metadata at or past the elections' commit (the
    // offset is all this needs: ask for no topics).
    await this.retry(async () => {
      const md = await this.deps.metadata.fetch([]);
      if (md.offset < reply.metadataOffset) {
        throw new TidemarkError('LEADER_NOT_AVAILABLE', `brokers do not show the elections (metadata offset ${md.offset} < ${reply.metadataOffset}) yet`);
      }
    });
    const results: ElectLeadersResult[] = reply.results.map((r) =>
      r.error === undefined ? { topic: r.topic, partition: r.partition, leader: r.leader } : { ...r, error: { code: r.error.code, message: r.error.message } },
    );
    // The controller skips partitions the topic does not have: say so, per partition (as Kafka does).
    if (options.topic !== undefined && options.partitions !== undefined) {
      const answered = new Set(results.map((r) => r.partition));
      for (const partition of new Set(options.partitions)) {
        if (answered.has(partition)) continue;
        const message = `topic "${options.topic}" has no partition ${partition}`;
        results.push({ topic: options.topic, partition, leader: -1, error: { code: 'UNKNOWN_TOPIC', message } });
      }
    }
    return results.sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition));
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
