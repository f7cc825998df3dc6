/**
 * A partition leader actor on its own, for the partition machine's tests: the input of a leader of
 * `orders`/0 on broker 1 (replicas [1] unless told), and a transport that records the replies the
 * actor publishes and lets a test await one.
 */
import { decode } from '@msgpack/msgpack';
import { pino } from 'pino';
import type { SimulatedClock } from 'xstate';
import { createPendingBytesBudget, NODE_PENDING_APPEND_BYTES_MAX_DEFAULT } from '../../src/actors/partition/pending-budget.js';
import { DEFAULT_PARTITION_LIMITS, type PartitionInput } from '../../src/actors/partition/types.js';
import { parseTopicConfig } from '../../src/metadata/topic-config.js';
import { Subjects } from '../../src/protocol/subjects.js';
import type { Transport } from '../../src/runtime/ports.js';
import type { NodeStorage } from '../../src/storage/partition-store.js';

export const TOPIC_ID = '0123456789abcdef0123456789abcdef';

export interface Reply {
  subject: string;
  body: Record<string, unknown>;
}

export type RecordingTransport = Transport & { replies: Reply[]; next(subject: string): Promise<Reply> };

export function recordingTransport(): RecordingTransport {
  const replies: Reply[] = [];
  const waiting = new Map<string, (r: Reply) => void>();
  return {
    replies,
    maxPayloadBytes: 1 << 20,
    publish(subject, data) {
      const reply = { subject, body: decode(data) as Record<string, unknown> };
      replies.push(reply);
      waiting.get(subject)?.(reply);
      waiting.delete(subject);
    },
    subscribe: () => ({ unsubscribe() {} }),
    request: () => Promise.reject(new Error('not used')),
    requestMany: () => Promise.reject(new Error('not used')),
    /** The first reply to `subject`; fails after 5 s (a bound for the test, not a sleep). */
    next(subject) {
      const seen = replies.find((r) => r.subject === subject);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply to ${subject} within 5 s`)), 5000);
        waiting.set(subject, (r) => {
          clearTimeout(timer);
          resolve(r);
        });
      });
    },
  };
}

/** The input of the leader of `orders`/0 on broker 1, with `overrides` on top. */
export function leaderInput(storage: NodeStorage, transport: Transport, clock: SimulatedClock, overrides: Partial<PartitionInput> = {}): PartitionInput {
  return {
    topic: 'orders',
    topicId: TOPIC_ID,
    partition: 0,
    leaderEpoch: 0,
    brokerId: 1,
    brokerEpoch: 1,
    subjects: new Subjects('test'),
    replicas: [1],
    isr: [1],
    partitionEpoch: 0,
    config: parseTopicConfig({}),
    storage,
    transport,
    clock,
    random: { next: () => 0.5 },
    logger: pino({ level: 'silent' }),
    limits: DEFAULT_PARTITION_LIMITS,
    pendingBudget: createPendingBytesBudget(NODE_PENDING_APPEND_BYTES_MAX_DEFAULT),
    ...overrides,
  };
}
