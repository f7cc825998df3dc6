/**
 * NodeStorage on one RocksDB instance (the @nxtedition/rocksdb binding; docs/storage.md has the
 * binding comparison, key layout and crash story). Every mutation is one atomic WriteBatch, so the
 * WAL replays to a state some sequence of whole calls produced.
 */
import { createRequire } from 'node:module';
import { readBatchHeader } from '../protocol/batch.js';
import { TidemarkError } from '../protocol/errors.js';
// The log rules (append checks, epoch cache, retention) live with the memory store, shared.
import { checkAppend, checkPartitionKey, checkStartOffset, endOffsetForEpoch, epochsBefore, epochsFrom } from './memory-storage.js';
import { outOfRange, partitionDeleted, retentionTakes, storageClosed } from './memory-storage.js';
import type { EpochEntry, NodeStorage, PartitionKey, PartitionStore, RetentionPolicy } from './partition-store.js';
import { NODE_TAIL_CACHE_BYTES_MAX, TailCache, TailCacheBudget } from './tail-cache.js';
import { createWalSync, type SyncObserver } from './wal-sync.js';
import { compactView, termAt, truncateView, type LogView, type TermStart } from '../quorum/log-view.js';
import { checkRaftAppend, checkSnapshot, INITIAL_STATE, type LogEntry, type PersistentState, type RaftStore, type Snapshot, type WithRaftLog } from '../quorum/raft-store.js';

// ---- the binding, typed as far as we use it (it ships no declarations) --------------------------

type WriteOp = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };
type Range = { gte?: Buffer; lt?: Buffer; lte?: Buffer };
/** highWaterMarkBytes: one nextv() stops once it read this many key+value bytes (one entry over). */
type IteratorOptions = Range & { reverse?: boolean; limit?: number; highWaterMarkBytes?: number; values?: boolean };
type RocksIterator = { nextv(size: number): Promise<Array<[Buffer, Buffer]>>; close(): Promise<void> };
/** A native WriteBatch; write() applies it atomically, then frees it and detaches it from the db. */
interface RocksChainedBatch {
  put(key: Buffer, value: Buffer): RocksChainedBatch;
  del(key: Buffer): RocksChainedBatch;
  write(options: { sync: boolean }): Promise<void>;
}
interface RocksDb {
  open(options: { createIfMissing: boolean; walCompression: boolean; compression?: boolean; compaction?: 'level' | 'universal'; memtableMemoryBudget?: number }): Promise<void>;
  close(): Promise<void>;
  /** Only the chained form: see {@link write}. */
  batch(): RocksChainedBatch;
  getMany(keys: Buffer[]): Promise<Array<Buffer | undefined>>;
  /** Synchronous. */
  getProperty(property: string): string;
  iterator(options: IteratorOptions): RocksIterator;
  /** DeleteRange under the hood: one range tombstone, not one per key. */
  clear(options: Range): Promise<void>;
}
type RocksLevelClass = new (location: string, options: { keyEncoding: 'buffer'; valueEncoding: 'buffer' }) => RocksDb;

const { RocksLevel } = createRequire(import.meta.url)('@nxtedition/rocksdb') as { RocksLevel: RocksLevelClass };

// ---- key layout ---------------------------------------------------------------------------------

// 0x04 held the node-local metadata log before the controller quorum; it is not reused.
const [TAG_FORMAT, TAG_BATCH, TAG_EPOCH, TAG_META] = [0x00, 0x01, 0x02, 0x03];
// 0x05-0x08: the Raft store (below).
const TAG_OPEN_MARK = 0x09;
const FORMAT_KEY = Buffer.from([TAG_FORMAT]);
/** Present while a process has the storage open; a clean close deletes it (NodeStorage.uncleanShutdown). */
const OPEN_MARK_KEY = Buffer.from([TAG_OPEN_MARK]);
const FORMAT_VERSION = 1;
const TWO_32 = 0x1_0000_0000;
/** Entries per nextv(): small enough that a bounded read does not pull much past its end. */
const SCAN_CHUNK = 64;
const INT32_MAX = 0x7fff_ffff;
/** Retention usually stops at the first batch it looks at; do not read far past it. */
const RETENTION_READ_AHEAD_BYTES = 1 << 20;

function u64(n: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32BE(Math.floor(n / TWO_32), 0);
  b.writeUInt32BE(n >>> 0, 4);
  return b;
}

function readU64(b: Buffer, at: number): number {
  return b.readUInt32BE(at) * TWO_32 + b.readUInt32BE(at + 4);
}

/** tag, topicId (16 raw bytes), partition u32 BE. */
function partitionPrefix(tag: number, key: PartitionKey): Buffer {
  const p = Buffer.allocUnsafe(21);
  p[0] = tag;
  p.write(key.topicId, 1, 16, 'hex');
  p.writeUInt32BE(key.partition, 17);
  return p;
}

/** The smallest key greater than every key that starts with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  throw new Error('assertion failed: prefix of 0xff bytes only');
}

function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Calls `visit` per entry in key order until it returns false or the range ends. */
async function scan(db: RocksDb, options: IteratorOptions, visit: (key: Buffer, value: Buffer) => boolean | void): Promise<void> {
  const it = db.iterator(options);
  try {
    for (;;) {
      const rows = await it.nextv(SCAN_CHUNK);
      if (rows.length === 0) return;
      for (const [k, v] of rows) if (visit(k, v) === false) return;
    }
  } finally {
    await it.close();
  }
}

/**
 * One atomic write of `ops`. Through the chained batch, never the binding's array form
 * `db.batch(ops)`: that one (@nxtedition/rocksdb 12.2.12 `_batch`) never closes the chained batch it
 * builds, and abstract-level keeps every open batch attached to the db until the db closes, so
 * each write's native WriteBatch, values included, stayed in memory: a node's RSS grew by about
 * what it had written. `write()` closes the batch, which frees it.
 */
function write(db: RocksDb, ops: readonly WriteOp[], options: { sync: boolean }): Promise<void> {
  const batch = db.batch();
  for (const op of ops) {
    if (op.type === 'put') batch.put(op.key, op.value);
    else batch.del(op.key);
  }
  return batch.write(options);
}

async function lastEntry(db: RocksDb, range: Range): Promise<[Buffer, Buffer] | undefined> {
  const it = db.iterator({ ...range, reverse: true, limit: 1 });
  try {
    return (await it.nextv(1))[0];
  } finally {
    await it.close();
  }
}

/** `fn()`, or a rejection if `check` throws: callers get a rejected promise, never a throw. */
function guarded<T>(check: () => void, fn: () => Promise<T>): Promise<T> {
  try {
    check();
  } catch (error) {
    return Promise.reject(error);
  }
  return fn();
}

/** Runs mutations one after another; a failed one does not stop the next. */
class Serial {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
  idle(): Promise<unknown> {
    return this.tail;
  }
}

// ---- partitions ---------------------------------------------------------------------------------

class RocksPartition implements PartitionStore {
  private readonly batchPrefix: Buffer;
  private readonly epochPrefix: Buffer;
  private readonly metaKey: Buffer;
  private readonly serial = new Serial();
  private deleted = false;
  /** The newest batches, for reads right behind the writer (tail-cache.ts). */
  private readonly tail: TailCache;

  private constructor(
    private readonly db: RocksDb,
    readonly key: PartitionKey,
    private readonly live: () => void,
    private readonly syncWal: () => Promise<void>,
    budget: TailCacheBudget,
    private start: number,
    private end: number,
    private size: number,
    private cache: EpochEntry[],
  ) {
    this.batchPrefix = partitionPrefix(TAG_BATCH, key);
    this.epochPrefix = partitionPrefix(TAG_EPOCH, key);
    this.metaKey = partitionPrefix(TAG_META, key);
    this.tail = new TailCache(budget);
  }

  static async open(db: RocksDb, key: PartitionKey, live: () => void, syncWal: () => Promise<void>, budget: TailCacheBudget): Promise<RocksPartition> {
    const batchPrefix = partitionPrefix(TAG_BATCH, key);
    const epochPrefix = partitionPrefix(TAG_EPOCH, key);
    const batches = { gte: batchPrefix, lt: prefixEnd(batchPrefix) };
    const epochs = { gte: epochPrefix, lt: prefixEnd(epochPrefix) };
    const [meta] = await db.getMany([partitionPrefix(TAG_META, key)]);
    const last = await lastEntry(db, batches);
    if (meta === undefined) {
      // Every write that stores a batch also writes meta, so batches without it are what an
      // interrupted deletePartition left behind (its commit point deletes meta): finish the job.
      if (last !== undefined) await Promise.all([db.clear(batches), db.clear(epochs)]);
      return new RocksPartition(db, key, live, syncWal, budget, 0, 0, 0, []);
    }
    const start = readU64(meta, 0);
    const end = last === undefined ? start : readU64(last[0], 21) + readBatchHeader(last[1]).recordCount;
    const cache: EpochEntry[] = [];
    await scan(db, epochs, (k, v) => void cache.push({ epoch: k.readUInt32BE(21), startOffset: readU64(v, 0) }));
    return new RocksPartition(db, key, live, syncWal, budget, start, end, readU64(meta, 8), cache);
  }

  logStartOffset(): number {
    return this.start;
  }
  logEndOffset(): number {
    return this.end;
  }
  sizeBytes(): number {
    return this.size;
  }
  epochs(): readonly EpochEntry[] {
    return this.cache;
  }
  endOffsetForEpoch(epoch: number): { epoch: number; endOffset: number } {
    return endOffsetForEpoch(this.cache, this.end, epoch);
  }

  private check(): void {
    this.live();
    if (this.deleted) throw partitionDeleted(this.key);
  }

  /** Queues a mutation. Ones queued before close() still run: close() waits for them. */
  private mutate<T>(fn: () => Promise<T>): Promise<T> {
    return guarded(
      () => this.check(),
      () =>
        this.serial.run(async () => {
          if (this.deleted) throw partitionDeleted(this.key);
          return fn();
        }),
    );
  }

  private batchKey(offset: number): Buffer {
    return Buffer.concat([this.batchPrefix, u64(offset)]);
  }
  private epochKey(epoch: number): Buffer {
    const k = Buffer.allocUnsafe(25);
    this.epochPrefix.copy(k);
    k.writeUInt32BE(epoch, 21);
    return k;
  }
  private metaOp(start: number, size: number): WriteOp {
    return { type: 'put', key: this.metaKey, value: Buffer.concat([u64(start), u64(size)]) };
  }
  /** Rewrites the epoch cache to `next` in `ops`: deletes dropped epochs, puts new or moved ones. */
  private epochOps(next: readonly EpochEntry[], ops: WriteOp[]): void {
    const before = new Map(this.cache.map((e) => [e.epoch, e.startOffset]));
    for (const e of next) {
      if (before.get(e.epoch) !== e.startOffset) ops.push({ type: 'put', key: this.epochKey(e.epoch), value: u64(e.startOffset) });
      before.delete(e.epoch);
    }
    for (const epoch of before.keys()) ops.push({ type: 'del', key: this.epochKey(epoch) });
  }

  /**
   * The write itself is never a RocksDB sync write (that would block the JS thread for the fsync);
   * `sync` waits for the node's shared WAL fsync (wal-sync.ts) after it, outside this partition's
   * mutation queue, so the next append can be written meanwhile.
   */
  append(batches: readonly Uint8Array[], options?: { sync?: boolean }): Promise<void> {
    const written = this.mutate(async () => {
      if (batches.length === 0) return;
      const checked = checkAppend(batches, this.end, this.cache);
      const ops: WriteOp[] = batches.map((b, i) => ({ type: 'put', key: this.batchKey(checked.headers[i]!.baseOffset), value: asBuffer(b) }));
      const epochs = [...this.cache, ...checked.newEpochs];
      this.epochOps(epochs, ops);
      ops.push(this.metaOp(this.start, this.size + checked.bytes));
      await write(this.db, ops, { sync: false });
      this.end = checked.logEndOffset;
      this.size += checked.bytes;
      this.cache = epochs;
      batches.forEach((b, i) => {
        const h = checked.headers[i]!;
        this.tail.push(h.baseOffset, h.baseOffset + h.recordCount, b);
      });
    });
    return options?.sync === true ? written.then(() => this.syncWal()) : written;
  }

  async read(offset: number, maxBytes: number, endOffset: number): Promise<Uint8Array[]> {
    // Two iterators are two snapshots: a truncation between them could hand us a batch that no
    // longer contains `offset`. Each result comes from the second snapshot alone, so retry.
    for (let attempt = 0; attempt < 10; attempt++) {
      this.check();
      const [start, end] = [this.start, this.end];
      if (offset < start || offset > end) throw outOfRange(this.key, offset, start, end);
      // Capped at the end we report so a read never runs ahead of logEndOffset().
      const bound = Math.min(endOffset, end);
      if (offset >= bound) return [];
      const cached = this.tail.read(offset, maxBytes, bound);
      if (cached !== undefined) return cached;
      const floor = await lastEntry(this.db, { gte: this.batchPrefix, lte: this.batchKey(offset) });
      if (floor === undefined) continue;
      const base = readU64(floor[0], 21);
      const out: Buffer[] = [];
      let bytes = 0;
      let consistent = false;
      const range = { gte: this.batchKey(base), lt: this.batchKey(bound), highWaterMarkBytes: Math.min(Math.max(maxBytes, 1), INT32_MAX) };
      await scan(this.db, range, (k, v) => {
        if (out.length === 0) {
          consistent = readU64(k, 21) === base && offset < base + readBatchHeader(v).recordCount;
          if (!consistent) return false;
        } else if (bytes + v.length > maxBytes) {
          return false;
        }
        out.push(v);
        bytes += v.length;
        return true;
      });
      if (consistent) return out;
    }
    throw new TidemarkError('INTERNAL', 'read kept racing with truncation', { context: { ...this.key, offset } });
  }

  truncateTo(offset: number): Promise<void> {
    return this.mutate(async () => {
      if (offset >= this.end) return;
      let newEnd = offset;
      if (offset > this.start) {
        // A batch straddling `offset` goes whole: no record at or past `offset` may survive.
        const floor = await lastEntry(this.db, { gte: this.batchPrefix, lte: this.batchKey(offset) });
        if (floor === undefined) throw new Error(`assertion failed: no batch at or below ${offset} in [${this.start}, ${this.end})`);
        newEnd = readU64(floor[0], 21);
      }
      const ops: WriteOp[] = [];
      let removedBytes = 0;
      await scan(this.db, { gte: this.batchKey(newEnd), lt: prefixEnd(this.batchPrefix) }, (k, v) => {
        ops.push({ type: 'del', key: k });
        removedBytes += v.length;
      });
      const newStart = Math.min(this.start, newEnd);
      const epochs = epochsBefore(this.cache, newEnd);
      this.epochOps(epochs, ops);
      ops.push(this.metaOp(newStart, this.size - removedBytes));
      // Truncation undoes history; make it durable before anyone builds on it.
      await write(this.db, ops, { sync: true });
      [this.start, this.end, this.size, this.cache] = [newStart, newEnd, this.size - removedBytes, epochs];
      if (newEnd <= this.start || offset <= newStart) this.tail.clear();
      else this.tail.truncate(newEnd);
    });
  }

  truncateFullyAndStartAt(offset: number): Promise<void> {
    return guarded(
      () => checkStartOffset(offset),
      () =>
        this.mutate(async () => {
          // Per-key deletes keep it one atomic write with the meta key (a DeleteRange is a write of
          // its own). Keys only: the whole log goes, and its size with it.
          const ops: WriteOp[] = [];
          await scan(this.db, { gte: this.batchPrefix, lt: prefixEnd(this.batchPrefix), values: false }, (k) => void ops.push({ type: 'del', key: k }));
          this.epochOps([], ops);
          ops.push(this.metaOp(offset, 0));
          await write(this.db, ops, { sync: true });
          [this.start, this.end, this.size, this.cache] = [offset, offset, 0, []];
          this.tail.clear();
        }),
    );
  }

  applyRetention(policy: RetentionPolicy): Promise<{ deletedBatches: number; deletedBytes: number }> {
    return this.mutate(async () => {
      const ops: WriteOp[] = [];
      let deletedBytes = 0;
      let nextStart = this.end;
      const range = { gte: this.batchPrefix, lt: prefixEnd(this.batchPrefix), highWaterMarkBytes: RETENTION_READ_AHEAD_BYTES };
      await scan(this.db, range, (k, v) => {
        if (!retentionTakes(policy, readBatchHeader(v), v.length, this.size - deletedBytes)) {
          nextStart = readU64(k, 21);
          return false;
        }
        ops.push({ type: 'del', key: k });
        deletedBytes += v.length;
        return true;
      });
      const deletedBatches = ops.length;
      if (deletedBatches === 0) return { deletedBatches, deletedBytes };
      const epochs = epochsFrom(this.cache, nextStart);
      this.epochOps(epochs, ops);
      ops.push(this.metaOp(nextStart, this.size - deletedBytes));
      await write(this.db, ops, { sync: false });
      [this.start, this.size, this.cache] = [nextStart, this.size - deletedBytes, epochs];
      this.tail.dropBefore(nextStart);
      return { deletedBatches, deletedBytes };
    });
  }

  /** Deletes everything of the partition; the handle is dead afterwards. */
  destroy(onGone: () => void): Promise<void> {
    return this.mutate(async () => {
      const ops: WriteOp[] = [{ type: 'del', key: this.metaKey }];
      this.epochOps([], ops);
      // The commit point: without meta the partition is gone, whatever batches a crash leaves
      // behind are swept by the next open.
      await write(this.db, ops, { sync: true });
      this.deleted = true;
      this.tail.clear();
      onGone();
      await this.db.clear({ gte: this.batchPrefix, lt: prefixEnd(this.batchPrefix) });
    });
  }

  idle(): Promise<unknown> {
    return this.serial.idle();
  }

  /** The storage closed (after this partition's queued mutations): its cached bytes go back to the node. */
  closed(): void {
    this.tail.clear();
  }
}

// ---- raft log (controller quorum) ---------------------------------------------------------------

const [TAG_RAFT_STATE, TAG_RAFT_ENTRY, TAG_RAFT_TERM, TAG_RAFT_SNAPSHOT] = [0x05, 0x06, 0x07, 0x08];
const RAFT_STATE_KEY = Buffer.from([TAG_RAFT_STATE]);
const RAFT_ENTRY_PREFIX = Buffer.from([TAG_RAFT_ENTRY]);
const RAFT_TERM_PREFIX = Buffer.from([TAG_RAFT_TERM]);
const RAFT_SNAPSHOT_KEY = Buffer.from([TAG_RAFT_SNAPSHOT]);
/** votedFor on disk when the voter has not voted (voter ids stop at 2^31 - 1). */
const RAFT_NO_VOTE = 0xffff_ffff;

const raftEntryKey = (index: number) => Buffer.concat([RAFT_ENTRY_PREFIX, u64(index)]);
const raftTermKey = (term: number) => Buffer.concat([RAFT_TERM_PREFIX, u64(term)]);

/**
 * The Raft store (src/quorum/raft-store.ts) on the node's RocksDB: 0x05 holds term u64 · votedFor
 * u32, 0x06 · index u64 holds term u64 · payload, 0x07 · term u64 holds the term's first index u64
 * (so opening reads the term starts, not the log), 0x08 holds the latest snapshot: index u64 ·
 * term u64 · data. Every call is one WriteBatch.
 */
async function openRaftLog(db: RocksDb, live: () => void): Promise<RaftStore & { idle(): Promise<unknown> }> {
  const serial = new Serial();
  const [stateValue, snapshotValue] = await db.getMany([RAFT_STATE_KEY, RAFT_SNAPSHOT_KEY]);
  let state: PersistentState = INITIAL_STATE;
  if (stateValue !== undefined) {
    const vote = stateValue.readUInt32BE(8);
    state = { term: readU64(stateValue, 0), votedFor: vote === RAFT_NO_VOTE ? null : vote };
  }
  let snapshot: Snapshot | undefined;
  if (snapshotValue !== undefined) snapshot = { index: readU64(snapshotValue, 0), term: readU64(snapshotValue, 8), data: snapshotValue.subarray(16) };
  const base = snapshot?.index ?? 0;
  const last = await lastEntry(db, { gte: RAFT_ENTRY_PREFIX, lt: prefixEnd(RAFT_ENTRY_PREFIX) });
  const lastIndex = last === undefined ? base : Math.max(base, readU64(last[0], 1));
  const starts: TermStart[] = [];
  await scan(db, { gte: RAFT_TERM_PREFIX, lt: prefixEnd(RAFT_TERM_PREFIX) }, (k, v) => {
    const start = { term: readU64(k, 1), index: readU64(v, 0) };
    if (start.index > base) starts.push(start);
  });
  let view: LogView = { lastIndex, starts, snapshotIndex: base, snapshotTerm: snapshot?.term ?? 0 };
  const mutate = (fn: () => Promise<void>) => guarded(live, () => serial.run(fn));
  return {
    loadState: () => state,
    loadSnapshot: () => snapshot,
    lastIndex: () => view.lastIndex,
    termAt: (index) => termAt(view, index),
    view: () => view,
    idle: () => serial.idle(),
    saveState(next, options) {
      return mutate(async () => {
        const value = Buffer.allocUnsafe(12);
        u64(next.term).copy(value, 0);
        value.writeUInt32BE(next.votedFor ?? RAFT_NO_VOTE, 8);
        await write(db, [{ type: 'put', key: RAFT_STATE_KEY, value }], { sync: options?.sync ?? false });
        state = { term: next.term, votedFor: next.votedFor };
      });
    },
    append(entries, options) {
      return mutate(async () => {
        if (entries.length === 0) return;
        const next = checkRaftAppend(view, entries);
        const ops: WriteOp[] = entries.map((e) => ({ type: 'put', key: raftEntryKey(e.index), value: Buffer.concat([u64(e.term), e.payload]) }));
        for (const s of next.starts.slice(view.starts.length)) ops.push({ type: 'put', key: raftTermKey(s.term), value: u64(s.index) });
        await write(db, ops, { sync: options?.sync ?? false });
        view = next;
      });
    },
    truncateFrom(index) {
      return mutate(async () => {
        if (index > view.lastIndex) return;
        const next = truncateView(view, index);
        // Only uncommitted entries are ever truncated, so the suffix is short: per-key deletes keep it one atomic write.
        const ops: WriteOp[] = [];
        for (let i = Math.max(1, index); i <= view.lastIndex; i++) ops.push({ type: 'del', key: raftEntryKey(i) });
        for (const s of view.starts) if (s.index >= index) ops.push({ type: 'del', key: raftTermKey(s.term) });
        await write(db, ops, { sync: true });
        view = next;
      });
    },
    saveSnapshot(next, options) {
      return mutate(async () => {
        checkSnapshot(next);
        if (next.index <= view.snapshotIndex) return;
        const keepsSuffix = termAt(view, next.index) === next.term;
        // Per-key deletes keep it one atomic write; between snapshots the log holds about
        // snapshotEveryEntries entries (plus an uncommitted tail when the whole log goes).
        const ops: WriteOp[] = [];
        const dropTo = keepsSuffix ? next.index : view.lastIndex;
        for (let i = view.snapshotIndex + 1; i <= dropTo; i++) ops.push({ type: 'del', key: raftEntryKey(i) });
        for (const s of view.starts) if (!keepsSuffix || s.index <= next.index) ops.push({ type: 'del', key: raftTermKey(s.term) });
        const value = Buffer.concat([u64(next.index), u64(next.term), next.data]);
        ops.push({ type: 'put', key: RAFT_SNAPSHOT_KEY, value });
        await write(db, ops, { sync: options?.sync ?? false });
        view = compactView(view, next.index, next.term);
        snapshot = { index: next.index, term: next.term, data: value.subarray(16) };
      });
    },
    async entries(from, max, maxBytes = Number.POSITIVE_INFINITY) {
      live();
      const start = Math.max(1, from);
      const out: LogEntry[] = [];
      if (max <= 0 || start <= view.snapshotIndex || start > view.lastIndex) return out;
      let bytes = 0;
      const range = { gte: raftEntryKey(start), lt: raftEntryKey(view.lastIndex + 1), limit: Math.min(max, INT32_MAX) };
      await scan(db, range, (k, v) => {
        if (out.length > 0 && bytes + v.length - 8 > maxBytes) return false;
        out.push({ index: readU64(k, 1), term: readU64(v, 0), payload: v.subarray(8) });
        bytes += v.length - 8;
        return true;
      });
      return out;
    },
  };
}

// ---- the node's storage -------------------------------------------------------------------------

export interface RocksStorageOptions {
  /**
   * Bytes all partitions' tail caches hold together (tail-cache.ts); 0 caches nothing.
   * @default 67108864 (64 MiB)
   */
  tailCacheBytesMax?: number;
  /** Told of every shared WAL fsync (wal-sync.ts): the node's metrics. */
  observeSync?: SyncObserver;
}

export type RocksNodeStorage = NodeStorage & WithRaftLog & {
  /** The node's tail-cache budget, to see what the caches hold. */
  readonly tailCache: TailCacheBudget;
};

export async function openRocksNodeStorage(dir: string, options: RocksStorageOptions = {}): Promise<RocksNodeStorage> {
  const tailCache = new TailCacheBudget(options.tailCacheBytesMax ?? NODE_TAIL_CACHE_BYTES_MAX);
  const db = new RocksLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  // WAL compression runs on the JS thread with this binding and costs more than it saves on
  // record batches (see the benchmark); SST files are still compressed in the background.
  try {
    await db.open({ createIfMissing: true, walCompression: false, compression: false, compaction: 'universal' });
  } catch (error) {
    // abstract-level says only "Database is not open"; RocksDB's reason (a LOCK another process holds,
    // a permission) is in the cause.
    const reason = (error as { cause?: { message?: string } }).cause?.message ?? (error as Error).message;
    const inUse = /lock/i.test(reason) ? ' (is another node running on this data directory?)' : '';
    throw new TidemarkError('INTERNAL', `cannot open the node's storage in ${dir}: ${reason}${inUse}`, { cause: error });
  }
  const walSync = createWalSync(dir, () => db.getProperty('rocksdb.current-super-version-number'), options.observeSync);
  let closed = false;
  const live = () => {
    if (closed) throw storageClosed();
  };
  const partitions = new Map<string, Promise<RocksPartition>>();
  const deleting = new Set<Promise<void>>();
  let raftLog: Awaited<ReturnType<typeof openRaftLog>>;
  let uncleanShutdown: boolean;
  let reported = false;
  try {
    // A later layout change must not be read as this one.
    const version = Buffer.from([0, 0, 0, FORMAT_VERSION]);
    const [format] = await db.getMany([FORMAT_KEY]);
    if (format === undefined) await write(db, [{ type: 'put', key: FORMAT_KEY, value: version }], { sync: true });
    else if (!format.equals(version)) throw new TidemarkError('INTERNAL', `storage in ${dir} has format ${format.toString('hex')}`);
    raftLog = await openRaftLog(db, live);
    const [mark] = await db.getMany([OPEN_MARK_KEY]);
    uncleanShutdown = mark !== undefined;
    if (mark === undefined) await write(db, [{ type: 'put', key: OPEN_MARK_KEY, value: Buffer.alloc(0) }], { sync: true });
  } catch (error) {
    await walSync.close();
    await db.close();
    throw error;
  }

  const openPartition = async (key: PartitionKey): Promise<RocksPartition> => {
    live();
    checkPartitionKey(key);
    const id = `${key.topicId}/${key.partition}`;
    let opening = partitions.get(id);
    if (opening === undefined) {
      opening = RocksPartition.open(db, key, live, () => walSync.sync(), tailCache);
      partitions.set(id, opening);
      const mine = opening;
      opening.catch(() => {
        if (partitions.get(id) === mine) partitions.delete(id);
      });
    }
    return opening;
  };

  return {
    raftLog,
    uncleanShutdown,
    uncleanShutdownReported: () => {
      reported = true;
    },
    tailCache,
    openPartition,
    async deletePartition(key) {
      const id = `${key.topicId}/${key.partition}`;
      const partition = await openPartition(key);
      // Off the map at its commit point, so close() tracks the rest of it here.
      const done = partition.destroy(() => partitions.delete(id));
      deleting.add(done);
      await done.finally(() => deleting.delete(done));
    },
    async close() {
      if (closed) return;
      closed = true;
      const open = await Promise.allSettled(partitions.values());
      await Promise.allSettled([...open.map((p) => (p.status === 'fulfilled' ? p.value.idle() : undefined)), ...deleting]);
      for (const p of open) if (p.status === 'fulfilled') p.value.closed();
      await raftLog.idle();
      await walSync.close();
      // Last: everything before it is written, so the next open may trust what it finds (unless an
      // unclean shutdown found at open was never reported: the next process must report it).
      if (!uncleanShutdown || reported) await write(db, [{ type: 'del', key: OPEN_MARK_KEY }], { sync: true });
      await db.close();
    },
  };
}
