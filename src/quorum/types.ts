/**
 * Configuration, context, events and emitted events of the election machine (election-machine.ts).
 */
import type { ErrorCode } from '../protocol/errors.js';
import type { Logger, Random, Transport } from '../runtime/ports.js';
import type { DiskWorker } from './disk.js';
import type { LogView } from './log-view.js';
import type { AppendEntries, AppendEntriesReply, InstallSnapshot, InstallSnapshotReply, PreVote, PreVoteReply, RaftMessage, Vote, VoteReply } from './messages.js';
import type { LogEntry, PersistentState, Snapshot } from './raft-store.js';

export interface RaftTimeouts {
  /** How often a leader sends AppendEntries (heartbeats) to every follower, ms. @default 100 */
  heartbeatIntervalMs: number;
  /**
   * Lower bound of the randomized election timeout, ms. Also the leader lease: a follower that
   * heard from its leader less than this long ago refuses (pre-)votes. @default 300
   */
  electionTimeoutMsMin: number;
  /**
   * Upper bound of the randomized election timeout, ms. A leader that heard from no majority for
   * this long steps down (check-quorum, checked every heartbeat). @default 600
   */
  electionTimeoutMsMax: number;
}

export interface RaftLimits {
  /** Entries per AppendEntries. @default 64 */
  appendEntriesMax: number;
  /** Payload bytes per AppendEntries (one entry always fits: proposals above it are refused). @default 512 KiB */
  appendBytesMax: number;
  /** Entries sent to a follower past its acknowledged match index (the pipeline window). @default 512 */
  inflightEntriesMax: number;
  /** Recent entries kept in memory to replicate without reading the store. @default 1024 */
  logCacheEntriesMax: number;
  /** Payload bytes of the in-memory entry cache. @default 16 MiB */
  logCacheBytesMax: number;
  /** Disk barriers outstanding; beyond it followers drop AppendEntries and leaders refuse proposals (BUSY). @default 256 */
  syncsPendingMax: number;
  /** Payloads in one proposal. @default 256 */
  proposalPayloadsMax: number;
  /** Proposals accepted and not yet committed, per node. @default 1024 */
  proposalsPendingMax: number;
  /** Entries read from the store per step while applying or catching a follower up. @default 256 */
  readChunkEntriesMax: number;
  /**
   * Entries applied past the last snapshot before the voter takes a new one and drops the log it
   * covers (needs a state machine). @default 1000
   */
  snapshotEveryEntries: number;
  /**
   * Largest snapshot, bytes: a voter does not take a bigger one (it logs and keeps its log) and a
   * follower stops receiving one past it. Also the follower's receive buffer. @default 64 MiB
   */
  snapshotBytesMax: number;
  /** Snapshot bytes per InstallSnapshot chunk (capped by the transport's payload limit minus framing). @default 512 KiB */
  snapshotChunkBytes: number;
}

export const DEFAULT_RAFT_TIMEOUTS: RaftTimeouts = { heartbeatIntervalMs: 100, electionTimeoutMsMin: 300, electionTimeoutMsMax: 600 };

export const DEFAULT_RAFT_LIMITS: RaftLimits = {
  appendEntriesMax: 64,
  appendBytesMax: 512 * 1024,
  inflightEntriesMax: 512,
  logCacheEntriesMax: 1024,
  logCacheBytesMax: 16 * 1024 * 1024,
  syncsPendingMax: 256,
  proposalPayloadsMax: 256,
  proposalsPendingMax: 1024,
  readChunkEntriesMax: 256,
  snapshotEveryEntries: 1000,
  snapshotBytesMax: 64 * 1024 * 1024,
  snapshotChunkBytes: 512 * 1024,
};

/** A message to one voter. */
export interface Outbound {
  readonly to: number;
  readonly msg: RaftMessage;
}

/** What the machine hands its net actor. */
export type NetCommand = Outbound & { readonly type: 'SEND' };

/**
 * Reported back once every disk command queued before it has completed. `ack`: a follower's
 * AppendEntries reply and the commit index it learned; `self`: a leader's own log is durable to
 * `index`.
 */
export type SyncToken =
  | { readonly kind: 'ack'; readonly term: number; readonly reply: Outbound; readonly commit: number }
  | { readonly kind: 'self'; readonly term: number; readonly index: number };

/** Run in order by the disk worker, one at a time. */
export type DiskCommand =
  | { type: 'PERSIST'; state: PersistentState; then: Outbound | undefined }
  | { type: 'TRUNCATE'; from: number }
  | { type: 'APPEND'; entries: readonly LogEntry[] }
  | { type: 'SYNC'; token: SyncToken }
  | { type: 'READ'; peer: number; term: number; from: number; max: number; maxBytes: number }
  | { type: 'APPLY'; upTo: number; cached: readonly LogEntry[] }
  /** A snapshot the leader sent: save it (dropping the log it covers), then install it into the state machine. */
  | { type: 'INSTALL'; snapshot: Snapshot };

export type DiskEvent =
  | { type: 'disk.persisted'; state: PersistentState; then: Outbound | undefined }
  | { type: 'disk.synced'; token: SyncToken }
  | { type: 'disk.read'; peer: number; term: number; from: number; entries: LogEntry[] }
  /** The worker took a snapshot after applying and dropped the log it covers. */
  | { type: 'disk.compacted'; snapshot: Snapshot }
  | { type: 'disk.failed'; message: string };

export type NetEvent =
  | { type: 'raft.preVote'; msg: PreVote }
  | { type: 'raft.preVoteReply'; msg: PreVoteReply }
  | { type: 'raft.vote'; msg: Vote }
  | { type: 'raft.voteReply'; msg: VoteReply }
  | { type: 'raft.append'; msg: AppendEntries }
  | { type: 'raft.appendReply'; msg: AppendEntriesReply }
  | { type: 'raft.installSnapshot'; msg: InstallSnapshot }
  | { type: 'raft.snapshotReply'; msg: InstallSnapshotReply };

export type ProposeEvent = { type: 'propose'; id: number; payloads: readonly Uint8Array[] };

export type RaftEvent = NetEvent | DiskEvent | ProposeEvent;

/** What the machine tells its owner (raft-node.ts) through `actor.on()`. */
export type RaftEmitted =
  | { type: 'proposal.accepted'; id: number; index: number; term: number }
  | { type: 'proposal.refused'; id: number; code: ErrorCode; message: string; leaderId: number | null }
  | { type: 'leadership.lost'; term: number };

export interface PeerProgress {
  /** Next index to send. */
  readonly next: number;
  /** Highest index known durable on the peer and matching this log. */
  readonly match: number;
  /** Leader tick of the peer's last reply (check-quorum). */
  readonly heardTick: number;
  /** A store read for this peer is outstanding. */
  readonly reading: boolean;
  /** Sending the peer a snapshot: its `next` is at or below the log's snapshot index. */
  readonly transfer?: SnapshotTransfer;
}

/** The leader's side of one InstallSnapshot transfer: one chunk in flight, re-sent on a quiet heartbeat. */
export interface SnapshotTransfer {
  /** The snapshot being sent: the leader's latest when the transfer started. */
  readonly snapshot: Snapshot;
  /** The offset the peer last said it expects. */
  readonly acked: number;
  /** The end of the last chunk sent. */
  readonly sent: number;
  /** Leader tick of the last chunk sent. */
  readonly sentTick: number;
}

/** A follower's snapshot being received, chunk by chunk, in order; at most `snapshotBytesMax` bytes. */
export interface IncomingSnapshot {
  readonly from: number;
  /** The leader's term: a transfer belongs to one leader. */
  readonly term: number;
  readonly index: number;
  readonly snapshotTerm: number;
  readonly chunks: readonly Uint8Array[];
  readonly bytes: number;
}

/** The newest entries of the log, in memory: always a suffix of the log (start = first cached index). */
export interface LogCache {
  readonly start: number;
  readonly entries: readonly LogEntry[];
  readonly bytes: number;
}

export interface RaftInput {
  voterId: number;
  /** Every voter, this one included. Static (no membership changes yet). */
  voters: readonly number[];
  /** `tm.<cluster>` */
  subjectPrefix: string;
  transport: Transport;
  logger: Logger;
  random: Random;
  timeouts: RaftTimeouts;
  limits: RaftLimits;
  worker: DiskWorker;
  /** What the store holds at start. */
  state: PersistentState;
  log: LogView;
  /** The store's snapshot at start (already installed into the state machine). */
  snapshot: Snapshot | undefined;
  /** The owner supplied a state machine: snapshots can be taken and installed. */
  snapshots: boolean;
}

export interface RaftContext extends RaftInput {
  readonly peers: readonly number[];
  readonly majority: number;
  term: number;
  votedFor: number | null;
  /** The last state the store confirmed. */
  durable: PersistentState;
  leaderId: number | null;
  log: LogView;
  cache: LogCache;
  commitIndex: number;
  /** Highest index handed to the disk worker to apply. */
  applyRequested: number;
  syncsPending: number;
  /** Drawn from `random` on entering follower, preCandidate and candidate. */
  electionTimeoutMs: number;
  /** Voters that granted the current (pre-)vote round, this one included. */
  grants: readonly number[];
  /** Leader only. */
  progress: Readonly<Record<number, PeerProgress>>;
  /** Leader only: its own log is durable up to here. */
  selfMatch: number;
  /** Leader only: heartbeats sent in this term. */
  ticks: number;
  /** Leader only: index of its no-op; once that is committed the leader has applied every earlier entry's commit. */
  leaderStartIndex: number;
  /** The latest snapshot this voter holds (what a leader sends to lagging followers); matches log.snapshotIndex. */
  snapshot: Snapshot | undefined;
  /** Follower only: a snapshot being received. */
  incoming: IncomingSnapshot | undefined;
}
