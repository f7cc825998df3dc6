/**
 * Raft messages between controller voters, msgpack on the wire, each checked against its schema
 * where the bytes enter (a voter must never act on a malformed message). Every message names its
 * sender (`from`) and the sender's `term`; replies are messages of their own, published to the
 * requester's subject (see subjects.ts). The transport may lose, delay, reorder and duplicate any of
 * them: terms and log indexes make every handler idempotent.
 *
 * PreVote asks "would you vote for me in `term`?" without anyone changing state (Raft thesis
 * §9.6); `term` is the proposed one, the sender's current term + 1.
 */
import { decode, encode } from '@msgpack/msgpack';
import { TidemarkError } from '../protocol/errors.js';
import { array, bool, bytes, int, object, oneOf, type Infer, type Schema } from '../protocol/validate.js';

/** Voter ids are broker-style node ids. */
export const VOTER_ID_MAX = 2 ** 31 - 1;
/** Wire cap on entries in one AppendEntries; the configured `appendEntriesMax` must not exceed it. */
export const APPEND_ENTRIES_WIRE_MAX = 4096;
/** Wire cap on one entry's payload, bytes; the configured `appendBytesMax` must not exceed it. */
export const ENTRY_BYTES_WIRE_MAX = 8 * 1024 * 1024;
/** Wire cap on one InstallSnapshot chunk, bytes; the configured `snapshotChunkBytes` must not exceed it. */
export const SNAPSHOT_CHUNK_WIRE_MAX = 8 * 1024 * 1024;

const voterId = int(0, VOTER_ID_MAX);
const term = int(0, Number.MAX_SAFE_INTEGER);
const index = int(0, Number.MAX_SAFE_INTEGER);

const preVote = object({ type: oneOf('preVote'), from: voterId, term, lastLogIndex: index, lastLogTerm: term });
const preVoteReply = object({ type: oneOf('preVoteReply'), from: voterId, term, granted: bool });
const vote = object({ type: oneOf('vote'), from: voterId, term, lastLogIndex: index, lastLogTerm: term });
const voteReply = object({ type: oneOf('voteReply'), from: voterId, term, granted: bool });
const entry = object({ term, payload: bytes(ENTRY_BYTES_WIRE_MAX) });
const append = object({
  type: oneOf('append'),
  from: voterId,
  term,
  prevLogIndex: index,
  prevLogTerm: term,
  /** Entries at prevLogIndex + 1 on; empty for a heartbeat. */
  entries: array(entry, APPEND_ENTRIES_WIRE_MAX),
  leaderCommit: index,
});
const appendReply = object({
  type: oneOf('appendReply'),
  from: voterId,
  term,
  success: bool,
  /** On success: the follower's log matches the leader's up to here, durably. */
  matchIndex: index,
  /** On failure: where the leader should try next (the follower's conflict hint). */
  hintIndex: index,
});

/**
 * A chunk of the leader's snapshot (Raft figure 13): `data` is the snapshot's bytes from `offset`;
 * `done` marks the last chunk. Chunks are sent one at a time, in order.
 */
const installSnapshot = object({
  type: oneOf('installSnapshot'),
  from: voterId,
  term,
  lastIncludedIndex: int(1, Number.MAX_SAFE_INTEGER),
  lastIncludedTerm: int(1, Number.MAX_SAFE_INTEGER),
  offset: index,
  data: bytes(SNAPSHOT_CHUNK_WIRE_MAX),
  done: bool,
});
/**
 * A follower's progress through a snapshot: the offset it expects next. Once the whole snapshot is
 * durably installed the follower answers with an `appendReply` (success, matchIndex = lastIncludedIndex) instead.
 */
const snapshotReply = object({ type: oneOf('snapshotReply'), from: voterId, term, lastIncludedIndex: index, offset: index });

export type PreVote = Infer<typeof preVote>;
export type PreVoteReply = Infer<typeof preVoteReply>;
export type Vote = Infer<typeof vote>;
export type VoteReply = Infer<typeof voteReply>;
export type WireEntry = Infer<typeof entry>;
export type AppendEntries = Infer<typeof append>;
export type AppendEntriesReply = Infer<typeof appendReply>;
export type InstallSnapshot = Infer<typeof installSnapshot>;
export type InstallSnapshotReply = Infer<typeof snapshotReply>;
export type RaftMessage = PreVote | PreVoteReply | Vote | VoteReply | AppendEntries | AppendEntriesReply | InstallSnapshot | InstallSnapshotReply;
export type RaftMessageType = RaftMessage['type'];

const schemas: { [K in RaftMessageType]: Schema<Extract<RaftMessage, { type: K }>> } = {
  preVote,
  preVoteReply,
  vote,
  voteReply,
  append,
  appendReply,
  installSnapshot,
  snapshotReply,
};

function invalid(message: string): TidemarkError {
  return new TidemarkError('INVALID_REQUEST', message);
}

/** What a correct leader always sends; anything else would break the log's term order. */
function checkAppend(m: AppendEntries): void {
  if (m.prevLogTerm > m.term) throw invalid('append: prevLogTerm above term');
  if (m.prevLogIndex === 0 && m.prevLogTerm !== 0) throw invalid('append: index 0 has term 0');
  let last = m.prevLogTerm;
  for (const e of m.entries) {
    if (e.term < last || e.term > m.term || e.term === 0) throw invalid('append: entry terms must rise within 1..term');
    last = e.term;
  }
}

export function encodeRaftMessage(message: RaftMessage): Uint8Array {
  return encode(message);
}

/** Decodes and checks one message; throws INVALID_REQUEST naming the field. */
export function decodeRaftMessage(data: Uint8Array): RaftMessage {
  let value: unknown;
  try {
    value = decode(data);
  } catch (error) {
    throw new TidemarkError('INVALID_REQUEST', 'raft message is not msgpack', { cause: error });
  }
  const type = (value as { type?: unknown } | null)?.type;
  if (typeof type !== 'string' || !Object.hasOwn(schemas, type)) throw invalid('raft message: unknown type');
  const message = schemas[type as RaftMessageType](value, '');
  if (message.type === 'append') checkAppend(message);
  if (message.type === 'installSnapshot' && message.lastIncludedTerm > message.term) throw invalid('installSnapshot: lastIncludedTerm above term');
  return message;
}
