/**
 * The controller quorum's Raft voter as the composition root uses it: start it with its ports,
 * propose payloads, follow committed entries, read its status, stop it.
 *
 * Committed entries reach `onCommit` listeners in index order, without gaps, each exactly once per
 * process lifetime, except where a snapshot takes their place. With a `stateMachine`, the voter
 * snapshots it every `snapshotEveryEntries` applied entries and drops the log the snapshot covers; at
 * start it installs the stored snapshot and then delivers the log after it; a follower too far
 * behind gets the leader's snapshot installed and continues from there. Without one, the log is kept
 * whole and delivered again from index 1 after a restart. Entries with an empty payload are the
 * no-ops new leaders append (propose() refuses empty payloads): skip them.
 */
import { createActor } from 'xstate';
import { assert, TidemarkError } from '../protocol/errors.js';
import type { Clock, Logger, Random, Transport } from '../runtime/ports.js';
import { DiskWorker } from './disk.js';
import { electionMachine, type ElectionMachine } from './election-machine.js';
import { APPEND_ENTRIES_WIRE_MAX, ENTRY_BYTES_WIRE_MAX, SNAPSHOT_CHUNK_WIRE_MAX } from './messages.js';
import type { LogEntry, RaftStore } from './raft-store.js';
import { DEFAULT_RAFT_LIMITS, DEFAULT_RAFT_TIMEOUTS, type RaftLimits, type RaftTimeouts } from './types.js';

export type CommitListener = (entries: readonly LogEntry[]) => void;

/**
 * What Raft needs from the state machine its committed entries build, for snapshots. The bytes are
 * opaque to Raft. Both are called synchronously, between deliveries, never during one.
 */
export interface RaftStateMachine {
  /** The state after the last entry delivered to the listeners, and that entry's index. */
  snapshot(): { index: number; data: Uint8Array };
  /**
   * Replaces the whole state with a snapshot's: the state after the entry at `index`. Entries after
   * it follow through the commit listeners.
   */
  install(index: number, data: Uint8Array): void;
}

export type RaftRole = 'follower' | 'preCandidate' | 'candidate' | 'leader' | 'failed' | 'stopped';

export interface RaftStatus {
  voterId: number;
  role: RaftRole;
  term: number;
  votedFor: number | null;
  /** The leader this voter follows (itself when leader), null when it knows none. */
  leaderId: number | null;
  commitIndex: number;
  lastIndex: number;
  /** Last index the log's snapshot covers (0: none); the log holds the entries after it. */
  snapshotIndex: number;
  /** Last index applied in this process: delivered to the commit listeners, or covered by an installed snapshot. */
  appliedIndex: number;
  /** Leader whose own no-op is applied here: every earlier committed entry has been delivered. */
  leaderReady: boolean;
  /** The configured voter set, this voter included. */
  voters: readonly number[];
  /**
   * Leader only: what it knows of each other voter, in `voters` order: the highest index known
   * durable there, and how long since its last reply (in heartbeat ticks of this term, so at
   * heartbeat granularity; since the leadership began when it never answered).
   */
  followers?: Array<{ id: number; matchIndex: number; heardMsAgo: number }>;
}

export interface RaftNodeOptions {
  voterId: number;
  /** Every voter, this one included (static, like KRaft's controller.quorum.voters). */
  voters: readonly number[];
  /** `tm.<cluster>`, i.e. `Subjects.prefix`. */
  subjectPrefix: string;
  transport: Transport;
  /** Opened by the caller; the node never closes it. */
  store: RaftStore;
  /** Runs every Raft timer (also given to createActor). */
  clock: Clock;
  random: Random;
  logger: Logger;
  /** @default DEFAULT_RAFT_TIMEOUTS (heartbeat 100 ms, election timeout 300-600 ms) */
  timeouts?: Partial<RaftTimeouts>;
  /** @default DEFAULT_RAFT_LIMITS */
  limits?: Partial<RaftLimits>;
  /** A listener in place before the first delivery. */
  onCommit?: CommitListener;
  /** Enables snapshots and log compaction (see RaftStateMachine); needed to open a store that holds a snapshot. */
  stateMachine?: RaftStateMachine;
  /** Test seam: the election machine, e.g. with implementations swapped by `provide()`. */
  machine?: ElectionMachine;
}

export interface RaftNode {
  readonly voterId: number;
  /**
   * Appends the payloads as consecutive entries and resolves once they are committed and delivered
   * to the listeners, with the index of the last one. Rejects NOT_CONTROLLER (context.leaderId is
   * the leader this voter knows, or null) on a non-leader, BUSY when full, INVALID_REQUEST for empty
   * or oversized payloads. A NOT_CONTROLLER with context.outcome 'unknown' means leadership was lost
   * after the entries were appended: they may still commit, so the caller must find out, not assume.
   */
  propose(payloads: readonly Uint8Array[]): Promise<{ index: number; term: number }>;
  /** Returns an unsubscribe function. */
  onCommit(listener: CommitListener): () => void;
  status(): RaftStatus;
  /** Resolves with the leader's id as soon as this voter knows one. */
  waitForLeader(): Promise<number>;
  /** Stops the voter (timers, subscription) and waits for the store command in progress. */
  stop(): Promise<void>;
}

/** Headroom for an AppendEntries' fields and per-entry framing in the transport's payload limit, bytes. */
const APPEND_FRAMING_BYTES = 256;
const ENTRY_FRAMING_BYTES = 16;
/** Headroom for an InstallSnapshot's fields in the transport's payload limit, bytes. */
const SNAPSHOT_FRAMING_BYTES = 256;

interface Pending {
  resolve(result: { index: number; term: number }): void;
  reject(error: TidemarkError): void;
  index?: number;
  term?: number;
}

function checkConfig(options: RaftNodeOptions, timeouts: RaftTimeouts, limits: RaftLimits): void {
  const ids = new Set(options.voters);
  assert(options.voters.length > 0 && ids.size === options.voters.length, 'raft voters must be distinct and non-empty');
  assert(ids.has(options.voterId), `raft voter ${options.voterId} is not in the voter set`);
  const { heartbeatIntervalMs: hb, electionTimeoutMsMin: min, electionTimeoutMsMax: max } = timeouts;
  assert(hb > 0 && min > hb && max >= min, 'raft timeouts need 0 < heartbeatIntervalMs < electionTimeoutMsMin <= electionTimeoutMsMax');
  assert(limits.appendEntriesMax >= 1 && limits.appendEntriesMax <= APPEND_ENTRIES_WIRE_MAX, 'appendEntriesMax out of range');
  assert(limits.appendBytesMax >= 1 && limits.appendBytesMax <= ENTRY_BYTES_WIRE_MAX, 'appendBytesMax out of range');
  assert(limits.inflightEntriesMax >= limits.appendEntriesMax, 'inflightEntriesMax below appendEntriesMax');
  assert(limits.snapshotChunkBytes >= 1 && limits.snapshotChunkBytes <= SNAPSHOT_CHUNK_WIRE_MAX, 'snapshotChunkBytes out of range');
  assert(limits.snapshotEveryEntries >= 1 && limits.snapshotBytesMax >= 1, 'snapshotEveryEntries and snapshotBytesMax must be positive');
}

/** The largest payload one entry may carry with these limits over this transport, bytes. */
export function entryBytesMaxOf(limits: Partial<RaftLimits> | undefined, maxPayloadBytes: number): number {
  const configured = { ...DEFAULT_RAFT_LIMITS, ...limits };
  return Math.min(configured.appendBytesMax, maxPayloadBytes - APPEND_FRAMING_BYTES - configured.appendEntriesMax * ENTRY_FRAMING_BYTES);
}

export function startRaftNode(options: RaftNodeOptions): RaftNode {
  const timeouts = { ...DEFAULT_RAFT_TIMEOUTS, ...options.timeouts };
  const configured = { ...DEFAULT_RAFT_LIMITS, ...options.limits };
  const limits = {
    ...configured,
    appendBytesMax: entryBytesMaxOf(options.limits, options.transport.maxPayloadBytes),
    snapshotChunkBytes: Math.min(configured.snapshotChunkBytes, options.transport.maxPayloadBytes - SNAPSHOT_FRAMING_BYTES),
  };
  checkConfig(options, timeouts, limits);
  const { logger, voterId, stateMachine, store } = options;

  const listeners = new Set<CommitListener>(options.onCommit === undefined ? [] : [options.onCommit]);
  const pending = new Map<number, Pending>();
  const leaderWaiters = new Set<{ resolve(id: number): void; reject(error: TidemarkError): void }>();
  let nextId = 1;
  let stopped = false;

  // The stored snapshot first; the log after it is delivered as it is committed again.
  const stored = store.loadSnapshot();
  if (stored !== undefined && stateMachine === undefined) {
    throw new TidemarkError('INTERNAL', `the raft store holds a snapshot at ${stored.index} but no state machine was given to install it`);
  }
  if (stored !== undefined) stateMachine!.install(stored.index, stored.data);
  let appliedIndex = stored?.index ?? 0;

  const deliver = (entries: readonly LogEntry[]) => {
    for (const listener of listeners) {
      try {
        listener(entries);
      } catch (error) {
        logger.error({ err: error }, 'raft commit listener threw');
      }
    }
    const first = entries[0]!.index;
    appliedIndex = entries.at(-1)!.index;
    for (const [id, p] of pending) {
      if (p.index === undefined || p.index > appliedIndex || p.index < first) continue;
      pending.delete(id);
      const entry = entries[p.index - first]!;
      if (entry.term === p.term) p.resolve({ index: p.index, term: entry.term });
      else p.reject(new TidemarkError('NOT_CONTROLLER', 'the proposal was replaced by another leader', { context: { leaderId: null } }));
    }
  };

  const failAll = (code: 'SHUTTING_DOWN' | 'INTERNAL', message: string) => {
    for (const p of pending.values()) {
      // Appended but not known to be committed: it may still commit under another leader.
      const context = p.index === undefined ? {} : { outcome: 'unknown' };
      p.reject(new TidemarkError(code, message, { context }));
    }
    pending.clear();
    for (const w of leaderWaiters) w.reject(new TidemarkError(code, message));
    leaderWaiters.clear();
  };

  const hooks =
    stateMachine === undefined
      ? undefined
      : {
          take: () => stateMachine.snapshot(),
          install: (index: number, data: Uint8Array) => {
            stateMachine.install(index, data);
            appliedIndex = index;
          },
          everyEntries: limits.snapshotEveryEntries,
          bytesMax: limits.snapshotBytesMax,
        };
  const worker = new DiskWorker(store, deliver, logger, limits.readChunkEntriesMax, hooks);
  const actor = createActor(options.machine ?? electionMachine, {
    clock: options.clock,
    systemId: `raft:${voterId}`,
    input: {
      voterId,
      voters: [...options.voters].sort((a, b) => a - b),
      subjectPrefix: options.subjectPrefix,
      transport: options.transport,
      logger,
      random: options.random,
      timeouts,
      limits,
      worker,
      state: store.loadState(),
      log: store.view(),
      snapshot: stored,
      snapshots: stateMachine !== undefined,
    },
  });

  actor.on('proposal.accepted', (e) => {
    const p = pending.get(e.id);
    if (p !== undefined) Object.assign(p, { index: e.index, term: e.term });
  });
  actor.on('proposal.refused', (e) => {
    const p = pending.get(e.id);
    pending.delete(e.id);
    p?.reject(new TidemarkError(e.code, e.message, { context: { leaderId: e.leaderId } }));
  });
  actor.on('leadership.lost', (e) => {
    for (const [id, p] of pending) {
      if (p.term !== e.term) continue;
      pending.delete(id);
      p.reject(
        new TidemarkError('NOT_CONTROLLER', 'leadership was lost before the proposal committed; it may still commit', {
          context: { leaderId: null, outcome: 'unknown' },
        }),
      );
    }
  });
  actor.subscribe({
    next: (snapshot) => {
      const leaderId = snapshot.context.leaderId;
      if (leaderId === null || leaderWaiters.size === 0) return;
      for (const w of leaderWaiters) w.resolve(leaderId);
      leaderWaiters.clear();
    },
    error: (error) => {
      logger.fatal({ err: error }, 'raft voter crashed');
      failAll('INTERNAL', 'the raft voter crashed');
    },
  });
  actor.start();

  const status = (): RaftStatus => {
    const snapshot = actor.getSnapshot();
    const c = snapshot.context;
    const value = snapshot.value;
    const role: RaftRole = stopped ? 'stopped' : snapshot.status === 'error' ? 'failed' : ((typeof value === 'string' ? value : Object.keys(value)[0]) as RaftRole);
    return {
      voterId,
      role,
      term: c.term,
      votedFor: c.votedFor,
      leaderId: c.leaderId,
      commitIndex: c.commitIndex,
      lastIndex: c.log.lastIndex,
      snapshotIndex: c.log.snapshotIndex,
      appliedIndex,
      leaderReady: role === 'leader' && appliedIndex >= c.leaderStartIndex,
      voters: options.voters,
      ...(role === 'leader'
        ? {
            followers: c.peers.map((id) => {
              const p = c.progress[id];
              return { id, matchIndex: p?.match ?? 0, heardMsAgo: Math.max(0, c.ticks - (p?.heardTick ?? 0)) * timeouts.heartbeatIntervalMs };
            }),
          }
        : {}),
    };
  };

  return {
    voterId,
    status,
    propose(payloads) {
      if (stopped) return Promise.reject(new TidemarkError('SHUTTING_DOWN', 'raft voter stopped'));
      if (pending.size >= limits.proposalsPendingMax) return Promise.reject(new TidemarkError('BUSY', 'too many proposals pending'));
      const id = nextId++;
      const result = new Promise<{ index: number; term: number }>((resolve, reject) => pending.set(id, { resolve, reject }));
      actor.send({ type: 'propose', id, payloads: payloads.map((p) => p.slice()) });
      return result;
    },
    onCommit(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    waitForLeader() {
      if (stopped) return Promise.reject(new TidemarkError('SHUTTING_DOWN', 'raft voter stopped'));
      const known = actor.getSnapshot().context.leaderId;
      if (known !== null) return Promise.resolve(known);
      return new Promise((resolve, reject) => leaderWaiters.add({ resolve, reject }));
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      actor.stop();
      failAll('SHUTTING_DOWN', 'raft voter stopped');
      await worker.idle();
    },
  };
}
