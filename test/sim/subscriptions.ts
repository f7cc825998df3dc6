/**
 * The workload's subscriptions: named subscriptions of every type on live topics, consumed through
 * the SDK (`client.consumer`, each consumer on its own simulated connection so it can crash), with
 * acks, negative acks, consumers joining, closing and crashing (the connection drops; the leader
 * notices after the session timeout). Two rules are checked, the two users rely on:
 *
 * - **an acknowledged message does not come back**: once a consumer's `ack()` resolved (durable),
 *   no leader hands that offset of that subscription out again (checked where the leaders send
 *   replies, through the subscription hub's observer: a reply already on its way when the ack
 *   resolved was sent before, and does not count);
 * - **no message is lost**: once the cluster has healed, every record below the leader's high
 *   watermark (control records aside) reaches some consumer of every subscription at least once.
 *
 * Subscriptions go only on topics with the default flush.mode (fsync) and clean elections, where a
 * committed record, cursor records included, survives any fault the simulator injects.
 */
import type { Tidemark } from '../../src/client/client.js';
import { codecs } from '../../src/client/codecs.js';
import type { Consumer } from '../../src/client/consumer.js';
import { isControlBatch, readBatchHeader } from '../../src/protocol/batch.js';
import { TidemarkError } from '../../src/protocol/errors.js';
import type { SubscriptionType } from '../../src/protocol/subscription-messages.js';
import type { Violations } from './checkers.js';
import type { SimCluster } from './cluster.js';
import type { Rng } from './random.js';
import type { RecordLedger } from './records.js';
import type { Trace } from './trace.js';

export const SUBSCRIPTIONS_MAX = 4;
export const CONSUMERS_PER_SUBSCRIPTION_MAX = 3;
const TYPES: readonly SubscriptionType[] = ['Exclusive', 'Failover', 'Shared', 'Key_Shared'];
/** The consumers' session timeout: a crashed one's messages move on after it, simulated ms. */
const SESSION_TIMEOUT_MS = 3000;

interface SimSubscription {
  topic: string;
  name: string;
  type: SubscriptionType;
  consumers: SimConsumer[];
  /** partition -> offsets some consumer received. */
  readonly received: Map<number, Set<number>>;
  /** partition id (topicId/partition) -> offsets whose ack resolved -> when (simulated ms). */
  readonly durable: Map<string, Map<number, number>>;
}

interface SimConsumer {
  readonly id: string;
  readonly client: Tidemark;
  consumer: Consumer<string> | undefined;
  state: 'starting' | 'running' | 'closing' | 'done';
  crash: () => void;
}

export interface ConsumerFactory {
  /** A client on a connection of its own; `crash` drops that connection. */
  client(id: string): { client: Tidemark; crash: () => void };
}

export class SubscriberPool {
  readonly stats = { subscriptions: 0, consumers: 0, refused: 0, crashed: 0, closed: 0, received: 0, acked: 0, nacked: 0, ackFailed: 0 };
  private readonly subs: SimSubscription[] = [];
  private nextSub = 1;
  private nextConsumer = 1;

  constructor(
    private readonly factory: ConsumerFactory,
    private readonly rng: Rng,
    private readonly ledger: RecordLedger,
    private readonly violations: Violations,
    private readonly trace: Trace,
    private readonly now: () => number,
  ) {}

  get subscriptions(): readonly SimSubscription[] {
    return this.subs;
  }

  /** Topics fit for subscriptions: default flush mode, clean elections. */
  static fits(config: Readonly<Record<string, string>>): boolean {
    return config['flush.mode'] === undefined && config['unclean.leader.election.enable'] === undefined;
  }

  subscribe(topic: string): void {
    if (this.subs.length >= SUBSCRIPTIONS_MAX) return;
    const sub: SimSubscription = { topic, name: `s${this.nextSub++}`, type: this.rng.pick(TYPES)!, consumers: [], received: new Map(), durable: new Map() };
    this.subs.push(sub);
    this.stats.subscriptions++;
    this.trace.event('sub', `${topic}:${sub.name} (${sub.type})`);
    this.addConsumer(sub);
  }

  /** Another consumer on a random live subscription. */
  join(live: (topic: string) => boolean): void {
    const sub = this.rng.pick(this.subs.filter((s) => live(s.topic) && this.running(s).length < CONSUMERS_PER_SUBSCRIPTION_MAX));
    if (sub !== undefined) this.addConsumer(sub);
  }

  /** A consumer leaves: closes, or crashes (its connection drops). */
  leave(): void {
    const all = this.subs.flatMap((s) => this.running(s));
    const c = this.rng.pick(all);
    if (c === undefined) return;
    if (this.rng.chance(0.5)) {
      this.stats.crashed++;
      this.trace.event('sub', `consumer ${c.id} crashes`);
      c.state = 'done';
      c.crash();
    } else {
      this.stats.closed++;
      this.trace.event('sub', `consumer ${c.id} closes`);
      c.state = 'closing';
      void c.consumer?.close().finally(() => (c.state = 'done'));
    }
  }

  topicDeleted(topic: string): void {
    for (const s of this.subs.filter((x) => x.topic === topic)) {
      for (const c of this.running(s)) {
        c.state = 'done';
        c.crash();
      }
    }
    this.subs.splice(0, this.subs.length, ...this.subs.filter((x) => x.topic !== topic));
  }

  private running(sub: SimSubscription): SimConsumer[] {
    return sub.consumers.filter((c) => c.state === 'starting' || c.state === 'running');
  }

  private addConsumer(sub: SimSubscription): void {
    const id = `${sub.name}c${this.nextConsumer++}`;
    const { client, crash } = this.factory.client(id);
    const c: SimConsumer = { id, client, consumer: undefined, state: 'starting', crash };
    sub.consumers.push(c);
    this.stats.consumers++;
    const nack = this.rng.chance(0.3) ? 0.05 : 0;
    void client
      .consumer({
        topic: sub.topic,
        subscription: sub.name,
        type: sub.type,
        codec: codecs.string(),
        initialPosition: 'earliest',
        consumerName: id,
        sessionTimeoutMs: SESSION_TIMEOUT_MS,
        receiverQueueSize: this.rng.int(5, 200),
        nackRedeliveryDelayMs: this.rng.int(0, 500),
        requestTimeoutMs: 2000,
      })
      .then(
        async (consumer) => {
          c.consumer = consumer;
          if (c.state !== 'starting') {
            await consumer.close();
            return;
          }
          c.state = 'running';
          const rng = this.rng.fork(id);
          for await (const m of consumer) {
            if (c.state !== 'running') break;
            this.stats.received++;
            const pid = this.ledger.partitionId(sub.topic, m.partition);
            let seen = sub.received.get(m.partition);
            if (seen === undefined) sub.received.set(m.partition, (seen = new Set()));
            seen.add(m.offset);
            if (rng.chance(nack)) {
              this.stats.nacked++;
              m.nack();
              continue;
            }
            m.ack().then(
              () => {
                this.stats.acked++;
                if (pid === undefined) return;
                let durable = sub.durable.get(pid);
                if (durable === undefined) sub.durable.set(pid, (durable = new Map()));
                durable.set(m.offset, this.now());
              },
              () => this.stats.ackFailed++,
            );
          }
        },
        (error: unknown) => {
          this.stats.refused++;
          this.trace.event('sub', `consumer ${id} not started: ${code(error)}`);
        },
      )
      .catch((error: unknown) => this.trace.event('sub', `consumer ${id} stopped: ${code(error)}`))
      .finally(() => {
        if (c.state !== 'closing') c.state = 'done';
      });
  }

  /** SubscriptionObserver: a leader sends these offsets of `subscription` to a consumer. */
  delivered(topicId: string, partition: number, subscription: string, offsets: readonly number[], node?: number): void {
    const sub = this.subs.find((s) => s.name === subscription);
    const durable = sub?.durable.get(`${topicId}/${partition}`);
    if (durable === undefined) return;
    for (const offset of offsets) {
      const at = durable.get(offset);
      if (at !== undefined) {
        this.violations.add(`subscription ${sub!.topic}:${subscription}: offset ${offset} of partition ${partition} handed out again by n${node ?? '?'} after its ack was durable (at ${at} ms)`);
        return;
      }
    }
  }

  /**
   * Liveness: every subscription has a running consumer (one is started where none is), and every
   * record below each partition's leader high watermark reached one of its consumers.
   */
  unmet(cluster: SimCluster, highWatermark: (topic: string, partition: number) => { hw: number; leader: number; pid: string } | undefined, partitions: (topic: string) => number): string | undefined {
    for (const sub of this.subs) {
      if (this.running(sub).length === 0) {
        this.addConsumer(sub);
        return `${sub.topic}:${sub.name} has no running consumer (one starts)`;
      }
      for (let p = 0; p < partitions(sub.topic); p++) {
        const at = highWatermark(sub.topic, p);
        if (at === undefined) return `${sub.topic}/${p} has no leader`;
        const data = cluster.node(at.leader).disk.partitions.get(at.pid);
        if (data === undefined) continue;
        const seen = sub.received.get(p) ?? new Set<number>();
        for (let i = 0; i < data.batches.length; i++) {
          const batch = data.batches[i]!;
          if (isControlBatch(batch)) continue;
          const h = readBatchHeader(batch);
          for (let o = h.baseOffset; o < h.baseOffset + h.recordCount && o < at.hw; o++) {
            if (!seen.has(o)) {
              const state = cluster.node(at.leader).parts.broker?.getSnapshot().context.subscriptionHub.host?.inspect(at.pid.split('/')[0]!, p, sub.name);
              const consumers = sub.consumers.map((c) => `${c.id}:${c.state}`).join(' ');
              return `${sub.topic}:${sub.name} (${sub.type}) has not received ${sub.topic}/${p}@${o} (HW ${at.hw}); consumers ${consumers}; leader n${at.leader}: ${state}`;
            }
          }
        }
      }
    }
    return undefined;
  }

  stop(): void {
    for (const s of this.subs) for (const c of this.running(s)) {
      c.state = 'done';
      c.crash();
    }
  }
}

function code(error: unknown): string {
  return error instanceof TidemarkError ? error.code : error instanceof Error ? error.message : String(error);
}
