/**
 * Replica fetch sessions (KIP-227) on both sides, with scripted ports: the leader's registry asks
 * only partitions whose fetch state changed or that have records for the follower, answers at once
 * when one has something to say, parks an idle request on one timer, wakes it when a partition is
 * written past the follower's offset, and refuses a stale epoch or unknown session; the follower's
 * fetcher lists only what changed, holds the next request until the partitions that got records
 * ask again, hands a partition only an answer for the exact state it asked with, and starts a new
 * full session after any failure.
 */
import test from 'ava';
import { decode } from '@msgpack/msgpack';
import { pino } from 'pino';
import { ReplicaFetcher } from '../src/actors/replica-fetcher/fetcher.js';
import { LeaderSessions } from '../src/actors/replica-fetcher/sessions.js';
import type { PartitionEvent } from '../src/actors/partition/types.js';
import { TidemarkError } from '../src/protocol/errors.js';
import { encodeError, encodeMessage } from '../src/protocol/messages.js';
import type { ReplicaFetchSessionReply, ReplicaFetchSessionRequest, ReplicaSessionPartition } from '../src/protocol/replica-messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import type { Clock, Transport } from '../src/runtime/ports.js';

const logger = pino({ level: 'silent' });
const T = '0123456789abcdef0123456789abcdef';

/** A clock whose timers the test fires. */
function manualClock() {
  let nowMs = 1_000;
  const timers = new Map<number, { at: number; fn: () => void }>();
  let id = 0;
  const clock: Clock = {
    now: () => nowMs,
    setTimeout: (fn, ms) => {
      timers.set(++id, { at: nowMs + ms, fn: fn as () => void });
      return id;
    },
    clearTimeout: (t) => void timers.delete(t as number),
  };
  const advance = (ms: number) => {
    nowMs += ms;
    for (const [k, t] of [...timers]) if (t.at <= nowMs && timers.delete(k)) t.fn();
  };
  return { clock, advance, pending: () => timers.size };
}

/** The registry with partitions played by the test: each REPLICA_FETCH is recorded, answered by `answer`. */
function leader() {
  const { clock, advance, pending } = manualClock();
  const asked: PartitionEvent[] = [];
  let sessions!: LeaderSessions;
  let answer: (event: Extract<PartitionEvent, { type: 'REPLICA_FETCH' }>) => object | undefined = () => ({ highWatermark: 0, logStartOffset: 0, logEndOffset: 0, records: new Uint8Array(0) });
  sessions = new LeaderSessions({
    clock,
    random: { next: () => 0.25 },
    logger,
    maxPayloadBytes: 1 << 20,
    dispatch: (topicId, partition, event) => {
      if (partition === 99) return { code: 'NOT_LEADER', message: 'not here' };
      asked.push(event);
      if (event.type !== 'REPLICA_FETCH') return undefined;
      const body = answer(event);
      if (body !== undefined) sessions.localReply(event.replyTo, 'error' in body ? encodeError((body as { error: never }).error) : encodeMessage(body));
      return undefined;
    },
  });
  const replies: Array<ReplicaFetchSessionReply | { error: { code: string } }> = [];
  const send = (r: Partial<ReplicaFetchSessionRequest>) =>
    sessions.request(
      { timeoutMs: 3000, replicaId: 2, sessionId: 0, sessionEpoch: 0, maxBytes: 1 << 20, maxWaitMs: 500, partitions: [], removed: [], ...r },
      (data) => replies.push(decode(data) as ReplicaFetchSessionReply),
    );
  return { sessions, asked, replies, send, advance, pending, setAnswer: (f: typeof answer) => (answer = f) };
}

const state = (partition: number, fetchOffset: number, lastFetchedEpoch = 0): ReplicaSessionPartition => ({ topicId: T, partition, leaderEpoch: 1, fetchOffset, lastFetchedEpoch });

test('leader: a full session asks every partition once; an idle request asks none and parks on one timer', (t) => {
  const l = leader();
  l.sessions.written(T, 0, 10);
  l.sessions.written(T, 1, 10);
  l.send({ partitions: [state(0, 10), state(1, 10)] });
  t.is(l.asked.length, 2, 'each listed partition records the follower progress');
  t.true(l.asked.every((e) => e.type === 'REPLICA_FETCH' && e.maxWaitMs === 0));
  t.is(l.replies.length, 0, 'nothing to say: parked');
  t.is(l.pending(), 1, 'one timer for the whole request');
  l.advance(500);
  const first = l.replies.shift() as ReplicaFetchSessionReply;
  t.deepEqual(first.partitions, []);
  l.send({ sessionId: first.sessionId, sessionEpoch: 1 });
  t.is(l.asked.length, 2, 'an idle request touches no partition');
  l.advance(500);
  t.deepEqual((l.replies.shift() as ReplicaFetchSessionReply).partitions, []);
});

test('leader: a write past a parked fetch offset wakes the session with that partition\'s records', (t) => {
  const l = leader();
  l.sessions.written(T, 0, 10);
  l.send({ partitions: [state(0, 10)] });
  l.advance(500);
  const { sessionId } = l.replies.shift() as ReplicaFetchSessionReply;
  l.send({ sessionId, sessionEpoch: 1 });
  t.is(l.asked.length, 1);
  l.setAnswer((e) => ({ highWatermark: 10, logStartOffset: 0, logEndOffset: 12, records: new Uint8Array(e.maxBytes > 0 ? 40 : 0) }));
  l.sessions.written(T, 0, 12);
  t.is(l.asked.length, 2, 'the woken partition is asked for its records');
  const reply = l.replies.shift() as ReplicaFetchSessionReply;
  t.is(reply.partitions.length, 1);
  t.is(reply.partitions[0]!.fetchOffset, 10, 'the answer echoes the state it answers');
  t.is(reply.partitions[0]!.data!.records.length, 40);
  t.is(l.pending(), 0, 'the request\'s timer is gone with it');
});

test('leader: a stale session epoch, an unknown session and a partition led elsewhere are refused', (t) => {
  const l = leader();
  l.send({ partitions: [state(0, 0), state(99, 0)] });
  const reply = l.replies.shift() as ReplicaFetchSessionReply;
  t.is(reply.partitions.length, 1, 'answered at once: one partition has an error');
  t.is(reply.partitions[0]!.partition, 99);
  t.is(reply.partitions[0]!.error!.code, 'NOT_LEADER');
  l.send({ sessionId: reply.sessionId, sessionEpoch: 5 });
  t.is((l.replies.shift() as { error: { code: string } }).error.code, 'INVALID_FETCH_SESSION_EPOCH');
  l.send({ sessionId: reply.sessionId + 1, sessionEpoch: 1 });
  t.is((l.replies.shift() as { error: { code: string } }).error.code, 'FETCH_SESSION_ID_NOT_FOUND');
  // The right epoch still works; the refused partition left the session (the follower lists it again).
  l.send({ sessionId: reply.sessionId, sessionEpoch: 1 });
  l.advance(500);
  t.deepEqual((l.replies.shift() as ReplicaFetchSessionReply).partitions, []);
});

/** The fetcher with the leader played by the test. */
function follower() {
  const { clock, advance } = manualClock();
  const requests: Array<{ body: ReplicaFetchSessionRequest; reply: (r: ReplicaFetchSessionReply) => void; fail: (e: unknown) => void }> = [];
  const transport: Transport = {
    maxPayloadBytes: 1 << 20,
    publish() {},
    subscribe: () => ({ unsubscribe() {} }),
    request: (_s, data) =>
      new Promise((resolve, reject) => {
        requests.push({ body: decode(data) as ReplicaFetchSessionRequest, reply: (r) => resolve(encodeMessage(r)), fail: reject });
      }),
    requestMany: async () => [],
  };
  const fetcher = new ReplicaFetcher(
    3,
    { brokerId: 2, transport, subjects: new Subjects('x'), clock, random: { next: () => 0.5 }, logger },
    { maxWaitMs: 500, maxBytes: 1 << 20, backoffMsInitial: 50, backoffMsMax: 2000 },
  );
  return { fetcher, requests, advance };
}

const flush = () => new Promise<void>((r) => setImmediate(r));
const data = (records = 10) => ({ highWatermark: 0, logStartOffset: 0, logEndOffset: 0, records: new Uint8Array(records) });

test('follower: a full session lists every partition, then only what changed; an idle request lists nothing', async (t) => {
  const f = follower();
  const p0 = f.fetcher.fetch(state(0, 5));
  void f.fetcher.fetch(state(1, 7));
  t.is(f.requests.length, 1, 'one request in flight for both');
  const first = f.requests.shift()!;
  t.is(first.body.sessionId, 0);
  // The first fetch went out before the second registered: the second is listed next time.
  first.reply({ sessionId: 42, partitions: [{ ...state(0, 5), data: data() }] });
  t.is((await p0).records.length, 10);
  await flush();
  t.is(f.requests.length, 0, 'partition 0 is applying: the next request waits for it');
  void f.fetcher.fetch(state(0, 15));
  await flush();
  const second = f.requests.shift()!;
  t.is(second.body.sessionId, 42);
  t.is(second.body.sessionEpoch, 1);
  t.deepEqual(second.body.partitions.map((p) => [p.partition, p.fetchOffset]), [[0, 15], [1, 7]]);
  second.reply({ sessionId: 42, partitions: [] });
  await flush();
  const third = f.requests.shift()!;
  t.is(third.body.sessionEpoch, 2);
  t.deepEqual(third.body.partitions, [], 'idle: nothing changed, nothing listed');
  t.deepEqual(third.body.removed, []);
});

test('follower: an answer for another state is not applied; a failed request starts a new full session; a stopped partition is removed', async (t) => {
  const f = follower();
  let settled = false;
  void f.fetcher.fetch(state(0, 5)).then(() => (settled = true));
  let p1 = f.fetcher.fetch(state(1, 7));
  const first = f.requests.shift()!;
  first.reply({ sessionId: 42, partitions: [{ ...state(0, 4), data: data() }] });
  await flush();
  t.false(settled, 'records for offset 4 are not handed to a log ending at 5');
  const second = f.requests.shift()!;
  t.deepEqual(second.body.partitions.map((p) => p.partition), [0, 1], 'the leader learns partition 0\'s state again (and 1, not in the first request)');
  second.fail(new TidemarkError('TIMEOUT'));
  await flush();
  t.is(f.requests.length, 0, 'after a timeout, a backoff');
  f.advance(2000);
  const third = f.requests.shift()!;
  t.is(third.body.sessionId, 0, 'a new full session');
  t.deepEqual(third.body.partitions.map((p) => p.partition), [0, 1]);
  third.reply({ sessionId: 43, partitions: [{ ...state(1, 7), error: { code: 'FENCED_LEADER_EPOCH', message: 'old' } }] });
  await t.throwsAsync(p1, { message: 'old' });
  await flush();
  const fourth = f.requests.shift()!;
  t.deepEqual(fourth.body.partitions, [], 'partition 0 is unchanged; partition 1 backs off');
  f.fetcher.close(T, 0);
  p1 = f.fetcher.fetch(state(1, 7));
  fourth.reply({ sessionId: 43, partitions: [] });
  await flush();
  const fifth = f.requests.shift()!;
  t.deepEqual(fifth.body.removed, [{ topicId: T, partition: 0 }]);
  t.deepEqual(fifth.body.partitions.map((p) => p.partition), [1], 'relisted after its error');
});

test('leader: a follower counts as following from the send time of the last reply it is known to have received, not from when a request arrived', (t) => {
  const l = leader();
  l.sessions.written(T, 0, 10);
  l.send({ partitions: [state(0, 10)], maxWaitMs: 0 });
  l.advance(0);
  const first = l.replies[0] as ReplicaFetchSessionReply;
  t.false(l.sessions.follows(2, T, 0, 1, 0), 'a new session proves nothing yet');
  const repliedAt = 1_000; // the manual clock's time when the first reply went out
  // Much later (a request held by the network, or this node paused), the next request arrives.
  l.advance(60_000);
  l.send({ sessionId: first.sessionId, sessionEpoch: 1, maxWaitMs: 0 });
  l.advance(0); // the idle request's reply goes out at once
  t.true(l.sessions.follows(2, T, 0, 1, repliedAt), 'the follower received the reply sent at 1000');
  t.false(l.sessions.follows(2, T, 0, 1, repliedAt + 1), 'but nothing proves it followed any later');
  t.false(l.sessions.follows(2, T, 0, 2, repliedAt), 'at another leader epoch, no');
  // The follower stops copying the partition (it leads it now): no longer following.
  const second = l.replies[1] as ReplicaFetchSessionReply;
  l.send({ sessionId: second.sessionId, sessionEpoch: 2, maxWaitMs: 0, removed: [{ topicId: T, partition: 0 }] });
  t.false(l.sessions.follows(2, T, 0, 1, 0));
});
