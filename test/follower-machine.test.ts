/**
 * The follower machine on in-memory storage and a scripted transport: it appends what the leader
 * sends, truncates where the leader says the logs diverge, and restarts its log at the leader's log
 * start when it ends below it (and only then); a write in progress when it is
 * stopped finishes before it is done, so the leader actor that opens the log next never has a
 * write land under it (a race the rolling-restart test found).
 */
import test from 'ava';
import { pino } from 'pino';
import { createActor, waitFor } from 'xstate';
import { followerMachine } from '../src/actors/partition/follower.js';
import { DEFAULT_PARTITION_LIMITS } from '../src/actors/partition/types.js';
import { parseTopicConfig } from '../src/metadata/topic-config.js';
import { decodeBatch, encodeBatch, stampBatch } from '../src/protocol/batch.js';
import type { WireError } from '../src/protocol/errors.js';
import { encodeError, encodeMessage } from '../src/protocol/messages.js';
import type { ReplicaFetchReply } from '../src/protocol/replica-messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import type { Transport } from '../src/runtime/ports.js';
import { createMemoryNodeStorage } from '../src/storage/memory-storage.js';
import type { PartitionStore } from '../src/storage/partition-store.js';

const TOPIC_ID = '0123456789abcdef0123456789abcdef';
/** The followers' clock (retention); the machine's own timers use real time, bounded by the tests. */
let clockMs = 1_000_000_000_000;

/** Each replica fetch waits until the test answers it. */
function scriptedLeader() {
  const fetches: Array<{ body: Uint8Array; answer: (reply: ReplicaFetchReply) => void; refuse: (error: WireError) => void }> = [];
  let notify: (() => void) | undefined;
  const transport: Transport = {
    maxPayloadBytes: 1 << 20,
    publish() {},
    subscribe: () => ({ unsubscribe() {} }),
    request: (_subject, body) =>
      new Promise((resolve) => {
        fetches.push({ body, answer: (reply) => resolve(encodeMessage(reply)), refuse: (error) => resolve(encodeError(error)) });
        notify?.();
      }),
    requestMany: async () => [],
  };
  const next = async () => {
    while (fetches.length === 0) await new Promise<void>((r) => (notify = r));
    return fetches.shift()!;
  };
  return { transport, next };
}

function batch(base: number, epoch: number, values: string[]): Uint8Array {
  const b = encodeBatch(values.map((v) => ({ key: null, value: new TextEncoder().encode(v), headers: {}, timestamp: 1 })));
  stampBatch(b, base, epoch);
  return b;
}

const reply = (records: Uint8Array, extra: Partial<ReplicaFetchReply> = {}): ReplicaFetchReply => ({
  highWatermark: 0,
  logStartOffset: 0,
  logEndOffset: 0,
  records,
  ...extra,
});

async function start(storeSetup?: (store: PartitionStore) => Promise<void>) {
  const storage = createMemoryNodeStorage();
  const store = await storage.openPartition({ topicId: TOPIC_ID, partition: 0 });
  await storeSetup?.(store);
  const leader = scriptedLeader();
  const follower = createActor(followerMachine, {
    input: {
      topic: 't',
      topicId: TOPIC_ID,
      partition: 0,
      leaderId: 2,
      leaderEpoch: 3,
      brokerId: 1,
      config: parseTopicConfig({}),
      storage,
      transport: leader.transport,
      subjects: new Subjects('x'),
      clock: { now: () => clockMs, setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (id) => clearTimeout(id as NodeJS.Timeout) },
      random: { next: () => 0.5 },
      logger: pino({ level: 'silent' }),
      limits: DEFAULT_PARTITION_LIMITS,
    },
  }).start();
  return { follower, store, leader };
}

test.serial('a follower appends the leader batches as stamped and reports its log end in the next fetch', async (t) => {
  const { follower, store, leader } = await start();
  const first = await leader.next();
  first.answer(reply(Buffer.concat([batch(0, 3, ['a', 'b']), batch(2, 3, ['c'])])));
  const second = await leader.next();
  t.is(store.logEndOffset(), 3);
  t.like((await import('@msgpack/msgpack')).decode(second.body) as object, { fetchOffset: 3, lastFetchedEpoch: 3, leaderEpoch: 3, replicaId: 1 });
  follower.send({ type: 'STOP' });
  t.is(follower.getSnapshot().status, 'done');
});

test.serial('a diverging follower truncates to where the leader says its epoch ends, then fetches from there', async (t) => {
  const { follower, store, leader } = await start(async (s) => {
    await s.append([batch(0, 1, ['a', 'b']), batch(2, 2, ['stale-1', 'stale-2'])]);
  });
  const first = await leader.next();
  // The leader never had epoch 2: epoch 1 ends at 2 in its log.
  first.answer(reply(new Uint8Array(0), { divergingEpoch: { epoch: 1, endOffset: 2 } }));
  const second = await leader.next();
  t.is(store.logEndOffset(), 2);
  second.answer(reply(batch(2, 3, ['new'])));
  await leader.next();
  const [, kept] = await store.read(0, 1 << 20, 3);
  t.deepEqual(decodeBatch(kept!).map((r) => new TextDecoder().decode(r.value!)), ['new']);
  follower.send({ type: 'STOP' });
});

test.serial('STOP while a fetched reply is being written: the follower is done only after the write', async (t) => {
  const { follower, store, leader } = await start();
  // Hold the follower's append until the test lets it go (the store hands out one handle per key).
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const append = store.append.bind(store);
  store.append = async (batches, options) => {
    if (batches.length > 0) await gate;
    return append(batches, options);
  };
  const first = await leader.next();
  first.answer(reply(batch(0, 3, ['a', 'b', 'c'])));
  await waitFor(follower, (s) => s.matches('writing'), { timeout: 2000 });
  follower.send({ type: 'STOP' });
  t.is(follower.getSnapshot().status, 'active', 'still writing');
  release();
  await waitFor(follower, (s) => s.status === 'done', { timeout: 2000 });
  t.is(store.logEndOffset(), 3, 'the write finished before the follower was done');
});

test.serial('STOP while a fetch waits for the leader: done at once, and the late reply is never written', async (t) => {
  const { follower, store, leader } = await start();
  const pending = await leader.next();
  follower.send({ type: 'STOP' });
  t.is(follower.getSnapshot().status, 'done');
  pending.answer(reply(batch(0, 3, ['late'])));
  await new Promise((r) => setTimeout(r, 20));
  t.is(store.logEndOffset(), 0);
});

test.serial('a follower applies the topic retention to its own copy, with a write, once per retention check interval', async (t) => {
  const { follower, store, leader } = await start();
  clockMs = 1_000_000_000_000;
  const first = await leader.next();
  first.answer(reply(Buffer.concat([batch(0, 3, ['old']), batch(1, 3, ['older'])])));
  const second = await leader.next();
  t.is(store.logStartOffset(), 0);
  // Batches are timestamped 1 (epoch ms): far older than the default 7 days, once retention runs.
  clockMs += DEFAULT_PARTITION_LIMITS.retentionCheckIntervalMs;
  second.answer(reply(batch(2, 3, ['new'])));
  await leader.next();
  t.is(store.logStartOffset(), 3, 'every batch older than retention.ms is gone from the follower too');
  t.is(store.logEndOffset(), 3);
  follower.send({ type: 'STOP' });
});

const fetchOffsetOf = async (body: Uint8Array) => ((await import('@msgpack/msgpack')).decode(body) as { fetchOffset: number; lastFetchedEpoch: number });

test.serial('a follower whose log ends below the leader\'s log start restarts its log there and fetches from there', async (t) => {
  const { follower, store, leader } = await start(async (s) => {
    await s.append([batch(0, 1, ['a', 'b']), batch(2, 2, ['c'])]);
  });
  const first = await leader.next();
  t.like(await fetchOffsetOf(first.body), { fetchOffset: 3, lastFetchedEpoch: 2 });
  // Retention on the leader deleted everything below 100 (what the wire carries for this refusal).
  first.refuse({ code: 'OFFSET_OUT_OF_RANGE', message: 'offset 3 is below the log start 100', logRange: { logStartOffset: 100, logEndOffset: 120 } });
  const second = await leader.next();
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes(), store.epochs()], [100, 100, 0, []]);
  t.like(await fetchOffsetOf(second.body), { fetchOffset: 100, lastFetchedEpoch: -1 });
  second.answer(reply(batch(100, 3, ['x', 'y']), { logStartOffset: 100, logEndOffset: 102, highWatermark: 102 }));
  const third = await leader.next();
  t.like(await fetchOffsetOf(third.body), { fetchOffset: 102, lastFetchedEpoch: 3 });
  t.deepEqual([store.logStartOffset(), store.logEndOffset()], [100, 102]);
  t.is(follower.getSnapshot().context.logEndOffset, 102);
  follower.send({ type: 'STOP' });
  t.is(follower.getSnapshot().status, 'done');
});

test.serial('OFFSET_OUT_OF_RANGE for a fetch past the leader\'s end, or without the leader\'s range, leaves the log alone and is retried', async (t) => {
  const { follower, store, leader } = await start(async (s) => {
    await s.append([batch(0, 1, ['a', 'b', 'c', 'd', 'e']), batch(5, 2, ['f', 'g', 'h', 'i'])]);
  });
  const first = await leader.next();
  t.like(await fetchOffsetOf(first.body), { fetchOffset: 9 });
  // Above the leader's end: divergence, for the leader's divergingEpoch to settle, never a restart.
  first.refuse({ code: 'OFFSET_OUT_OF_RANGE', message: 'past the end', logRange: { logStartOffset: 2, logEndOffset: 5 } });
  const second = await leader.next();
  t.like(await fetchOffsetOf(second.body), { fetchOffset: 9 });
  second.refuse({ code: 'OFFSET_OUT_OF_RANGE', message: 'no range given' });
  const third = await leader.next();
  t.like(await fetchOffsetOf(third.body), { fetchOffset: 9 });
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.epochs().length], [0, 9, 2]);
  t.true(follower.getSnapshot().matches('fetching'));
  follower.send({ type: 'STOP' });
});
