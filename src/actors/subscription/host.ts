/**
 * The broker's side of subscriptions: the subscriptions of every partition it leads
 * (partition-subscriptions.ts), the consumers' session polls, their acks, and describe / reset.
 *
 * A consume request covers every partition of one topic this broker leads, for one consumer of one
 * subscription. It is answered at once when some partition has something for the consumer (or an
 * error), otherwise parked until something arrives or `maxWaitMs` passes. One poll per consumer is
 * open at a time: a newer one answers the older empty. Each reply is numbered; the consumer's next
 * request says which it got last, so the deliveries of a reply lost on the way go back unchanged.
 * Replies hold whole batches read from the log (the tail cache keeps the recent ones in memory);
 * nothing is read ahead beyond the dispatchers' bounded read-ahead of offsets and key hashes.
 */
import type { NodeMetrics } from '../../metrics/port.js';
import { readBatchHeader } from '../../protocol/batch.js';
import { TidemarkError, type ErrorCode, type WireError } from '../../protocol/errors.js';
import { encodeError, encodeMessage } from '../../protocol/messages.js';
import {
  deliveryRuns,
  encodeConsumeReply,
  type AckReply,
  type AckRequest,
  type ConsumePartitionReply,
  type ConsumeRequest,
  type SubscriptionAdminReply,
  type SubscriptionAdminRequest,
  type SubscriptionMetadata,
} from '../../protocol/subscription-messages.js';
import type { Clock, Logger } from '../../runtime/ports.js';
import type { PartitionStore } from '../../storage/partition-store.js';
import { DEFAULT_DISPATCH_LIMITS, type Delivery, type DispatchLimits } from './dispatcher.js';
import { PartitionSubscriptions, type SubState } from './partition-subscriptions.js';

/** Bounds of the node's consumer sessions. */
export interface HostLimits {
  /** Consumer sessions (consumer, topic, subscription) held at once on this broker. @default 10000 */
  consumerSessionsMax: number;
  /** The dispatch bounds of each subscription on each partition. */
  dispatch: DispatchLimits;
}

export const DEFAULT_HOST_LIMITS: HostLimits = { consumerSessionsMax: 10_000, dispatch: DEFAULT_DISPATCH_LIMITS };

/** A look at what leaders hand out, for the simulator's checkers (production has none). */
export interface SubscriptionObserver {
  /** A consume reply carries these offsets of `subscription` on the partition to a consumer. */
  delivered(topicId: string, partition: number, subscription: string, offsets: readonly number[]): void;
}

export interface HostPorts {
  clock: Clock;
  /** @default none */
  observer?: () => SubscriptionObserver | undefined;
  /** Told how many messages each delivery hands out. @default none */
  metrics?: Pick<NodeMetrics, 'delivered'>;
  logger: Logger;
  maxPayloadBytes: number;
  /** The subscriptions metadata holds for a topic (by id); undefined when the topic is gone. */
  subscriptionsOf(topicId: string): readonly SubscriptionMetadata[] | undefined;
  topicIdOf(topic: string): string | undefined;
  topicNameOf(topicId: string): string | undefined;
  openStore(topicId: string, partition: number): Promise<PartitionStore>;
  /**
   * The delivery lease: whether every other in-sync replica of the partition has fetched it from
   * this broker at `leaderEpoch` since `sinceMs`. @default always (a single node)
   */
  followersFollow?(topicId: string, partition: number, leaderEpoch: number, sinceMs: number): boolean;
  /** The lease's length, ms (see `leaseHolds`). @default 1500 */
  leaseMs?: number;
  /** Appends a control batch through the partition's leader actor in `leaderEpoch`; resolves with its base offset once committed. */
  appendControl(topicId: string, partition: number, leaderEpoch: number, batch: Uint8Array, recordCount: number): Promise<number>;
}

/**
 * Shared and Key_Shared: while other consumers wait, one poll takes at most its share of what is
 * waiting, and never fewer than this (Pulsar's dispatcherMaxRoundRobinBatchSize), so messages
 * spread over the consumers instead of all going to whichever poll came first.
 */
export const SHARED_SHARE_MIN = 20;
/** The delivery lease's default length, ms (`leaseHolds`). */
export const DEFAULT_LEASE_MS = 1_500;

/**
 * Bytes the delivery runs of one batch take in a reply, allowed for: most batches are one run (27
 * bytes); Key_Shared and redeliveries make more, within the partition envelope's slack.
 */
const DELIVERY_RUN_BYTES = 64;
/** Room for a consume reply's own fields and each partition's, bytes. */
const REPLY_ENVELOPE_BYTES = 1024;
const PARTITION_ENVELOPE_BYTES = 256;

interface Poll {
  request: ConsumeRequest;
  respond: (data: Uint8Array) => void;
  timer: unknown;
  /** Being answered (reads under way): wakes are ignored. */
  answering: boolean;
  done: boolean;
}

interface ConsumerSession {
  key: string;
  topic: string;
  topicId: string;
  subscription: string;
  consumerId: string;
  partitions: Set<number>;
  lastSeenMs: number;
  sessionTimeoutMs: number;
  /** The last reply's number and what it delivered, until the consumer says it got it. */
  seq: number;
  unconfirmed: Map<number, number[]>;
  poll: Poll | undefined;
}

const partitionKey = (topicId: string, partition: number) => `${topicId}/${partition}`;

interface Opening {
  leaderEpoch: number;
  highWatermark: number;
  logStartOffset: number;
  openedAtMs: number;
  /** The subscriptions metadata held when the leadership began: only they can have cursor records in the log. */
  initial: readonly SubscriptionMetadata[];
}

export class SubscriptionHost {
  private readonly partitions = new Map<string, PartitionSubscriptions>();
  /** Leaderships whose store handle is being fetched. */
  private readonly opening = new Map<string, Opening>();
  private readonly sessions = new Map<string, ConsumerSession>();
  /** Sessions parked on each subscription state. */
  private readonly parked = new Map<SubState, Set<ConsumerSession>>();
  private closed = false;

  constructor(
    private readonly ports: HostPorts,
    private readonly limits: HostLimits = DEFAULT_HOST_LIMITS,
  ) {}

  // --- partition leaders --------------------------------------------------------------------

  /** A leader opened or its high watermark / log start moved. */
  committed(topicId: string, partition: number, leaderEpoch: number, highWatermark: number, logStartOffset: number): void {
    if (this.closed) return;
    const key = partitionKey(topicId, partition);
    const opening = this.opening.get(key);
    if (opening !== undefined && opening.leaderEpoch === leaderEpoch) {
      opening.highWatermark = highWatermark;
      opening.logStartOffset = logStartOffset;
      return;
    }
    const ps = this.partitions.get(key);
    if (ps !== undefined && ps.leaderEpoch === leaderEpoch) {
      ps.committed(highWatermark, logStartOffset);
      return;
    }
    if (ps !== undefined) this.closePartition(key);
    const topic = this.ports.topicNameOf(topicId);
    if (topic === undefined) return;
    this.openPartition(topic, topicId, partition, leaderEpoch, highWatermark, logStartOffset);
  }

  /** A leadership began: its subscriptions open once the store handle is there (until then `opening` holds its offsets). */
  private openPartition(topic: string, topicId: string, partition: number, leaderEpoch: number, highWatermark: number, logStartOffset: number): void {
    const key = partitionKey(topicId, partition);
    const opening: Opening = { leaderEpoch, highWatermark, logStartOffset, openedAtMs: this.ports.clock.now(), initial: this.ports.subscriptionsOf(topicId) ?? [] };
    this.opening.set(key, opening);
    void this.ports.openStore(topicId, partition).then(
      (store) => {
        if (this.opening.get(key) !== opening) return;
        this.opening.delete(key);
        const ps = new PartitionSubscriptions(topic, topicId, partition, leaderEpoch, store, this.partitionPorts(topicId, partition, leaderEpoch), opening.initial);
        ps.openedAtMs = opening.openedAtMs;
        ps.highWatermark = opening.highWatermark;
        ps.logStartOffset = opening.logStartOffset;
        this.partitions.set(key, ps);
        void ps.recover(this.ports.subscriptionsOf(topicId) ?? []).catch((error: unknown) => {
          this.ports.logger.error({ err: error, topic, partition }, 'subscription recovery failed');
        });
      },
      (error: unknown) => {
        if (this.opening.get(key) === opening) this.opening.delete(key);
        this.ports.logger.warn({ err: error, topic, partition }, 'cannot open the log for subscriptions');
      },
    );
  }

  private partitionPorts(topicId: string, partition: number, leaderEpoch: number) {
    return {
      logger: this.ports.logger,
      limits: this.limits.dispatch,
      appendControl: (batch: Uint8Array, recordCount: number) => this.ports.appendControl(topicId, partition, leaderEpoch, batch, recordCount),
      wake: (sub: SubState) => this.wake(sub),
      nowMs: () => this.ports.clock.now(),
    };
  }

  /** The leader stopped. */
  leaderClosed(topicId: string, partition: number, leaderEpoch: number): void {
    const key = partitionKey(topicId, partition);
    if (this.opening.get(key)?.leaderEpoch === leaderEpoch) this.opening.delete(key);
    const ps = this.partitions.get(key);
    if (ps !== undefined && ps.leaderEpoch === leaderEpoch) this.closePartition(key);
  }

  private closePartition(key: string): void {
    const ps = this.partitions.get(key);
    this.partitions.delete(key);
    ps?.close();
  }

  /** Metadata changed: subscriptions created or deleted, topics gone. */
  metadataChanged(): void {
    for (const [key, ps] of this.partitions) {
      const subs = this.ports.subscriptionsOf(ps.topicId);
      if (subs === undefined) this.closePartition(key);
      else ps.sync(subs);
    }
  }

  private live(topicId: string, partition: number): PartitionSubscriptions | undefined {
    return this.partitions.get(partitionKey(topicId, partition));
  }

  // --- consume ------------------------------------------------------------------------------

  consume(topic: string, subscription: string, request: ConsumeRequest, respond: (data: Uint8Array) => void): void {
    const topicId = this.ports.topicIdOf(topic);
    if (topicId === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `unknown topic ${topic}`);
    const now = this.ports.clock.now();
    const key = `${topicId}\u0000${subscription}\u0000${request.consumerId}`;
    let session = this.sessions.get(key);
    if (session === undefined) {
      if (request.close === true) {
        respond(encodeConsumeReply({ seq: 0, partitions: [] }));
        return;
      }
      if (this.sessions.size >= this.limits.consumerSessionsMax) throw new TidemarkError('BUSY', 'too many consumer sessions on this broker');
      session = {
        key,
        topic,
        topicId,
        subscription,
        consumerId: request.consumerId,
        partitions: new Set(),
        lastSeenMs: now,
        sessionTimeoutMs: request.sessionTimeoutMs,
        // Numbered on from the last reply the consumer says it got (from an earlier session here:
        // one dropped as silent, or this broker's before a restart), never from 0: a lost reply of
        // this session must not carry the number the consumer confirms from the old one.
        seq: request.received ?? 0,
        unconfirmed: new Map(),
        poll: undefined,
      };
      this.sessions.set(key, session);
    }
    session.lastSeenMs = now;
    session.sessionTimeoutMs = request.sessionTimeoutMs;
    // A newer poll replaces the open one, which is answered empty.
    if (session.poll !== undefined) this.finishPoll(session, session.poll, []);
    // The last reply did not arrive: its deliveries go back, unchanged.
    if ((request.received ?? 0) !== session.seq && session.unconfirmed.size > 0) this.returnUnconfirmed(session);
    session.unconfirmed.clear();

    const listed = new Set(request.partitions.map((p) => p.partition));
    for (const p of session.partitions) if (!listed.has(p)) this.detach(session, p);
    if (request.close === true) {
      for (const p of listed) this.detach(session, p);
      this.sessions.delete(key);
      session.seq++;
      respond(encodeConsumeReply({ seq: session.seq, partitions: [] }));
      return;
    }
    session.partitions = listed;

    const poll: Poll = { request, respond, timer: undefined, answering: false, done: false };
    session.poll = poll;
    const errors: ConsumePartitionReply[] = [];
    for (const { partition } of request.partitions) {
      const error = this.attach(session, partition, request, now);
      if (error !== undefined) errors.push({ partition, error });
    }
    if (errors.length > 0 || this.hasWork(session, now) || request.maxWaitMs === 0) {
      void this.answer(session, poll, errors);
      return;
    }
    for (const sub of this.subsOf(session)) this.park(sub, session);
    poll.timer = this.ports.clock.setTimeout(() => {
      poll.timer = undefined;
      if (!poll.done && !poll.answering) void this.answer(session, poll, []);
    }, request.maxWaitMs);
  }

  private attach(session: ConsumerSession, partition: number, request: ConsumeRequest, nowMs: number): WireError | undefined {
    const ps = this.live(session.topicId, partition);
    if (ps === undefined) return wire('NOT_LEADER', `broker does not lead ${session.topic}/${partition}`);
    const missing = ps.errorFor(session.subscription);
    if (missing !== undefined) return wire(missing.code, missing.message);
    const sub = ps.subs.get(session.subscription)!;
    const refused = sub.dispatcher.attach(
      {
        consumerId: request.consumerId,
        consumerName: request.consumerName,
        priorityLevel: request.priorityLevel,
        type: request.type,
        sessionTimeoutMs: request.sessionTimeoutMs,
        ackTimeoutMs: request.ackTimeoutMs,
      },
      nowMs,
    );
    if (refused !== undefined) return wire(refused.code, refused.message);
    ps.pump(sub);
    // A consumer joining moves Failover's active one and Key_Shared's ranges: the others look again.
    this.wake(sub);
    return undefined;
  }

  private detach(session: ConsumerSession, partition: number): void {
    const sub = this.live(session.topicId, partition)?.subs.get(session.subscription);
    if (sub === undefined) return;
    sub.dispatcher.detach(session.consumerId);
    this.parked.get(sub)?.delete(session);
    this.wake(sub);
  }

  private returnUnconfirmed(session: ConsumerSession): void {
    for (const [partition, offsets] of session.unconfirmed) {
      const sub = this.live(session.topicId, partition)?.subs.get(session.subscription);
      if (sub === undefined) continue;
      sub.dispatcher.unassign(session.consumerId, offsets);
      this.wake(sub);
    }
  }

  private subsOf(session: ConsumerSession): SubState[] {
    const out: SubState[] = [];
    for (const p of session.partitions) {
      const sub = this.live(session.topicId, p)?.subs.get(session.subscription);
      if (sub !== undefined) out.push(sub);
    }
    return out;
  }

  private hasWork(session: ConsumerSession, nowMs: number): boolean {
    const poll = session.poll;
    if (poll === undefined) return false;
    return poll.request.partitions.some(({ partition, permits }) => {
      if (permits === 0) return false;
      const ps = this.live(session.topicId, partition);
      const sub = ps?.subs.get(session.subscription);
      return sub !== undefined && sub.ready && sub.dispatcher.hasWork(session.consumerId, nowMs) && this.leaseHolds(ps!, nowMs);
    });
  }

  /**
   * A deposed leader that has not heard of its successor yet must not hand out messages its
   * successor's consumers may already have acknowledged. So a leader delivers only while every
   * other in-sync replica keeps copying the partition from it at its epoch (within `leaseMs`): a
   * replica elected in its place stops doing so, and the old leader stops delivering within the
   * lease. A new leader (epoch > 0) waits one lease before its first delivery, so the two never
   * overlap. The cost: a follower that stops fetching pauses deliveries until the leader takes it
   * out of the ISR (replica.lag.time.max.ms).
   */
  private leaseHolds(ps: PartitionSubscriptions, nowMs: number): boolean {
    const leaseMs = this.ports.leaseMs ?? DEFAULT_LEASE_MS;
    if (ps.leaderEpoch > 0 && nowMs - ps.openedAtMs < leaseMs) return false;
    return this.ports.followersFollow?.(ps.topicId, ps.partition, ps.leaderEpoch, nowMs - leaseMs) ?? true;
  }

  private park(sub: SubState, session: ConsumerSession): void {
    let set = this.parked.get(sub);
    if (set === undefined) {
      set = new Set();
      this.parked.set(sub, set);
    }
    set.add(session);
  }

  /** Something changed for `sub`: parked polls that now have work are answered. */
  private wake(sub: SubState): void {
    const set = this.parked.get(sub);
    if (set === undefined) return;
    if (sub.gone) this.parked.delete(sub);
    const now = this.ports.clock.now();
    for (const session of [...set]) {
      const poll = session.poll;
      if (poll === undefined || poll.done) {
        set.delete(session);
        continue;
      }
      if (poll.answering) continue;
      if (sub.gone || this.hasWork(session, now)) void this.answer(session, poll, []);
    }
  }

  private unpark(session: ConsumerSession): void {
    for (const sub of this.subsOf(session)) this.parked.get(sub)?.delete(session);
  }

  /** Assigns what each partition has for the consumer, reads the batches, replies. */
  private async answer(session: ConsumerSession, poll: Poll, errors: ConsumePartitionReply[]): Promise<void> {
    poll.answering = true;
    this.unpark(session);
    if (poll.timer !== undefined) this.ports.clock.clearTimeout(poll.timer);
    const now = this.ports.clock.now();
    const failed = new Set(errors.map((e) => e.partition));
    const replies: ConsumePartitionReply[] = [...errors];
    let budget = Math.min(poll.request.maxBytes, this.ports.maxPayloadBytes - REPLY_ENVELOPE_BYTES);
    const delivered = new Map<number, number[]>();
    for (const { partition, permits, cached } of poll.request.partitions) {
      if (failed.has(partition)) continue;
      const ps = this.live(session.topicId, partition);
      const sub = ps?.subs.get(session.subscription);
      if (ps === undefined || sub === undefined) {
        replies.push({ partition, error: wire('NOT_LEADER', `broker no longer serves ${session.topic}/${partition}`) });
        continue;
      }
      const reply: ConsumePartitionReply = { partition };
      if (sub.dispatcher.type === 'Failover') reply.active = sub.dispatcher.isActive(session.consumerId);
      if (permits > 0 && sub.ready && budget > PARTITION_ENVELOPE_BYTES && this.leaseHolds(ps, now)) {
        const d = sub.dispatcher;
        const others = d.type === 'Shared' || d.type === 'Key_Shared' ? (this.parked.get(sub)?.size ?? 0) : 0;
        const share = others === 0 ? permits : Math.min(permits, Math.max(SHARED_SHARE_MIN, Math.ceil(d.waiting() / (others + 1))));
        const deliveries = d.assign(session.consumerId, share, now);
        if (deliveries.length > 0) {
          const read = await this.readDeliveries(ps, sub, session.consumerId, deliveries, budget - PARTITION_ENVELOPE_BYTES, delivered.size === 0, cached);
          if (read !== undefined) {
            const runs = deliveryRuns(read.sent);
            reply.records = read.records;
            reply.deliveries = runs;
            budget -= read.records.length + PARTITION_ENVELOPE_BYTES + runs.length * 9;
            const offsets = read.sent.map((x) => x.offset);
            delivered.set(partition, offsets);
            this.ports.observer?.()?.delivered(session.topicId, partition, session.subscription, offsets);
            this.ports.metrics?.delivered(session.topic, session.subscription, offsets.length);
          }
        }
      }
      reply.backlog = ps.backlog(sub);
      replies.push(reply);
    }
    if (poll.done) {
      // Replaced while reading: what was read goes back.
      for (const [partition, offsets] of delivered) this.live(session.topicId, partition)?.subs.get(session.subscription)?.dispatcher.unassign(session.consumerId, offsets);
      return;
    }
    this.finishPoll(session, poll, replies, delivered);
  }

  private finishPoll(session: ConsumerSession, poll: Poll, partitions: ConsumePartitionReply[], delivered?: Map<number, number[]>): void {
    if (poll.done) return;
    poll.done = true;
    if (poll.timer !== undefined) this.ports.clock.clearTimeout(poll.timer);
    if (session.poll === poll) session.poll = undefined;
    this.unpark(session);
    session.seq++;
    if (delivered !== undefined) for (const [p, offsets] of delivered) session.unconfirmed.set(p, offsets);
    try {
      poll.respond(encodeConsumeReply({ seq: session.seq, partitions }));
    } catch (error) {
      this.ports.logger.warn({ err: error }, 'consume reply dropped');
    }
  }

  /**
   * Reads the batches holding `deliveries` (ascending) within `maxBytes`; deliveries past what
   * fits go back to the dispatcher. Undefined when nothing could be read.
   */
  private async readDeliveries(
    ps: PartitionSubscriptions,
    sub: SubState,
    consumerId: string,
    deliveries: Delivery[],
    maxBytes: number,
    replyEmpty: boolean,
    cached: readonly number[] | undefined,
  ): Promise<{ records: Uint8Array; sent: Delivery[] } | undefined> {
    const first = deliveries[0]!.offset;
    const last = deliveries[deliveries.length - 1]!.offset;
    let batches: Uint8Array[];
    try {
      batches = await ps.store.read(first, maxBytes, last + 1);
    } catch (error) {
      sub.dispatcher.unassign(
        consumerId,
        deliveries.map((d) => d.offset),
      );
      if (error instanceof TidemarkError && error.code === 'OFFSET_OUT_OF_RANGE') ps.expireBelow(sub, ps.store.logStartOffset());
      else this.ports.logger.warn({ err: error }, 'delivery read failed');
      return undefined;
    }
    const kept: Uint8Array[] = [];
    let bytes = 0;
    let i = 0;
    for (const batch of batches) {
      const header = readBatchHeader(batch);
      const end = header.baseOffset + header.recordCount;
      const from = i;
      while (i < deliveries.length && deliveries[i]!.offset < end) i++;
      if (i === from) continue;
      // A batch the consumer holds already goes as deliveries only.
      const held = cached?.includes(header.baseOffset) === true;
      // The reply stays within the budget (NATS max_payload); only a reply with nothing else in it
      // may carry one batch larger than the budget, so a consumer always progresses.
      const cost = (held ? 0 : batch.length) + DELIVERY_RUN_BYTES;
      if (bytes + cost > maxBytes && (bytes > 0 || !replyEmpty)) {
        i = from;
        break;
      }
      bytes += cost;
      if (!held) kept.push(batch);
    }
    // What did not fit (a tail of the deliveries) goes back, its count unchanged.
    if (i < deliveries.length) {
      sub.dispatcher.unassign(
        consumerId,
        deliveries.slice(i).map((d) => d.offset),
      );
    }
    if (i === 0) return undefined;
    return { records: kept.length === 1 ? kept[0]! : kept.length === 0 ? new Uint8Array(0) : Buffer.concat(kept), sent: deliveries.slice(0, i) };
  }


  // --- acks ---------------------------------------------------------------------------------

  ack(topic: string, subscription: string, request: AckRequest, respond: (data: Uint8Array) => void): void {
    const topicId = this.ports.topicIdOf(topic);
    if (topicId === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `unknown topic ${topic}`);
    const now = this.ports.clock.now();
    const session = this.sessions.get(`${topicId}\u0000${subscription}\u0000${request.consumerId}`);
    if (session !== undefined) session.lastSeenMs = now;
    const outcomes: Array<Promise<AckReply['partitions'][number]>> = request.partitions.map(async (entry) => {
      const { partition } = entry;
      const ps = this.live(topicId, partition);
      if (ps === undefined) return { partition, error: wire('NOT_LEADER', `broker does not lead ${topic}/${partition}`) };
      const missing = ps.errorFor(subscription);
      if (missing !== undefined) return { partition, error: wire(missing.code, missing.message) };
      const sub = ps.subs.get(subscription)!;
      const d = sub.dispatcher;
      if (entry.cumulative !== undefined && (d.type === 'Shared' || d.type === 'Key_Shared')) {
        return { partition, error: wire('CUMULATIVE_ACK_NOT_ALLOWED', `subscription ${subscription} is ${d.type}`) };
      }
      let changed = false;
      // Every record a consumer was ever given is committed, hence in the current leader's log
      // (clean elections), below its end; so is it checked against the log end, not the high
      // watermark (a new leader's starts low and climbs as followers report). An ack naming an
      // offset at or past the log end was given out by a leader this broker does not know of: this
      // broker was deposed and has not heard yet. Dropping those offsets and answering would tell the
      // consumer an ack is durable that no cursor record holds, and the real leader would hand the
      // message out again (simulator, seed 709552399 at 77b9f3d). Refused whole: the consumer
      // retries at the leader its metadata names next (acks are idempotent).
      const logEnd = ps.store.logEndOffset();
      const beyond = ackedEnd(entry.cumulative, entry.ranges);
      if (beyond > logEnd) {
        return { partition, error: wire('NOT_LEADER', `${topic}/${partition}: ack names offset ${beyond - 1}, past this broker's log end ${logEnd} (leader epoch ${ps.leaderEpoch}): not the leader that delivered it`) };
      }
      if (entry.cumulative !== undefined) changed = d.ackCumulative(entry.cumulative) || changed;
      if (entry.ranges !== undefined && entry.ranges.length > 0) changed = d.ack(entry.ranges) || changed;
      if (entry.nacks !== undefined && entry.nacks.length > 0) {
        d.nack(request.consumerId, entry.nacks, entry.nackDelayMs ?? 0, now);
        this.wake(sub);
      }
      if (changed) {
        sub.dirty = true;
        ps.pump(sub);
        this.wake(sub);
      }
      const acking = entry.cumulative !== undefined || (entry.ranges?.length ?? 0) > 0;
      if (!acking) return { partition };
      try {
        await ps.durable(sub);
        return { partition };
      } catch (error) {
        const typed = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'ack failed');
        return { partition, error: typed.toWire() };
      }
    });
    let answered = false;
    const timer = this.ports.clock.setTimeout(() => {
      if (answered) return;
      answered = true;
      respond(encodeError(new TidemarkError('REQUEST_TIMED_OUT', 'acks not durable within the request budget').toWire()));
    }, request.timeoutMs);
    void Promise.all(outcomes).then((partitions) => {
      if (answered) return;
      answered = true;
      this.ports.clock.clearTimeout(timer);
      const reply: AckReply = { partitions };
      respond(encodeMessage(reply));
    });
  }

  // --- describe / reset -----------------------------------------------------------------------

  async admin(topic: string, request: SubscriptionAdminRequest): Promise<SubscriptionAdminReply> {
    const topicId = this.ports.topicIdOf(topic);
    if (topicId === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `unknown topic ${topic}`);
    const now = this.ports.clock.now();
    const partitions = await Promise.all(
      request.partitions.map(async (partition): Promise<SubscriptionAdminReply['partitions'][number]> => {
        const ps = this.live(topicId, partition);
        if (ps === undefined) return { partition, error: wire('NOT_LEADER', `broker does not lead ${topic}/${partition}`) };
        if (!ps.recovered) return { partition, error: wire('LEADER_NOT_AVAILABLE', `${topic}/${partition}: subscriptions are recovering`) };
        const names = request.subscription !== undefined ? [request.subscription] : [...ps.subs.keys()];
        const subs: SubState[] = [];
        for (const name of names) {
          const sub = ps.subs.get(name);
          if (sub === undefined) return { partition, error: wire('UNKNOWN_SUBSCRIPTION', `no subscription ${name} on ${topic}/${partition}`) };
          subs.push(sub);
        }
        if (request.op === 'reset') {
          const target = request.target;
          if (target === undefined || request.subscription === undefined) {
            return { partition, error: wire('INVALID_REQUEST', 'reset needs a subscription and a target') };
          }
          if ((target.kind === 'offset' || target.kind === 'timestamp') && target.value === undefined) {
            return { partition, error: wire('INVALID_REQUEST', `reset to ${target.kind} needs a value`) };
          }
          const to =
            target.kind === 'earliest'
              ? ps.logStartOffset
              : target.kind === 'latest'
                ? ps.store.logEndOffset()
                : target.kind === 'offset'
                  ? target.value!
                  : await ps.offsetForTimestamp(target.value!);
          try {
            await ps.reset(subs[0]!, to);
          } catch (error) {
            const typed = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'reset failed');
            return { partition, error: typed.toWire() };
          }
        }
        return { partition, highWatermark: ps.highWatermark, subscriptions: subs.map((s) => ps.describe(s, now)) };
      }),
    );
    return { partitions };
  }

  /**
   * Backlog and unacknowledged records of every subscription on the partitions led here whose
   * cursors are recovered: what the metrics read when scraped.
   */
  stats(): Array<{ topic: string; partition: number; subscription: string; backlog: number; unacked: number }> {
    const out: Array<{ topic: string; partition: number; subscription: string; backlog: number; unacked: number }> = [];
    for (const ps of this.partitions.values()) {
      if (!ps.recovered) continue;
      for (const [name, sub] of ps.subs) out.push({ topic: ps.topic, partition: ps.partition, subscription: name, backlog: ps.backlog(sub), unacked: sub.dispatcher.unackedCount() });
    }
    return out;
  }

  /** What a subscription looks like on a partition led here, for the simulator's failure reports. */
  inspect(topicId: string, partition: number, subscription: string): string {
    const ps = this.live(topicId, partition);
    const sub = ps?.subs.get(subscription);
    if (ps === undefined || sub === undefined) return `not served here (${this.opening.has(partitionKey(topicId, partition)) ? 'opening' : 'no leadership'})`;
    const now = this.ports.clock.now();
    const d = sub.dispatcher;
    const parked = [...(this.parked.get(sub) ?? [])].map((session) => ({
      consumer: session.consumerId,
      permits: session.poll?.request.partitions.find((p) => p.partition === partition)?.permits,
      hasWork: d.hasWork(session.consumerId, now),
    }));
    return JSON.stringify({
      ready: sub.ready,
      lease: this.leaseHolds(ps, now),
      hw: ps.highWatermark,
      markDelete: sub.cursor.markDelete,
      readPosition: d.readPosition,
      lookAhead: d.lookAheadSize(),
      room: d.lookAheadRoom(),
      redeliveries: d.redeliveryCount(),
      unacked: d.unackedCount(),
      parked,
      pumping: sub.pumping,
      consumers: d.consumers(now),
    });
  }

  // --- time -----------------------------------------------------------------------------------

  /** The node's tick: consumers silent too long leave, ack timeouts and nack delays fall due, failed cursor records are retried. */
  tick(): void {
    const now = this.ports.clock.now();
    for (const ps of this.partitions.values()) {
      if (!ps.recovered) continue;
      for (const sub of ps.subs.values()) {
        const next = sub.dispatcher.nextDueMs();
        if (next !== undefined && next <= now) {
          sub.dispatcher.expire(now);
          ps.pump(sub);
          this.wake(sub);
        }
        if (sub.dirty && !sub.inFlight) ps.persist();
        // Parked polls look again (a delivery lease may hold now).
        if ((this.parked.get(sub)?.size ?? 0) > 0) this.wake(sub);
      }
    }
    for (const [key, session] of this.sessions) {
      if (session.poll !== undefined || now - session.lastSeenMs <= session.sessionTimeoutMs) continue;
      this.sessions.delete(key);
    }
  }

  close(): void {
    this.closed = true;
    for (const session of this.sessions.values()) if (session.poll !== undefined) this.finishPoll(session, session.poll, []);
    this.sessions.clear();
    for (const key of [...this.partitions.keys()]) this.closePartition(key);
    this.parked.clear();
  }
}

function wire(code: ErrorCode, message: string): WireError {
  return { code, message };
}

/** The end of what an ack entry names: past its cumulative offset's predecessor and its ranges' (0 when it names nothing). */
function ackedEnd(cumulative: number | undefined, flat: readonly number[] | undefined): number {
  let end = cumulative ?? 0;
  if (flat !== undefined) for (let i = 0; i < flat.length; i += 2) if (flat[i]! < flat[i + 1]!) end = Math.max(end, flat[i + 1]!);
  return end;
}
