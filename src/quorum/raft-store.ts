/**
 * The storage port of one Raft voter: its persistent election state (term, vote), its latest
 * snapshot and the log after it. RocksDB in production (`openRocksNodeStorage(dir).raftLog`, keys
 * 0x05-0x08 beside the partition logs), memory in unit tests and the simulator.
 *
 * Contract, shared by both implementations:
 * - Mutations (`saveState`, `append`, `truncateFrom`, `saveSnapshot`) apply in call order; each is atomic (after a
 *   crash it is there entirely or not at all). The Raft machine issues them one at a time from its
 *   disk worker and acts only once they resolved, so "persisted before answered" holds.
 * - `sync: true` fsyncs before resolving; Raft asks for it on every mutation.
 * - The getters (`loadState`, `lastIndex`, `termAt`, `view`) answer from memory and reflect every
 *   mutation that resolved.
 * - Indexes start at 1. `append` continues the log at lastIndex() + 1 with consecutive indexes and
 *   terms that never go down; anything else rejects and writes nothing.
 *
 * Snapshots (not implemented yet) plug in here: `installSnapshot(meta, bytes)` replacing the log up
 * to `meta.index`, `snapshotMeta()`, and `compactTo(index)` dropping entries a snapshot covers; the
 * log view then starts after the snapshot (see log-view.ts) and `entries()` below it rejects.
 */
import { assert } from '../protocol/errors.js';
import { appendTerms, compactView, EMPTY_LOG, termAt, truncateView, type LogView } from './log-view.js';

export interface PersistentState {
  readonly term: number;
  /** The voter this node voted for in `term`, null when it has not voted. */
  readonly votedFor: number | null;
}

export interface LogEntry {
  readonly index: number;
  readonly term: number;
  /** Empty for the no-op a new leader appends; proposals are never empty. */
  readonly payload: Uint8Array;
}

/** The state machine's state after the entry at `index`, which had `term`. */
export interface Snapshot {
  readonly index: number;
  readonly term: number;
  /** Opaque to Raft: what the state machine's `snapshot()` returned. */
  readonly data: Uint8Array;
}

export interface WriteOptions {
  /** fsync before resolving. @default false */
  sync?: boolean;
}

export interface RaftStore {
  /** The last saved state; { term: 0, votedFor: null } for a new voter. */
  loadState(): PersistentState;
  saveState(state: PersistentState, options?: WriteOptions): Promise<void>;
  append(entries: readonly LogEntry[], options?: WriteOptions): Promise<void>;
  /** Removes every entry at or past `index` (no-op past the end). Always durable when it resolves. */
  truncateFrom(index: number): Promise<void>;
  /**
   * Consecutive entries from `from` on: at most `max`, and stopping before `maxBytes` of payload
   * would be exceeded, except that the first entry always comes. Empty past the end, and empty
   * when `from` is at or below the snapshot (those entries are gone).
   */
  entries(from: number, max: number, maxBytes?: number): Promise<LogEntry[]>;
  /** The latest saved snapshot (kept in memory: the leader sends it to lagging voters); undefined when none. */
  loadSnapshot(): Snapshot | undefined;
  /**
   * Saves the snapshot and drops the log it covers, atomically and durably: entries at or below
   * `index` go; the entries after it stay if the log holds an entry of `term` at `index`, otherwise
   * (a conflicting or shorter log, Raft figure 13 step 7) the whole log goes and it continues at
   * index + 1. A snapshot not newer than the current one is ignored.
   */
  saveSnapshot(snapshot: Snapshot, options?: WriteOptions): Promise<void>;
  /** The snapshot's index when the log holds no later entry; 0 when there is neither. */
  lastIndex(): number;
  /** 0 for index 0; the snapshot's term at its index; undefined outside [snapshotIndex, lastIndex()]. */
  termAt(index: number): number | undefined;
  /** Snapshot, last index and term starts: what the machine starts from. */
  view(): LogView;
}

/** What `openRocksNodeStorage` and `createMemoryNodeStorage` add to NodeStorage (to move into it when wired). */
export interface WithRaftLog {
  readonly raftLog: RaftStore;
}

export const INITIAL_STATE: PersistentState = { term: 0, votedFor: null };

/** Checks an append against the log it continues; shared by both stores. Returns the new view. */
export function checkRaftAppend(view: LogView, entries: readonly LogEntry[]): LogView {
  entries.forEach((e, i) => {
    assert(e.index === view.lastIndex + 1 + i, `raft append at ${e.index} does not continue the log at ${view.lastIndex + 1 + i}`);
    assert(Number.isSafeInteger(e.term) && e.term > 0, `raft entry term ${e.term} must be positive`);
  });
  return appendTerms(
    view,
    entries.map((e) => e.term),
  );
}

/** Takes entries while they fit `max` and `maxBytes` (the first always fits). */
export function takeBounded<T extends { payload: Uint8Array }>(items: readonly T[], max: number, maxBytes: number): T[] {
  const out: T[] = [];
  let bytes = 0;
  for (const item of items) {
    if (out.length >= max || (out.length > 0 && bytes + item.payload.length > maxBytes)) break;
    out.push(item);
    bytes += item.payload.length;
  }
  return out;
}

/** Copies the bytes: the caller owns its buffers again once a store call returns. */
export function copySnapshot(s: Snapshot): Snapshot {
  return { index: s.index, term: s.term, data: s.data.slice() };
}

export function checkSnapshot(s: Snapshot): void {
  assert(Number.isSafeInteger(s.index) && s.index >= 1, `snapshot index ${s.index} must be positive`);
  assert(Number.isSafeInteger(s.term) && s.term >= 1, `snapshot term ${s.term} must be positive`);
}

/** What survives a "restart" of the memory store: hand it to a new store to reopen. */
export class MemoryRaftDisk {
  state: PersistentState = INITIAL_STATE;
  snapshot: Snapshot | undefined = undefined;
  /** The log after the snapshot: entries[i] has index (snapshot?.index ?? 0) + 1 + i. */
  readonly entries: LogEntry[] = [];
}

class MemoryRaftStore implements RaftStore {
  private logView: LogView;

  constructor(
    private readonly disk: MemoryRaftDisk,
    private readonly live: () => void,
  ) {
    const s = disk.snapshot;
    const base: LogView = s === undefined ? EMPTY_LOG : { lastIndex: s.index, starts: [], snapshotIndex: s.index, snapshotTerm: s.term };
    this.logView = appendTerms(
      base,
      disk.entries.map((e) => e.term),
    );
  }

  loadState(): PersistentState {
    return this.disk.state;
  }
  loadSnapshot(): Snapshot | undefined {
    return this.disk.snapshot;
  }
  lastIndex(): number {
    return this.logView.lastIndex;
  }
  termAt(index: number): number | undefined {
    return termAt(this.logView, index);
  }
  view(): LogView {
    return this.logView;
  }

  // Each mutation completes before its first await, so call order is apply order.
  async saveState(state: PersistentState): Promise<void> {
    this.live();
    this.disk.state = { term: state.term, votedFor: state.votedFor };
  }

  async append(entries: readonly LogEntry[]): Promise<void> {
    this.live();
    this.logView = checkRaftAppend(this.logView, entries);
    // Copies: the caller owns its buffers again once we return.
    for (const e of entries) this.disk.entries.push({ index: e.index, term: e.term, payload: e.payload.slice() });
  }

  async truncateFrom(index: number): Promise<void> {
    this.live();
    assert(Number.isSafeInteger(index) && index >= 1, `truncate from ${index}`);
    const base = this.logView.snapshotIndex;
    this.logView = truncateView(this.logView, index);
    this.disk.entries.splice(Math.max(0, index - base - 1));
  }

  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    this.live();
    checkSnapshot(snapshot);
    const before = this.logView;
    if (snapshot.index <= before.snapshotIndex) return;
    // Decided on the view before: compactView keeps the suffix exactly when this holds.
    const keepsSuffix = termAt(before, snapshot.index) === snapshot.term;
    const next = compactView(before, snapshot.index, snapshot.term);
    if (keepsSuffix) this.disk.entries.splice(0, snapshot.index - before.snapshotIndex);
    else this.disk.entries.length = 0;
    this.disk.snapshot = copySnapshot(snapshot);
    this.logView = next;
  }

  async entries(from: number, max: number, maxBytes = Number.POSITIVE_INFINITY): Promise<LogEntry[]> {
    this.live();
    const base = this.logView.snapshotIndex;
    if (from <= base) return [];
    const at = from - base - 1;
    return takeBounded(this.disk.entries.slice(at, at + Math.max(0, max)), max, maxBytes);
  }
}

export function createMemoryRaftStore(disk: MemoryRaftDisk = new MemoryRaftDisk(), live: () => void = () => {}): RaftStore {
  return new MemoryRaftStore(disk, live);
}

