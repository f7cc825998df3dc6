/**
 * Snapshot rules (Raft §7, figure 13), pure functions over a draft of the machine's context like
 * replication.ts: the log's base moving when the disk worker compacts, the leader sending its
 * snapshot to a peer whose next entry is compacted (chunked, one chunk in flight), and the
 * follower receiving and installing it. Nothing here does I/O.
 */
import { compactView, termAt } from './log-view.js';
import type { AppendEntriesReply, InstallSnapshot, InstallSnapshotReply } from './messages.js';
import type { Snapshot } from './raft-store.js';
import { payloadBytes, setProgress, type Draft } from './replication.js';
import type { IncomingSnapshot } from './types.js';

/** Drops cached entries at or below `index` (a snapshot now covers them). */
function trimCache(d: Draft, index: number): void {
  const { c } = d;
  if (index < c.cache.start) return;
  const entries = c.cache.entries.slice(index + 1 - c.cache.start);
  c.cache = { start: index + 1, entries, bytes: payloadBytes(entries) };
}

/**
 * The disk worker took a snapshot after applying and dropped the log it covers: the log now starts
 * after it. One at or below the current snapshot (an install overtook it) changes nothing.
 */
export function onCompacted(d: Draft, snapshot: Snapshot): void {
  const { c } = d;
  if (snapshot.index <= c.log.snapshotIndex) return;
  if (termAt(c.log, snapshot.index) !== snapshot.term) {
    c.logger.error({ index: snapshot.index, term: snapshot.term }, 'raft: a snapshot of an entry this log does not hold');
  }
  c.log = compactView(c.log, snapshot.index, snapshot.term);
  trimCache(d, snapshot.index);
  c.snapshot = snapshot;
}

/**
 * A follower installs a snapshot its leader sent (Raft figure 13): the log keeps the entries after
 * it if it holds the snapshot's last entry, otherwise it goes entirely. The snapshot covers every
 * entry up to its index, all committed, so those count as committed and applied from here on; the
 * disk worker saves it, then hands it to the state machine.
 */
export function installSnapshot(d: Draft, snapshot: Snapshot): void {
  const { c } = d;
  const keepsSuffix = termAt(c.log, snapshot.index) === snapshot.term;
  c.log = compactView(c.log, snapshot.index, snapshot.term);
  if (keepsSuffix) trimCache(d, snapshot.index);
  else c.cache = { start: snapshot.index + 1, entries: [], bytes: 0 };
  c.snapshot = snapshot;
  c.commitIndex = Math.max(c.commitIndex, snapshot.index);
  c.applyRequested = Math.max(c.applyRequested, snapshot.index);
  d.disk.push({ type: 'INSTALL', snapshot });
}

function sendSnapshotChunk(d: Draft, peer: number, snapshot: Snapshot, offset: number): void {
  const { c } = d;
  const p = c.progress[peer]!;
  const end = Math.min(snapshot.data.length, offset + c.limits.snapshotChunkBytes);
  const msg: InstallSnapshot = {
    type: 'installSnapshot',
    from: c.voterId,
    term: c.term,
    lastIncludedIndex: snapshot.index,
    lastIncludedTerm: snapshot.term,
    offset,
    data: snapshot.data.subarray(offset, end),
    done: end === snapshot.data.length,
  };
  d.send.push({ to: peer, msg });
  const acked = p.transfer?.snapshot === snapshot ? p.transfer.acked : 0;
  setProgress(d, peer, { ...p, transfer: { snapshot, acked, sent: end, sentTick: c.ticks } });
}

/**
 * A peer whose next entry is compacted gets the snapshot instead, one chunk in flight: the next
 * chunk leaves when the peer confirms the last one; a chunk unanswered for a whole heartbeat
 * interval is sent again from where the peer last said it was. A transfer finishes the snapshot it
 * started with even if the leader takes a newer one meanwhile (so compaction cannot starve it).
 */
export function sendSnapshot(d: Draft, peer: number, heartbeat: boolean): void {
  const { c } = d;
  const t = c.progress[peer]!.transfer;
  if (t === undefined) {
    if (c.snapshot === undefined) return c.logger.error({ peer }, 'raft: a peer needs the snapshot but this voter holds none');
    return sendSnapshotChunk(d, peer, c.snapshot, 0);
  }
  if (heartbeat && t.sentTick < c.ticks - 1) sendSnapshotChunk(d, peer, t.snapshot, t.acked);
}

/** A peer's progress through a snapshot: send the next chunk once it has everything sent so far. */
export function onSnapshotReply(d: Draft, msg: InstallSnapshotReply): void {
  const { c } = d;
  const p = c.progress[msg.from];
  if (p === undefined) return;
  const heard = { ...p, heardTick: c.ticks };
  const t = p.transfer;
  if (t === undefined || msg.lastIncludedIndex !== t.snapshot.index) return setProgress(d, msg.from, heard);
  const acked = Math.min(msg.offset, t.snapshot.data.length);
  setProgress(d, msg.from, { ...heard, transfer: { ...t, acked } });
  // Only a reply that confirms the last chunk sends the next one: duplicated replies never multiply chunks.
  if (acked >= t.sent && acked < t.snapshot.data.length) sendSnapshotChunk(d, msg.from, t.snapshot, acked);
}

/**
 * A follower's handling of one InstallSnapshot chunk from its leader. Chunks are taken strictly in
 * order (anything else is answered with the offset expected), so loss, duplicates and reordering
 * only cost a resend. The last chunk installs the snapshot; the reply (an appendReply with
 * matchIndex = the snapshot's index) leaves once it is durable. A snapshot this voter already
 * covers is acknowledged the same way.
 */
export function followerSnapshot(d: Draft, m: InstallSnapshot): void {
  const { c } = d;
  const progress = (offset: number) => {
    const msg: InstallSnapshotReply = { type: 'snapshotReply', from: c.voterId, term: c.term, lastIncludedIndex: m.lastIncludedIndex, offset };
    d.send.push({ to: m.from, msg });
  };
  const acknowledge = () => {
    const msg: AppendEntriesReply = { type: 'appendReply', from: c.voterId, term: c.term, success: true, matchIndex: m.lastIncludedIndex, hintIndex: 0 };
    d.disk.push({ type: 'SYNC', token: { kind: 'ack', term: c.term, reply: { to: m.from, msg }, commit: m.lastIncludedIndex } });
    c.syncsPending++;
  };
  // Beyond the bound the message is dropped: the leader resends.
  if (c.syncsPending >= c.limits.syncsPendingMax) return;
  if (m.lastIncludedIndex <= c.commitIndex) return acknowledge();
  if (!c.snapshots) return c.logger.error({ from: m.from }, 'raft: a snapshot arrived but this voter has no state machine to install it');
  let inc: IncomingSnapshot | undefined = c.incoming;
  if (inc === undefined || inc.from !== m.from || inc.term !== m.term || inc.index !== m.lastIncludedIndex || inc.snapshotTerm !== m.lastIncludedTerm) {
    c.incoming = undefined;
    if (m.offset !== 0) return progress(0);
    inc = { from: m.from, term: m.term, index: m.lastIncludedIndex, snapshotTerm: m.lastIncludedTerm, chunks: [], bytes: 0 };
  }
  if (m.offset !== inc.bytes) {
    c.incoming = inc;
    return progress(inc.bytes);
  }
  const bytes = inc.bytes + m.data.length;
  if (bytes > c.limits.snapshotBytesMax) {
    c.incoming = undefined;
    return c.logger.error({ from: m.from, index: m.lastIncludedIndex, snapshotBytesMax: c.limits.snapshotBytesMax }, 'raft: snapshot larger than snapshotBytesMax refused');
  }
  const chunks = [...inc.chunks, m.data];
  if (!m.done) {
    c.incoming = { ...inc, chunks, bytes };
    return progress(bytes);
  }
  c.incoming = undefined;
  const data = new Uint8Array(bytes);
  let at = 0;
  for (const chunk of chunks) {
    data.set(chunk, at);
    at += chunk.length;
  }
  installSnapshot(d, { index: m.lastIncludedIndex, term: m.lastIncludedTerm, data });
  acknowledge();
}
