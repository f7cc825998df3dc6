/**
 * One subscription on one partition, at its leader: who the consumers are, what is out to whom,
 * what goes next to which consumer (Pulsar's dispatchers for Exclusive, Failover, Shared and
 * Key_Shared). Pure: no I/O, no clock (time comes in as nowMs), no timers. The host
 * (subscription/host.ts) reads the log, feeds entries in, asks for deliveries per consumer poll,
 * applies acks, persists the cursor and calls `expire` on its tick.
 *
 * INTERFACE FIXED BY THE HOST; the bodies are to be written (see the brief).
 */
import type { ErrorCode } from '../../protocol/errors.js';
import type { ConsumerInfo, SubscriptionType } from '../../protocol/subscription-messages.js';
import type { Cursor } from './cursor.js';

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

export class Dispatcher {
  constructor(
    readonly partition: number,
    readonly cursor: Cursor,
    readonly limits: DispatchLimits = DEFAULT_DISPATCH_LIMITS,
  ) {}

  /** Set by the first consumer to attach while none is attached; undefined while none is. */
  get type(): SubscriptionType | undefined {
    throw new Error('todo');
  }

  /**
   * A consumer's poll arrived: attach it if new (or refresh its lastSeen and settings). Refused
   * with CONSUMER_BUSY when the subscription has consumers of another type, or is Exclusive with
   * another consumer; with BUSY beyond consumersMax.
   */
  attach(request: AttachRequest, nowMs: number): { code: ErrorCode; message: string } | undefined {
    void request;
    void nowMs;
    throw new Error('todo');
  }

  /** The consumer closed or left this partition: what it had out goes back for redelivery (count + 1). */
  detach(consumerId: string): void {
    void consumerId;
    throw new Error('todo');
  }

  /** Failover: is it the partition's active consumer (other types: attached at all). */
  isActive(consumerId: string): boolean {
    void consumerId;
    throw new Error('todo');
  }

  /** The next offset the host should read from the log to offer entries (everything below was offered or skipped). */
  get readPosition(): number {
    throw new Error('todo');
  }

  /** How many more entries the look-ahead takes now (0: do not read). */
  lookAheadRoom(): number {
    throw new Error('todo');
  }

  /**
   * Entries read from the log at readPosition, ascending; `readUpTo` is where the read stopped
   * (the readPosition after it; it may pass offsets that are not entries: control records, gaps).
   * Entries the cursor already acknowledges are dropped here.
   */
  offer(entries: readonly Entry[], readUpTo: number): void {
    void entries;
    void readUpTo;
    throw new Error('todo');
  }

  /**
   * What goes to this consumer now, at most `max` (its permits), ascending by offset: due
   * redeliveries and look-ahead entries, by the type's rules (Failover: only the active consumer;
   * Key_Shared: only hashes it owns, and none of a hash that another consumer still has out,
   * PIP-379). Marks them out to the consumer at nowMs.
   */
  assign(consumerId: string, max: number, nowMs: number): Delivery[] {
    void consumerId;
    void max;
    void nowMs;
    throw new Error('todo');
  }

  /** The host could not send these (reply size cut, error): take them back as if never sent (count unchanged). */
  unassign(consumerId: string, offsets: readonly number[]): void {
    void consumerId;
    void offsets;
    throw new Error('todo');
  }

  /** Acknowledges [start, end) pairs (flat) from any consumer. Returns whether the cursor changed. */
  ack(ranges: readonly number[]): boolean {
    void ranges;
    throw new Error('todo');
  }

  /** Acknowledges everything below `offset` (Exclusive and Failover; the host checks the type). */
  ackCumulative(offset: number): boolean {
    void offset;
    throw new Error('todo');
  }

  /** Negative acks: these go back for redelivery (count + 1) once nowMs + delayMs has passed. */
  nack(consumerId: string, offsets: readonly number[], delayMs: number, nowMs: number): void {
    void consumerId;
    void offsets;
    void delayMs;
    void nowMs;
    throw new Error('todo');
  }

  /**
   * Time passes: consumers silent for their sessionTimeoutMs are detached (returned), messages out
   * past the consumer's ackTimeoutMs go back for redelivery (count + 1), nacked ones whose delay
   * passed become due.
   */
  expire(nowMs: number): string[] {
    void nowMs;
    throw new Error('todo');
  }

  /** Whether `assign` could give this consumer anything now (the host parks a poll when not). */
  hasWork(consumerId: string, nowMs: number): boolean {
    void consumerId;
    void nowMs;
    throw new Error('todo');
  }

  /** The earliest time something becomes due (nack delay, ack timeout, session timeout); undefined if none. */
  nextDueMs(): number | undefined {
    throw new Error('todo');
  }

  /**
   * The cursor moved under the dispatcher (reset, retention): drop look-ahead, redeliveries and
   * out-standing messages below or at/above as needed and restart reading at `readPosition`.
   */
  reset(readPosition: number): void {
    void readPosition;
    throw new Error('todo');
  }

  unackedCount(): number {
    throw new Error('todo');
  }

  consumers(nowMs: number): ConsumerInfo[] {
    void nowMs;
    throw new Error('todo');
  }
}
