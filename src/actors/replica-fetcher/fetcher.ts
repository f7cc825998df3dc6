/**
 * The follower broker's side of replica fetch sessions (Kafka's ReplicaFetcherThread with
 * KIP-227's FetchSessionHandler): one fetcher per leader broker carries every partition this
 * broker copies from it, in one request at a time on `tm.<c>.b.<leader>.replica-fetch`.
 *
 * Follower partition actors (partition/follower.ts) ask it for their next reply with their fetch
 * state (`fetch`), apply what comes back themselves (append and fsync, truncate, restart below the
 * leader's log start), and ask again with the new state. The fetcher:
 * - sends a request only when no partition is still applying the previous reply, so the new log
 *   ends (which move the leader's high watermark) leave as soon as the last of them is durable;
 *   an acks=all write waits for one fetch round, never for another partition's long poll;
 * - lists only partitions whose fetch state changed since the session's previous request, and
 *   those to forget (stopped, or backing off after an error); a new session lists every partition
 *   waiting; an idle request lists nothing;
 * - hands a partition only an answer for the exact state it asked with (the reply echoes it); any
 *   other is dropped and the partition's state is sent again;
 * - on any failed request (lost, late, refused session, leader gone) forgets the session and
 *   starts a new full one, after a backoff unless the leader only refused the session.
 * A partition waits as long as the leader has nothing for it; the broker replaces the follower
 * actor when metadata names a new leader (which moves it to another fetcher).
 */
import { TidemarkError } from '../../protocol/errors.js';
import { decodeReply, encodeMessage } from '../../protocol/messages.js';
import {
  REPLICA_SESSION_PARTITIONS_MAX,
  replicaFetchSessionReply,
  type ReplicaFetchReply,
  type ReplicaFetchSessionRequest,
  type ReplicaSessionPartition,
} from '../../protocol/replica-messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Random, Transport } from '../../runtime/ports.js';
import { backoffMs } from '../../runtime/retry.js';
import { partitionKey } from './sessions.js';

export interface FetcherPorts {
  brokerId: number;
  transport: Transport;
  subjects: Subjects;
  clock: Clock;
  random: Random;
  logger: Logger;
}

export interface FetcherLimits {
  /** How long the leader holds a session request with nothing new, ms. @default 500 */
  maxWaitMs: number;
  /** Bound on the records of one reply, bytes (within NATS max_payload). @default 1048576 */
  maxBytes: number;
  /** Ceiling of the first pause after a failed request, ms (doubles up to backoffMsMax). @default 50 */
  backoffMsInitial: number;
  /** @default 2000 */
  backoffMsMax: number;
}

/** Budget of a session request beyond its long poll, ms. */
export const SESSION_FETCH_SLACK_MS = 2_000;

/** A follower partition's fetch state. */
export interface FetchState {
  topicId: string;
  partition: number;
  leaderEpoch: number;
  fetchOffset: number;
  lastFetchedEpoch: number;
}

interface Entry {
  state: FetchState;
  /** waiting: has asked for its next reply; applying: got one and has not asked again; idle: neither. */
  phase: 'idle' | 'waiting' | 'applying';
  waiter: { resolve: (reply: ReplicaFetchReply) => void; reject: (error: unknown) => void } | undefined;
  /** The state the leader's session holds for it (as last listed); undefined: not in the session. */
  sent: string | undefined;
}

const stateKey = (s: FetchState) => `${s.leaderEpoch}:${s.fetchOffset}:${s.lastFetchedEpoch}`;

export class ReplicaFetcher {
  private readonly entries = new Map<string, Entry>();
  /** Partitions the leader's session holds that it is to forget with the next request. */
  private readonly removed = new Map<string, { topicId: string; partition: number }>();
  private sessionId = 0;
  private sessionEpoch = 0;
  private inFlight = false;
  private failures = 0;
  private backoffTimer: unknown;
  private closed = false;

  constructor(
    readonly leaderId: number,
    private readonly ports: FetcherPorts,
    private readonly limits: FetcherLimits,
  ) {}

  /** Partitions registered (waiting, applying or idle). */
  get partitions(): number {
    return this.entries.size;
  }

  /**
   * The partition's next reply for `state` (its log end as it is now): resolves with the leader's
   * answer, or rejects with the leader's refusal for it. Aborting leaves the partition registered,
   * applying (it comes back with `fetch` or leaves with `close`).
   */
  fetch(state: FetchState, signal?: AbortSignal): Promise<ReplicaFetchReply> {
    const key = partitionKey(state.topicId, state.partition);
    const entry = this.entries.get(key) ?? { state, phase: 'idle', waiter: undefined, sent: undefined };
    this.entries.set(key, entry);
    entry.waiter?.reject(new TidemarkError('INTERNAL', 'replaced by a newer fetch'));
    const promise = new Promise<ReplicaFetchReply>((resolve, reject) => {
      entry.state = state;
      entry.phase = 'waiting';
      entry.waiter = { resolve, reject };
    });
    const waiter = entry.waiter;
    signal?.addEventListener('abort', () => {
      if (entry.waiter !== waiter) return;
      entry.waiter = undefined;
      entry.phase = 'applying';
    });
    this.pump();
    return promise;
  }

  /** The partition will not ask for a while (its write failed; it backs off). */
  release(topicId: string, partition: number): void {
    const entry = this.entries.get(partitionKey(topicId, partition));
    if (entry === undefined || entry.phase === 'waiting') return;
    entry.phase = 'idle';
    this.pump();
  }

  /** The partition's follower actor stopped. */
  close(topicId: string, partition: number): void {
    const key = partitionKey(topicId, partition);
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    if (entry.sent !== undefined) this.removed.set(key, { topicId, partition });
    this.pump();
  }

  /** The broker stops: no more requests; partitions still waiting are left to their own stop. */
  shutdown(): void {
    this.closed = true;
    if (this.backoffTimer !== undefined) this.ports.clock.clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
  }

  /** Sends the next request when it may go: nothing in flight, nothing applying, someone waiting. */
  private pump(): void {
    if (this.closed || this.inFlight || this.backoffTimer !== undefined) return;
    let waiting = 0;
    for (const e of this.entries.values()) {
      if (e.phase === 'applying') return;
      if (e.phase === 'waiting') waiting++;
    }
    if (waiting === 0 && (this.removed.size === 0 || this.sessionId === 0)) return;
    const full = this.sessionId === 0;
    const partitions: ReplicaSessionPartition[] = [];
    const removed: Array<{ topicId: string; partition: number }> = [];
    if (full) this.removed.clear();
    for (const [key, r] of this.removed) {
      if (removed.length >= REPLICA_SESSION_PARTITIONS_MAX / 2) break;
      removed.push(r);
      this.removed.delete(key);
    }
    for (const [key, e] of this.entries) {
      if (e.phase !== 'waiting') {
        if (full) e.sent = undefined;
        else if (e.sent !== undefined && removed.length < REPLICA_SESSION_PARTITIONS_MAX / 2) {
          removed.push({ topicId: e.state.topicId, partition: e.state.partition });
          e.sent = undefined;
        }
        continue;
      }
      const s = stateKey(e.state);
      if (!full && e.sent === s) continue;
      // Beyond the bound, a partition is listed with a later request (it stays unsent).
      if (partitions.length + removed.length >= REPLICA_SESSION_PARTITIONS_MAX) {
        if (full) e.sent = undefined;
        continue;
      }
      partitions.push({ ...e.state });
      e.sent = s;
      void key;
    }
    const request: ReplicaFetchSessionRequest = {
      timeoutMs: this.limits.maxWaitMs + SESSION_FETCH_SLACK_MS,
      replicaId: this.ports.brokerId,
      sessionId: this.sessionId,
      sessionEpoch: this.sessionEpoch,
      maxBytes: Math.min(this.limits.maxBytes, this.ports.transport.maxPayloadBytes),
      maxWaitMs: this.limits.maxWaitMs,
      partitions,
      removed,
    };
    this.inFlight = true;
    const subject = this.ports.subjects.replicaFetchSession(this.leaderId);
    this.ports.transport.request(subject, encodeMessage(request), request.timeoutMs).then(
      (data) => this.onReply(data),
      (error: unknown) => this.onFailure(error),
    );
  }

  private onReply(data: Uint8Array): void {
    this.inFlight = false;
    let reply;
    try {
      reply = decodeReply(data, replicaFetchSessionReply);
    } catch (error) {
      this.onFailure(error, true);
      return;
    }
    if (this.closed) return;
    this.sessionEpoch = this.sessionId === reply.sessionId ? this.sessionEpoch + 1 : 1;
    this.sessionId = reply.sessionId;
    this.failures = 0;
    for (const p of reply.partitions) {
      const e = this.entries.get(partitionKey(p.topicId, p.partition));
      if (e === undefined) continue;
      const s = e.state;
      const exact = e.phase === 'waiting' && s.leaderEpoch === p.leaderEpoch && s.fetchOffset === p.fetchOffset && s.lastFetchedEpoch === p.lastFetchedEpoch;
      if (!exact) {
        // Not for the state it waits with (or it is not waiting): the leader learns its state again.
        e.sent = undefined;
        continue;
      }
      const waiter = e.waiter!;
      e.waiter = undefined;
      if (p.error !== undefined) {
        // The leader dropped it from the session; the partition backs off and asks again.
        e.phase = 'idle';
        e.sent = undefined;
        waiter.reject(TidemarkError.fromWire(p.error));
      } else if (p.data !== undefined) {
        e.phase = 'applying';
        waiter.resolve(p.data);
      } else {
        e.phase = 'waiting';
        e.waiter = waiter;
      }
    }
    this.pump();
  }

  private onFailure(error: unknown, decoded = false): void {
    this.inFlight = false;
    if (this.closed) return;
    const code = error instanceof TidemarkError ? error.code : undefined;
    const sessionRefused = code === 'FETCH_SESSION_ID_NOT_FOUND' || code === 'INVALID_FETCH_SESSION_EPOCH';
    if (this.failures === 0) {
      const level = decoded || code === undefined || code === 'INTERNAL' ? 'warn' : 'debug';
      this.ports.logger[level]({ err: error, leader: this.leaderId, sessionId: this.sessionId }, 'replica fetch session failed; starting a new one');
    }
    this.failures++;
    // A new full session: the leader's view of every partition is rebuilt from what each waits with.
    this.sessionId = 0;
    this.sessionEpoch = 0;
    this.removed.clear();
    for (const e of this.entries.values()) e.sent = undefined;
    if (sessionRefused && this.failures === 1) {
      this.pump();
      return;
    }
    const waitMs = backoffMs(this.failures, { backoffMsInitial: this.limits.backoffMsInitial, backoffMsMax: this.limits.backoffMsMax }, this.ports.random);
    this.backoffTimer = this.ports.clock.setTimeout(() => {
      this.backoffTimer = undefined;
      this.pump();
    }, waitMs);
  }
}

/** The node's fetchers, one per leader broker this broker follows, made on first use. */
export class ReplicaFetchers {
  private readonly fetchers = new Map<number, ReplicaFetcher>();

  constructor(
    private readonly ports: FetcherPorts,
    private readonly limits: FetcherLimits,
  ) {}

  for(leaderId: number): ReplicaFetcher {
    let fetcher = this.fetchers.get(leaderId);
    if (fetcher === undefined) {
      fetcher = new ReplicaFetcher(leaderId, { ...this.ports, logger: this.ports.logger.child({ actor: 'replica-fetcher', leader: leaderId }) }, this.limits);
      this.fetchers.set(leaderId, fetcher);
    }
    return fetcher;
  }

  shutdown(): void {
    for (const f of this.fetchers.values()) f.shutdown();
  }
}
