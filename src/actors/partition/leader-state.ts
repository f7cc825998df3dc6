/**
 * The leader's context and the pure checks its guards and actions share: HW, the ISR change to ask
 * for, follower-fetch refusals and divergence, AlterPartition refusals, producer sequences.
 */
import { TidemarkError, type ErrorCode, type LogRange } from '../../protocol/errors.js';
import type { PartitionStore } from '../../storage/partition-store.js';
import { checkSequence, type ProducerStates, type SequenceCheck } from './producer-state.js';
import { divergence, highWatermarkOf, joinsIsr, leaderEndOffsetForEpoch, shrunkIsr, type ReplicaProgress } from './replication.js';
import type { PendingBytesLease } from './pending-budget.js';
import type { PartitionEvent, PartitionInput } from './types.js';

export interface PendingProduce {
  baseOffset: number;
  endOffset: number;
  bytes: number;
  replyTo: string | undefined;
  /** 1: answer once the leader has it; -1 (all): once the high watermark passes it. */
  acks: 0 | 1 | -1;
  /**
   * acks=all: when the request's budget runs out on the leader's clock (arrival + timeoutMs), ms;
   * then it is answered REQUEST_TIMED_OUT. Absent for acks 0 and 1 (answered once on disk).
   */
  deadlineMs?: number;
}

export interface FetchWaiter {
  id: number;
  replyTo: string;
  offset: number;
  maxBytes: number;
  /** A follower's fetch waits for the log end; a consumer's for the high watermark. */
  replica: boolean;
}

export interface PartitionContext extends PartitionInput {
  store: PartitionStore | undefined;
  logStartOffset: number;
  /** Next offset to assign (includes batches still being written). */
  nextOffset: number;
  /** End of what is durable under the flush mode (what this replica counts toward the HW). */
  logEndOffset: number;
  /** End of what is written to the log, durable or not: followers may fetch up to here. */
  writtenEnd: number;
  highWatermark: number;
  pending: PendingProduce[];
  producers: ProducerStates;
  pendingBytes: number;
  /** This actor's share of the node's pending-bytes budget; holds exactly `pendingBytes`. */
  pendingLease: PendingBytesLease;
  /** When the one produce-deadline timer fires (the earliest deadline when it was armed); undefined: not armed. */
  deadlineTimerAtMs: number | undefined;
  waiters: FetchWaiter[];
  nextWaiterId: number;
  /** What to do once pending writes are done. */
  closing: 'stop' | 'delete' | undefined;
  /** The log end when this leadership began: where the current leader epoch starts. */
  epochStartOffset: number;
  followers: Record<number, ReplicaProgress>;
  /** The ISR of an AlterPartition sent and not yet seen committed or refused in metadata. */
  pendingIsr: readonly number[] | undefined;
  /** The partition epoch that request was based on. */
  pendingIsrBase: number;
  /**
   * Set when a fetch or a lag check suggests an ISR change; the change itself is worked out when it
   * is sent (`nextIsr`), from the ISR, HW and followers of that moment, never from a stale view.
   */
  wantedIsr: readonly number[] | undefined;
  /** Followers the controller refused to add (fenced, shutting down) -> not proposed again before this time, ms. */
  joinRefusedUntil: Record<number, number>;
  /**
   * When the controller last took each follower out of the ISR (fenced, shutting down), ms: only a
   * fetch since then proposes it to join again (a stopped broker's last report must not, or the
   * controller's refusal holds back its real return for replica.lag.time.max.ms). Not set by this
   * leader's own shrinks: a follower that caught up since is proposed by the node tick even if its
   * idle fetch session reports nothing new.
   */
  leftIsrAtMs: Record<number, number>;
  /** As of the last node tick: when each follower broker's fetch session last sent a request, ms. */
  replicaSeenMs: Readonly<Record<number, number>>;
  /**
   * The highest topic producer epoch this leader knows (issue 12): from fence records in its log
   * tail when it opened, then from every produce it accepted (its epoch and its broker's metadata).
   * A produce checked at a lower epoch is refused PRODUCER_FENCED.
   */
  accessEpoch: number;
}

/**
 * The follower has been heard from since the controller last took it out of the ISR: it fetched, or
 * its broker's fetch session sent a request (an idle session lists nothing, but proves the broker
 * alive: its last report still stands).
 */
export function fetchedSinceLeaving(context: Pick<PartitionContext, 'followers' | 'leftIsrAtMs' | 'replicaSeenMs'>, id: number): boolean {
  const p = context.followers[id];
  const leftAt = context.leftIsrAtMs[id] ?? Number.NEGATIVE_INFINITY;
  return p !== undefined && (p.lastFetchMs >= leftAt || (context.replicaSeenMs[id] ?? Number.NEGATIVE_INFINITY) > leftAt);
}

/** Members of `before` not in `after` leave at `nowMs`. */
export function leavers(leftIsrAtMs: Record<number, number>, before: readonly number[], after: readonly number[], nowMs: number): Record<number, number> {
  const gone = before.filter((id) => !after.includes(id));
  return gone.length === 0 ? leftIsrAtMs : { ...leftIsrAtMs, ...Object.fromEntries(gone.map((id) => [id, nowMs])) };
}

/**
 * Whether the node tick's ISR check can change anything: some ISR follower has not reported the
 * leader's log end (a caught-up follower cannot lag: replication.ts, caughtUpUntil), or some replica
 * is outside the ISR (it may have caught up while another change was in flight, or its refusal
 * expired; an idle fetch session does not report it again). The broker sends the tick only to
 * these, so idle, fully replicated partitions get no event at all.
 */
export function wantsLagCheck(context: Pick<PartitionContext, 'isr' | 'replicas' | 'brokerId' | 'followers' | 'logEndOffset'>): boolean {
  if (context.replicas.some((id) => !context.isr.includes(id))) return true;
  return context.isr.some((id) => id !== context.brokerId && (context.followers[id]?.logEndOffset ?? -1) < context.logEndOffset);
}

/** How often the node tick runs the ISR lag check (as each leader's own timer did), ms. */
export function lagCheckIntervalMs(replicaLagTimeMaxMs: number): number {
  return Math.max(1, Math.floor(replicaLagTimeMaxMs / 2));
}

/** Codes with which the controller refuses an AlterPartition. */
export function alterRefusal(error: unknown): 'refused' | 'stale' | undefined {
  if (!(error instanceof TidemarkError)) return undefined;
  // Checked after the epochs, so nothing was committed for this partition epoch: drop the change.
  if (error.code === 'INVALID_REQUEST') return 'refused';
  // The partition (or this broker) moved on; a timed-out attempt may even have been committed:
  // keep the maximal ISR until metadata settles it, and do not resend.
  if (error.code === 'INVALID_UPDATE_VERSION' || error.code === 'FENCED_LEADER_EPOCH' || error.code === 'STALE_BROKER_EPOCH' || error.code === 'UNKNOWN_TOPIC') {
    return 'stale';
  }
  return undefined;
}

export function hwOf(context: PartitionContext): number {
  return Math.max(context.highWatermark, highWatermarkOf(context));
}

/**
 * The ISR to ask for now: members lagging longer than replica.lag.time.max.ms out, followers that
 * reached the HW and the epoch start in (unless the controller refused them lately); undefined when
 * that is the current ISR. Only called with no change in flight.
 */
export function nextIsr(context: PartitionContext): number[] | undefined {
  const nowMs = context.clock.now();
  const suspects = context.suspects ?? [];
  const kept = (shrunkIsr(context, nowMs, context.limits.replicaLagTimeMaxMs) ?? [...context.isr]).filter((id) => id === context.brokerId || !suspects.includes(id));
  const hw = hwOf(context);
  const joiners = context.replicas.filter(
    (id) =>
      id !== context.brokerId &&
      nowMs >= (context.joinRefusedUntil[id] ?? 0) &&
      fetchedSinceLeaving(context, id) &&
      joinsIsr(context, id, hw, context.epochStartOffset),
  );
  const next = [...kept, ...joiners];
  const same = next.length === context.isr.length && next.every((id) => context.isr.includes(id));
  return same ? undefined : next;
}

/** Where the leader's epoch `requested` ends in its log (Kafka's OffsetsForLeaderEpoch). */
export function endOffsetFor(context: PartitionContext, requested: number) {
  return leaderEndOffsetForEpoch(context.store!.epochs(), context.leaderEpoch, context.epochStartOffset, context.writtenEnd, requested);
}

/** Checks of a follower fetch that end it with an error; undefined when it may proceed. */
export function replicaFetchRefusal(context: PartitionContext, event: PartitionEvent): { code: ErrorCode; message: string; logRange?: LogRange } | undefined {
  if (event.type !== 'REPLICA_FETCH') return undefined;
  if (!context.replicas.includes(event.replicaId) || event.replicaId === context.brokerId) {
    return { code: 'INVALID_REQUEST', message: `broker ${event.replicaId} is not a follower of this partition` };
  }
  const stale = epochRefusal(event.leaderEpoch, context.leaderEpoch);
  if (stale !== undefined) return stale;
  if (event.fetchOffset < context.logStartOffset) {
    // Retention removed what the follower needs: it restarts its log at ours (Kafka's truncateFullyAndStartAt).
    return {
      code: 'OFFSET_OUT_OF_RANGE',
      message: `offset ${event.fetchOffset} is below the log start ${context.logStartOffset}`,
      logRange: { logStartOffset: context.logStartOffset, logEndOffset: context.writtenEnd },
    };
  }
  return undefined;
}

export function replicaDivergence(context: PartitionContext, event: PartitionEvent) {
  if (event.type !== 'REPLICA_FETCH') return undefined;
  return divergence((e) => endOffsetFor(context, e), event.fetchOffset, event.lastFetchedEpoch, context.writtenEnd);
}

export function sequenceCheck(context: PartitionContext, event: PartitionEvent): SequenceCheck {
  if (event.type !== 'PRODUCE' || event.producer === undefined) return { kind: 'append' };
  return checkSequence(context.producers, event.producer, event.recordCount);
}

/**
 * A produce checked for producer access (issue 12) whose epoch is below the highest this leader or
 * its broker's metadata knows: the producer was fenced by a newer exclusive one.
 */
export function accessRefusal(context: Pick<PartitionContext, 'accessEpoch'>, event: PartitionEvent): { code: ErrorCode; message: string } | undefined {
  if (event.type !== 'PRODUCE' || event.access === undefined) return undefined;
  const fence = Math.max(context.accessEpoch, event.access.known);
  if (event.access.epoch >= fence) return undefined;
  return { code: 'PRODUCER_FENCED', message: `producer epoch ${event.access.epoch} < ${fence}` };
}

/** The leader's producer epoch after accepting `event` (unchanged for an unchecked produce). */
export function accessEpochAfter(context: Pick<PartitionContext, 'accessEpoch'>, event: PartitionEvent): number {
  if (event.type !== 'PRODUCE' || event.access === undefined) return context.accessEpoch;
  return Math.max(context.accessEpoch, event.access.epoch, event.access.known);
}

/**
 * A produce's leader epoch, when it carries one, must be this leader's: an older one means the
 * client's metadata is stale (it refreshes), a newer one that this broker's is (the client retries).
 */
export function leaderEpochRefusal(context: PartitionContext, event: PartitionEvent): { code: ErrorCode; message: string } | undefined {
  if (event.type !== 'PRODUCE' || event.leaderEpoch === undefined) return undefined;
  return epochRefusal(event.leaderEpoch, context.leaderEpoch);
}

/** A request's leader epoch against this leader's: older is fenced, newer is not known here yet. */
function epochRefusal(requested: number, current: number): { code: ErrorCode; message: string } | undefined {
  if (requested < current) return { code: 'FENCED_LEADER_EPOCH', message: `leader epoch ${requested} < ${current}` };
  if (requested > current) return { code: 'UNKNOWN_LEADER_EPOCH', message: `leader epoch ${requested} > ${current}` };
  return undefined;
}

/**
 * A pending batch the writer has not finished, as an entry that keeps its slot and bytes,
 * unanswered, until written (then settled at the leader's log end); undefined once written (or for
 * a waiting retry, which writes nothing). Used when a batch is answered before it is on disk
 * (deadline, end of leadership): the actor must not forget a write still under way.
 */
export function awaitingWrite(p: PendingProduce, logEndOffset: number): PendingProduce | undefined {
  if (p.bytes === 0 || p.endOffset <= logEndOffset) return undefined;
  return { baseOffset: p.baseOffset, endOffset: p.endOffset, bytes: p.bytes, replyTo: undefined, acks: 1 };
}

/** The earliest deadline of a batch waiting for the high watermark; undefined when none waits. */
export function earliestDeadline(pending: readonly PendingProduce[]): number | undefined {
  let earliest: number | undefined;
  for (const p of pending) if (p.deadlineMs !== undefined && (earliest === undefined || p.deadlineMs < earliest)) earliest = p.deadlineMs;
  return earliest;
}

export function bytesOf(pending: readonly PendingProduce[]): number {
  return pending.reduce((n, p) => n + p.bytes, 0);
}

/** Id of the partition's one produce-deadline timer (for the earliest deadline; re-armed as it fires). */
export const PRODUCE_DEADLINE_TIMER_ID = 'produce-deadline';

/** Id of a parked fetch's expiry timer, so answering the fetch can cancel it. */
export function waiterTimerId(id: number): string {
  return `fetch-expiry-${id}`;
}

export function wireError(code: ErrorCode, message?: string, logRange?: LogRange) {
  return new TidemarkError(code, message, logRange === undefined ? undefined : { context: { ...logRange } }).toWire();
}

