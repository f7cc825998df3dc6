/**
 * The leader's replication rules as pure functions (Kafka's Partition / LeaderEpochFileCache):
 * the high watermark over the ISR, when a follower is caught up, when the ISR should shrink or
 * grow, and where a follower's log diverges from the leader's.
 */
import type { EpochEntry } from '../../storage/partition-store.js';

export interface ReplicaProgress {
  /** The follower's log end offset as of its last fetch (-1: not heard from in this leadership). */
  logEndOffset: number;
  /** Last time (ms) the follower was caught up with the leader's log end. */
  lastCaughtUpMs: number;
  /** Time of its last fetch and the leader's log end then: a fetch reaching that end was caught up then. */
  lastFetchMs: number;
  lastFetchLeaderEnd: number;
}

export interface ReplicationState {
  brokerId: number;
  isr: readonly number[];
  /** The ISR of an AlterPartition not yet known to be committed or refused. */
  pendingIsr: readonly number[] | undefined;
  /** The leader's own log end offset counting only what is durable under the flush mode. */
  logEndOffset: number;
  followers: Readonly<Record<number, ReplicaProgress>>;
}

/**
 * Kafka's "maximal ISR": while an ISR change is in flight, the high watermark waits for every
 * replica of the old and the new ISR, so a record is committed only if every replica that may be
 * elected leader (whichever way the change goes) holds it.
 */
export function maximalIsr(state: Pick<ReplicationState, 'isr' | 'pendingIsr'>): number[] {
  return [...new Set([...state.isr, ...(state.pendingIsr ?? [])])];
}

/** min LEO over the maximal ISR (the leader counts its own durable end). */
export function highWatermarkOf(state: ReplicationState): number {
  let hw = state.logEndOffset;
  for (const id of maximalIsr(state)) {
    if (id === state.brokerId) continue;
    hw = Math.min(hw, Math.max(0, state.followers[id]?.logEndOffset ?? 0));
  }
  return hw;
}

/** A follower fetched from `fetchOffset` at `nowMs` while the leader's end was `leaderEnd`. */
export function recordFetch(previous: ReplicaProgress | undefined, fetchOffset: number, leaderEnd: number, nowMs: number): ReplicaProgress {
  let lastCaughtUpMs = previous?.lastCaughtUpMs ?? -1;
  if (fetchOffset >= leaderEnd) lastCaughtUpMs = nowMs;
  else if (previous !== undefined && fetchOffset >= previous.lastFetchLeaderEnd) lastCaughtUpMs = Math.max(lastCaughtUpMs, previous.lastFetchMs);
  return { logEndOffset: fetchOffset, lastCaughtUpMs, lastFetchMs: nowMs, lastFetchLeaderEnd: leaderEnd };
}

/**
 * The leader's log end moved from `leaderEnd` at `nowMs`: followers that had all of it were caught
 * up until now. With fetch sessions a caught-up follower of an idle partition sends nothing for it
 * (its session's requests list nothing), so its last fetch says nothing about its lag; what it
 * reported stays true until the log moves, and only from then on can it fall behind.
 */
export function caughtUpUntil(followers: Readonly<Record<number, ReplicaProgress>>, leaderEnd: number, nowMs: number): Record<number, ReplicaProgress> {
  const out: Record<number, ReplicaProgress> = {};
  for (const [id, p] of Object.entries(followers)) out[Number(id)] = p.logEndOffset >= leaderEnd ? { ...p, lastCaughtUpMs: Math.max(p.lastCaughtUpMs, nowMs) } : p;
  return out;
}

/**
 * ISR members (other than the leader) not caught up within `lagMaxMs`: the ISR without them, or
 * undefined. A follower whose last fetch reached the leader's current log end is caught up now
 * (caughtUpUntil), however long ago that fetch was.
 */
export function shrunkIsr(state: ReplicationState, nowMs: number, lagMaxMs: number): number[] | undefined {
  const keep = state.isr.filter((id) => {
    if (id === state.brokerId) return true;
    const p = state.followers[id];
    return p !== undefined && (p.logEndOffset >= state.logEndOffset || nowMs - p.lastCaughtUpMs <= lagMaxMs);
  });
  return keep.length < state.isr.length ? keep : undefined;
}

/**
 * A follower outside the ISR joins it once it has every committed record and everything written in
 * the current leader epoch before it (Kafka: LEO >= HW and >= the epoch's start offset).
 */
export function joinsIsr(state: ReplicationState, followerId: number, highWatermark: number, epochStartOffset: number): boolean {
  if (maximalIsr(state).includes(followerId)) return false;
  const p = state.followers[followerId];
  return p !== undefined && p.logEndOffset >= highWatermark && p.logEndOffset >= epochStartOffset;
}

/**
 * The leader's answer to "where does epoch `requested` end?" (OffsetsForLeaderEpoch). As in
 * Kafka, a new leader's epoch starts at its log end when it is elected, before it writes anything:
 * `epochs` is extended by { leaderEpoch, epochStartOffset } when the store has no entry for it yet.
 */
export function leaderEndOffsetForEpoch(
  stored: readonly EpochEntry[],
  leaderEpoch: number,
  epochStartOffset: number,
  logEndOffset: number,
  requested: number,
): { epoch: number; endOffset: number } {
  const last = stored[stored.length - 1];
  const epochs = last === undefined || last.epoch < leaderEpoch ? [...stored, { epoch: leaderEpoch, startOffset: epochStartOffset }] : stored;
  if (requested < 0) return { epoch: -1, endOffset: -1 };
  if (requested >= epochs[epochs.length - 1]!.epoch) return requested === epochs[epochs.length - 1]!.epoch ? { epoch: requested, endOffset: logEndOffset } : { epoch: -1, endOffset: -1 };
  const higher = epochs.findIndex((e) => e.epoch > requested);
  const floor = higher > 0 ? epochs[higher - 1]! : undefined;
  return { epoch: floor?.epoch ?? requested, endOffset: epochs[higher]!.startOffset };
}

/**
 * KIP-320: a follower whose last batch is of `lastFetchedEpoch` and whose log ends at `fetchOffset`
 * diverges when the leader's log for that epoch ends earlier, or the leader never had that epoch.
 * Undefined when the follower's log is a prefix of the leader's.
 */
export function divergence(
  end: (epoch: number) => { epoch: number; endOffset: number },
  fetchOffset: number,
  lastFetchedEpoch: number,
  leaderLogEnd: number,
): { epoch: number; endOffset: number } | undefined {
  if (lastFetchedEpoch < 0) return fetchOffset > leaderLogEnd ? { epoch: -1, endOffset: leaderLogEnd } : undefined;
  const e = end(lastFetchedEpoch);
  if (e.endOffset < fetchOffset || e.epoch < lastFetchedEpoch) return e;
  return undefined;
}

/**
 * Where a follower truncates when the leader reports divergence: the smaller of the leader's end
 * for the epoch and the follower's own end for it (both logs agree up to there); with no common
 * epoch, the leader's end offset (or 0).
 */
export function truncationOffset(diverging: { epoch: number; endOffset: number }, localEnd: (epoch: number) => { epoch: number; endOffset: number }): number {
  if (diverging.epoch < 0) return Math.max(0, diverging.endOffset);
  const local = localEnd(diverging.epoch);
  if (local.epoch < 0) return Math.max(0, diverging.endOffset);
  return Math.min(diverging.endOffset, local.endOffset);
}
