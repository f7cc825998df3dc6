/**
 * Every NATS subject Tidemark uses is built here and nowhere else.
 *
 *   tm.<cluster>.admin.<op>                         the active controller: topic changes
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
 * The topic sits in the subject so NATS permissions can allow or deny per topic. Topic names may
 * contain '.', which NATS uses as a token separator, so a topic token writes '.' as '~' ('~' is not
 * a legal topic character, so the mapping is one to one).
 */
import { tidemarkError } from './errors.js';

export const ADMIN_OPS = [
  'create-topic',
  'delete-topic',
  'create-partitions',
  'alter-config',
  'elect-leaders',
  'create-subscription',
  'delete-subscription',
  'producer-attach',
  'producer-heartbeat',
  'producer-detach',
] as const;
export type AdminOp = (typeof ADMIN_OPS)[number];
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

  admin(op: AdminOp): string {
    return `${this.prefix}.admin.${op}`;
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

  partition(op: PartitionOp, brokerId: number, topic: string, partition: number): string {
    return `${this.prefix}.b.${brokerId}.${op}.${topicToken(topic)}.${partition}`;
  }

  /** Wildcard a broker subscribes to for one partition operation on all its partitions. */
  partitionWildcard(op: PartitionOp, brokerId: number): string {
    return `${this.prefix}.b.${brokerId}.${op}.*.*`;
  }

  /** One request carries batches for many of the topic's partitions that `brokerId` leads. */
  produce(brokerId: number, topic: string): string {
    return `${this.prefix}.b.${brokerId}.produce.${topicToken(topic)}`;
  }

  produceWildcard(brokerId: number): string {
    return `${this.prefix}.b.${brokerId}.produce.*`;
  }

  /** A new exclusive producer's fence of the topic's partitions `brokerId` leads (producer-messages.ts). */
  fence(brokerId: number, topic: string): string {
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
  consumer(op: ConsumerOp, brokerId: number, topic: string, subscription: string): string {
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
    return isValidTopicName(topic) && isValidTopicName(subscription) && subscription.length <= 128 ? { topic, subscription } : undefined;
  }

  subscriptionAdmin(brokerId: number, topic: string): string {
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

  offsets(brokerId: number): string {
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
