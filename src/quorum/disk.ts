/**
 * The voter's only path to its store. Commands run strictly in the order the machine sent them, one
 * at a time, so a SYNC's report means everything before it is durable, and a READ or APPLY sees
 * every write queued before it. Consecutive APPENDs go down as one write (group commit).
 *
 * APPLY delivers committed entries to the owner's listener in index order, each exactly once per
 * process lifetime (`lastApplied` lives here, not on disk: after a restart the owner installs the
 * stored snapshot and the log after it is delivered again, which is how a follower of the log
 * rebuilds its state). After an APPLY that takes the state machine `snapshotEveryEntries` past the
 * last snapshot, the worker takes a snapshot, saves it (dropping the log it covers) and reports
 * `disk.compacted`. INSTALL saves a snapshot the leader sent and hands it to the state machine.
 *
 * A failed store operation stops the worker for good and reports `disk.failed`: after an I/O error
 * the log's state is unknown, so the voter must stop taking part rather than guess.
 */
import { fromCallback } from 'xstate';
import { assert } from '../protocol/errors.js';
import type { Logger } from '../runtime/ports.js';
import type { LogEntry, RaftStore, Snapshot } from './raft-store.js';
import type { DiskCommand, DiskEvent } from './types.js';

/** Entries written together when APPENDs queue up behind a slow write. */
const APPEND_GROUP_ENTRIES_MAX = 1024;

/** The state machine's side of snapshots, and when to take them. */
export interface SnapshotHooks {
  /** The state machine's state after the last entry delivered, and that entry's index. */
  take(): { index: number; data: Uint8Array };
  /** Replaces the state machine's whole state with a snapshot's. */
  install(index: number, data: Uint8Array): void;
  /** See RaftLimits.snapshotEveryEntries. */
  everyEntries: number;
  /** See RaftLimits.snapshotBytesMax. */
  bytesMax: number;
}

export class DiskWorker {
  private readonly queue: DiskCommand[] = [];
  private busy = false;
  private running: Promise<void> = Promise.resolve();
  private report: ((event: DiskEvent) => void) | undefined;
  private stopped = false;
  private failed = false;
  /** The owner installs the store's snapshot before the worker starts. */
  private lastApplied: number;
  /** The next snapshot is due once lastApplied reaches this. */
  private snapshotDue: number;

  constructor(
    private readonly store: RaftStore,
    private readonly deliver: (entries: readonly LogEntry[]) => void,
    private readonly logger: Logger,
    private readonly readChunkEntriesMax: number,
    private readonly snapshots?: SnapshotHooks,
  ) {
    this.lastApplied = store.view().snapshotIndex;
    this.snapshotDue = this.lastApplied + (snapshots?.everyEntries ?? Number.POSITIVE_INFINITY);
  }

  /** Connects the machine's disk actor; the returned cleanup stops the worker after its current command. */
  attach(report: (event: DiskEvent) => void): () => void {
    this.report = report;
    return () => {
      this.report = undefined;
      this.stopped = true;
    };
  }

  submit(command: DiskCommand): void {
    if (this.stopped || this.failed) return;
    this.queue.push(command);
    if (!this.busy) {
      this.busy = true;
      this.running = this.drain();
    }
  }

  /** Resolves once the command running now (if any) has finished. */
  idle(): Promise<void> {
    return this.running;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.stopped && !this.failed) {
        const command = this.queue.shift()!;
        try {
          await this.run(command);
        } catch (error) {
          this.failed = true;
          this.queue.length = 0;
          this.logger.error({ err: error, command: command.type }, 'raft store failed; this voter stops');
          this.report?.({ type: 'disk.failed', message: (error as Error).message });
        }
      }
    } finally {
      this.busy = false;
    }
  }

  private async run(command: DiskCommand): Promise<void> {
    switch (command.type) {
      case 'PERSIST':
        await this.store.saveState(command.state, { sync: true });
        this.report?.({ type: 'disk.persisted', state: command.state, then: command.then });
        return;
      case 'TRUNCATE':
        await this.store.truncateFrom(command.from);
        return;
      case 'APPEND': {
        const entries = [...command.entries];
        while (this.queue[0]?.type === 'APPEND' && entries.length < APPEND_GROUP_ENTRIES_MAX) {
          entries.push(...(this.queue.shift() as Extract<DiskCommand, { type: 'APPEND' }>).entries);
        }
        await this.store.append(entries, { sync: true });
        return;
      }
      case 'SYNC':
        this.report?.({ type: 'disk.synced', token: command.token });
        return;
      case 'READ': {
        const entries = await this.store.entries(command.from, command.max, command.maxBytes);
        this.report?.({ type: 'disk.read', peer: command.peer, term: command.term, from: command.from, entries });
        return;
      }
      case 'APPLY':
        await this.apply(command.upTo, command.cached);
        return this.compactIfDue();
      case 'INSTALL':
        return this.install(command.snapshot);
    }
  }

  private async install(snapshot: Snapshot): Promise<void> {
    await this.store.saveSnapshot(snapshot, { sync: true });
    // The machine sends INSTALL only for a snapshot past its commit index, so past lastApplied.
    if (snapshot.index <= this.lastApplied || this.stopped) return;
    this.lastApplied = snapshot.index;
    this.snapshotDue = snapshot.index + (this.snapshots?.everyEntries ?? Number.POSITIVE_INFINITY);
    try {
      this.snapshots?.install(snapshot.index, snapshot.data);
    } catch (error) {
      this.logger.error({ err: error, index: snapshot.index }, 'raft state machine failed to install a snapshot');
    }
  }

  private async compactIfDue(): Promise<void> {
    const hooks = this.snapshots;
    if (hooks === undefined || this.lastApplied < this.snapshotDue || this.stopped) return;
    const base = this.store.view().snapshotIndex;
    let taken: { index: number; data: Uint8Array };
    try {
      taken = hooks.take();
    } catch (error) {
      this.logger.error({ err: error }, 'raft state machine failed to take a snapshot; the log is kept');
      this.snapshotDue = this.lastApplied + hooks.everyEntries;
      return;
    }
    const term = this.store.termAt(taken.index);
    if (taken.index <= base || taken.index > this.lastApplied || term === undefined) {
      this.logger.error({ index: taken.index, lastApplied: this.lastApplied, snapshotIndex: base }, 'raft state machine snapshot is not of an applied entry; the log is kept');
      this.snapshotDue = this.lastApplied + hooks.everyEntries;
      return;
    }
    if (taken.data.length > hooks.bytesMax) {
      this.logger.error({ bytes: taken.data.length, snapshotBytesMax: hooks.bytesMax }, 'raft snapshot larger than snapshotBytesMax; the log is kept');
      this.snapshotDue = this.lastApplied + hooks.everyEntries;
      return;
    }
    const snapshot: Snapshot = { index: taken.index, term, data: taken.data };
    await this.store.saveSnapshot(snapshot, { sync: true });
    this.snapshotDue = snapshot.index + hooks.everyEntries;
    this.report?.({ type: 'disk.compacted', snapshot });
  }

  private async apply(upTo: number, cached: readonly LogEntry[]): Promise<void> {
    const first = cached[0]?.index ?? Number.POSITIVE_INFINITY;
    while (this.lastApplied < upTo && !this.stopped) {
      const from = this.lastApplied + 1;
      const count = Math.min(this.readChunkEntriesMax, upTo - from + 1);
      const chunk =
        from >= first && from < first + cached.length
          ? cached.slice(from - first, from - first + count)
          : await this.store.entries(from, count);
      assert(chunk.length > 0 && chunk[0]!.index === from, `committed entry ${from} is not in the log`);
      this.lastApplied = chunk.at(-1)!.index;
      try {
        this.deliver(chunk);
      } catch (error) {
        this.logger.error({ err: error }, 'commit listener threw');
      }
    }
  }
}

/** The machine's handle on its DiskWorker. */
export const diskActor = fromCallback<DiskCommand, { worker: DiskWorker }>(({ input, receive, sendBack }) => {
  const detach = input.worker.attach((event) => sendBack(event));
  receive((command) => input.worker.submit(command));
  return detach;
});
