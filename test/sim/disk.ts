/**
 * One node incarnation's storage in the simulator: the memory store over the node's MemoryDisk
 * (which outlives the process), with simulated latency on the process's clock. Mutations go down one
 * queue in call order, as they do through RocksDB's write path, each after an append or fsync
 * latency; reads take their own latency. When the process crashes (`kill()`), whatever is still
 * queued never reaches the disk and never settles: it died with the process. What did reach the
 * disk survives, except unsynced writes on a power loss (MemoryDisk.powerLoss()).
 * Truncations (a follower dropping a suffix that diverges from its leader) are reported with the
 * batches they remove, so the checkers know which records left which disk and why.
 */
import type { NodeStorage, PartitionKey, PartitionStore } from '../../src/storage/partition-store.js';
import type { LogEntry, PersistentState, RaftStore, Snapshot, WithRaftLog } from '../../src/quorum/raft-store.js';
import { createMemoryNodeStorage, type MemoryDisk } from '../../src/storage/memory-storage.js';
import type { NodeClock } from './clock.js';
import type { Rng } from './random.js';

export interface DiskLatency {
  /** An unsynced write (partition appends), ms. */
  writeMs: readonly [number, number];
  /** A synced write (Raft, truncation, deletes), ms. */
  syncMs: readonly [number, number];
  readMs: readonly [number, number];
}

/** Batches a truncation removed from one partition's log on this disk. */
export type TruncationObserver = (partition: string, offset: number, removed: readonly Uint8Array[]) => void;

export const FAST_DISK: DiskLatency = { writeMs: [0, 2], syncMs: [1, 4], readMs: [0, 1] };

const never = new Promise<never>(() => undefined);

export class SimStorage implements NodeStorage {
  readonly raftLog: RaftStore;
  private readonly inner: NodeStorage & WithRaftLog;
  private readonly handles = new WeakMap<PartitionStore, PartitionStore>();
  private tail: Promise<unknown> = Promise.resolve();
  private dead = false;

  constructor(
    private readonly disk: MemoryDisk,
    private readonly clock: NodeClock,
    private readonly rng: Rng,
    private readonly latency: DiskLatency,
    private readonly onTruncate: TruncationObserver = () => undefined,
  ) {
    this.inner = createMemoryNodeStorage(disk);
    this.raftLog = this.wrapRaft(this.inner.raftLog);
  }

  get uncleanShutdown(): boolean {
    return this.inner.uncleanShutdown;
  }

  uncleanShutdownReported(): void {
    this.inner.uncleanShutdownReported();
  }

  /** The process died: queued and later calls never settle, nothing more reaches the disk. */
  kill(): void {
    if (this.dead) return;
    this.dead = true;
    const closedCleanly = this.closedCleanly;
    void this.inner.close();
    // A process that dies without closing its storage leaves it marked open.
    if (!closedCleanly) this.disk.openMark = true;
  }

  openPartition(key: PartitionKey): Promise<PartitionStore> {
    return this.mutate(false, async () => {
      const handle = await this.inner.openPartition(key);
      let wrapped = this.handles.get(handle);
      if (wrapped === undefined) this.handles.set(handle, (wrapped = this.wrapPartition(handle)));
      return wrapped;
    });
  }

  deletePartition(key: PartitionKey): Promise<void> {
    return this.mutate(true, () => this.inner.deletePartition(key));
  }

  private closedCleanly = false;

  /** The controlled path's last step (a real node process closes its RocksDB after the node). */
  close(): Promise<void> {
    return this.mutate(false, async () => {
      await this.inner.close();
      this.closedCleanly = true;
    });
  }

  private draw([min, max]: readonly [number, number]): number {
    return this.rng.int(min, max);
  }

  /** In call order, one at a time, each after its latency. */
  private mutate<T>(sync: boolean, write: () => Promise<T>): Promise<T> {
    const run = this.tail.then(async () => {
      await this.clock.sleep(this.draw(sync ? this.latency.syncMs : this.latency.writeMs));
      if (this.dead) return never;
      return write();
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async read<T>(read: () => Promise<T>): Promise<T> {
    await this.clock.sleep(this.draw(this.latency.readMs));
    if (this.dead) return never;
    return read();
  }

  private wrapPartition(p: PartitionStore): PartitionStore {
    return {
      key: p.key,
      logStartOffset: () => p.logStartOffset(),
      logEndOffset: () => p.logEndOffset(),
      sizeBytes: () => p.sizeBytes(),
      epochs: () => p.epochs(),
      endOffsetForEpoch: (epoch) => p.endOffsetForEpoch(epoch),
      append: (batches, options) => this.mutate(options?.sync === true, () => p.append(batches, options)),
      read: (offset, maxBytes, endOffset) => this.read(() => p.read(offset, maxBytes, endOffset)),
      truncateTo: (offset) =>
        this.mutate(true, async () => {
          const pid = `${p.key.topicId}/${p.key.partition}`;
          const removed = this.tailFrom(pid, offset);
          await p.truncateTo(offset);
          if (removed.length > 0) this.onTruncate(pid, offset, removed);
        }),
      truncateFullyAndStartAt: (offset) =>
        this.mutate(true, async () => {
          const pid = `${p.key.topicId}/${p.key.partition}`;
          const removed = [...(this.disk.partitions.get(pid)?.batches ?? [])];
          const from = p.logStartOffset();
          await p.truncateFullyAndStartAt(offset);
          if (removed.length > 0) this.onTruncate(pid, from, removed);
        }),
      applyRetention: (policy) => this.mutate(false, () => p.applyRetention(policy)),
    };
  }

  /** The batches truncateTo(offset) removes: from the one holding `offset` (whole batches) on. */
  private tailFrom(pid: string, offset: number): Uint8Array[] {
    const data = this.disk.partitions.get(pid);
    if (data === undefined || offset >= data.logEndOffset) return [];
    if (offset <= data.logStartOffset) return [...data.batches];
    let i = data.bases.length - 1;
    while (i > 0 && data.bases[i]! > offset) i--;
    return data.batches.slice(i);
  }

  private wrapRaft(r: RaftStore): RaftStore {
    return {
      loadState: () => r.loadState(),
      loadSnapshot: () => r.loadSnapshot(),
      lastIndex: () => r.lastIndex(),
      termAt: (index) => r.termAt(index),
      view: () => r.view(),
      saveState: (state: PersistentState, options) => this.mutate(options?.sync === true, () => r.saveState(state, options)),
      append: (entries: readonly LogEntry[], options) => this.mutate(options?.sync === true, () => r.append(entries, options)),
      truncateFrom: (index) => this.mutate(true, () => r.truncateFrom(index)),
      saveSnapshot: (snapshot: Snapshot, options) => this.mutate(options?.sync === true, () => r.saveSnapshot(snapshot, options)),
      entries: (from, max, maxBytes) => this.read(() => r.entries(from, max, maxBytes)),
    };
  }
}
