/**
 * The subscriptions of one partition this broker leads: their cursors, recovered from the log when
 * the leadership starts, their dispatchers, the read-ahead that feeds them from the log (up to the
 * high watermark, never past it), and the cursor records that make acks durable.
 *
 * Recovery: the newest cursor record of each subscription is found by scanning the log backwards in
 * growing windows from its end (every record holds a subscription's whole state; a full refresh is
 * written every CURSOR_REFRESH_RECORDS offsets of growth and whenever retention passes the last one,
 * so the scan is short). A subscription serves nothing until a cursor record of this leadership has
 * committed: a leader that delivered from a cursor no replica holds could, after its death, leave a
 * successor that places the cursor past messages delivered and never acknowledged.
 */
import { forEachRecordKey, isControlBatch, readBatchHeader } from '../../protocol/batch.js';
import { TidemarkError, type ErrorCode } from '../../protocol/errors.js';
import type { ConsumerInfo, SubscriptionMetadata, SubscriptionPartitionInfo } from '../../protocol/subscription-messages.js';
import type { Logger } from '../../runtime/ports.js';
import type { PartitionStore } from '../../storage/partition-store.js';
import { Cursor } from './cursor.js';
import { decodeCursorBatch, encodeCursorBatch, type CursorRecord } from './cursor-records.js';
import { Dispatcher, type DispatchLimits, type Entry } from './dispatcher.js';
import { keyHash } from './key-hash.js';

/** A full cursor refresh is appended after this many offsets of log growth (bounds the recovery scan). */
export const CURSOR_REFRESH_RECORDS = 100_000;
/** Control-record ranges a partition remembers (to pass them again after a reset), pairs. */
const CONTROL_RANGES_MAX = 10_000;
/** Bytes one read-ahead read takes from the log. */
const READ_AHEAD_BYTES = 256 * 1024;
/** Bytes one recovery read takes from the log. */
const RECOVERY_READ_BYTES = 1024 * 1024;

export interface Waiter {
  resolve(): void;
  reject(error: TidemarkError): void;
}

export interface SubState {
  readonly meta: SubscriptionMetadata;
  readonly cursor: Cursor;
  readonly dispatcher: Dispatcher;
  /** A cursor record of this leadership has committed: deliveries may start. */
  ready: boolean;
  /** Changed since the last cursor record was sent. */
  dirty: boolean;
  /** In the cursor record being appended now. */
  inFlight: boolean;
  /** Acks waiting for the next cursor record to commit. */
  waiters: Waiter[];
  pumping: boolean;
  /** Set once the subscription left (deleted, leadership over): loops stop. */
  gone: boolean;
}

export interface PartitionPorts {
  logger: Logger;
  limits: DispatchLimits;
  /** Appends a control batch through the partition's leader actor in `leaderEpoch`; resolves with its base offset once committed (acks=all). */
  appendControl(batch: Uint8Array, recordCount: number): Promise<number>;
  /** Something changed for this subscription: parked polls should look again. */
  wake(sub: SubState): void;
  nowMs(): number;
}

export class PartitionSubscriptions {
  readonly subs = new Map<string, SubState>();
  highWatermark = 0;
  logStartOffset = 0;
  /** Recovery done: subscriptions exist (maybe not ready yet). */
  recovered = false;
  closed = false;
  /** When this leadership's subscriptions opened here (the delivery lease counts from it), ms. */
  openedAtMs = 0;
  private persisting = false;
  private lastRefreshAt = -1;
  /**
   * Control records (cursor records) this leader wrote, passed or found, as flat [start, end)
   * pairs, ascending: a cursor placed or moved below them passes them at once, so they never
   * count as backlog. Bounded (the oldest go first; the read-ahead passes those anyway).
   */
  private readonly controls: number[] = [];
  /** Subscriptions (by name:id) already in metadata when this leadership started: only they may have records in the log. */
  private readonly known: Set<string>;

  constructor(
    readonly topic: string,
    readonly topicId: string,
    readonly partition: number,
    readonly leaderEpoch: number,
    readonly store: PartitionStore,
    private readonly ports: PartitionPorts,
    initial: readonly SubscriptionMetadata[],
  ) {
    this.known = new Set(initial.map(idOf));
  }

  /** Finds each known subscription's newest cursor record, then places every subscription. */
  async recover(metadata: readonly SubscriptionMetadata[]): Promise<void> {
    const found = this.known.size === 0 ? new Map<string, CursorRecord>() : await this.scan();
    if (this.closed) return;
    this.recovered = true;
    this.sync(metadata, found);
    this.persist();
  }

  /** Metadata changed: add new subscriptions, drop deleted ones. */
  sync(metadata: readonly SubscriptionMetadata[], found = new Map<string, CursorRecord>()): void {
    if (!this.recovered) return;
    const wanted = new Set(metadata.map((m) => m.name));
    for (const [name, sub] of this.subs) {
      const meta = metadata.find((m) => m.name === name);
      if (wanted.has(name) && meta?.id === sub.meta.id) continue;
      this.drop(sub);
      this.subs.delete(name);
    }
    for (const meta of metadata) {
      if (this.subs.has(meta.name)) continue;
      const record = found.get(idOf(meta));
      const cursor = record !== undefined ? new Cursor(record.markDelete, record.ranges) : new Cursor(this.initialPosition(meta));
      if (cursor.markDelete < this.logStartOffset) cursor.ackBelow(this.logStartOffset);
      const sub: SubState = {
        meta,
        cursor,
        dispatcher: new Dispatcher(this.partition, cursor, this.ports.limits),
        ready: false,
        dirty: true,
        inFlight: false,
        waiters: [],
        pumping: false,
        gone: false,
      };
      sub.dispatcher.reset(cursor.nextUnacked(cursor.markDelete));
      this.passControls(sub, cursor.markDelete);
      this.subs.set(meta.name, sub);
    }
    this.persist();
  }

  /**
   * Where a subscription without a cursor record starts. Partitions added after its creation start
   * at their log start; on the others `latest` is the log end now, `earliest` the log start.
   * A subscription already known at this leadership's start with no record left (retention removed
   * every one) starts at the log start: nothing it acknowledged is left there.
   */
  private initialPosition(meta: SubscriptionMetadata): number {
    if (this.known.has(idOf(meta))) return this.logStartOffset;
    if (meta.initialPosition === 'earliest' || this.partition >= meta.partitionsAtCreation) return this.logStartOffset;
    // The log end, not the high watermark: a new leader's high watermark starts low and climbs as its
    // followers report. Nothing is delivered until the cursor record, appended after this end, commits.
    return this.store.logEndOffset();
  }

  /** The leader's high watermark or log start moved. */
  committed(highWatermark: number, logStartOffset: number): void {
    this.highWatermark = highWatermark;
    const retained = logStartOffset > this.logStartOffset;
    this.logStartOffset = logStartOffset;
    if (!this.recovered) return;
    const refreshDue = this.lastRefreshAt >= 0 && (highWatermark - this.lastRefreshAt >= CURSOR_REFRESH_RECORDS || (retained && logStartOffset > this.lastRefreshAt));
    if (refreshDue) {
      for (const sub of this.subs.values()) sub.dirty = true;
      this.persist();
    }
    for (const sub of this.subs.values()) this.pump(sub);
  }

  close(): void {
    this.closed = true;
    for (const sub of this.subs.values()) this.drop(sub);
    this.subs.clear();
  }

  private drop(sub: SubState): void {
    sub.gone = true;
    const error = new TidemarkError('NOT_LEADER', `${this.topic}/${this.partition}: subscription ${sub.meta.name} is no longer served here`);
    for (const w of sub.waiters.splice(0)) w.reject(error);
    this.ports.wake(sub);
  }

  /** Acks wait for the next cursor record; returns at once when nothing is pending. */
  durable(sub: SubState): Promise<void> {
    if (!sub.dirty && !sub.inFlight) return Promise.resolve();
    sub.dirty = true;
    return new Promise((resolve, reject) => {
      sub.waiters.push({ resolve, reject });
      this.persist();
    });
  }

  /** Appends one control batch with every dirty subscription's cursor; one in flight at a time. */
  persist(): void {
    if (this.persisting || this.closed || !this.recovered) return;
    const batchSubs = [...this.subs.values()].filter((s) => s.dirty);
    if (batchSubs.length === 0) return;
    const full = batchSubs.length === this.subs.size;
    const refreshOffset = this.highWatermark;
    const records = batchSubs.map((s) => ({ name: s.meta.name, id: s.meta.id, ...s.cursor.snapshot() }));
    const waiters = batchSubs.map((s) => s.waiters.splice(0));
    for (const s of batchSubs) {
      s.dirty = false;
      s.inFlight = true;
    }
    this.persisting = true;
    const done = (error?: TidemarkError, baseOffset?: number) => {
      this.persisting = false;
      // The cursor record itself is nobody's message: every subscription passes it (in memory).
      if (baseOffset !== undefined) {
        this.noteControl(baseOffset, baseOffset + records.length);
        for (const s of this.subs.values()) s.dispatcher.ack([baseOffset, baseOffset + records.length]);
      }
      batchSubs.forEach((s, i) => {
        s.inFlight = false;
        if (error === undefined) {
          const first = !s.ready;
          s.ready = true;
          for (const w of waiters[i]!) w.resolve();
          if (first && !s.gone) this.pump(s);
        } else {
          s.dirty = true;
          for (const w of waiters[i]!) w.reject(error);
        }
      });
      if (error === undefined && full) this.lastRefreshAt = Math.max(this.lastRefreshAt, refreshOffset);
      // Another record at once only after success; after a failure the node tick tries again.
      if (error === undefined) this.persist();
    };
    this.ports.appendControl(encodeCursorBatch(records, this.ports.nowMs()), records.length).then(
      (baseOffset) => done(undefined, baseOffset),
      (error: unknown) => {
        const typed = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'cursor append failed', { cause: error });
        if (!this.closed) this.ports.logger.warn({ code: typed.code, reason: typed.message }, 'cursor record not committed');
        done(typed);
      },
    );
  }

  /** Fills a subscription's read-ahead from the log up to the high watermark. */
  pump(sub: SubState): void {
    if (sub.pumping || sub.gone || !sub.ready || sub.dispatcher.type === undefined) return;
    sub.pumping = true;
    void this.fill(sub)
      .catch((error: unknown) => {
        if (!this.closed) this.ports.logger.warn({ err: error, subscription: sub.meta.name }, 'read-ahead failed');
      })
      .finally(() => {
        sub.pumping = false;
        if (!sub.gone) this.ports.wake(sub);
      });
  }

  private async fill(sub: SubState): Promise<void> {
    const d = sub.dispatcher;
    for (;;) {
      const room = d.lookAheadRoom();
      const from = d.readPosition;
      const end = this.highWatermark;
      if (room <= 0 || from >= end || sub.gone) return;
      if (from < this.store.logStartOffset()) {
        this.expireBelow(sub, this.store.logStartOffset());
        continue;
      }
      let batches: Uint8Array[];
      try {
        batches = await this.store.read(from, READ_AHEAD_BYTES, end);
      } catch (error) {
        if (error instanceof TidemarkError && error.code === 'OFFSET_OUT_OF_RANGE') continue;
        throw error;
      }
      if (sub.gone || d.readPosition !== from) return;
      if (batches.length === 0) return;
      const entries: Entry[] = [];
      const controls: number[] = [];
      let upTo = from;
      for (const batch of batches) {
        const header = readBatchHeader(batch);
        const batchEnd = header.baseOffset + header.recordCount;
        if (isControlBatch(batch)) {
          // Cursor records are nobody's messages: acknowledged in memory as they are passed, without
          // a cursor record of their own (that would write one per one read, forever). The next real
          // ack persists it; a new leader passes them again.
          controls.push(Math.max(from, header.baseOffset), batchEnd);
          this.noteControl(header.baseOffset, batchEnd);
          upTo = Math.max(upTo, batchEnd);
          continue;
        }
        let full = false;
        forEachRecordKey(batch, (offset, key) => {
          if (full || offset < from) return;
          if (entries.length >= room) {
            full = true;
            return;
          }
          entries.push({ offset, hash: keyHash(key) });
          upTo = offset + 1;
        });
        if (full) break;
      }
      d.offer(entries, upTo);
      if (controls.length > 0) d.ack(controls);
      this.ports.wake(sub);
    }
  }

  /** Retention removed records the subscription had not acknowledged: they are skipped (Kafka's rule). */
  expireBelow(sub: SubState, logStartOffset: number): void {
    if (sub.cursor.markDelete >= logStartOffset) return;
    sub.dispatcher.ackCumulative(logStartOffset);
    if (sub.dispatcher.readPosition < logStartOffset) sub.dispatcher.offer([], logStartOffset);
    sub.dirty = true;
    this.persist();
  }

  /** Moves a subscription's cursor (reset); resolves once durable. */
  reset(sub: SubState, offset: number): Promise<void> {
    const to = Math.max(this.logStartOffset, Math.min(offset, this.store.logEndOffset()));
    sub.cursor.resetTo(to);
    sub.dispatcher.reset(to);
    this.passControls(sub, to);
    this.ports.wake(sub);
    return this.durable(sub);
  }

  private noteControl(start: number, end: number): void {
    const c = this.controls;
    if (c.length > 0 && start <= c[c.length - 1]!) {
      // Seen before (a pump passing what this leader wrote), or out of order: keep the list ascending.
      if (end <= c[c.length - 1]!) return;
      start = c[c.length - 1]!;
    }
    if (c.length > 0 && c[c.length - 1] === start) c[c.length - 1] = end;
    else c.push(start, end);
    if (c.length > CONTROL_RANGES_MAX * 2) c.splice(0, c.length - CONTROL_RANGES_MAX * 2);
  }

  /** A cursor placed at `from` passes the control records known above it. */
  private passControls(sub: SubState, from: number): void {
    const above: number[] = [];
    for (let i = 0; i < this.controls.length; i += 2) {
      const end = this.controls[i + 1]!;
      if (end <= from) continue;
      above.push(Math.max(from, this.controls[i]!), end);
    }
    if (above.length > 0) sub.dispatcher.ack(above);
  }

  describe(sub: SubState, nowMs: number): SubscriptionPartitionInfo {
    const consumers: ConsumerInfo[] = sub.dispatcher.consumers(nowMs);
    const type = sub.dispatcher.type;
    const info: SubscriptionPartitionInfo = {
      subscription: sub.meta.name,
      markDelete: sub.cursor.markDelete,
      ackedAbove: sub.cursor.ackedAbove(),
      backlog: this.backlog(sub),
      unacked: sub.dispatcher.unackedCount(),
      consumers,
    };
    if (type !== undefined) info.type = type;
    return info;
  }

  /** Records up to the high watermark not acknowledged (control records count: Kafka's lag counts its markers too). */
  backlog(sub: SubState): number {
    return Math.max(0, this.highWatermark - sub.cursor.markDelete - sub.cursor.ackedAbove());
  }

  /** The first offset whose batch's newest timestamp is at or after `timestampMs`, or the high watermark. */
  async offsetForTimestamp(timestampMs: number): Promise<number> {
    let from = this.store.logStartOffset();
    while (from < this.highWatermark) {
      const batches = await this.store.read(from, RECOVERY_READ_BYTES, this.highWatermark);
      if (batches.length === 0) break;
      for (const batch of batches) {
        const header = readBatchHeader(batch);
        if (!isControlBatch(batch) && header.maxTimestamp >= timestampMs) return Math.max(from, header.baseOffset);
        from = header.baseOffset + header.recordCount;
      }
    }
    return this.highWatermark;
  }

  /** Newest cursor record of each known subscription, scanning back from the log end in doubling windows. */
  private async scan(): Promise<Map<string, CursorRecord>> {
    const found = new Map<string, CursorRecord>();
    let end = this.store.logEndOffset();
    let window = 2 * CURSOR_REFRESH_RECORDS;
    while (!this.closed) {
      const logStart = this.store.logStartOffset();
      const start = Math.max(logStart, end - window);
      const inWindow = new Map<string, CursorRecord>();
      let at = start;
      while (at < end && !this.closed) {
        let batches: Uint8Array[];
        try {
          batches = await this.store.read(at, RECOVERY_READ_BYTES, end);
        } catch (error) {
          if (error instanceof TidemarkError && error.code === 'OFFSET_OUT_OF_RANGE') {
            at = Math.max(at, this.store.logStartOffset());
            continue;
          }
          throw error;
        }
        if (batches.length === 0) break;
        for (const batch of batches) {
          const header = readBatchHeader(batch);
          if (isControlBatch(batch)) {
            for (const r of decodeCursorBatch(batch)) inWindow.set(`${r.name}:${r.id}`, r);
            // Only the first window's (ascending, the newest): enough for cursors placed near the log
            // end not to count them as backlog; older ones are passed by the read-ahead anyway.
            if (window === 2 * CURSOR_REFRESH_RECORDS) this.noteControl(header.baseOffset, header.baseOffset + header.recordCount);
          }
          at = header.baseOffset + header.recordCount;
        }
      }
      for (const [k, r] of inWindow) if (!found.has(k)) found.set(k, r);
      if (start <= logStart || [...this.known].every((k) => found.has(k))) break;
      end = start;
      window *= 2;
    }
    return found;
  }

  errorFor(name: string): { code: ErrorCode; message: string } | undefined {
    if (!this.recovered) return { code: 'LEADER_NOT_AVAILABLE', message: `${this.topic}/${this.partition}: subscriptions are recovering` };
    if (!this.subs.has(name)) return { code: 'UNKNOWN_SUBSCRIPTION', message: `no subscription ${name} on ${this.topic}/${this.partition}` };
    return undefined;
  }
}

const idOf = (m: { name: string; id: number }) => `${m.name}:${m.id}`;
