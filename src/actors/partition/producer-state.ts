/**
 * Idempotent-producer state of one partition, as pure functions (Kafka's ProducerStateManager,
 * reduced). Each producer numbers its batches per partition; the leader appends a batch only when
 * its sequence is the next expected one. A retried batch that was already written is answered with
 * its first offset instead of being written twice, and a batch that overtook a lost or refused
 * earlier one is refused (OUT_OF_ORDER_SEQUENCE, retriable), so a producer with several batches in
 * flight keeps its order through any single failure.
 *
 * A producer (or producer epoch) the partition has not seen must start at sequence 0. Otherwise,
 * when a producer's first batches are lost (NATS core drops single messages) a later batch would
 * be taken as its first and the lost ones, resent, refused or written after it. A batch that does
 * not start at 0 is refused as out of order; the producer resends its oldest batch first, and when
 * that one is refused too it takes a fresh producer id and renumbers from 0 (pipeline.ts).
 *
 * A new leader (after a failover or a restart) rebuilds the state from the tail of its log
 * (`rebuildProducerStates`, the last PRODUCER_REBUILD_RECORDS records), as Kafka does from its
 * log: followers hold the same batches, producer fields included, so a retry of a batch the old
 * leader wrote is recognised as a duplicate. A producer whose last batch is older than that
 * window is one never seen (its next batch is refused once and renumbered). The same read finds
 * the newest fence (fence-records.ts): the producer epoch the leader refuses older writes below.
 */
import { readBatchHeader, SEQUENCE_MODULO } from '../../protocol/batch.js';
import { fenceEpochOf } from './fence-records.js';
import type { PartitionStore } from '../../storage/partition-store.js';
import type { ErrorCode } from '../../protocol/errors.js';

export interface ProducerSequenceHeader {
  producerId: number;
  producerEpoch: number;
  baseSequence: number;
}

interface RecentBatch {
  baseSequence: number;
  recordCount: number;
  baseOffset: number;
}

export interface ProducerEntry {
  epoch: number;
  nextSequence: number;
  /** The last few batches, newest last, to answer retries of them. */
  recent: readonly RecentBatch[];
}

export type ProducerStates = ReadonlyMap<number, ProducerEntry>;

/** Batches remembered per producer for duplicate answers (Kafka keeps 5). */
export const RECENT_BATCHES_MAX = 5;
/** Producers remembered per partition; the least recently seen is forgotten first. */
export const PRODUCERS_MAX = 1000;

export type SequenceCheck =
  | { kind: 'append' }
  | { kind: 'duplicate'; baseOffset: number }
  | { kind: 'refuse'; code: ErrorCode; message: string };

const seqAdd = (seq: number, n: number) => (seq + n) % SEQUENCE_MODULO;

export function checkSequence(states: ProducerStates, p: ProducerSequenceHeader, recordCount: number): SequenceCheck {
  const entry = states.get(p.producerId);
  if (entry === undefined || p.producerEpoch > entry.epoch) {
    if (p.baseSequence === 0) return { kind: 'append' };
    const what = entry === undefined ? `producer ${p.producerId} is unknown here` : `producer ${p.producerId} epoch ${p.producerEpoch} is new`;
    return { kind: 'refuse', code: 'OUT_OF_ORDER_SEQUENCE', message: `${what}: its first batch must have sequence 0, not ${p.baseSequence}` };
  }
  if (p.producerEpoch < entry.epoch) {
    return { kind: 'refuse', code: 'INVALID_PRODUCER_EPOCH', message: `producer ${p.producerId} epoch ${p.producerEpoch} < ${entry.epoch}` };
  }
  if (p.baseSequence === entry.nextSequence) return { kind: 'append' };
  const seen = entry.recent.find((b) => b.baseSequence === p.baseSequence && b.recordCount === recordCount);
  if (seen !== undefined) return { kind: 'duplicate', baseOffset: seen.baseOffset };
  const ahead = (p.baseSequence - entry.nextSequence + SEQUENCE_MODULO) % SEQUENCE_MODULO < SEQUENCE_MODULO / 2;
  return ahead
    ? { kind: 'refuse', code: 'OUT_OF_ORDER_SEQUENCE', message: `expected sequence ${entry.nextSequence}, got ${p.baseSequence}` }
    : { kind: 'refuse', code: 'DUPLICATE_SEQUENCE', message: `sequence ${p.baseSequence} was written before and is no longer remembered` };
}

function touch(states: ProducerStates, producerId: number, entry: ProducerEntry): ProducerStates {
  const next = new Map(states);
  next.delete(producerId);
  next.set(producerId, entry);
  if (next.size > PRODUCERS_MAX) next.delete(next.keys().next().value!);
  return next;
}

/** After a batch was accepted for append at `baseOffset`. */
export function recordAppend(states: ProducerStates, p: ProducerSequenceHeader, recordCount: number, baseOffset: number): ProducerStates {
  const old = states.get(p.producerId);
  const recent = old === undefined || p.producerEpoch > old.epoch ? [] : old.recent;
  return touch(states, p.producerId, {
    epoch: p.producerEpoch,
    nextSequence: seqAdd(p.baseSequence, recordCount),
    recent: [...recent, { baseSequence: p.baseSequence, recordCount, baseOffset }].slice(-RECENT_BATCHES_MAX),
  });
}

/**
 * After an in-order batch was refused for good (e.g. too large): its sequences are used up, so the
 * producer's next batch, numbered after it, is still in order.
 */
export function recordRefusal(states: ProducerStates, p: ProducerSequenceHeader, recordCount: number): ProducerStates {
  if (checkSequence(states, p, recordCount).kind !== 'append') return states;
  const old = states.get(p.producerId);
  return touch(states, p.producerId, {
    epoch: p.producerEpoch,
    nextSequence: seqAdd(p.baseSequence, recordCount),
    recent: old === undefined || p.producerEpoch > old.epoch ? [] : old.recent,
  });
}

/** Records at the end of the log a new leader reads to rebuild producer states. */
export const PRODUCER_REBUILD_RECORDS = 20_000;
/** Bytes per read while rebuilding. */
const REBUILD_READ_BYTES = 1024 * 1024;

/** What a new leader learns from the tail of its log. */
export interface ProducerRebuild {
  producers: ProducerStates;
  /** The highest producer epoch of a fence record there (fence-records.ts); 0 when none. */
  accessEpoch: number;
}

/**
 * Producer states and the highest fence epoch from the last PRODUCER_REBUILD_RECORDS records of the
 * log (I/O: run in an invoked actor). A fence older than that window is not seen; by then the
 * metadata the broker passes with every produce (`access.known`) carries the epoch.
 */
export async function rebuildProducerStates(store: PartitionStore): Promise<ProducerRebuild> {
  let states: ProducerStates = new Map();
  let accessEpoch = 0;
  const end = store.logEndOffset();
  let offset = Math.max(store.logStartOffset(), end - PRODUCER_REBUILD_RECORDS);
  while (offset < end) {
    const batches = await store.read(offset, REBUILD_READ_BYTES, end);
    if (batches.length === 0) break;
    for (const b of batches) {
      const h = readBatchHeader(b);
      offset = h.baseOffset + h.recordCount;
      accessEpoch = Math.max(accessEpoch, fenceEpochOf(b) ?? 0);
      if (h.producerId < 0) continue;
      states = recordAppend(states, { producerId: h.producerId, producerEpoch: h.producerEpoch, baseSequence: h.baseSequence }, h.recordCount, h.baseOffset);
    }
  }
  return { producers: states, accessEpoch };
}
