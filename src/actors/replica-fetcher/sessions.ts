/**
 * The leader broker's side of replica fetch sessions (Kafka's FetchSessionCache, KIP-227): one
 * session per follower broker, holding the fetch state (fetch offset, last fetched epoch, leader
 * epoch) of every partition that follower copies from this broker.
 *
 * A session request lists only partitions whose state changed; those go to their partition actors
 * as today's REPLICA_FETCH (which records the follower's progress, moves the high watermark, asks
 * for ISR joins, refuses stale epochs, finds divergence), with `maxWaitMs` 0: the partition answers
 * at once, to an in-process reply address (runtime/local-replies.ts, routed by prefix), never over NATS. A partition whose
 * written log end (reported by its leader actor, `written`) is past the session's fetch offset is
 * asked too, for its records. The request is answered as soon as every partition asked has
 * answered and one of them has records, a divergence or an error; otherwise it is parked, with one
 * timer for the whole request (`maxWaitMs`), until a partition of the session is written past its
 * fetch offset (`written` wakes it). An idle request asks no partition anything.
 *
 * Every answer the follower waits for is owed until a reply carries it (`owed`): an answer lost to
 * a size cut, a request replaced before it was answered, or a partition that stopped before it
 * answered, is asked again with the next request. A partition answered with an error leaves the
 * session (the follower backs off and lists it again). Sessions live in memory: a restart of this
 * broker loses them and each follower starts a new full one (FETCH_SESSION_ID_NOT_FOUND).
 */
import { LOCAL_PREFIX } from '../../runtime/local-replies.js';
import { TidemarkError, type ErrorCode, type WireError } from '../../protocol/errors.js';
import { decodeReply, encodeError } from '../../protocol/messages.js';
import {
  encodeSessionReply,
  REPLICA_SESSION_PARTITIONS_MAX,
  replicaFetchReply,
  type ReplicaFetchSessionRequest,
  type ReplicaSessionPartitionReply,
} from '../../protocol/replica-messages.js';
import type { Clock, Logger, Random } from '../../runtime/ports.js';
import type { PartitionEvent } from '../partition/types.js';

/** Bounds of the leader's session registry. */
export interface SessionLimits {
  /** Sessions held at once (one per follower broker); the least recently used goes first. @default 1024 */
  sessionsMax: number;
  /** Partitions asked for records at once by one request; the others only record progress. @default 32 */
  readsPerRequestMax: number;
  /** Records one partition may put in a reply, bytes. @default 1048576 */
  partitionBytesMax: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = { sessionsMax: 1024, readsPerRequestMax: 32, partitionBytesMax: 1024 * 1024 };

/** Room in a reply for one partition's fields besides its records, bytes (for the payload bound). */
export const SESSION_ENTRY_ENVELOPE_BYTES = 256;
/** Room for the reply's own fields, bytes. */
const SESSION_REPLY_ENVELOPE_BYTES = 1024;
/** Prefix of the in-process reply addresses partition actors answer to (never sent over NATS). */
export const LOCAL_REPLY_PREFIX = `${LOCAL_PREFIX}rs`;

interface SessionPartition {
  topicId: string;
  partition: number;
  leaderEpoch: number;
  fetchOffset: number;
  lastFetchedEpoch: number;
  /** The follower waits for an answer no reply has carried yet: ask the partition with the next request. */
  owed: boolean;
}

interface OpenRequest {
  seq: number;
  respond: (data: Uint8Array) => void;
  maxBytes: number;
  timer: unknown;
  /** Partitions asked and not yet answered. */
  asking: Set<string>;
  answers: Map<string, ReplicaSessionPartitionReply>;
  /** Inside the loop that asks partitions (their answers may come back synchronously). */
  dispatching: boolean;
  reads: number;
}

interface Session {
  replicaId: number;
  id: number;
  /** The epoch the next request must carry. */
  epoch: number;
  partitions: Map<string, SessionPartition>;
  lastUsedMs: number;
  request: OpenRequest | undefined;
  /** When this node sent its last reply on the session, ms (-Infinity: none yet). */
  lastReplySentMs: number;
  /**
   * The follower was alive and following at this time of this node's clock: the send time of the
   * last reply a later request proves it received. Not the arrival time of that request: a request
   * held back by the network (or a pause of this node) proves nothing about now.
   */
  confirmedMs: number;
}

export interface SessionPorts {
  clock: Clock;
  random: Random;
  logger: Logger;
  maxPayloadBytes: number;
  /**
   * Sends the event to the leader actor of the partition; returns the error to answer instead when
   * there is none (this broker does not lead it, or not yet).
   */
  dispatch(topicId: string, partition: number, event: PartitionEvent): { code: ErrorCode; message: string } | undefined;
}

export const partitionKey = (topicId: string, partition: number) => `${topicId}/${partition}`;

export class LeaderSessions {
  private readonly sessions = new Map<number, Session>();
  /** Written log end of each partition this broker leads (as its leader actors report it). */
  private readonly writtenEnds = new Map<string, number>();
  private nextSeq = 1;

  constructor(
    private readonly ports: SessionPorts,
    private readonly limits: SessionLimits = DEFAULT_SESSION_LIMITS,
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  /** A leader actor's written log end moved (or it started): wake sessions parked on it. */
  written(topicId: string, partition: number, writtenEnd: number): void {
    const key = partitionKey(topicId, partition);
    this.writtenEnds.set(key, writtenEnd);
    for (const session of this.sessions.values()) {
      const request = session.request;
      const p = session.partitions.get(key);
      if (request === undefined || p === undefined || writtenEnd <= p.fetchOffset || request.asking.has(key) || request.answers.has(key)) continue;
      this.ask(session, request, key, p);
      this.decide(session, request);
    }
  }

  /**
   * When each follower broker's session last sent a valid request, ms: proof that it is alive now
   * (the ISR join rule of an idle partition uses it; leader-state.ts, fetchedSinceLeaving).
   */
  seenMs(): Record<number, number> {
    const out: Record<number, number> = {};
    for (const s of this.sessions.values()) out[s.replicaId] = s.lastUsedMs;
    return out;
  }

  /**
   * Whether follower broker `replicaId` still copies the partition from this broker at
   * `leaderEpoch`, and was doing so at `sinceMs` or later by this node's clock (it received a reply
   * sent then: `confirmedMs`): the subscriptions' delivery lease (subscription/host.ts). A
   * follower that became the leader itself forgets the partition here.
   */
  follows(replicaId: number, topicId: string, partition: number, leaderEpoch: number, sinceMs: number): boolean {
    const session = this.sessions.get(replicaId);
    if (session === undefined || session.confirmedMs < sinceMs) return false;
    return session.partitions.get(partitionKey(topicId, partition))?.leaderEpoch === leaderEpoch;
  }

  /** A leader actor stopped: its written end is no longer known here. */
  forget(topicId: string, partition: number): void {
    this.writtenEnds.delete(partitionKey(topicId, partition));
  }

  /** A session request, already decoded and checked against its schema. */
  request(request: ReplicaFetchSessionRequest, respond: (data: Uint8Array) => void): void {
    const nowMs = this.ports.clock.now();
    let session = this.sessions.get(request.replicaId);
    if (request.sessionId === 0) {
      if (session !== undefined) this.close(session);
      session = this.open(request.replicaId, nowMs);
    } else if (session === undefined || session.id !== request.sessionId) {
      respond(encodeError(wire('FETCH_SESSION_ID_NOT_FOUND', `no fetch session ${request.sessionId} for broker ${request.replicaId}`)));
      return;
    } else if (session.epoch !== request.sessionEpoch) {
      respond(encodeError(wire('INVALID_FETCH_SESSION_EPOCH', `session ${session.id}: epoch ${request.sessionEpoch}, expected ${session.epoch}`)));
      return;
    }
    // A request replaces the one before it: the follower no longer waits for that one's reply.
    if (session.request !== undefined) this.drop(session);
    // A request at the expected epoch with no request left open means the follower received the
    // last reply (it asks again only once it has one).
    else if (request.sessionId !== 0) session.confirmedMs = session.lastReplySentMs;
    session.epoch++;
    session.lastUsedMs = nowMs;
    for (const r of request.removed) session.partitions.delete(partitionKey(r.topicId, r.partition));
    for (const p of request.partitions) {
      const key = partitionKey(p.topicId, p.partition);
      if (!session.partitions.has(key) && session.partitions.size >= REPLICA_SESSION_PARTITIONS_MAX) continue;
      session.partitions.set(key, { ...p, owed: true });
    }
    const open: OpenRequest = {
      seq: this.nextSeq++,
      respond,
      maxBytes: Math.min(request.maxBytes, this.ports.maxPayloadBytes - SESSION_REPLY_ENVELOPE_BYTES),
      timer: undefined,
      asking: new Set(),
      answers: new Map(),
      dispatching: true,
      reads: 0,
    };
    session.request = open;
    const s = session;
    open.timer = this.ports.clock.setTimeout(() => {
      open.timer = undefined;
      if (s.request === open) this.answer(s, open);
    }, request.maxWaitMs);
    for (const [key, p] of session.partitions) {
      if (p.owed || (this.writtenEnds.get(key) ?? -1) > p.fetchOffset) this.ask(session, open, key, p);
    }
    open.dispatching = false;
    this.decide(session, open);
  }

  /** An answer of a partition actor to a local reply address (runtime/local-replies.ts, routed by prefix). */
  localReply(subject: string, data: Uint8Array): void {
    const address = parseLocalReply(subject);
    if (address === undefined) return;
    const session = this.sessions.get(address.replicaId);
    const request = session?.request;
    if (session === undefined || request === undefined || request.seq !== address.seq || !request.asking.has(address.key)) return;
    request.asking.delete(address.key);
    const p = session.partitions.get(address.key);
    if (p === undefined) return this.decide(session, request);
    const echo = { topicId: p.topicId, partition: p.partition, leaderEpoch: p.leaderEpoch, fetchOffset: p.fetchOffset, lastFetchedEpoch: p.lastFetchedEpoch };
    try {
      const reply = decodeReply(data, replicaFetchReply);
      if (reply.records.length > 0 || reply.divergingEpoch !== undefined) request.answers.set(address.key, { ...echo, data: reply });
      else p.owed = false;
    } catch (error) {
      const e = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'replica read failed');
      request.answers.set(address.key, { ...echo, error: e.toWire() });
    }
    this.decide(session, request);
  }

  /** Drops every session (the broker stops listening): parked requests go unanswered. */
  closeAll(): void {
    for (const session of [...this.sessions.values()]) this.close(session);
  }

  private open(replicaId: number, nowMs: number): Session {
    if (this.sessions.size >= this.limits.sessionsMax) {
      let oldest: Session | undefined;
      for (const s of this.sessions.values()) if (oldest === undefined || s.lastUsedMs < oldest.lastUsedMs) oldest = s;
      if (oldest !== undefined) this.close(oldest);
    }
    let id = 0;
    while (id === 0) id = 1 + Math.floor(this.ports.random.next() * (2 ** 31 - 2));
    const session: Session = {
      replicaId,
      id,
      epoch: 0,
      partitions: new Map(),
      lastUsedMs: nowMs,
      request: undefined,
      lastReplySentMs: Number.NEGATIVE_INFINITY,
      confirmedMs: Number.NEGATIVE_INFINITY,
    };
    this.sessions.set(replicaId, session);
    return session;
  }

  private close(session: Session): void {
    this.drop(session);
    this.sessions.delete(session.replicaId);
  }

  /** Forgets the session's open request without answering it (what it asked stays owed). */
  private drop(session: Session): void {
    const request = session.request;
    if (request === undefined) return;
    if (request.timer !== undefined) this.ports.clock.clearTimeout(request.timer);
    session.request = undefined;
  }

  private ask(session: Session, request: OpenRequest, key: string, p: SessionPartition): void {
    const read = request.reads < this.limits.readsPerRequestMax && (this.writtenEnds.get(key) ?? Number.MAX_SAFE_INTEGER) > p.fetchOffset;
    if (read) request.reads++;
    request.asking.add(key);
    const event: PartitionEvent = {
      type: 'REPLICA_FETCH',
      replyTo: localReplySubject(session.replicaId, request.seq, p.topicId, p.partition),
      replicaId: session.replicaId,
      leaderEpoch: p.leaderEpoch,
      fetchOffset: p.fetchOffset,
      lastFetchedEpoch: p.lastFetchedEpoch,
      // 0: record the follower's progress only; its records are read by a later request.
      maxBytes: read ? Math.min(this.limits.partitionBytesMax, request.maxBytes) : 0,
      maxWaitMs: 0,
    };
    const refused = this.ports.dispatch(p.topicId, p.partition, event);
    if (refused === undefined) return;
    request.asking.delete(key);
    request.answers.set(key, {
      topicId: p.topicId,
      partition: p.partition,
      leaderEpoch: p.leaderEpoch,
      fetchOffset: p.fetchOffset,
      lastFetchedEpoch: p.lastFetchedEpoch,
      error: wire(refused.code, refused.message),
    });
  }

  /** Answer once every partition asked has answered and one has something to say; else stay parked. */
  private decide(session: Session, request: OpenRequest): void {
    if (request.dispatching || request.asking.size > 0 || request.answers.size === 0 || session.request !== request) return;
    this.answer(session, request);
  }

  private answer(session: Session, request: OpenRequest): void {
    this.drop(session);
    const partitions: ReplicaSessionPartitionReply[] = [];
    let bytes = SESSION_REPLY_ENVELOPE_BYTES;
    for (const [key, entry] of request.answers) {
      const size = SESSION_ENTRY_ENVELOPE_BYTES + (entry.data?.records.length ?? 0) + (entry.error?.message.length ?? 0);
      // Always one entry (a batch always fits a reply: produce refuses larger ones); then within maxBytes.
      if (partitions.length > 0 && bytes + size > request.maxBytes) {
        const cut = session.partitions.get(key);
        if (cut !== undefined) cut.owed = true;
        continue;
      }
      bytes += size;
      partitions.push(entry);
      const p = session.partitions.get(key);
      if (p === undefined) continue;
      p.owed = false;
      // The follower backs off and lists it again.
      if (entry.error !== undefined) session.partitions.delete(key);
    }
    session.lastReplySentMs = this.ports.clock.now();
    try {
      request.respond(encodeSessionReply({ sessionId: session.id, partitions }));
    } catch (error) {
      this.ports.logger.warn({ err: error, replica: session.replicaId }, 'replica fetch session reply dropped');
    }
  }
}

function wire(code: ErrorCode, message: string): WireError {
  return new TidemarkError(code, message).toWire();
}

export function localReplySubject(replicaId: number, seq: number, topicId: string, partition: number): string {
  return `${LOCAL_REPLY_PREFIX}.${replicaId}.${seq}.${topicId}.${partition}`;
}

function parseLocalReply(subject: string): { replicaId: number; seq: number; key: string } | undefined {
  const tokens = subject.split('.');
  if (tokens.length !== 6) return undefined;
  const replicaId = Number(tokens[2]);
  const seq = Number(tokens[3]);
  const partition = Number(tokens[5]);
  if (!Number.isSafeInteger(replicaId) || !Number.isSafeInteger(seq) || !Number.isSafeInteger(partition)) return undefined;
  return { replicaId, seq, key: partitionKey(tokens[4]!, partition) };
}
