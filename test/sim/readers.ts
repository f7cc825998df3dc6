/**
 * The workload's readers: each follows one partition from the start through the SDK, and every
 * record it returns is checked as it arrives:
 * - below the high watermark of the fetch that carried it and below any HW a leader ever had;
 * - at the offset after the previous one (offsets are dense);
 * - each producer's records first seen in the order they were sent (a repeat of one already seen
 *   is a documented duplicate: a retry may be written again by a leader without the producer's
 *   state; records a power loss took back are forgotten, as their producer may write them again;
 *   not on topics with unclean election, whose logs an election may replace);
 * - the same record an acknowledgement or another reader saw at that offset (the ledger).
 */
import type { Reader, ReaderRecord } from '../../src/client/reader.js';
import { decodeBatch } from '../../src/protocol/batch.js';
import { TidemarkError } from '../../src/protocol/errors.js';
import type { LostAppend } from '../../src/storage/memory-storage.js';
import type { SafetyChecker, Violations } from './checkers.js';
import { valueOf, type RecordLedger } from './records.js';
import type { Trace } from './trace.js';

/** Records one reader returns before it stops (a bound, never reached in practice). */
const READER_RECORDS_MAX = 1_000_000;

interface SeenFrom {
  max: number;
  all: Set<number>;
}

export interface FollowingReader {
  readonly id: string;
  readonly topic: string;
  readonly partition: number;
  readonly reader: Reader<string>;
  /** Offset the next record must have; undefined before the first. */
  next: number | undefined;
  /** Producer tag -> sequence numbers seen, and the highest. */
  readonly seen: Map<string, SeenFrom>;
  running: boolean;
  /**
   * Lowest offset from which a power loss took committed records off every replica while this
   * reader ran (flush.mode=replicated): the log is written anew from there, so what the reader
   * passed over beyond it (a control batch it skipped) may be data now.
   */
  rewrittenFrom?: number;
}

export class ReaderPool {
  readonly stats = { started: 0, read: 0, errors: 0 };
  private readonly readers: FollowingReader[] = [];

  constructor(
    private readonly ledger: RecordLedger,
    private readonly checker: SafetyChecker,
    private readonly violations: Violations,
    private readonly trace: Trace,
  ) {}

  /** flush.mode=replicated: a power loss took the partition's committed records from `fromOffset` on off every replica. */
  lost(topic: string, partition: number, fromOffset: number): void {
    for (const r of this.running()) {
      if (r.topic === topic && r.partition === partition) r.rewrittenFrom = Math.min(r.rewrittenFrom ?? fromOffset, fromOffset);
    }
  }

  running(): FollowingReader[] {
    return this.readers.filter((r) => r.running);
  }

  start(topic: string, partition: number, reader: Reader<string>): void {
    const r: FollowingReader = { id: `r${++this.stats.started}`, topic, partition, reader, next: undefined, seen: new Map(), running: true };
    this.readers.push(r);
    this.trace.event('reader', `${r.id} follows ${topic}/${partition} from the start`);
    void this.follow(r);
  }

  stop(r: FollowingReader, why: string): void {
    if (!r.running) return;
    r.running = false;
    this.trace.event('reader', `${r.id} on ${r.topic}/${r.partition} ends: ${why}`);
    void r.reader.close();
  }

  /**
   * A power loss took records back: readers forget having seen them, since the producers that sent
   * them may now write them again, after records the readers saw later.
   */
  powerLost(lost: readonly LostAppend[]): void {
    for (const l of lost) {
      const readers = this.running().filter((r) => this.ledger.partitionId(r.topic, r.partition) === l.partition);
      if (readers.length === 0) continue;
      const values = l.batches.flatMap((b) => decodeBatch(b).map(valueOf));
      for (const r of readers) {
        for (const value of values) {
          const [tag, seqText] = value.split('#');
          const seen = tag === undefined ? undefined : r.seen.get(tag);
          if (seen === undefined || !seen.all.delete(Number(seqText))) continue;
          seen.max = -1;
          for (const seq of seen.all) seen.max = Math.max(seen.max, seq);
        }
      }
    }
  }

  private async follow(r: FollowingReader): Promise<void> {
    for (let i = 0; i < READER_RECORDS_MAX && r.running; i++) {
      let result: IteratorResult<ReaderRecord<string>, undefined>;
      try {
        result = await r.reader.next();
      } catch (error) {
        this.stats.errors++;
        this.stop(r, `error ${error instanceof TidemarkError ? error.code : String(error)}`);
        return;
      }
      if (result.done === true || !r.running) return;
      this.check(r, result.value);
    }
  }

  private check(r: FollowingReader, record: ReaderRecord<string>): void {
    this.stats.read++;
    const where = `${r.id} read ${record.value} at ${r.topic}/${r.partition}@${record.offset}`;
    if (record.offset >= r.reader.highWatermark) this.violations.add(`${where}, at or above the HW ${r.reader.highWatermark} of its fetch`);
    const pid = this.ledger.partitionId(r.topic, r.partition);
    const maxHw = pid === undefined ? undefined : this.checker.maxHw.get(pid);
    if (maxHw !== undefined && record.offset >= maxHw) this.violations.add(`${where}, above any HW its leader had (${maxHw})`);
    // Offsets are dense, but for control batches (cursor records) readers skip.
    if (r.next !== undefined && record.offset !== r.next) {
      let o = r.next;
      while (o < record.offset && this.ledger.isControl(r.topic, r.partition, o)) o++;
      // On an unclean topic the skipped offsets may have been control records (fences, cursors) of a
      // log an unclean election then replaced: no disk shows them any more (sim seed 2091982220).
      // Likewise past a power loss of every replica under flush.mode=replicated: the reader skipped
      // a fence batch at 32, the loss took it, and a record was written at 32 anew (seed 663818561).
      const rewritten = r.rewrittenFrom !== undefined && r.rewrittenFrom < record.offset;
      if (o !== record.offset && this.ledger.isClean(r.topic, r.partition) && !rewritten) this.violations.add(`${where}; the previous record was at ${r.next - 1}`);
    }
    r.next = record.offset + 1;
    const [tag, seqText] = (record.value ?? '').split('#');
    const seq = Number(seqText);
    if (tag !== undefined && Number.isInteger(seq)) {
      const seen = r.seen.get(tag) ?? { max: -1, all: new Set<number>() };
      // An unclean election may replace what was read with an older suffix: order holds on clean topics.
      if (seq < seen.max && !seen.all.has(seq) && this.ledger.isClean(r.topic, r.partition)) this.violations.add(`${where}, after ${tag}#${seen.max} (out of order)`);
      seen.all.add(seq);
      seen.max = Math.max(seen.max, seq);
      r.seen.set(tag, seen);
    }
    this.ledger.read(r.topic, r.partition, record.offset, record.value ?? '<null>');
  }
}
