/**
 * The voter's only path to its store. Commands run strictly in the order the machine sent them, one
 * at a time, so a SYNC's report means everything before it is durable, and a READ or APPLY sees
 * every write queued before it. Consecutive APPENDs go down as one write (group commit).
 *
 * APPLY delivers committed entries to the owner's listener in index order, each exactly once per
 * process lifetime (`lastApplied` lives here, not on disk: after a restart the log is delivered again
 * from index 1, which is how a follower of the log rebuilds its state).
 *
 * A failed store operation stops the worker for good and reports `disk.failed`: after an I/O error
 * the log's state is unknown, so the voter must stop taking part rather than guess.
 */
import { fromCallback } from 'xstate';
import { assert } from '../protocol/errors.js';
import type { Logger } from '../runtime/ports.js';
import type { LogEntry, RaftStore } from './raft-store.js';
import type { DiskCommand, DiskEvent } from './types.js';

/** Entries written together when APPENDs queue up behind a slow write. */
const APPEND_GROUP_ENTRIES_MAX = 1024;

export class DiskWorker {
  private readonly queue: DiskCommand[] = [];
  private busy = false;
  private running: Promise<void> = Promise.resolve();
  private report: ((event: DiskEvent) => void) | undefined;
  private stopped = false;
  private failed = false;
  private lastApplied = 0;

  constructor(
    private readonly store: RaftStore,
    private readonly deliver: (entries: readonly LogEntry[]) => void,
    private readonly logger: Logger,
    private readonly readChunkEntriesMax: number,
  ) {}

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
        return this.apply(command.upTo, command.cached);
    }
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
