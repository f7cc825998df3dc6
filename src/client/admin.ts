/**
 * Topic and cluster administration. Create, delete, create-partitions, alter-config and
 * elect-leaders go to the active controller (`subjects.admin(op, topic)`); list and describe read
 * metadata, and describe also asks each leading broker for its partitions' offsets and replica
 * progress; describeCluster collects every node's status.
 * Subscriptions: create and delete go to the controller (the registry is in the metadata log);
 * list, describe and reset ask each partition leader broker (`subjects.subscriptionAdmin`), once
 * per broker for all the partitions it leads, and merge its answers with the registry.
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
import {
  createSubscriptionReply,
  subscriptionAdminReply,
  type ConsumerInfo,
  type CreateSubscriptionRequest,
  type DeleteSubscriptionRequest,
  type InitialPosition,
  type SubscriptionAdminReply,
  type SubscriptionAdminRequest,
  type SubscriptionMetadata,
  type SubscriptionPartitionInfo,
  type SubscriptionType,
} from '../protocol/subscription-messages.js';
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
export type { SubscriptionMetadata, SubscriptionType, InitialPosition, ConsumerInfo };

export type CreateSubscriptionOptions = {
  /** The topic; it must exist (UNKNOWN_TOPIC otherwise). Required. */
  topic: string;
  /** Subscription name: 1-128 of [a-zA-Z0-9._-], not "." or "..". Required. */
  name: string;
  /**
   * Where the cursor starts on the partitions the topic has now (partitions added later start at
   * their log start). Ignored when the subscription exists already: it keeps its own.
   * @default 'latest'
   */
  initialPosition?: InitialPosition;
};

/** Where `resetSubscription` moves a subscription's cursor on every partition. */
export type ResetTarget =
  /** The log start: everything still stored is delivered again. */
  | 'earliest'
  /** The high watermark: the backlog becomes empty. */
  | 'latest'
  /** This offset on every partition (Kafka's --to-offset); clamped to the log by the leader. */
  | { offset: number }
  /** The first record at or after this time (ms since the epoch, or a Date), per partition. */
  | { timestamp: number | Date };

/**
 * One partition of a subscription: the registry's view merged with what its leader reports. A
 * partition whose leader does not report the subscription (no leader now, the leader unreachable
 * or not yet serving subscriptions, or it has not seen the subscription yet) shows `reported:
 * false`, markDelete / backlog / highWatermark -1 (unknown), no type and no consumers.
 */
export interface SubscriptionPartitionDescription {
  partition: number;
  /** The partition leader asked (-1: none). */
  leader: number;
  /** Whether the leader reported this subscription on this partition. */
  reported: boolean;
  /** Committed position: every offset below it is acknowledged (Kafka's committed offset); -1 unknown. */
  markDelete: number;
  /** Acknowledged offsets at or above markDelete (individual acks not yet contiguous). */
  ackedAbove: number;
  /** Records up to the high watermark not yet acknowledged (lag, in records); -1 unknown. */
  backlog: number;
  /** Delivered to a consumer and not yet acknowledged. */
  unacked: number;
  /** The partition's high watermark as its leader answered; -1 unknown. */
  highWatermark: number;
  /** Set by the attached consumers; absent while none is attached. */
  type?: SubscriptionType;
  consumers: ConsumerInfo[];
}

export interface SubscriptionDescription extends SubscriptionMetadata {
  topic: string;
  /** Every partition of the topic, by partition number. */
  partitions: SubscriptionPartitionDescription[];
  /** Sum of the known partition backlogs, records. */
  backlog: number;
  /** False when some partition's backlog is unknown (not reported): `backlog` is then a lower bound. */
  backlogComplete: boolean;
  /** Sum of the partitions' unacked counts. */
  unacked: number;
  /** The type the attached consumers set (the first partition reporting one); absent when none is attached. */
  type?: SubscriptionType;
  /** Distinct consumers attached on any partition. */
  consumerCount: number;
}

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
  /** The topic's producer epoch: 0 until its first exclusive producer, raised by each (issue 12). */
  producerEpoch: number;
  /** The producer holding the topic exclusively, if any. */
  exclusiveProducer?: { name: string; accessMode: string };
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
   * One topic's metadata alone (Pulsar's topic lookup): config and each partition's leader, leader
   * epoch, replicas and ISR, from any node, with no request to the leaders (so it answers while a
   * leader is unreachable, and costs one metadata round trip). Throws UNKNOWN_TOPIC if absent.
   */
  lookupTopic(name: string): Promise<TopicMetadata>;
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
  /**
   * Registers a subscription on a topic (in the metadata log). Idempotent: when it exists, resolves
   * with it as it is, its original initial position included. Resolves once brokers' metadata shows
   * it. Rejects UNKNOWN_TOPIC, or INVALID_REQUEST beyond 256 subscriptions on the topic.
   */
  createSubscription(options: CreateSubscriptionOptions): Promise<SubscriptionMetadata>;
  /**
   * Deletes a subscription and its cursors. Rejects UNKNOWN_SUBSCRIPTION when the controller does
   * not know it (a mistyped name is reported), also when an earlier attempt of this call deleted it
   * and the reply was lost (as deleteTopic). Resolves once brokers' metadata shows the deletion.
   */
  deleteSubscription(topic: string, name: string): Promise<void>;
  /** The topic's subscriptions, sorted by name, each described as by describeSubscription. UNKNOWN_TOPIC if absent. */
  listSubscriptions(topic: string): Promise<SubscriptionDescription[]>;
  /**
   * One subscription, per partition: committed position (markDelete), backlog, unacked count, type
   * and connected consumers, as the partition leaders report them, plus totals. UNKNOWN_TOPIC or
   * UNKNOWN_SUBSCRIPTION when metadata does not have it.
   */
  describeSubscription(topic: string, name: string): Promise<SubscriptionDescription>;
  /**
   * Moves the subscription's cursor on every partition (Kafka's --reset-offsets): to the log start,
   * to the high watermark, to one offset on every partition, or to the first record at or after a
   * time. Every partition must have a leader that applies it; the call is retried until they do
   * (a partial reset is repeated whole: each target is idempotent except 'latest', which moves on
   * to the newest high watermark). UNKNOWN_TOPIC or UNKNOWN_SUBSCRIPTION when metadata lacks it.
   */
  resetSubscription(topic: string, name: string, to: ResetTarget): Promise<void>;
}

export interface ClusterDescription {
  /** The active controller's id, -1 when none is known (an election is running, or no quorum). */
  controllerId: number;
  /**
   * Every configured voter (the voter set as the answering voters know it), sorted by id. A voter
   * that did not answer within the short wait is there with `reachable: false`, role
   * 'unreachable' and -1 for what only it could tell (term, indexes, leader). `matchIndex` and
   * `heardMsAgo` are the active controller's view of a follower (its highest replicated index, ms
   * since its last reply, at heartbeat granularity), when the active controller answered.
   */
  voters: Array<{
    id: number;
    role: string;
    term: number;
    leaderId: number;
    commitIndex: number;
    lastIndex: number;
    reachable: boolean;
    matchIndex?: number;
    heardMsAgo?: number;
  }>;
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

/** A subscription's partitions merged with the leaders' reports (see SubscriptionPartitionDescription). */
export function mergeSubscription(
  topic: TopicMetadata,
  subscription: SubscriptionMetadata,
  reports: ReadonlyMap<number, { highWatermark?: number; subscriptions?: SubscriptionPartitionInfo[] }>,
): SubscriptionDescription {
  const partitions = [...topic.partitions]
    .sort((a, b) => a.partition - b.partition)
    .map((p): SubscriptionPartitionDescription => {
      const report = reports.get(p.partition);
      const info = report?.subscriptions?.find((s) => s.subscription === subscription.name);
      const highWatermark = report?.highWatermark ?? -1;
      if (info === undefined) {
        return { partition: p.partition, leader: p.leader, reported: false, markDelete: -1, ackedAbove: 0, backlog: -1, unacked: 0, highWatermark, consumers: [] };
      }
      const out: SubscriptionPartitionDescription = {
        partition: p.partition,
        leader: p.leader,
        reported: true,
        markDelete: info.markDelete,
        ackedAbove: info.ackedAbove,
        backlog: info.backlog,
        unacked: info.unacked,
        highWatermark,
        consumers: info.consumers.map((c) => ({ ...c })),
      };
      if (info.type !== undefined) out.type = info.type;
      return out;
    });
  const type = partitions.find((p) => p.type !== undefined)?.type;
  const description: SubscriptionDescription = {
    topic: topic.name,
    ...subscription,
    partitions,
    backlog: partitions.reduce((sum, p) => sum + Math.max(0, p.backlog), 0),
    backlogComplete: partitions.every((p) => p.reported),
    unacked: partitions.reduce((sum, p) => sum + p.unacked, 0),
    consumerCount: new Set(partitions.flatMap((p) => p.consumers.map((c) => c.consumerId))).size,
  };
  if (type !== undefined) description.type = type;
  return description;
}

/** The wire form of a reset target; INVALID_REQUEST for a malformed one. */
export function resetTargetWire(to: ResetTarget): NonNullable<SubscriptionAdminRequest['target']> {
  if (to === 'earliest' || to === 'latest') return { kind: to };
  if (typeof to === 'object' && to !== null && 'offset' in to) {
    if (!Number.isSafeInteger(to.offset) || to.offset < 0) throw new TidemarkError('INVALID_REQUEST', `reset offset must be a non-negative integer, got ${String(to.offset)}`);
    return { kind: 'offset', value: to.offset };
  }
  if (typeof to === 'object' && to !== null && 'timestamp' in to) {
    const ms = to.timestamp instanceof Date ? to.timestamp.getTime() : to.timestamp;
    if (!Number.isSafeInteger(ms) || ms < 0) throw new TidemarkError('INVALID_REQUEST', `reset timestamp must be a time at or after 1970, got ${String(to.timestamp)}`);
    return { kind: 'timestamp', value: ms };
  }
  throw new TidemarkError('INVALID_REQUEST', `reset target must be 'earliest', 'latest', { offset } or { timestamp }, got ${JSON.stringify(to)}`);
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
        subjects.admin('create-topic', options.name),
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
        rpc.request(subjects.admin('delete-topic', name), { timeoutMs: this.timeoutMs(remainingMs), name } satisfies DeleteTopicRequest, deleteTopicReply),
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
      throw new TidemarkError('UNKNOWN_TOPIC', `topic "${name}" does not exist`, { context: { topic: name }, final: true });
    }
    return described;
  }

  async lookupTopic(name: string): Promise<TopicMetadata> {
    const topic = await this.retry(async () => (await this.deps.metadata.fetch([name])).topics.find((t) => t.name === name));
    if (topic === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `topic "${name}" does not exist`, { context: { topic: name }, final: true });
    return topic;
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
      producerEpoch: topic.producerEpoch ?? 0,
      ...(topic.exclusiveProducer === undefined ? {} : { exclusiveProducer: { ...topic.exclusiveProducer } }),
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
        subjects.admin('create-partitions', name),
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
        subjects.admin('alter-config', name),
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
    const answered = statuses.filter((s) => s.voter !== undefined).map((s) => ({ id: s.nodeId, ...s.voter! }));
    const leader = answered.filter((v) => v.role === 'leader').sort((a, b) => b.term - a.term)[0];
    const seen = new Map(leader?.followers?.map((f) => [f.id, f]));
    // The voter set as any answering voter knows it: a voter that does not answer still appears.
    const ids = new Set([...answered.map((v) => v.id), ...answered.flatMap((v) => v.voters ?? [])]);
    const voters: ClusterDescription['voters'] = [...ids]
      .sort((a, b) => a - b)
      .map((id) => {
        const v = answered.find((a) => a.id === id);
        const f = seen.get(id);
        const known = f === undefined ? {} : { matchIndex: f.matchIndex, heardMsAgo: f.heardMsAgo };
        if (v === undefined) return { id, role: 'unreachable', term: -1, leaderId: -1, commitIndex: -1, lastIndex: -1, reachable: false, ...known };
        return { id, role: v.role, term: v.term, leaderId: v.leaderId, commitIndex: v.commitIndex, lastIndex: v.lastIndex, reachable: true, ...known };
      });
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

  async createSubscription(options: CreateSubscriptionOptions): Promise<SubscriptionMetadata> {
    const { rpc, subjects } = this.deps;
    // UNKNOWN_TOPIC from the controller is final (its image is the committed truth); see deleteTopic.
    const reply = await this.retry(
      (remainingMs) =>
        rpc.request(
          subjects.admin('create-subscription', options.topic, options.name),
          {
            timeoutMs: this.timeoutMs(remainingMs),
            topic: options.topic,
            name: options.name,
            initialPosition: options.initialPosition ?? 'latest',
          } satisfies CreateSubscriptionRequest,
          createSubscriptionReply,
        ),
      (error) => isRetriable(error) && !(error instanceof TidemarkError && error.code === 'UNKNOWN_TOPIC'),
    );
    this.deps.metadata.observe(reply.metadataOffset);
    this.deps.metadata.invalidate(options.topic);
    // Read-your-writes: metadata at or past this offset shows the subscription (the reply of an
    // existing one carries a barrier offset, after its creation).
    await this.metadataReaches(reply.metadataOffset, `subscription "${options.name}"`);
    return reply.subscription;
  }

  async deleteSubscription(topic: string, name: string): Promise<void> {
    const { rpc, subjects } = this.deps;
    // Both refusals are final: the controller's image is the committed truth (see deleteTopic).
    const reply = await this.retry(
      (remainingMs) =>
        rpc.request(subjects.admin('delete-subscription', topic, name), { timeoutMs: this.timeoutMs(remainingMs), topic, name } satisfies DeleteSubscriptionRequest, deleteTopicReply),
      (error) => isRetriable(error) && !(error instanceof TidemarkError && (error.code === 'UNKNOWN_TOPIC' || error.code === 'UNKNOWN_SUBSCRIPTION')),
    );
    this.deps.metadata.observe(reply.metadataOffset);
    this.deps.metadata.invalidate(topic);
    await this.metadataReaches(reply.metadataOffset, `the deletion of subscription "${name}"`);
  }

  async listSubscriptions(topic: string): Promise<SubscriptionDescription[]> {
    return this.describeSubscriptions(topic, undefined);
  }

  async describeSubscription(topic: string, name: string): Promise<SubscriptionDescription> {
    return (await this.describeSubscriptions(topic, name))[0]!;
  }

  async resetSubscription(topic: string, name: string, to: ResetTarget): Promise<void> {
    const target = resetTargetWire(to);
    const found = await this.retry(async (remainingMs) => {
      const md = await this.subscriptionMetadata(topic, name);
      if (md === 'no-topic' || md === 'no-subscription') return md;
      if (md.topic.partitions.some((p) => p.leader < 0)) {
        throw new TidemarkError('LEADER_NOT_AVAILABLE', `a partition of "${topic}" has no leader: the reset must reach every partition`, { context: { topic } });
      }
      // Every leader must apply it: any failure (NO_RESPONDERS included) fails the attempt.
      await this.askLeaders(md.topic, { op: 'reset', subscription: name, target }, this.timeoutMs(remainingMs), false);
      return 'done' as const;
    });
    if (found === 'no-topic') throw new TidemarkError('UNKNOWN_TOPIC', `topic "${topic}" does not exist`, { context: { topic }, final: true });
    if (found === 'no-subscription') throw this.unknownSubscription(topic, name);
  }

  /** The topic's metadata and the named subscription in it, or which of the two metadata lacks (an answer, not retried). */
  private async subscriptionMetadata(
    topic: string,
    name: string,
  ): Promise<{ topic: TopicMetadata; subscription: SubscriptionMetadata } | 'no-topic' | 'no-subscription'> {
    const reply = await this.deps.metadata.fetch([topic]);
    const t = reply.topics.find((x) => x.name === topic);
    if (t === undefined) return 'no-topic';
    const subscription = (t.subscriptions ?? []).find((s) => s.name === name);
    return subscription === undefined ? 'no-subscription' : { topic: t, subscription };
  }

  private unknownSubscription(topic: string, name: string): TidemarkError {
    return new TidemarkError('UNKNOWN_SUBSCRIPTION', `topic "${topic}" has no subscription "${name}"`, { context: { topic, subscription: name } });
  }

  /**
   * describe (one subscription) or list (all, `name` undefined): the registry from metadata, then
   * one describe request per leader broker for the partitions it leads. A topic or subscription
   * missing from metadata is an answer (not retried); a retriable failure of a leader is retried
   * for the whole call, except NO_RESPONDERS: a leader that is gone (fenced soon) or does not serve
   * subscriptions leaves its partitions unreported rather than holding the answer for the whole
   * retry budget.
   */
  private async describeSubscriptions(topic: string, name: string | undefined): Promise<SubscriptionDescription[]> {
    const described = await this.retry(async (remainingMs) => {
      const reply = await this.deps.metadata.fetch([topic]);
      const t = reply.topics.find((x) => x.name === topic);
      if (t === undefined) return 'no-topic' as const;
      const registered = (t.subscriptions ?? []).filter((s) => name === undefined || s.name === name);
      if (name !== undefined && registered.length === 0) return 'no-subscription' as const;
      if (registered.length === 0) return [];
      const request = name === undefined ? { op: 'describe' as const } : { op: 'describe' as const, subscription: name };
      const reports = await this.askLeaders(t, request, this.timeoutMs(remainingMs), true);
      return registered.map((s) => mergeSubscription(t, s, reports));
    });
    if (described === 'no-topic') throw new TidemarkError('UNKNOWN_TOPIC', `topic "${topic}" does not exist`, { context: { topic }, final: true });
    if (described === 'no-subscription') throw this.unknownSubscription(topic, name!);
    return described;
  }

  /**
   * One sub-admin request per leader broker, for the partitions it leads; the per-partition
   * answers by partition. Per-partition errors: UNKNOWN_SUBSCRIPTION (the leader has not seen the
   * subscription yet) leaves it unreported on describe; any other is thrown (retriable ones make the
   * caller's retry ask again). On `describe`, a broker nobody answers for (NO_RESPONDERS) leaves
   * its partitions unreported; a reset must reach them all.
   */
  private async askLeaders(
    topic: TopicMetadata,
    request: Omit<SubscriptionAdminRequest, 'timeoutMs' | 'partitions'>,
    timeoutMs: number,
    describe: boolean,
  ): Promise<Map<number, SubscriptionAdminReply['partitions'][number]>> {
    const byLeader = new Map<number, number[]>();
    for (const p of topic.partitions) {
      if (p.leader < 0) continue;
      const list = byLeader.get(p.leader) ?? [];
      list.push(p.partition);
      byLeader.set(p.leader, list);
    }
    const reports = new Map<number, SubscriptionAdminReply['partitions'][number]>();
    await Promise.all(
      [...byLeader].map(async ([brokerId, partitions]) => {
        let reply: SubscriptionAdminReply;
        try {
          reply = await this.deps.rpc.request(
            this.deps.subjects.subscriptionAdmin(brokerId, topic.name),
            { timeoutMs, ...request, partitions } satisfies SubscriptionAdminRequest,
            subscriptionAdminReply,
          );
        } catch (error) {
          if (describe && error instanceof TidemarkError && error.code === 'NO_RESPONDERS') return;
          throw error;
        }
        for (const p of reply.partitions) {
          if (!partitions.includes(p.partition)) continue;
          if (p.error !== undefined) {
            if (describe && p.error.code === 'UNKNOWN_SUBSCRIPTION') continue;
            throw TidemarkError.fromWire(p.error, { topic: topic.name, partition: p.partition, brokerId });
          }
          reports.set(p.partition, p);
        }
      }),
    );
    return reports;
  }

  /** Read-your-writes by offset: waits until a broker answers metadata at or past `offset`. */
  private async metadataReaches(offset: number, what: string): Promise<void> {
    await this.retry(async () => {
      const md = await this.deps.metadata.fetch([]);
      if (md.offset < offset) throw new TidemarkError('LEADER_NOT_AVAILABLE', `brokers do not show ${what} (metadata offset ${md.offset} < ${offset}) yet`);
    });
  }

  private timeoutMs(remainingMs: number): number {
    return Math.max(1, Math.min(this.deps.requestTimeoutMs, remainingMs));
  }

  private retry<T>(attempt: (remainingMs: number) => Promise<T>, retryIf?: (error: unknown) => boolean): Promise<T> {
    const { clock, random, policy, signal } = this.deps;
    return retry(attempt, { clock, random, policy, signal, ...(retryIf === undefined ? {} : { retryIf }) });
  }
}
