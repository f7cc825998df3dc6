/**
 * Election rules (Raft §5.2, §5.4.1; pre-vote and leader stickiness from the thesis §9.6, §4.2.3;
 * check-quorum from §6.2), pure functions of the context.
 */
import { isUpToDate, lastTerm } from './log-view.js';
import type { PreVote, Vote } from './messages.js';
import type { Draft } from './replication.js';
import type { Outbound, RaftContext } from './types.js';

export function drawElectionTimeout(c: RaftContext): number {
  const { electionTimeoutMsMin: min, electionTimeoutMsMax: max } = c.timeouts;
  return min + Math.floor(c.random.next() * (max - min + 1));
}

/**
 * Would this voter vote for the sender in the proposed term? Nothing changes either way. A voter
 * that already knows a leader in the proposed term (or voted for someone else in it) says no.
 */
export function preVoteGranted(c: RaftContext, m: PreVote): boolean {
  if (!isUpToDate(c.log, m.lastLogIndex, m.lastLogTerm)) return false;
  if (m.term > c.term) return true;
  return m.term === c.term && (c.votedFor === m.from || (c.votedFor === null && c.leaderId === null));
}

/**
 * Tie-break between two pre-candidates proposing the same term with equally up-to-date logs: the
 * lower id goes ahead. Granting each other (as plain pre-vote would) lets both stand and split the
 * vote, which costs a whole extra election timeout; refusing a pre-vote only ever delays, never
 * endangers, an election.
 */
export function yieldsToMe(c: RaftContext, m: PreVote): boolean {
  return m.term === c.term + 1 && m.from > c.voterId && m.lastLogIndex === c.log.lastIndex && m.lastLogTerm === lastTerm(c.log);
}

/** Raft's RequestVote rule: one vote per term, only for a log at least as up to date. */
export function voteGranted(c: RaftContext, m: Vote): boolean {
  if (m.term < c.term) return false;
  const votedFor = m.term > c.term ? null : c.votedFor;
  return (votedFor === null || votedFor === m.from) && isUpToDate(c.log, m.lastLogIndex, m.lastLogTerm);
}

/**
 * Check-quorum, evaluated at each heartbeat tick: true when fewer than a majority (this leader
 * included) answered within the last ceil(electionTimeoutMsMax / heartbeatIntervalMs) ticks. A
 * leader cut off therefore steps down at most electionTimeoutMsMax + heartbeatIntervalMs after the
 * last answer it got.
 */
export function quorumLost(c: RaftContext): boolean {
  const window = Math.ceil(c.timeouts.electionTimeoutMsMax / c.timeouts.heartbeatIntervalMs);
  const tick = c.ticks + 1;
  const heard = c.peers.filter((p) => tick - (c.progress[p]?.heardTick ?? 0) <= window).length;
  return heard + 1 < c.majority;
}

/** Asks every voter that has not granted yet. */
export function askForVotes(d: Draft, kind: 'preVote' | 'vote'): void {
  const { c } = d;
  const term = kind === 'preVote' ? c.term + 1 : c.term;
  for (const peer of c.peers) {
    if (c.grants.includes(peer)) continue;
    d.send.push({ to: peer, msg: { type: kind, from: c.voterId, term, lastLogIndex: c.log.lastIndex, lastLogTerm: lastTerm(c.log) } });
  }
}

/** Moves to a higher term seen in a message: no vote in it yet, no known leader; persisted. */
export function adoptTerm(d: Draft, term: number): void {
  const { c } = d;
  if (term <= c.term) return;
  c.term = term;
  c.votedFor = null;
  c.leaderId = null;
  // A snapshot being received belongs to the old term's leader.
  c.incoming = undefined;
  d.disk.push({ type: 'PERSIST', state: { term, votedFor: null }, then: undefined });
}

/**
 * Grants the vote; the reply leaves only once the vote is durable. A repeated request while that
 * write is still queued needs no second one: the queued write answers.
 */
export function grantVote(d: Draft, m: Vote): void {
  const { c } = d;
  const out: Outbound = { to: m.from, msg: { type: 'voteReply', from: c.voterId, term: c.term, granted: true } };
  if (c.durable.term === c.term && c.durable.votedFor === m.from) d.send.push(out);
  else if (c.votedFor !== m.from) d.disk.push({ type: 'PERSIST', state: { term: c.term, votedFor: m.from }, then: out });
  c.votedFor = m.from;
}
