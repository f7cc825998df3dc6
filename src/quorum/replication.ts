/**
 * Log replication rules (Raft §5.3, §5.4), as pure functions over a draft of the machine's context:
 * they compute the next context and the messages and disk commands it implies; the machine's
 * actions hand those to its net and disk actors. Nothing here does I/O. Snapshots (compaction,
 * InstallSnapshot) are in snapshot.ts.
 */
import { appendTerms, firstIndexOfTerm, termAt, truncateView } from './log-view.js';
import type { AppendEntries, AppendEntriesReply } from './messages.js';
import { takeBounded, type LogEntry } from './raft-store.js';
import { sendSnapshot } from './snapshot.js';
import type { DiskCommand, Outbound, PeerProgress, RaftContext, RaftEmitted, SyncToken } from './types.js';

/** The next context and what it implies, built up by one event's handling. */
export interface Draft {
  c: RaftContext;
  send: Outbound[];
  disk: DiskCommand[];
  emit: RaftEmitted[];
}

export function draft(context: RaftContext): Draft {
  return { c: { ...context }, send: [], disk: [], emit: [] };
}

export function payloadBytes(entries: readonly LogEntry[]): number {
  return entries.reduce((n, e) => n + e.payload.length, 0);
}

/** Appends to the log (view, cache, disk). Entries continue the log at lastIndex + 1. */
export function appendToLog(d: Draft, entries: readonly LogEntry[]): void {
  if (entries.length === 0) return;
  const { c } = d;
  c.log = appendTerms(
    c.log,
    entries.map((e) => e.term),
  );
  d.disk.push({ type: 'APPEND', entries });
  let list = [...c.cache.entries, ...entries];
  let bytes = c.cache.bytes + payloadBytes(entries);
  let drop = 0;
  while (drop < list.length && (list.length - drop > c.limits.logCacheEntriesMax || bytes > c.limits.logCacheBytesMax)) {
    bytes -= list[drop]!.payload.length;
    drop++;
  }
  if (drop > 0) list = list.slice(drop);
  c.cache = { start: c.cache.start + drop, entries: list, bytes };
}

/** Removes every entry at or past `from` (view, cache, disk). Never below the commit index. */
export function truncateLog(d: Draft, from: number): void {
  const { c } = d;
  c.log = truncateView(c.log, from);
  d.disk.push({ type: 'TRUNCATE', from });
  if (from <= c.cache.start) {
    c.cache = { start: from, entries: [], bytes: 0 };
  } else {
    const entries = c.cache.entries.slice(0, from - c.cache.start);
    c.cache = { start: c.cache.start, entries, bytes: payloadBytes(entries) };
  }
}

/** Hands newly committed entries to the disk worker, which delivers them in order. */
export function requestApply(d: Draft): void {
  const { c } = d;
  if (c.commitIndex <= c.applyRequested) return;
  const from = Math.max(c.applyRequested + 1, c.cache.start);
  const cached = from > c.commitIndex ? [] : c.cache.entries.slice(from - c.cache.start, c.commitIndex - c.cache.start + 1);
  d.disk.push({ type: 'APPLY', upTo: c.commitIndex, cached });
  c.applyRequested = c.commitIndex;
}

// ---- leader ---------------------------------------------------------------------------------

export function setProgress(d: Draft, peer: number, p: PeerProgress): void {
  d.c.progress = { ...d.c.progress, [peer]: p };
}

function sendAppend(d: Draft, peer: number, prevLogIndex: number, entries: readonly LogEntry[]): void {
  const { c } = d;
  const msg: AppendEntries = {
    type: 'append',
    from: c.voterId,
    term: c.term,
    prevLogIndex,
    prevLogTerm: termAt(c.log, prevLogIndex)!,
    entries: entries.map((e) => ({ term: e.term, payload: e.payload })),
    leaderCommit: c.commitIndex,
  };
  d.send.push({ to: peer, msg });
}

/**
 * Sends `peer` what it needs next: entries from its next index (from the cache, or a store read
 * when they are older than the cache) within the pipeline window, bounded in entries and bytes;
 * the snapshot when that entry is compacted. A heartbeat with nothing to send is an empty
 * AppendEntries, which doubles as a probe.
 */
export function replicate(d: Draft, peer: number, heartbeat: boolean): void {
  const { c } = d;
  const p = c.progress[peer];
  if (p === undefined) return;
  if (p.next <= c.log.snapshotIndex || p.transfer !== undefined) return sendSnapshot(d, peer, heartbeat);
  const { appendEntriesMax, appendBytesMax, inflightEntriesMax } = c.limits;
  const room = Math.min(appendEntriesMax, inflightEntriesMax - (p.next - 1 - p.match));
  if (p.next <= c.log.lastIndex && room > 0) {
    if (p.next >= c.cache.start) {
      const at = p.next - c.cache.start;
      const entries = takeBounded(c.cache.entries.slice(at, at + room), room, appendBytesMax);
      sendAppend(d, peer, p.next - 1, entries);
      setProgress(d, peer, { ...p, next: p.next + entries.length });
      return;
    }
    if (!p.reading) {
      d.disk.push({ type: 'READ', peer, term: c.term, from: p.next, max: room, maxBytes: appendBytesMax });
      setProgress(d, peer, { ...p, reading: true });
    }
  }
  if (heartbeat) sendAppend(d, peer, p.next - 1, []);
}

/** Entries read from the store for a lagging peer; used only if the peer still needs them. */
export function onEntriesRead(d: Draft, peer: number, from: number, entries: readonly LogEntry[]): void {
  const p = d.c.progress[peer];
  if (p === undefined) return;
  setProgress(d, peer, { ...p, reading: false });
  // Nothing there: compacted since the read was queued (the snapshot goes instead), or truncated.
  if (entries.length === 0) return from <= d.c.log.snapshotIndex ? replicate(d, peer, false) : undefined;
  // Moved on meanwhile, or compacted since the read was queued.
  if (from !== p.next || from <= d.c.log.snapshotIndex) return replicate(d, peer, false);
  const room = d.c.limits.inflightEntriesMax - (p.next - 1 - p.match);
  const batch = entries.slice(0, Math.max(0, room));
  if (batch.length === 0) return;
  sendAppend(d, peer, from - 1, batch);
  setProgress(d, peer, { ...p, reading: false, next: from + batch.length });
}

/** Raft §5.3/§5.4.2: the highest index on a majority, if it is of this leader's term. */
export function advanceCommit(d: Draft): void {
  const { c } = d;
  const matches = [c.selfMatch, ...c.peers.map((p) => c.progress[p]?.match ?? 0)].sort((a, b) => b - a);
  const n = matches[c.majority - 1]!;
  if (n > c.commitIndex && termAt(c.log, n) === c.term) {
    c.commitIndex = n;
    requestApply(d);
  }
}

/** A follower's answer in this leader's term. */
export function onAppendReply(d: Draft, msg: AppendEntriesReply): void {
  const { c } = d;
  const p = c.progress[msg.from];
  if (p === undefined) return;
  const heard = { ...p, heardTick: c.ticks };
  if (msg.success) {
    const match = Math.min(Math.max(p.match, msg.matchIndex), c.log.lastIndex);
    const transfer = p.transfer !== undefined && match < p.transfer.snapshot.index ? p.transfer : undefined;
    setProgress(d, msg.from, { ...heard, match, next: Math.max(p.next, match + 1), transfer });
    advanceCommit(d);
    replicate(d, msg.from, false);
    return;
  }
  // Only ever move back, and never below what the peer already acknowledged.
  const hint = Math.min(Math.max(msg.hintIndex, p.match + 1), c.log.lastIndex + 1);
  if (hint < p.next) {
    setProgress(d, msg.from, { ...heard, next: hint });
    replicate(d, msg.from, false);
  } else {
    setProgress(d, msg.from, heard);
  }
}

// ---- follower -------------------------------------------------------------------------------

export type FollowerOutcome =
  | { kind: 'reject'; hintIndex: number }
  | { kind: 'accept'; truncateFrom: number | undefined; entries: LogEntry[]; matchIndex: number; commit: number }
  /** The leader would have this follower drop a committed entry: a bug somewhere. Refused. */
  | { kind: 'unsafe'; index: number };

/** Raft §5.3: the AppendEntries consistency check, conflict truncation and what to append. */
export function followerAppend(c: RaftContext, message: AppendEntries): FollowerOutcome {
  let msg = message;
  const base = c.log.snapshotIndex;
  if (msg.prevLogIndex < base) {
    // Entries up to the snapshot are committed, so the leader's log holds them too: skip to the
    // snapshot, which is this log's base for the consistency check.
    const atBase = msg.entries[base - msg.prevLogIndex - 1];
    if (atBase === undefined) return { kind: 'accept', truncateFrom: undefined, entries: [], matchIndex: base, commit: Math.min(msg.leaderCommit, base) };
    if (atBase.term !== c.log.snapshotTerm) return { kind: 'unsafe', index: base };
    msg = { ...msg, prevLogIndex: base, prevLogTerm: atBase.term, entries: msg.entries.slice(base - msg.prevLogIndex) };
  }
  const prev = msg.prevLogIndex;
  if (prev > c.log.lastIndex) return { kind: 'reject', hintIndex: c.log.lastIndex + 1 };
  const mine = termAt(c.log, prev)!;
  if (mine !== msg.prevLogTerm) {
    // Skip the whole conflicting term at once (thesis §5.3), but never below the commit index.
    const first = firstIndexOfTerm(c.log, mine) ?? prev;
    return { kind: 'reject', hintIndex: Math.min(prev, Math.max(first, c.commitIndex + 1)) };
  }
  let i = 0;
  let truncateFrom: number | undefined;
  for (; i < msg.entries.length; i++) {
    const index = prev + 1 + i;
    if (index > c.log.lastIndex) break;
    if (termAt(c.log, index) !== msg.entries[i]!.term) {
      truncateFrom = index;
      break;
    }
  }
  if (truncateFrom !== undefined && truncateFrom <= c.commitIndex) return { kind: 'unsafe', index: truncateFrom };
  const entries = msg.entries.slice(i).map((e, k) => ({ index: prev + 1 + i + k, term: e.term, payload: e.payload }));
  const matchIndex = prev + msg.entries.length;
  return { kind: 'accept', truncateFrom, entries, matchIndex, commit: Math.min(msg.leaderCommit, matchIndex) };
}

/** A follower's handling of AppendEntries from its leader: the reply leaves after a SYNC barrier. */
export function followerStep(d: Draft, m: AppendEntries): void {
  const { c } = d;
  const answer = (success: boolean, matchIndex: number, hintIndex: number): Outbound => {
    const msg: AppendEntriesReply = { type: 'appendReply', from: c.voterId, term: c.term, success, matchIndex, hintIndex };
    return { to: m.from, msg };
  };
  const outcome = followerAppend(c, m);
  if (outcome.kind === 'reject') {
    d.send.push(answer(false, 0, outcome.hintIndex));
  } else if (outcome.kind === 'unsafe') {
    c.logger.error({ index: outcome.index, from: m.from }, 'raft: refusing to truncate a committed entry');
  } else if (c.syncsPending < c.limits.syncsPendingMax) {
    // Beyond the bound the message is dropped: the leader resends what is not acknowledged.
    if (outcome.truncateFrom !== undefined) truncateLog(d, outcome.truncateFrom);
    appendToLog(d, outcome.entries);
    const reply = answer(true, outcome.matchIndex, 0);
    d.disk.push({ type: 'SYNC', token: { kind: 'ack', term: c.term, reply, commit: outcome.commit } });
    c.syncsPending++;
  }
}

/** Everything queued before `token` is durable. */
export function onSynced(d: Draft, token: SyncToken): void {
  const { c } = d;
  c.syncsPending--;
  if (token.kind === 'ack') {
    // The reply speaks for this term only; what it learned about the commit index stays true.
    if (token.term === c.term) d.send.push(token.reply);
    if (token.commit > c.commitIndex) {
      c.commitIndex = token.commit;
      requestApply(d);
    }
  } else if (token.term === c.term && c.leaderId === c.voterId) {
    c.selfMatch = Math.max(c.selfMatch, token.index);
    advanceCommit(d);
  }
}

/** A new leader: fresh progress, a no-op of its term (committing it commits everything before it, thesis §3.6.2), heartbeats. */
export function becomeLeader(d: Draft): void {
  const { c } = d;
  const next = c.log.lastIndex + 1;
  c.leaderId = c.voterId;
  c.progress = Object.fromEntries(c.peers.map((p) => [p, { next, match: 0, heardTick: 0, reading: false }]));
  c.selfMatch = 0;
  c.ticks = 0;
  c.leaderStartIndex = next;
  appendToLog(d, [{ index: next, term: c.term, payload: new Uint8Array(0) }]);
  d.disk.push({ type: 'SYNC', token: { kind: 'self', term: c.term, index: next } });
  c.syncsPending++;
  for (const peer of c.peers) replicate(d, peer, true);
}

/** The leader appends a proposal and starts replicating it at once. */
export function acceptProposal(d: Draft, id: number, payloads: readonly Uint8Array[]): void {
  const { c } = d;
  const first = c.log.lastIndex + 1;
  const last = first + payloads.length - 1;
  appendToLog(
    d,
    payloads.map((payload, i) => ({ index: first + i, term: c.term, payload })),
  );
  d.disk.push({ type: 'SYNC', token: { kind: 'self', term: c.term, index: last } });
  c.syncsPending++;
  d.emit.push({ type: 'proposal.accepted', id, index: last, term: c.term });
  for (const peer of c.peers) replicate(d, peer, false);
}
