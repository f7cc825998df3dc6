/**
 * Every NATS subject Tidemark uses is built here and nowhere else.
 *
 *   tm.<cluster>.admin.<op>.<topic>                 the active controller: create-topic, delete-topic,
 *                                                   create-partitions, alter-config, producer-attach /
 *                                                   -heartbeat / -detach, for that topic
 *   tm.<cluster>.admin.<op>.<topic>.<sub>           the active controller: create-subscription, delete-subscription
 *   tm.<cluster>.admin.elect-leaders                the active controller: leader elections (cluster-wide)
 *   tm.<cluster>.controller.<op>                    the active controller: broker register / heartbeat / metadata
 *                                                   fetch / alter-partition (ISR change) / shutdown (controlled)
 *   tm.<cluster>.raft.<voter>                       Raft messages to one controller voter (one-way publishes)
 *   tm.<cluster>.status                             every node (no queue group): its role, term, epoch
 *   tm.<cluster>.metadata                           any node (queue group): brokers, topics, leaders
 *   tm.<cluster>.dev.control                        a running `tidemark dev`: stop / start / restart one of its nodes
 *   tm.<cluster>.b.<broker>.produce.<topic>         batches for any of topic's partitions the broker leads
 *   tm.<cluster>.b.<broker>.fetch.<topic>.<p>       idem, for reads
 *   tm.<cluster>.b.<broker>.replica-fetch.<topic>.<p>  followers of partition p fetching from its leader
 *   tm.<cluster>.b.<broker>.replica-fetch           one follower broker's fetch session with this leader broker,
 *                                                   carrying every partition between the two (KIP-227)
 *   tm.<cluster>.b.<broker>.offsets                 log start / end / high watermark of partitions it leads
 *   tm.<cluster>.b.<broker>.consume.<topic>.<sub>   one consumer's session poll for the topic's partitions the broker leads
 *   tm.<cluster>.b.<broker>.ack.<topic>.<sub>       acks and nacks of that consumer
 *   tm.<cluster>.b.<broker>.sub-admin.<topic>       describe / reset the topic's subscriptions on partitions it leads
 *   tm.<cluster>.b.<broker>.fence.<topic>           fence the topic's partitions it leads at a new producer epoch
 *
 * Every subject a client publishes to that concerns one topic carries the topic (and the
 * subscription, where one is meant) as a token, so NATS permissions alone can allow a client to
 * produce to topic A and consume subscription S of topic B and nothing else (docs/security.md;
 * `tidemark acl print` builds those allow lists from this class, with `'*'` for "any broker").
 * The node checks that the subject's topic is the one in the body. Topic names may contain '.',
 * which NATS uses as a token separator, so a topic token writes '.' as '~' ('~' is not a legal
 * topic character, so the mapping is one to one).
 */
import { tidemarkError } from './errors.js';

/** Admin operations on one topic: `tm.<c>.admin.<op>.<topic>`. */
export const TOPIC_ADMIN_OPS = ['create-topic', 'delete-topic', 'create-partitions', 'alter-config', 'producer-attach', 'producer-heartbeat', 'producer-detach'] as const;
/** Admin operations on one subscription of a topic: `tm.<c>.admin.<op>.<topic>.<sub>`. */
export const SUBSCRIPTION_ADMIN_OPS = ['create-subscription', 'delete-subscription'] as const;
/** Admin operations that may span topics: `tm.<c>.admin.<op>`. */
export const CLUSTER_ADMIN_OPS = ['elect-leaders'] as const;
export const ADMIN_OPS = [...TOPIC_ADMIN_OPS, ...SUBSCRIPTION_ADMIN_OPS, ...CLUSTER_ADMIN_OPS] as const;
export type TopicAdminOp = (typeof TOPIC_ADMIN_OPS)[number];
export type SubscriptionAdminOp = (typeof SUBSCRIPTION_ADMIN_OPS)[number];
export type ClusterAdminOp = (typeof CLUSTER_ADMIN_OPS)[number];
export type AdminOp = (typeof ADMIN_OPS)[number];
/** A broker id, or `'*'` (any broker) in a permission pattern. */
export type BrokerRef = number | '*';
/** A topic or subscription name, or `'*'` (any) in a permission pattern. */
export type NameRef = string;
export type PartitionOp = 'fetch' | 'replica-fetch';
export type ConsumerOp = 'consume' | 'ack';
export type ControllerOp = 'register' | 'heartbeat' | 'metadata-fetch' | 'alter-partition' | 'shutdown';

const CLUSTER_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const TOPIC_NAME = /^[A-Za-z0-9._-]{1,249}$/;

export function isValidClusterName(name: string): boolean {
  return CLUSTER_NAME.test(name);
}

export function isValidTopicName(name: string): boolean {
  return TOPIC_NAME.test(name) && name !== '.' && name !== '..';
}

/** Subscription names: the topic charset, at most 128 characters. */
export function isValidSubscriptionName(name: string): boolean {
  return isValidTopicName(name) && name.length <= 128;
}

export function topicToken(topic: string): string {
  return topic.replaceAll('.', '~');
}

export function topicFromToken(token: string): string {
  return token.replaceAll('~', '.');
}

/** `tm.<cluster>.raft.<voter>`, from the prefix alone (the quorum is given `Subjects.prefix`). */
export function raftSubject(prefix: string, voterId: number): string {
  return `${prefix}.raft.${voterId}`;
}

export class Subjects {
  readonly prefix: string;

  constructor(readonly cluster: string) {
    if (!isValidClusterName(cluster)) {
      throw tidemarkError('INVALID_REQUEST', `invalid cluster name "${cluster}": use 1-64 of [A-Za-z0-9_-]`);
    }
    this.prefix = `tm.${cluster}`;
  }

  /**
   * An admin request's subject: the topic (and subscription) ride in it, so NATS can allow an op per
   * topic. Throws INVALID_TOPIC / INVALID_REQUEST for a name that cannot be a subject token (`'*'`
   * passes: a permission pattern for any topic).
   */
  admin(op: ClusterAdminOp): string;
  admin(op: TopicAdminOp, topic: NameRef): string;
  admin(op: SubscriptionAdminOp, topic: NameRef, subscription: NameRef): string;
  admin(op: AdminOp, topic?: NameRef, subscription?: NameRef): string {
    if (topic === undefined) return `${this.prefix}.admin.${op}`;
    const base = `${this.prefix}.admin.${op}.${checkedToken(topic, 'topic')}`;
    return subscription === undefined ? base : `${base}.${checkedToken(subscription, 'subscription')}`;
  }

  /** What the active controller subscribes to for `op`: every topic (and subscription). */
  adminWildcard(op: AdminOp): string {
    if ((CLUSTER_ADMIN_OPS as readonly string[]).includes(op)) return `${this.prefix}.admin.${op}`;
    return (SUBSCRIPTION_ADMIN_OPS as readonly string[]).includes(op) ? `${this.prefix}.admin.${op}.*.*` : `${this.prefix}.admin.${op}.*`;
  }

  /** Topic (and subscription) of a per-topic admin subject; undefined if malformed. */
  parseAdmin(subject: string): { op: AdminOp; topic: string; subscription?: string } | undefined {
    const tokens = subject.split('.');
    const op = tokens[3] as AdminOp;
    if (tokens[2] !== 'admin' || !(ADMIN_OPS as readonly string[]).includes(op)) return undefined;
    const topic = topicFromToken(tokens[4] ?? '');
    if (!isValidTopicName(topic)) return undefined;
    if ((TOPIC_ADMIN_OPS as readonly string[]).includes(op)) return tokens.length === 5 ? { op, topic } : undefined;
    if (!(SUBSCRIPTION_ADMIN_OPS as readonly string[]).includes(op) || tokens.length !== 6) return undefined;
    const subscription = topicFromToken(tokens[5]!);
    return isValidSubscriptionName(subscription) ? { op, topic, subscription } : undefined;
  }

  controller(op: ControllerOp): string {
    return `${this.prefix}.controller.${op}`;
  }

  /** Each voter subscribes to its own; every Raft message is a publish, replies included. */
  raft(voterId: number): string {
    return raftSubject(this.prefix, voterId);
  }

  /** Every node answers (no queue group): the CLI collects the replies for `cluster status`. */
  status(): string {
    return `${this.prefix}.status`;
  }

  metadata(): string {
    return `${this.prefix}.metadata`;
  }

  /** A running `tidemark dev` answers here (dev-messages.ts): stop / start / restart one of its nodes. */
  devControl(): string {
    return `${this.prefix}.dev.control`;
  }

  partition(op: PartitionOp, brokerId: BrokerRef, topic: NameRef, partition: number | '*'): string {
    return `${this.prefix}.b.${brokerId}.${op}.${topicToken(topic)}.${partition}`;
  }

  /** Wildcard a broker subscribes to for one partition operation on all its partitions. */
  partitionWildcard(op: PartitionOp, brokerId: number): string {
    return `${this.prefix}.b.${brokerId}.${op}.*.*`;
  }

  /** One request carries batches for many of the topic's partitions that `brokerId` leads. */
  produce(brokerId: BrokerRef, topic: NameRef): string {
    return `${this.prefix}.b.${brokerId}.produce.${topicToken(topic)}`;
  }

  produceWildcard(brokerId: number): string {
    return `${this.prefix}.b.${brokerId}.produce.*`;
  }

  /** A new exclusive producer's fence of the topic's partitions `brokerId` leads (producer-messages.ts). */
  fence(brokerId: BrokerRef, topic: NameRef): string {
    return `${this.prefix}.b.${brokerId}.fence.${topicToken(topic)}`;
  }

  fenceWildcard(brokerId: number): string {
    return `${this.prefix}.b.${brokerId}.fence.*`;
  }

  /** The topic of a `…b.<broker>.fence.<topic>` subject; undefined if malformed. */
  parseFence(subject: string): string | undefined {
    const tokens = subject.split('.');
    if (tokens.length !== 6 || tokens[4] !== 'fence') return undefined;
    const topic = topicFromToken(tokens[5]!);
    return isValidTopicName(topic) ? topic : undefined;
  }

  /** The topic of a `…b.<broker>.produce.<topic>` subject; undefined if malformed. */
  parseProduce(subject: string): string | undefined {
    const tokens = subject.split('.');
    if (tokens.length !== 6 || tokens[4] !== 'produce') return undefined;
    const topic = topicFromToken(tokens[5]!);
    return isValidTopicName(topic) ? topic : undefined;
  }

  /** A follower broker's one fetch session with leader broker `brokerId`, for all their partitions. */
  replicaFetchSession(brokerId: number): string {
    return `${this.prefix}.b.${brokerId}.replica-fetch`;
  }

  /** A consumer's session poll (op 'consume') or its acks (op 'ack'), per broker, topic and subscription. */
  consumer(op: ConsumerOp, brokerId: BrokerRef, topic: NameRef, subscription: NameRef): string {
    return `${this.prefix}.b.${brokerId}.${op}.${topicToken(topic)}.${topicToken(subscription)}`;
  }

  consumerWildcard(op: ConsumerOp, brokerId: number): string {
    return `${this.prefix}.b.${brokerId}.${op}.*.*`;
  }

  /** Topic and subscription of a `…b.<broker>.<consume|ack>.<topic>.<sub>` subject; undefined if malformed. */
  parseConsumer(subject: string): { topic: string; subscription: string } | undefined {
    const tokens = subject.split('.');
    if (tokens.length !== 7 || (tokens[4] !== 'consume' && tokens[4] !== 'ack')) return undefined;
    const topic = topicFromToken(tokens[5]!);
    const subscription = topicFromToken(tokens[6]!);
    return isValidTopicName(topic) && isValidSubscriptionName(subscription) ? { topic, subscription } : undefined;
  }

  subscriptionAdmin(brokerId: BrokerRef, topic: NameRef): string {
    return `${this.prefix}.b.${brokerId}.sub-admin.${topicToken(topic)}`;
  }

  subscriptionAdminWildcard(brokerId: number): string {
    return `${this.prefix}.b.${brokerId}.sub-admin.*`;
  }

  /** The topic of a `…b.<broker>.sub-admin.<topic>` subject; undefined if malformed. */
  parseSubscriptionAdmin(subject: string): string | undefined {
    const tokens = subject.split('.');
    if (tokens.length !== 6 || tokens[4] !== 'sub-admin') return undefined;
    const topic = topicFromToken(tokens[5]!);
    return isValidTopicName(topic) ? topic : undefined;
  }

  offsets(brokerId: BrokerRef): string {
    return `${this.prefix}.b.${brokerId}.offsets`;
  }

  /** Parses `…b.<broker>.<op>.<topic>.<p>` back into topic and partition; undefined if malformed. */
  parsePartition(subject: string): { topic: string; partition: number } | undefined {
    const tokens = subject.split('.');
    if (tokens.length !== 7) return undefined;
    const topic = topicFromToken(tokens[5]!);
    const partitionText = tokens[6]!;
    if (!/^(0|[1-9][0-9]{0,8})$/.test(partitionText) || !isValidTopicName(topic)) return undefined;
    return { topic, partition: Number(partitionText) };
  }
}

/** The subject token of a topic or subscription name given by a caller; `'*'` stays a wildcard. */
function checkedToken(name: string, what: 'topic' | 'subscription'): string {
  if (name === '*') return name;
  if (what === 'topic' && !isValidTopicName(name)) {
    throw tidemarkError('INVALID_TOPIC', `invalid topic name "${name}": use 1-249 of [a-zA-Z0-9._-], not "." or ".."`);
  }
  if (what === 'subscription' && !isValidSubscriptionName(name)) {
    throw tidemarkError('INVALID_REQUEST', `invalid subscription name "${name}": use 1-128 of [a-zA-Z0-9._-], not "." or ".."`);
  }
  return topicToken(name);
}
