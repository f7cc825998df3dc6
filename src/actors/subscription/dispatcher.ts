/**
 * One subscription on one partition, at its leader: who the consumers are, what is out to whom,
 * what goes next to which consumer (Pulsar's dispatchers for Exclusive, Failover, Shared and
 * Key_Shared). Pure: no I/O, no clock (time comes in as nowMs), no timers. The host
 * (subscription/host.ts) reads the log, feeds entries in, asks for deliveries per consumer poll,
 * applies acks, persists the cursor and calls `expire` on its tick.
 *
 * Where a message is, at any time (each offset in at most one place):
 *   look-ahead     read from the log, never delivered: a FIFO (arrays + head index) with a live set,
 *                  so an ack or a Key_Shared take from the middle is O(1) and dead slots are
 *                  compacted away in amortised O(1);
 *   out-standing   delivered, not acknowledged: offset -> consumer, plus per consumer a Map
 *                  offset -> sent time in send order (ack timeouts are found from its front);
 *   redelivery     going back out: offset -> {hash, due}; the due ones in a min-heap by offset
 *                  (redeliveries go first, lowest first), the delayed ones (nack delay) in a
 *                  min-heap by due time. Heaps delete lazily: an entry counts only while the map
 *                  agrees with it; they are rebuilt when stale entries outnumber live ones.
 * Redelivery counts exist only for out-standing and redelivery offsets and go on ack.
 *
 * Exclusive, Failover and Shared take due redeliveries then the look-ahead head: O(k log n) for k
 * deliveries. Key_Shared walks redeliveries and look-ahead merged in offset order, skipping the
 * hashes it may not deliver (PIP-379): O(r log r + l) per pass for r redeliveries and l entries
 * looked at, bounded by the limits.
 *
 * Bounds: new entries leave the look-ahead only while out-standing + redelivery is below
 * unackedPerSubscriptionMax, so both together stay within it; the look-ahead stays within
 * lookAheadMax as long as the host offers at most lookAheadRoom() (plus the rest of one batch).
 */
import { assert, type ErrorCode } from '../../protocol/errors.js';
import type { ConsumerInfo, SubscriptionType } from '../../protocol/subscription-messages.js';
import type { Cursor } from './cursor.js';
import { HashRing, ringPoints } from './hash-ring.js';
import { MinHeap } from './heap.js';
import { KEY_HASH_RANGE } from './key-hash.js';

/** Bounds of one subscription on one partition. */
export interface DispatchLimits {
  /** Delivered and not acknowledged, per consumer; beyond it the consumer gets nothing more (Pulsar's maxUnackedMessagesPerConsumer). @default 50000 */
  unackedPerConsumerMax: number;
  /** Delivered and not acknowledged, over all consumers; beyond it dispatch stops (Pulsar's maxUnackedMessagesPerSubscription). @default 200000 */
  unackedPerSubscriptionMax: number;
  /** Entries read from the log and not yet delivered (the read-ahead); the host offers no more beyond it. @default 10000 */
  lookAheadMax: number;
  /** Consumers attached at once. @default 1000 */
  consumersMax: number;
}

export const DEFAULT_DISPATCH_LIMITS: DispatchLimits = {
  unackedPerConsumerMax: 50_000,
  unackedPerSubscriptionMax: 200_000,
  lookAheadMax: 10_000,
  consumersMax: 1_000,
};

export interface AttachRequest {
  consumerId: string;
  consumerName: string;
  priorityLevel: number;
  type: SubscriptionType;
  sessionTimeoutMs: number;
  /** 0 = off. */
  ackTimeoutMs: number;
}

/** A record read from the log: its offset and its key's hash (keyHash, 0..65535; only Key_Shared uses it). */
export interface Entry {
  offset: number;
  hash: number;
}

export interface Delivery {
  offset: number;
  redeliveryCount: number;
}

interface ConsumerState {
  readonly id: string;
  name: string;
  priorityLevel: number;
  sessionTimeoutMs: number;
  ackTimeoutMs: number;
  lastSeenMs: number;
  /** Out-standing offsets -> sent at, in send order. */
  readonly out: Map<number, number>;
  /** Key_Shared: tells apart consumers sharing a name on the ring. */
  nameIndex: number;
  /** Key_Shared: its ring points, computed on first need. */
  points: Uint16Array | undefined;
}

interface Outstanding {
  consumer: ConsumerState;
  hash: number;
}

interface Redelivery {
  hash: number;
  /** Due at (nack delay); 0 when due at once. */
  dueMs: number;
  ready: boolean;
}

interface Delayed {
  dueMs: number;
  offset: number;
}

interface Holder {
  consumer: ConsumerState;
  count: number;
}

/** Stale heap entries tolerated beyond the live ones before a rebuild. */
const HEAP_SLACK = 1_024;
/** Dead look-ahead slots tolerated beyond the live ones before a compaction. */
const LOOK_AHEAD_SLACK = 1_024;

export class Dispatcher {
  private subscriptionType: SubscriptionType | undefined;
  private readonly members = new Map<string, ConsumerState>();
  /** Failover: the active consumer; Exclusive: the one consumer. */
  private active: ConsumerState | undefined;
  private ring: HashRing | undefined;
  /** Key_Shared: per hash, the one consumer holding messages of it out (PIP-379). */
  private readonly holders = new Map<number, Holder>();

  private readonly outstanding = new Map<number, Outstanding>();
  private readonly redeliveries = new Map<number, Redelivery>();
  private readonly ready = new MinHeap<number>((a, b) => a < b);
  private readonly delayed = new MinHeap<Delayed>((a, b) => a.dueMs < b.dueMs || (a.dueMs === b.dueMs && a.offset < b.offset));
  private readonly counts = new Map<number, number>();

  private laOffsets: number[] = [];
  private laHashes: number[] = [];
  private laHead = 0;
  private readonly laLive = new Set<number>();
  private readPos: number;
  private cursorChanged = false;

  /** Key_Shared pass stamps: hash h is skipped in pass p when skipped[h] === p. */
  private readonly skipped = new Uint32Array(KEY_HASH_RANGE);
  private pass = 0;

  constructor(
    readonly partition: number,
    readonly cursor: Cursor,
    readonly limits: DispatchLimits = DEFAULT_DISPATCH_LIMITS,
  ) {
    this.readPos = cursor.markDelete;
  }

  /** Set by the first consumer to attach while none is attached; undefined while none is. */
  get type(): SubscriptionType | undefined {
    return this.subscriptionType;
  }

  /**
   * A consumer's poll arrived: attach it if new (or refresh its lastSeen and settings). Refused
   * with CONSUMER_BUSY when the subscription has consumers of another type, or is Exclusive with
   * another consumer; with BUSY beyond consumersMax. A sole consumer that comes back with another
   * type is detached (its messages go back, count + 1) and attached anew with the new type.
   */
  attach(request: AttachRequest, nowMs: number): { code: ErrorCode; message: string } | undefined {
    const existing = this.members.get(request.consumerId);
    if (existing !== undefined) {
      if (request.type === this.subscriptionType) {
        this.refresh(existing, request, nowMs);
        return undefined;
      }
      if (this.members.size > 1) return this.typeMismatch(request.type);
      this.detach(existing.id);
    }
    if (this.subscriptionType !== undefined && request.type !== this.subscriptionType) return this.typeMismatch(request.type);
    if (this.subscriptionType === 'Exclusive' && this.members.size > 0) {
      const [other] = this.members.values();
      return { code: 'CONSUMER_BUSY', message: `subscription is Exclusive and consumer ${other?.name ?? '?'} is attached` };
    }
    if (this.members.size >= this.limits.consumersMax) {
      return { code: 'BUSY', message: `subscription has ${this.members.size} consumers on partition ${this.partition} (consumersMax)` };
    }
    const consumer: ConsumerState = {
      id: request.consumerId,
      name: request.consumerName,
      priorityLevel: request.priorityLevel,
      sessionTimeoutMs: request.sessionTimeoutMs,
      ackTimeoutMs: request.ackTimeoutMs,
      lastSeenMs: nowMs,
      out: new Map(),
      nameIndex: 0,
      points: undefined,
    };
    this.subscriptionType = request.type;
    consumer.nameIndex = this.freeNameIndex(consumer);
    this.members.set(consumer.id, consumer);
    this.membershipChanged();
    return undefined;
  }

  /** The consumer closed or left this partition: what it had out goes back for redelivery (count + 1). */
  detach(consumerId: string): void {
    this.remove([consumerId]);
  }

  /** Failover: is it the partition's active consumer (other types: attached at all). */
  isActive(consumerId: string): boolean {
    const consumer = this.members.get(consumerId);
    if (consumer === undefined) return false;
    return this.subscriptionType === 'Failover' || this.subscriptionType === 'Exclusive' ? this.active === consumer : true;
  }

  /** The next offset the host should read from the log to offer entries (everything below was offered or skipped). */
  get readPosition(): number {
    return this.readPos;
  }

  /** Messages waiting to go out: the look-ahead and the redeliveries (due or delayed). */
  waiting(): number {
    return this.laLive.size + this.redeliveries.size;
  }

  /**
   * How many more entries the look-ahead takes now (0: do not read): lookAheadMax minus its size,
   * and 0 while out-standing plus waiting redeliveries reach unackedPerSubscriptionMax.
   */
  lookAheadRoom(): number {
    if (this.tracked() >= this.limits.unackedPerSubscriptionMax) return 0;
    return Math.max(0, this.limits.lookAheadMax - this.laLive.size);
  }

  /**
   * Entries read from the log at readPosition, ascending; `readUpTo` is where the read stopped
   * (the readPosition after it; it may pass offsets that are not entries: control records, gaps).
   * Entries the cursor already acknowledges are dropped here, and so are entries below
   * readPosition (a repeated read). Offsets in [readPosition, readUpTo) that are not entries are
   * never delivered, so they are acknowledged in the cursor (Pulsar acks its markers the same
   * way) and the mark-delete position can pass them: the host persists the cursor when
   * `takeCursorChanged()` says so. Offer at most lookAheadRoom() entries (a whole batch may
   * overshoot it once).
   */
  offer(entries: readonly Entry[], readUpTo: number): void {
    let previous = -1;
    let gapStart = this.readPos;
    for (const e of entries) {
      assert(e.offset > previous && e.offset < readUpTo, `offered entries ascend below readUpTo ${readUpTo} (offset ${e.offset})`);
      assert(e.hash >= 0 && e.hash < KEY_HASH_RANGE, `entry hash ${e.hash} outside the key hash range`);
      previous = e.offset;
      if (e.offset < this.readPos) continue;
      if (e.offset > gapStart && this.cursor.ack(gapStart, e.offset)) this.cursorChanged = true;
      gapStart = e.offset + 1;
      if (this.cursor.isAcked(e.offset)) continue;
      this.laOffsets.push(e.offset);
      this.laHashes.push(e.hash);
      this.laLive.add(e.offset);
    }
    if (readUpTo > gapStart && this.cursor.ack(gapStart, readUpTo)) this.cursorChanged = true;
    if (readUpTo > this.readPos) this.readPos = readUpTo;
  }

  /**
   * Whether the cursor changed through this dispatcher (ack, ackCumulative, offer's gaps) since
   * the last call: the host persists it when true.
   */
  takeCursorChanged(): boolean {
    const changed = this.cursorChanged;
    this.cursorChanged = false;
    return changed;
  }

  /**
   * What goes to this consumer now, at most `max` (its permits), ascending by offset: due
   * redeliveries and look-ahead entries, by the type's rules (Failover: only the active consumer;
   * Key_Shared: only hashes it owns, and none of a hash that another consumer still has out,
   * PIP-379). Marks them out to the consumer at nowMs.
   */
  assign(consumerId: string, max: number, nowMs: number): Delivery[] {
    const consumer = this.members.get(consumerId);
    if (consumer === undefined) return [];
    this.promote(nowMs);
    const room = Math.min(max, this.limits.unackedPerConsumerMax - consumer.out.size);
    if (room <= 0) return [];
    const deliveries: Delivery[] = [];
    if (this.subscriptionType === 'Key_Shared') this.walkKeyShared(consumer, room, nowMs, deliveries);
    else if (this.isActive(consumerId)) this.takeInOrder(consumer, room, nowMs, deliveries);
    this.compactLookAhead();
    // Redeliveries come first and may lie above look-ahead entries (after a type change).
    for (let i = 1; i < deliveries.length; i++) {
      if (deliveries[i]!.offset < deliveries[i - 1]!.offset) {
        deliveries.sort((a, b) => a.offset - b.offset);
        break;
      }
    }
    return deliveries;
  }

  /**
   * The host could not send these (reply size cut, error): take them back as if never sent (count
   * unchanged). Hand back a tail of what assign returned (or all of it): Key_Shared's per-key order
   * holds only if nothing later of a key stays out while an earlier one comes back.
   */
  unassign(consumerId: string, offsets: readonly number[]): void {
    const consumer = this.members.get(consumerId);
    if (consumer === undefined) return;
    for (const offset of offsets) {
      const o = this.outstanding.get(offset);
      if (o !== undefined && o.consumer === consumer) this.requeue(offset, o, false, 0);
    }
  }

  /** Acknowledges [start, end) pairs (flat) from any consumer. Returns whether the cursor changed. */
  ack(ranges: readonly number[]): boolean {
    assert(ranges.length % 2 === 0, 'ack ranges come in [start, end) pairs');
    let changed = false;
    let length = 0;
    for (let i = 0; i < ranges.length; i += 2) {
      if (this.cursor.ack(ranges[i]!, ranges[i + 1]!)) changed = true;
      length += Math.max(0, ranges[i + 1]! - ranges[i]!);
    }
    // Visit whichever is smaller: the offsets acknowledged, or the offsets tracked.
    if (length <= this.outstanding.size + this.redeliveries.size + this.laLive.size) {
      for (let i = 0; i < ranges.length; i += 2) for (let o = ranges[i]!; o < ranges[i + 1]!; o++) this.forget(o);
    } else {
      const disjoint = disjointRanges(ranges);
      this.forgetWhere((o) => inRanges(disjoint, o));
    }
    this.compactHeaps();
    if (changed) this.cursorChanged = true;
    return changed;
  }

  /** Acknowledges everything below `offset` (Exclusive and Failover; the host checks the type). */
  ackCumulative(offset: number): boolean {
    const changed = this.cursor.ackBelow(offset);
    this.forgetWhere((o) => o < offset);
    this.compactHeaps();
    if (changed) this.cursorChanged = true;
    return changed;
  }

  /**
   * Negative acks: these go back for redelivery (count + 1) once nowMs + delayMs has passed.
   * Offsets not out to this consumer are ignored.
   */
  nack(consumerId: string, offsets: readonly number[], delayMs: number, nowMs: number): void {
    const consumer = this.members.get(consumerId);
    if (consumer === undefined) return;
    const dueMs = delayMs > 0 ? nowMs + delayMs : 0;
    for (const offset of offsets) {
      const o = this.outstanding.get(offset);
      if (o !== undefined && o.consumer === consumer) this.requeue(offset, o, true, dueMs);
    }
  }

  /**
   * Time passes: consumers silent for more than their sessionTimeoutMs are detached (returned),
   * messages out for more than the consumer's ackTimeoutMs go back for redelivery (count + 1),
   * nacked ones whose delay passed become due.
   */
  expire(nowMs: number): string[] {
    this.promote(nowMs);
    const gone: string[] = [];
    for (const c of this.members.values()) if (nowMs - c.lastSeenMs > c.sessionTimeoutMs) gone.push(c.id);
    // All at once: one by one, Failover could hand over to a consumer that is about to go too.
    this.remove(gone);
    for (const c of this.members.values()) {
      if (c.ackTimeoutMs <= 0) continue;
      const late: number[] = [];
      for (const [offset, sentMs] of c.out) {
        if (nowMs - sentMs <= c.ackTimeoutMs) break;
        late.push(offset);
      }
      for (const offset of late) this.requeue(offset, this.outstanding.get(offset)!, true, 0);
    }
    return gone;
  }

  /** Whether `assign` could give this consumer anything now (the host parks a poll when not). */
  hasWork(consumerId: string, nowMs: number): boolean {
    const consumer = this.members.get(consumerId);
    if (consumer === undefined) return false;
    this.promote(nowMs);
    if (consumer.out.size >= this.limits.unackedPerConsumerMax) return false;
    if (this.subscriptionType === 'Key_Shared') return this.walkKeyShared(consumer, 1, nowMs, undefined) > 0;
    if (!this.isActive(consumerId)) return false;
    if (this.peekReady() !== undefined) return true;
    return this.tracked() < this.limits.unackedPerSubscriptionMax && this.peekLookAhead() >= 0;
  }

  /**
   * The earliest time something becomes due (nack delay, ack timeout, session timeout); undefined
   * if none. Session and ack timeouts fire strictly after their length (lastSeen + timeout + 1).
   */
  nextDueMs(): number | undefined {
    let due = Infinity;
    const delayed = this.peekDelayed();
    if (delayed !== undefined) due = delayed.dueMs;
    for (const c of this.members.values()) {
      due = Math.min(due, c.lastSeenMs + c.sessionTimeoutMs + 1);
      if (c.ackTimeoutMs > 0) {
        for (const sentMs of c.out.values()) {
          due = Math.min(due, sentMs + c.ackTimeoutMs + 1);
          break;
        }
      }
    }
    return due === Infinity ? undefined : due;
  }

  /**
   * The cursor moved under the dispatcher (reset, retention; the host moved it first): drop
   * look-ahead, redeliveries, out-standing messages and redelivery counts, and restart reading at
   * `readPosition`. Consumers stay attached.
   */
  reset(readPosition: number): void {
    this.outstanding.clear();
    for (const c of this.members.values()) c.out.clear();
    this.holders.clear();
    this.redeliveries.clear();
    this.ready.clear();
    this.delayed.clear();
    this.counts.clear();
    this.laOffsets = [];
    this.laHashes = [];
    this.laHead = 0;
    this.laLive.clear();
    this.readPos = readPosition;
  }

  unackedCount(): number {
    return this.outstanding.size;
  }

  consumers(nowMs: number): ConsumerInfo[] {
    return [...this.members.values()].map((c) => ({
      consumerId: c.id,
      consumerName: c.name,
      priorityLevel: c.priorityLevel,
      active: this.isActive(c.id),
      unacked: c.out.size,
      idleMs: Math.max(0, nowMs - c.lastSeenMs),
    }));
  }

  /** Messages waiting for redelivery (due or delayed). */
  redeliveryCount(): number {
    return this.redeliveries.size;
  }

  /** Entries in the look-ahead. */
  lookAheadSize(): number {
    return this.laLive.size;
  }

  // --- membership ------------------------------------------------------------------------------

  private typeMismatch(type: SubscriptionType): { code: ErrorCode; message: string } {
    return { code: 'CONSUMER_BUSY', message: `subscription is ${this.subscriptionType}; a ${type} consumer cannot join` };
  }

  private refresh(c: ConsumerState, request: AttachRequest, nowMs: number): void {
    c.lastSeenMs = Math.max(c.lastSeenMs, nowMs);
    c.sessionTimeoutMs = request.sessionTimeoutMs;
    c.ackTimeoutMs = request.ackTimeoutMs;
    if (c.name === request.consumerName && c.priorityLevel === request.priorityLevel) return;
    c.priorityLevel = request.priorityLevel;
    if (c.name !== request.consumerName) {
      c.name = request.consumerName;
      c.nameIndex = this.freeNameIndex(c);
      c.points = undefined;
    }
    this.membershipChanged();
  }

  private remove(consumerIds: readonly string[]): void {
    let removed = false;
    for (const id of consumerIds) {
      const consumer = this.members.get(id);
      if (consumer === undefined) continue;
      this.requeueAll(consumer);
      this.members.delete(id);
      removed = true;
    }
    if (removed) this.membershipChanged();
  }

  /** The smallest name index no other consumer of the same name holds. */
  private freeNameIndex(c: ConsumerState): number {
    const taken = new Set<number>();
    for (const other of this.members.values()) if (other !== c && other.name === c.name) taken.add(other.nameIndex);
    let i = 0;
    while (taken.has(i)) i++;
    return i;
  }

  private membershipChanged(): void {
    if (this.members.size === 0) {
      assert(this.outstanding.size === 0 && this.holders.size === 0, 'no consumer, nothing out');
      this.subscriptionType = undefined;
      this.active = undefined;
      this.ring = undefined;
      return;
    }
    switch (this.subscriptionType) {
      case 'Exclusive':
        this.active = this.members.values().next().value;
        break;
      case 'Failover': {
        const sorted = [...this.members.values()].sort(failoverOrder);
        const next = sorted[this.partition % sorted.length];
        const previous = this.active;
        // The old active one's messages go first to the new one, in offset order (count + 1).
        if (previous !== undefined && previous !== next) this.requeueAll(previous);
        this.active = next;
        break;
      }
      case 'Key_Shared': {
        const members = [...this.members.values()].map((c) => {
          c.points ??= ringPoints(c.name, c.nameIndex);
          return { consumerId: c.id, points: c.points };
        });
        this.ring = new HashRing(members);
        break;
      }
      default:
        break;
    }
  }

  // --- moving messages ------------------------------------------------------------------------

  /** Offsets out-standing or waiting for redelivery. */
  private tracked(): number {
    return this.outstanding.size + this.redeliveries.size;
  }

  private deliver(c: ConsumerState, offset: number, hash: number, nowMs: number, deliveries: Delivery[]): void {
    this.outstanding.set(offset, { consumer: c, hash });
    c.out.set(offset, nowMs);
    if (this.subscriptionType === 'Key_Shared') {
      const holder = this.holders.get(hash);
      if (holder === undefined) this.holders.set(hash, { consumer: c, count: 1 });
      else {
        assert(holder.consumer === c, `hash ${hash} is out at two consumers`);
        holder.count++;
      }
    }
    deliveries.push({ offset, redeliveryCount: this.counts.get(offset) ?? 0 });
  }

  /** Removes an offset from out-standing (and its consumer, and the hash holders). */
  private release(offset: number, o: Outstanding): void {
    this.outstanding.delete(offset);
    o.consumer.out.delete(offset);
    if (this.subscriptionType === 'Key_Shared') {
      const holder = this.holders.get(o.hash);
      assert(holder !== undefined && holder.consumer === o.consumer, `hash ${o.hash} held by its out-standing consumer`);
      if (--holder.count === 0) this.holders.delete(o.hash);
    }
  }

  /** Out-standing -> redelivery; due at `dueMs` (0: at once). */
  private requeue(offset: number, o: Outstanding, increment: boolean, dueMs: number): void {
    this.release(offset, o);
    if (increment) this.counts.set(offset, (this.counts.get(offset) ?? 0) + 1);
    if (dueMs === 0) {
      this.redeliveries.set(offset, { hash: o.hash, dueMs: 0, ready: true });
      this.ready.push(offset);
    } else {
      this.redeliveries.set(offset, { hash: o.hash, dueMs, ready: false });
      this.delayed.push({ dueMs, offset });
    }
  }

  private requeueAll(c: ConsumerState): void {
    for (const offset of [...c.out.keys()]) this.requeue(offset, this.outstanding.get(offset)!, true, 0);
  }

  /** An acknowledged offset leaves every structure. */
  private forget(offset: number): void {
    const o = this.outstanding.get(offset);
    if (o !== undefined) this.release(offset, o);
    this.redeliveries.delete(offset);
    this.laLive.delete(offset);
    this.counts.delete(offset);
  }

  private forgetWhere(test: (offset: number) => boolean): void {
    const doomed: number[] = [];
    for (const o of this.outstanding.keys()) if (test(o)) doomed.push(o);
    for (const o of this.redeliveries.keys()) if (test(o)) doomed.push(o);
    for (const o of this.laLive) if (test(o)) doomed.push(o);
    for (const o of doomed) this.forget(o);
  }

  /** Nacked messages whose delay passed become due. */
  private promote(nowMs: number): void {
    for (;;) {
      const top = this.peekDelayed();
      if (top === undefined || top.dueMs > nowMs) return;
      this.delayed.pop();
      this.redeliveries.get(top.offset)!.ready = true;
      this.ready.push(top.offset);
    }
  }

  /** The earliest delayed redelivery still waiting, dropping stale heap entries. */
  private peekDelayed(): Delayed | undefined {
    for (;;) {
      const top = this.delayed.peek();
      if (top === undefined) return undefined;
      const r = this.redeliveries.get(top.offset);
      if (r !== undefined && !r.ready && r.dueMs === top.dueMs) return top;
      this.delayed.pop();
    }
  }

  /** The lowest due redelivery, dropping stale heap entries. */
  private peekReady(): number | undefined {
    for (;;) {
      const top = this.ready.peek();
      if (top === undefined) return undefined;
      if (this.redeliveries.get(top)?.ready === true) return top;
      this.ready.pop();
    }
  }

  /** Index of the first live look-ahead entry; -1 if none. */
  private peekLookAhead(): number {
    while (this.laHead < this.laOffsets.length && !this.laLive.has(this.laOffsets[this.laHead]!)) this.laHead++;
    return this.laHead < this.laOffsets.length ? this.laHead : -1;
  }

  /** Exclusive, Failover, Shared: due redeliveries (lowest first), then the look-ahead head. */
  private takeInOrder(c: ConsumerState, room: number, nowMs: number, deliveries: Delivery[]): void {
    while (deliveries.length < room) {
      const offset = this.peekReady();
      if (offset === undefined) break;
      this.ready.pop();
      const r = this.redeliveries.get(offset)!;
      this.redeliveries.delete(offset);
      this.deliver(c, offset, r.hash, nowMs, deliveries);
    }
    while (deliveries.length < room && this.tracked() < this.limits.unackedPerSubscriptionMax) {
      const i = this.peekLookAhead();
      if (i < 0) break;
      const offset = this.laOffsets[i]!;
      this.laLive.delete(offset);
      this.laHead++;
      this.deliver(c, offset, this.laHashes[i]!, nowMs, deliveries);
    }
  }

  /**
   * Key_Shared: due redeliveries and look-ahead merged in offset order; an entry goes to `c` when
   * `c` owns its hash and no other consumer has that hash out. Once an entry of a hash is skipped,
   * every later one of that hash is skipped in this pass, so no message overtakes an earlier one
   * of its key. Without `deliveries` it only counts (hasWork). Returns how many it took (or found).
   */
  private walkKeyShared(c: ConsumerState, room: number, nowMs: number, deliveries: Delivery[] | undefined): number {
    const ring = this.ring;
    if (ring === undefined) return 0;
    if (++this.pass === 0xffffffff) {
      this.skipped.fill(0);
      this.pass = 1;
    }
    const pass = this.pass;
    const due = this.dueRedeliveries();
    let taken = 0;
    let i = 0;
    let j = this.laHead;
    const laEnd = this.laOffsets.length;
    while (taken < room) {
      while (j < laEnd && !this.laLive.has(this.laOffsets[j]!)) j++;
      const fromLookAhead = i >= due.length || (j < laEnd && this.laOffsets[j]! < due[i]!);
      if (fromLookAhead && j >= laEnd) break;
      const offset = fromLookAhead ? this.laOffsets[j]! : due[i]!;
      const hash = fromLookAhead ? this.laHashes[j]! : this.redeliveries.get(offset)!.hash;
      const index = j;
      if (fromLookAhead) j++;
      else i++;
      if (this.skipped[hash] === pass) continue;
      const holder = this.holders.get(hash);
      const allowed =
        ring.owner(hash) === c.id &&
        (holder === undefined || holder.consumer === c) &&
        (!fromLookAhead || this.tracked() < this.limits.unackedPerSubscriptionMax);
      if (!allowed) {
        this.skipped[hash] = pass;
        continue;
      }
      taken++;
      if (deliveries === undefined) continue;
      if (fromLookAhead) {
        this.laLive.delete(offset);
        if (index === this.laHead) this.laHead++;
      } else {
        this.redeliveries.delete(offset);
      }
      this.deliver(c, offset, hash, nowMs, deliveries);
    }
    return taken;
  }

  /** Due redelivery offsets, ascending, without duplicates (the heap may hold stale copies). */
  private dueRedeliveries(): number[] {
    if (this.ready.size === 0) return [];
    const due: number[] = [];
    for (const offset of this.ready.values()) if (this.redeliveries.get(offset)?.ready === true) due.push(offset);
    due.sort((a, b) => a - b);
    let n = 0;
    for (let k = 0; k < due.length; k++) if (k === 0 || due[k] !== due[k - 1]) due[n++] = due[k]!;
    due.length = n;
    return due;
  }

  private compactLookAhead(): void {
    // Only once dead slots outnumber live ones: each dead slot is copied over at most once.
    if (this.laOffsets.length - this.laLive.size <= this.laLive.size + LOOK_AHEAD_SLACK) return;
    this.peekLookAhead();
    const offsets: number[] = [];
    const hashes: number[] = [];
    for (let k = this.laHead; k < this.laOffsets.length; k++) {
      if (!this.laLive.has(this.laOffsets[k]!)) continue;
      offsets.push(this.laOffsets[k]!);
      hashes.push(this.laHashes[k]!);
    }
    this.laOffsets = offsets;
    this.laHashes = hashes;
    this.laHead = 0;
  }

  private compactHeaps(): void {
    this.compactLookAhead();
    if (this.ready.size + this.delayed.size <= 2 * this.redeliveries.size + HEAP_SLACK) return;
    this.ready.filter((o) => this.redeliveries.get(o)?.ready === true);
    this.delayed.filter((d) => {
      const r = this.redeliveries.get(d.offset);
      return r !== undefined && !r.ready && r.dueMs === d.dueMs;
    });
  }
}

/** Failover order: priority level (lower first), then name, then id. */
function failoverOrder(a: ConsumerState, b: ConsumerState): number {
  if (a.priorityLevel !== b.priorityLevel) return a.priorityLevel - b.priorityLevel;
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** [start, end) pairs sorted and merged into disjoint ones. */
function disjointRanges(ranges: readonly number[]): number[] {
  const pairs: Array<[number, number]> = [];
  for (let i = 0; i < ranges.length; i += 2) if (ranges[i]! < ranges[i + 1]!) pairs.push([ranges[i]!, ranges[i + 1]!]);
  pairs.sort((a, b) => a[0] - b[0]);
  const out: number[] = [];
  for (const [start, end] of pairs) {
    if (out.length > 0 && start <= out[out.length - 1]!) out[out.length - 1] = Math.max(out[out.length - 1]!, end);
    else out.push(start, end);
  }
  return out;
}

/** Whether `offset` falls in one of the disjoint, ascending [start, end) pairs. */
function inRanges(ranges: readonly number[], offset: number): boolean {
  let lo = 0;
  let hi = ranges.length / 2;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ranges[2 * mid]! <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && offset < ranges[2 * lo - 1]!;
}
