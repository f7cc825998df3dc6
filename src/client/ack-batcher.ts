/**
 * A consumer's acknowledgements: gathered per partition, sent as one ack request per leader broker
 * (offsets coalesced into [start, end) ranges, negative acks alongside with their delay), and each
 * ack's promise settled by the reply, which the leader sends once the acks are durable.
 *
 * Batching is adaptive, like the producer's linger: acks made in the same synchronous run go in one
 * flush (it starts on a microtask); while a flush is in flight, new acks gather and go together
 * when it completes. So at most one ack request is in flight per (consumer, broker).
 *
 * A flush is retried here (the one retry layer on the ack path): after a retriable error the
 * partitions still unacknowledged are grouped again by their current leader (acks are idempotent)
 * and sent after the helper's backoff. A non-retriable error rejects that partition's acks.
 */
import { TidemarkError } from '../protocol/errors.js';
import { REQUEST_TIMEOUT_MS_MAX } from '../protocol/messages.js';
import { ACK_RANGES_MAX, ackReply, NACKS_MAX, type AckReply, type AckRequest } from '../protocol/subscription-messages.js';
import { retry } from '../runtime/retry.js';
import type { AdminDeps } from './admin.js';

/** Sorted, de-duplicated offsets as a flat list of [start, end) pairs: [3,4,5,9] → [3,6,9,10]. */
export function coalesceRanges(offsets: Iterable<number>): number[] {
  const sorted = [...new Set(offsets)].sort((a, b) => a - b);
  const out: number[] = [];
  for (const o of sorted) {
    if (out.length > 0 && out[out.length - 1] === o) out[out.length - 1] = o + 1;
    else out.push(o, o + 1);
  }
  return out;
}

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** What is pending on one partition. */
interface PartitionAcks {
  /** Individually acknowledged offsets, each with the callers waiting on it. */
  acks: Map<number, Waiter[]>;
  /** Everything below it is acknowledged (Exclusive / Failover); -1 when none. */
  cumulative: number;
  cumulativeWaiters: Waiter[];
  nacks: Set<number>;
}

/** The admin client's call-path parts (rpc, metadata, retry policy, budget), plus the consumer's identity. */
export type AckBatcherDeps = AdminDeps & {
  topic: string;
  subscription: string;
  consumerId: string;
  nackDelayMs: number;
  /** Told when acks of a partition became durable (the consumer tracks it for its end-of-backlog check). */
  onDurable?: (partition: number) => void;
};

function emptyPartition(): PartitionAcks {
  return { acks: new Map(), cumulative: -1, cumulativeWaiters: [], nacks: new Set() };
}

export class AckBatcher {
  private pending = new Map<number, PartitionAcks>();
  private flushing: Promise<void> | undefined;
  private scheduled = false;
  private closed = false;
  /** Ack requests sent, for tests and stats. */
  requestsSent = 0;

  constructor(private readonly deps: AckBatcherDeps) {}

  /** Resolves once the leader says the ack is durable. */
  ack(partition: number, offset: number): Promise<void> {
    if (this.closed) return Promise.reject(new TidemarkError('CLOSED', 'consumer is closed'));
    return new Promise<void>((resolve, reject) => {
      const p = this.entry(partition);
      const waiters = p.acks.get(offset);
      if (waiters === undefined) p.acks.set(offset, [{ resolve, reject }]);
      else waiters.push({ resolve, reject });
      p.nacks.delete(offset);
      this.schedule();
    });
  }

  /** Everything up to and including `offset`. */
  ackCumulative(partition: number, offset: number): Promise<void> {
    if (this.closed) return Promise.reject(new TidemarkError('CLOSED', 'consumer is closed'));
    return new Promise<void>((resolve, reject) => {
      const p = this.entry(partition);
      p.cumulative = Math.max(p.cumulative, offset + 1);
      p.cumulativeWaiters.push({ resolve, reject });
      this.schedule();
    });
  }

  /** Fire and forget: the leader delivers it again after the nack delay. */
  nack(partition: number, offset: number): void {
    if (this.closed) return;
    const p = this.entry(partition);
    if (p.acks.has(offset)) return;
    p.nacks.add(offset);
    this.schedule();
  }

  /** Whether acks are pending or in flight. */
  get idle(): boolean {
    return this.pending.size === 0 && this.flushing === undefined;
  }

  /** Sends everything pending and waits until every ack made before it has settled. */
  async flush(): Promise<void> {
    while (!this.idle) {
      if (this.flushing !== undefined) await this.flushing;
      else this.startFlush();
    }
  }

  /** Flushes, then refuses new acks. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
  }

  /** Rejects everything pending (the consumer failed or was torn down). */
  fail(error: unknown): void {
    this.closed = true;
    const pending = this.pending;
    this.pending = new Map();
    for (const p of pending.values()) settle(p, error);
  }

  private entry(partition: number): PartitionAcks {
    let p = this.pending.get(partition);
    if (p === undefined) {
      p = emptyPartition();
      this.pending.set(partition, p);
    }
    return p;
  }

  private schedule(): void {
    if (this.scheduled || this.flushing !== undefined) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      if (this.flushing === undefined && this.pending.size > 0) this.startFlush();
    });
  }

  private startFlush(): void {
    const batch = this.pending;
    this.pending = new Map();
    const run = this.send(batch).finally(() => {
      if (this.flushing === run) this.flushing = undefined;
      if (this.pending.size > 0) this.schedule();
    });
    this.flushing = run;
  }

  /** One flush: every partition's acks, to its current leader, retried until done or out of budget. */
  private async send(batch: Map<number, PartitionAcks>): Promise<void> {
    const { metadata, clock, random, policy, signal, topic } = this.deps;
    // Partitions with more ranges or nacks than one request carries keep the rest for the next flush.
    const remaining = new Map<number, PartitionAcks>();
    for (const [partition, p] of batch) remaining.set(partition, this.split(partition, p));
    try {
      await retry(
        async (remainingMs) => {
          const byBroker = new Map<number, number[]>();
          let lookupError: unknown;
          for (const partition of remaining.keys()) {
            try {
              const leader = await metadata.leader(topic, partition);
              const list = byBroker.get(leader.brokerId) ?? [];
              list.push(partition);
              byBroker.set(leader.brokerId, list);
            } catch (error) {
              lookupError ??= error;
            }
          }
          const errors = await Promise.all([...byBroker].map(([brokerId, partitions]) => this.request(brokerId, partitions, remaining, remainingMs)));
          const error = lookupError ?? errors.find((e) => e !== undefined);
          if (remaining.size > 0) throw error ?? new TidemarkError('INTERNAL', 'acks left without an error');
        },
        { policy, clock, random, signal, onRetry: (error) => metadata.noteError(topic, error) },
      );
    } catch (error) {
      for (const p of remaining.values()) settle(p, error);
      remaining.clear();
    }
  }

  /**
   * One ack request to one broker; settles the partitions it answers (removing them from
   * `remaining`) and returns the first retriable error, if any.
   */
  private async request(brokerId: number, partitions: number[], remaining: Map<number, PartitionAcks>, remainingMs: number): Promise<unknown> {
    const { rpc, subjects, topic, subscription, consumerId, nackDelayMs, requestTimeoutMs } = this.deps;
    const body: AckRequest = {
      timeoutMs: Math.max(1, Math.min(REQUEST_TIMEOUT_MS_MAX, requestTimeoutMs, remainingMs)),
      consumerId,
      partitions: partitions.map((partition) => {
        const p = remaining.get(partition)!;
        const entry: AckRequest['partitions'][number] = { partition };
        if (p.acks.size > 0) entry.ranges = coalesceRanges(p.acks.keys());
        if (p.cumulative >= 0) entry.cumulative = p.cumulative;
        if (p.nacks.size > 0) {
          entry.nacks = [...p.nacks].sort((a, b) => a - b);
          entry.nackDelayMs = nackDelayMs;
        }
        return entry;
      }),
    };
    let reply: AckReply;
    try {
      this.requestsSent++;
      reply = await rpc.request(subjects.consumer('ack', brokerId, topic, subscription), body, ackReply);
    } catch (error) {
      if (error instanceof TidemarkError && error.retriable) return error;
      for (const partition of partitions) {
        settle(remaining.get(partition)!, error);
        remaining.delete(partition);
      }
      return undefined;
    }
    let retriable: unknown;
    for (const r of reply.partitions) {
      const p = remaining.get(r.partition);
      if (p === undefined || !partitions.includes(r.partition)) continue;
      if (r.error === undefined) {
        settle(p, undefined);
        remaining.delete(r.partition);
        this.deps.onDurable?.(r.partition);
        continue;
      }
      const error = TidemarkError.fromWire(r.error, { topic, partition: r.partition, brokerId });
      if (error.retriable) {
        retriable ??= error;
        continue;
      }
      settle(p, error);
      remaining.delete(r.partition);
    }
    // A partition the reply did not mention is retried.
    for (const partition of partitions) {
      if (remaining.has(partition) && !reply.partitions.some((r) => r.partition === partition)) {
        retriable ??= new TidemarkError('UNKNOWN_TOPIC', `broker ${brokerId} did not answer for ${topic}/${partition}`);
      }
    }
    return retriable;
  }

  /** Keeps what fits one request; what does not goes back to pending for the next flush. */
  private split(partition: number, p: PartitionAcks): PartitionAcks {
    if (p.acks.size <= ACK_RANGES_MAX && p.nacks.size <= NACKS_MAX) return p;
    const now = emptyPartition();
    now.cumulative = p.cumulative;
    now.cumulativeWaiters = p.cumulativeWaiters;
    const later = this.entry(partition);
    const offsets = [...p.acks.keys()].sort((a, b) => a - b);
    // At most ACK_RANGES_MAX offsets is at most that many ranges.
    offsets.forEach((o, i) => (i < ACK_RANGES_MAX ? now.acks : later.acks).set(o, p.acks.get(o)!));
    [...p.nacks].forEach((o, i) => (i < NACKS_MAX ? now.nacks : later.nacks).add(o));
    this.schedule();
    return now;
  }
}

function settle(p: PartitionAcks, error: unknown): void {
  const waiters = [...[...p.acks.values()].flat(), ...p.cumulativeWaiters];
  for (const w of waiters) {
    if (error === undefined) w.resolve();
    else w.reject(error);
  }
}
