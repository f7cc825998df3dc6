/**
 * NodeStorage in memory, for unit tests and the simulator. Same contract as the RocksDB store
 * (test/storage.test.ts runs one suite against both). Data lives in a {@link MemoryDisk}: hand the
 * same disk to a new storage after close() to model a restart.
 *
 * The disk also models what an fsync buys, as RocksDB's one write-ahead log per node does: a write
 * made without `sync` survives a process crash (the OS holds it) but not a power loss until it is
 * flushed; a synced write flushes it and every write before it. `MemoryDisk.powerLoss()` takes
 * back what was not flushed, `flush()` is the OS writing its dirty pages back.
 *
 * The log rules both stores follow (append checks, epoch cache, retention, OffsetsForLeaderEpoch)
 * are exported from here so they exist once; this module loads no native code.
 */
import { BATCH_HEADER_BYTES, readBatchHeader, type BatchHeader } from '../protocol/batch.js';
import { TidemarkError } from '../protocol/errors.js';
import type {
  EpochEntry,
  NodeStorage,
  PartitionKey,
  PartitionStore,
  RetentionPolicy,
} from './partition-store.js';
import { createMemoryRaftStore, MemoryRaftDisk, type RaftStore, type WithRaftLog } from '../quorum/raft-store.js';

// ---- shared log rules ---------------------------------------------------------------------------

export const TOPIC_ID_PATTERN = /^[0-9a-f]{32}$/;

export function checkPartitionKey(key: PartitionKey): void {
  if (!TOPIC_ID_PATTERN.test(key.topicId) || !Number.isInteger(key.partition) || key.partition < 0 || key.partition > 0xffff_ffff) {
    throw new TidemarkError('INVALID_REQUEST', `bad partition key ${key.topicId}/${key.partition}`);
  }
}

export interface CheckedAppend {
  headers: BatchHeader[];
  logEndOffset: number;
  bytes: number;
  /** Epoch-cache entries the append opens, oldest first. */
  newEpochs: EpochEntry[];
}

/**
 * Validates that `batches` continue the log at `logEndOffset` and works out what they change.
 * A mismatch means the caller assigned offsets wrong; nothing is written.
 */
export function checkAppend(batches: readonly Uint8Array[], logEndOffset: number, epochs: readonly EpochEntry[]): CheckedAppend {
  let next = logEndOffset;
  let bytes = 0;
  let latestEpoch = epochs.at(-1)?.epoch ?? -1;
  const headers: BatchHeader[] = [];
  const newEpochs: EpochEntry[] = [];
  for (const batch of batches) {
    if (batch.length < BATCH_HEADER_BYTES) throw new TidemarkError('CORRUPT_MESSAGE', 'batch shorter than its header');
    const h = readBatchHeader(batch);
    if (h.batchBytes !== batch.length || h.recordCount < 1) {
      throw new TidemarkError('CORRUPT_MESSAGE', 'batch length or record count is wrong');
    }
    if (h.baseOffset !== next) {
      throw new TidemarkError('INVALID_REQUEST', `batch base offset ${h.baseOffset} does not continue the log at ${next}`, {
        context: { baseOffset: h.baseOffset, logEndOffset: next },
      });
    }
    if (h.leaderEpoch > latestEpoch) {
      newEpochs.push({ epoch: h.leaderEpoch, startOffset: next });
      latestEpoch = h.leaderEpoch;
    }
    headers.push(h);
    next += h.recordCount;
    bytes += batch.length;
  }
  return { headers, logEndOffset: next, bytes, newEpochs };
}

/** Kafka's LeaderEpochFileCache.truncateFromEnd: epochs that start at or after the new end go. */
export function epochsBefore(epochs: readonly EpochEntry[], logEndOffset: number): EpochEntry[] {
  return epochs.filter((e) => e.startOffset < logEndOffset);
}

/**
 * Kafka's truncateFromStart: of the epochs starting at or before the new log start only the last
 * survives, moved to start there, so the cache never points below the log.
 */
export function epochsFrom(epochs: readonly EpochEntry[], logStartOffset: number): EpochEntry[] {
  let last = -1;
  epochs.forEach((e, i) => {
    if (e.startOffset <= logStartOffset) last = i;
  });
  if (last < 0) return [...epochs];
  return [{ epoch: epochs[last]!.epoch, startOffset: logStartOffset }, ...epochs.slice(last + 1)];
}

/** Kafka's LeaderEpochFileCache.endOffsetFor, documented on PartitionStore.endOffsetForEpoch. */
export function endOffsetForEpoch(epochs: readonly EpochEntry[], logEndOffset: number, epoch: number): { epoch: number; endOffset: number } {
  const none = { epoch: -1, endOffset: -1 };
  const latest = epochs.at(-1);
  if (latest === undefined || epoch < 0) return none;
  if (epoch === latest.epoch) return { epoch, endOffset: logEndOffset };
  const higher = epochs.findIndex((e) => e.epoch > epoch);
  if (higher < 0) return none;
  const next = epochs[higher]!;
  // Below every cached epoch: the history is gone with the log's front; the follower restarts there.
  if (higher === 0) return { epoch, endOffset: next.startOffset };
  return { epoch: epochs[higher - 1]!.epoch, endOffset: next.startOffset };
}

/** Whether retention deletes the log's current first batch. */
export function retentionTakes(policy: RetentionPolicy, header: BatchHeader, batchBytes: number, sizeBytes: number): boolean {
  if (policy.offsetEnd !== undefined && header.baseOffset + header.recordCount > policy.offsetEnd) return false;
  const byTime = policy.retentionMs >= 0 && header.maxTimestamp < policy.nowMs - policy.retentionMs;
  const bySize = policy.retentionBytes >= 0 && sizeBytes - batchBytes >= policy.retentionBytes;
  return byTime || bySize;
}

/** truncateFullyAndStartAt's offset: where a log may start. */
export function checkStartOffset(offset: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new TidemarkError('INVALID_REQUEST', `a log cannot start at ${offset}`);
}

export function outOfRange(key: PartitionKey, offset: number, logStartOffset: number, logEndOffset: number): TidemarkError {
  return new TidemarkError('OFFSET_OUT_OF_RANGE', `offset ${offset} is outside [${logStartOffset}, ${logEndOffset}]`, {
    context: { ...key, offset, logStartOffset, logEndOffset },
  });
}

export function partitionDeleted(key: PartitionKey): TidemarkError {
  return new TidemarkError('UNKNOWN_TOPIC', `partition ${key.topicId}/${key.partition} was deleted`, { context: { ...key } });
}

export function storageClosed(): TidemarkError {
  return new TidemarkError('SHUTTING_DOWN', 'storage is closed');
}

// ---- the memory store ---------------------------------------------------------------------------

interface PartitionData {
  bases: number[];
  batches: Uint8Array[];
  logStartOffset: number;
  logEndOffset: number;
  sizeBytes: number;
  epochs: EpochEntry[];
}

/** Unsynced writes a disk remembers; beyond it the oldest counts as written back (the OS would have). */
export const UNSYNCED_WRITES_MAX = 100_000;

/** Batches appended without sync that a power loss took back. */
export interface LostAppend {
  /** `topicId/partition`. */
  readonly partition: string;
  readonly batches: readonly Uint8Array[];
}

interface UnsyncedWrite {
  undo(): void;
  lost: LostAppend | undefined;
}

/** What survives a "restart" of the memory store (and, once flushed, a power loss). */
export class MemoryDisk {
  readonly partitions = new Map<string, PartitionData>();
  readonly raft = new MemoryRaftDisk();
  /** A storage has this disk open and has not closed it (NodeStorage.uncleanShutdown); a synced mark. */
  openMark = false;
  /** Writes made without sync since the last flush, oldest first. */
  private readonly unsynced: UnsyncedWrite[] = [];

  get unsyncedWrites(): number {
    return this.unsynced.length;
  }

  /** Every write so far becomes durable (a synced write, or the OS writing dirty pages back). */
  flush(): void {
    this.unsynced.length = 0;
  }

  /** Power loss: undoes every write not flushed, newest first, and says which appended batches went. */
  powerLoss(): LostAppend[] {
    const lost: LostAppend[] = [];
    for (let write = this.unsynced.pop(); write !== undefined; write = this.unsynced.pop()) {
      write.undo();
      if (write.lost !== undefined) lost.unshift(write.lost);
    }
    return lost;
  }

  /** The stores report each write here, after making it. */
  wrote(sync: boolean, undo: () => void, lost?: LostAppend): void {
    if (sync) {
      this.flush();
      return;
    }
    this.unsynced.push({ undo, lost });
    if (this.unsynced.length > UNSYNCED_WRITES_MAX) this.unsynced.shift();
  }
}

function partitionId(key: PartitionKey): string {
  return `${key.topicId}/${key.partition}`;
}

/** Greatest i with bases[i] <= offset, or -1. */
function floorIndex(bases: readonly number[], offset: number): number {
  let lo = 0;
  let hi = bases.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (bases[mid]! <= offset) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

class MemoryPartition implements PartitionStore {
  constructor(
    readonly key: PartitionKey,
    private readonly data: PartitionData,
    private readonly disk: MemoryDisk,
    private readonly live: () => void,
  ) {}

  logStartOffset(): number {
    return this.data.logStartOffset;
  }
  logEndOffset(): number {
    return this.data.logEndOffset;
  }
  sizeBytes(): number {
    return this.data.sizeBytes;
  }
  epochs(): readonly EpochEntry[] {
    return this.data.epochs;
  }
  endOffsetForEpoch(epoch: number): { epoch: number; endOffset: number } {
    return endOffsetForEpoch(this.data.epochs, this.data.logEndOffset, epoch);
  }

  // Each method mutates before its first await, so call order is apply order without a queue.
  async append(batches: readonly Uint8Array[], options?: { sync?: boolean }): Promise<void> {
    this.live();
    const d = this.data;
    const checked = checkAppend(batches, d.logEndOffset, d.epochs);
    const before = { count: d.bases.length, end: d.logEndOffset, size: d.sizeBytes, epochs: d.epochs };
    // A copy: the caller owns its buffers again once we return.
    const copies = batches.map((b) => b.slice());
    copies.forEach((b, i) => {
      d.bases.push(checked.headers[i]!.baseOffset);
      d.batches.push(b);
    });
    d.logEndOffset = checked.logEndOffset;
    d.sizeBytes += checked.bytes;
    d.epochs = [...d.epochs, ...checked.newEpochs];
    const undo = () => {
      d.bases.length = before.count;
      d.batches.length = before.count;
      [d.logEndOffset, d.sizeBytes, d.epochs] = [before.end, before.size, before.epochs];
    };
    this.disk.wrote(options?.sync === true, undo, { partition: partitionId(this.key), batches: copies });
  }

  async read(offset: number, maxBytes: number, endOffset: number): Promise<Uint8Array[]> {
    this.live();
    const d = this.data;
    if (offset < d.logStartOffset || offset > d.logEndOffset) throw outOfRange(this.key, offset, d.logStartOffset, d.logEndOffset);
    const out: Uint8Array[] = [];
    if (offset >= Math.min(endOffset, d.logEndOffset)) return out;
    let bytes = 0;
    for (let i = floorIndex(d.bases, offset); i >= 0 && i < d.bases.length && d.bases[i]! < endOffset; i++) {
      const b = d.batches[i]!;
      if (out.length > 0 && bytes + b.length > maxBytes) break;
      out.push(b);
      bytes += b.length;
    }
    return out;
  }

  async truncateTo(offset: number): Promise<void> {
    this.live();
    const d = this.data;
    if (offset >= d.logEndOffset) return;
    // A batch straddling `offset` goes whole: no record at or past `offset` may survive.
    const cut = offset <= d.logStartOffset ? 0 : floorIndex(d.bases, offset);
    const newEnd = offset <= d.logStartOffset ? offset : d.bases[cut]!;
    const removed = d.batches.splice(cut);
    d.bases.splice(cut);
    d.sizeBytes -= removed.reduce((n, b) => n + b.length, 0);
    d.logStartOffset = Math.min(d.logStartOffset, newEnd);
    d.logEndOffset = newEnd;
    d.epochs = epochsBefore(d.epochs, newEnd);
    // Durable when it resolves, like the RocksDB store's synced write.
    this.disk.wrote(true, () => undefined);
  }

  async truncateFullyAndStartAt(offset: number): Promise<void> {
    this.live();
    checkStartOffset(offset);
    const d = this.data;
    d.bases.length = 0;
    d.batches.length = 0;
    [d.logStartOffset, d.logEndOffset, d.sizeBytes, d.epochs] = [offset, offset, 0, []];
    // Durable when it resolves, like the RocksDB store's synced write.
    this.disk.wrote(true, () => undefined);
  }

  async applyRetention(policy: RetentionPolicy): Promise<{ deletedBatches: number; deletedBytes: number }> {
    this.live();
    const d = this.data;
    let n = 0;
    let bytes = 0;
    while (n < d.batches.length) {
      const b = d.batches[n]!;
      if (!retentionTakes(policy, readBatchHeader(b), b.length, d.sizeBytes - bytes)) break;
      bytes += b.length;
      n++;
    }
    if (n === 0) return { deletedBatches: 0, deletedBytes: 0 };
    const before = { start: d.logStartOffset, size: d.sizeBytes, epochs: d.epochs };
    const batches = d.batches.splice(0, n);
    const bases = d.bases.splice(0, n);
    d.sizeBytes -= bytes;
    d.logStartOffset = d.bases[0] ?? d.logEndOffset;
    d.epochs = epochsFrom(d.epochs, d.logStartOffset);
    // Not synced (as in the RocksDB store): a power loss brings the deleted batches back.
    this.disk.wrote(false, () => {
      d.batches.unshift(...batches);
      d.bases.unshift(...bases);
      [d.logStartOffset, d.sizeBytes, d.epochs] = [before.start, before.size, before.epochs];
    });
    return { deletedBatches: n, deletedBytes: bytes };
  }
}

export function createMemoryNodeStorage(disk: MemoryDisk = new MemoryDisk()): NodeStorage & WithRaftLog {
  let closed = false;
  const handles = new Map<string, { handle: MemoryPartition; deleted: boolean }>();
  const live = () => {
    if (closed) throw storageClosed();
  };
  const uncleanShutdown = disk.openMark;
  let reported = false;
  disk.openMark = true;
  return {
    uncleanShutdown,
    uncleanShutdownReported: () => {
      reported = true;
    },
    raftLog: syncTracked(createMemoryRaftStore(disk.raft, live), disk, () => closed),
    async openPartition(key) {
      live();
      checkPartitionKey(key);
      const id = partitionId(key);
      const open = handles.get(id);
      if (open !== undefined) return open.handle;
      let data = disk.partitions.get(id);
      if (data === undefined) {
        data = { bases: [], batches: [], logStartOffset: 0, logEndOffset: 0, sizeBytes: 0, epochs: [] };
        disk.partitions.set(id, data);
      }
      const entry = {
        deleted: false,
        handle: new MemoryPartition(key, data, disk, () => {
          live();
          if (entry.deleted) throw partitionDeleted(key);
        }),
      };
      handles.set(id, entry);
      return entry.handle;
    },
    async deletePartition(key) {
      live();
      checkPartitionKey(key);
      const id = partitionId(key);
      const open = handles.get(id);
      if (open !== undefined) open.deleted = true;
      handles.delete(id);
      disk.partitions.delete(id);
      // The RocksDB store commits a delete with a synced write.
      disk.wrote(true, () => undefined);
    },
    async close() {
      if (!closed && (!uncleanShutdown || reported)) disk.openMark = false;
      closed = true;
    },
  };
}

/**
 * The memory Raft store, telling the disk which of its writes were synced: Raft syncs every one, so
 * a power loss takes nothing from it; an unsynced write would be undone like a partition append.
 */
function syncTracked(store: RaftStore, disk: MemoryDisk, closed: () => boolean): RaftStore {
  const raft = disk.raft;
  const tracked = <T>(sync: boolean | undefined, undo: () => void, write: () => Promise<T>): Promise<T> => {
    if (closed()) return write();
    const done = write();
    disk.wrote(sync === true, undo);
    return done;
  };
  return {
    loadState: () => store.loadState(),
    loadSnapshot: () => store.loadSnapshot(),
    lastIndex: () => store.lastIndex(),
    termAt: (index) => store.termAt(index),
    view: () => store.view(),
    entries: (from, max, maxBytes) => store.entries(from, max, maxBytes),
    saveState(state, options) {
      const before = raft.state;
      return tracked(options?.sync, () => (raft.state = before), () => store.saveState(state, options));
    },
    append(entries, options) {
      const count = raft.entries.length;
      return tracked(options?.sync, () => (raft.entries.length = count), () => store.append(entries, options));
    },
    truncateFrom: (index) => tracked(true, () => undefined, () => store.truncateFrom(index)),
    saveSnapshot(snapshot, options) {
      const before = { snapshot: raft.snapshot, entries: [...raft.entries] };
      const undo = () => {
        raft.snapshot = before.snapshot;
        raft.entries.splice(0, raft.entries.length, ...before.entries);
      };
      return tracked(options?.sync, undo, () => store.saveSnapshot(snapshot, options));
    },
  };
}
