/**
 * The broker's subscription host over a real partition store (memory) and a stand-in leader that
 * commits every append at once: deliveries, durable acks, recovery by a new leader from the cursor
 * records in the log, a lost reply redelivered, a silent consumer's messages moved on, and the
 * rule that nothing is delivered before a cursor record of the leadership committed.
 */
import test from 'ava';
import { decode } from '@msgpack/msgpack';
import { pino } from 'pino';
import { SubscriptionHost } from '../src/actors/subscription/host.js';
import { decodeBatch, encodeBatch, isControlBatch, readBatchHeader, splitBatches, stampBatch } from '../src/protocol/batch.js';
import { forEachDelivery, type AckReply, type ConsumeReply, type ConsumeRequest, type SubscriptionMetadata, type SubscriptionType } from '../src/protocol/subscription-messages.js';
import { createMemoryNodeStorage } from '../src/storage/memory-storage.js';
import type { PartitionStore } from '../src/storage/partition-store.js';
import { SimClock, settle } from './helpers/sim-network.js';

const TOPIC_ID = 'ab'.repeat(16);
const silent = pino({ level: 'silent' });

interface Leader {
  host: SubscriptionHost;
  store: PartitionStore;
  clock: SimClock;
  subs: SubscriptionMetadata[];
  /** Cursor appends held back until released (false: committed at once). */
  holdAppends: boolean;
  held: Array<() => void>;
  produce(keys: readonly string[]): Promise<void>;
}

async function leader(options: { store?: PartitionStore; subs?: SubscriptionMetadata[]; epoch?: number; clock?: SimClock; leaseMs?: number; follows?: () => boolean } = {}): Promise<Leader> {
  const storage = createMemoryNodeStorage();
  const store = options.store ?? (await storage.openPartition({ topicId: TOPIC_ID, partition: 0 }));
  const clock = options.clock ?? new SimClock();
  const epoch = options.epoch ?? 1;
  const l: Leader = {
    store,
    clock,
    subs: options.subs ?? [],
    holdAppends: false,
    held: [],
    host: undefined as unknown as SubscriptionHost,
    produce: async (keys) => {
      const batch = encodeBatch(keys.map((k) => ({ key: new TextEncoder().encode(k), value: new TextEncoder().encode(`v-${k}`), headers: {}, timestamp: clock.now() })));
      stampBatch(batch, store.logEndOffset(), epoch);
      await store.append([batch]);
      l.host.committed(TOPIC_ID, 0, epoch, store.logEndOffset(), store.logStartOffset());
    },
  };
  const append = async (batch: Uint8Array) => {
    const base = store.logEndOffset();
    stampBatch(batch, base, epoch);
    await store.append([batch]);
    l.host.committed(TOPIC_ID, 0, epoch, store.logEndOffset(), store.logStartOffset());
    return base;
  };
  l.host = new SubscriptionHost({
    clock,
    logger: silent,
    maxPayloadBytes: 1024 * 1024,
    subscriptionsOf: () => l.subs,
    topicIdOf: () => TOPIC_ID,
    topicNameOf: () => 't',
    openStore: async () => store,
    leaseMs: options.leaseMs ?? 0,
    ...(options.follows === undefined ? {} : { followersFollow: options.follows }),
    appendControl: (_t, _p, _e, batch) =>
      l.holdAppends ? new Promise<number>((resolve) => l.held.push(() => void append(batch).then(resolve))) : append(batch),
  });
  l.host.committed(TOPIC_ID, 0, epoch, store.logEndOffset(), store.logStartOffset());
  await settle();
  return l;
}

function subscription(name: string, initialPosition: 'earliest' | 'latest' = 'earliest'): SubscriptionMetadata {
  return { name, id: 7, initialPosition, partitionsAtCreation: 1 };
}

function request(consumerId: string, type: SubscriptionType, extra: Partial<ConsumeRequest> = {}): ConsumeRequest {
  return {
    timeoutMs: 5000,
    consumerId,
    consumerName: consumerId,
    priorityLevel: 0,
    type,
    sessionTimeoutMs: 2000,
    ackTimeoutMs: 0,
    partitions: [{ partition: 0, permits: 100 }],
    maxBytes: 1024 * 1024,
    maxWaitMs: 200,
    ...extra,
  };
}

async function poll(l: Leader, sub: string, req: ConsumeRequest): Promise<{ seq: number; offsets: number[]; counts: number[]; values: string[] }> {
  let reply: ConsumeReply | undefined;
  l.host.consume('t', sub, req, (data) => (reply = decode(data) as ConsumeReply));
  for (let i = 0; i < 50 && reply === undefined; i++) await settle();
  // Nothing to deliver: the poll is held until its maxWaitMs.
  if (reply === undefined) await l.clock.run(req.maxWaitMs);
  if (reply === undefined) throw new Error('no reply');
  const p = reply.partitions[0];
  if (p?.error !== undefined) throw new Error(`${p.error.code}: ${p.error.message}`);
  const offsets: number[] = [];
  const counts: number[] = [];
  forEachDelivery(p?.deliveries ?? [], (offset, count) => {
    offsets.push(offset);
    counts.push(count);
  });
  const records = p?.records === undefined ? [] : splitBatches(p.records).flatMap((b) => (isControlBatch(b) ? [] : decodeBatch(b)));
  const values = offsets.map((o) => new TextDecoder().decode(records.find((r) => r.offset === o)!.value!));
  return { seq: reply.seq, offsets, counts, values };
}

async function ack(l: Leader, sub: string, consumerId: string, offsets: number[], cumulative?: number): Promise<AckReply> {
  let reply: AckReply | undefined;
  const ranges = offsets.flatMap((o) => [o, o + 1]);
  l.host.ack('t', sub, { timeoutMs: 5000, consumerId, partitions: [{ partition: 0, ranges, ...(cumulative === undefined ? {} : { cumulative }) }] }, (data) => (reply = decode(data) as AckReply));
  for (let i = 0; i < 50 && reply === undefined; i++) await settle();
  if (reply === undefined) throw new Error('no ack reply');
  return reply;
}

const keys = (n: number, prefix = 'k') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

test('two Shared consumers get disjoint messages whose union is everything; acks are durable', async (t) => {
  const l = await leader({ subs: [subscription('s')] });
  await l.produce(keys(10));
  await settle();
  const a = await poll(l, 's', request('a', 'Shared', { partitions: [{ partition: 0, permits: 4 }] }));
  const b = await poll(l, 's', request('b', 'Shared', { partitions: [{ partition: 0, permits: 100 }] }));
  t.is(a.offsets.length, 4);
  t.deepEqual([...a.values, ...b.values].sort(), keys(10).map((k) => `v-${k}`).sort());
  t.is(new Set([...a.offsets, ...b.offsets]).size, 10);
  t.deepEqual(a.values.slice(0, 1), ['v-k0']);
  const reply = await ack(l, 's', 'a', [...a.offsets, ...b.offsets]);
  t.deepEqual(reply.partitions, [{ partition: 0 }]);
  const described = await l.host.admin('t', { timeoutMs: 1000, op: 'describe', partitions: [0] });
  const info = described.partitions[0]!.subscriptions![0]!;
  // Everything up to the last record is acknowledged (the cursor records themselves are skipped).
  t.true(info.markDelete >= Math.max(...a.offsets, ...b.offsets) + 1);
  t.is(info.backlog, 0);
});

test('a new leader recovers the cursor from the log and delivers only what was not acknowledged', async (t) => {
  const first = await leader({ subs: [subscription('s')] });
  await first.produce(keys(6));
  await settle();
  const got = await poll(first, 's', request('a', 'Exclusive'));
  t.deepEqual(got.values, keys(6).map((k) => `v-${k}`));
  await ack(first, 's', 'a', [got.offsets[0]!, got.offsets[1]!, got.offsets[3]!]);
  first.host.close();
  const second = await leader({ store: first.store, subs: [subscription('s')], epoch: 2 });
  await settle();
  const again = await poll(second, 's', request('b', 'Exclusive'));
  t.deepEqual(again.values, ['v-k2', 'v-k4', 'v-k5']);
});

test('a reply the consumer did not receive is delivered again, its redelivery count unchanged', async (t) => {
  const l = await leader({ subs: [subscription('s')] });
  await l.produce(keys(3));
  await settle();
  const lost = await poll(l, 's', request('a', 'Shared'));
  t.is(lost.offsets.length, 3);
  // The next request says it received nothing (received 0), so reply `lost.seq` went missing.
  const again = await poll(l, 's', request('a', 'Shared', { received: 0 }));
  t.deepEqual(again.offsets, lost.offsets);
  t.deepEqual(again.counts, [0, 0, 0]);
  // Said received: nothing is sent twice.
  const next = await poll(l, 's', request('a', 'Shared', { received: again.seq }));
  t.deepEqual(next.offsets, []);
});

test('a new session numbers its replies on from what the consumer says it received: its lost reply is delivered again (sim seed 609765072)', async (t) => {
  const l = await leader({ subs: [subscription('s')] });
  // An empty reply, received: the consumer now says `received: 1` to this broker.
  const first = await poll(l, 's', request('a', 'Exclusive'));
  t.deepEqual(first.offsets, []);
  // Its next polls are lost: the broker drops the silent session (and detaches the consumer).
  await l.clock.run(2500);
  l.host.tick();
  await l.produce(keys(3));
  await settle();
  // The consumer polls again, saying it last got reply `first.seq`; a new session delivers, and that reply is lost.
  const lost = await poll(l, 's', request('a', 'Exclusive', { received: first.seq }));
  t.is(lost.offsets.length, 3);
  t.true(lost.seq > first.seq);
  // Its next request still says `first.seq`: the lost reply's messages come back, count unchanged.
  const again = await poll(l, 's', request('a', 'Exclusive', { received: first.seq }));
  t.deepEqual(again.offsets, lost.offsets);
  t.deepEqual(again.counts, [0, 0, 0]);
});

test('a consumer silent past its session timeout loses its messages to the others, counted as redeliveries', async (t) => {
  const l = await leader({ subs: [subscription('s')] });
  await l.produce(keys(4));
  await settle();
  const a = await poll(l, 's', request('a', 'Shared'));
  t.is(a.offsets.length, 4);
  await poll(l, 's', request('b', 'Shared', { partitions: [{ partition: 0, permits: 0 }] }));
  // b keeps polling; a says nothing for longer than its session timeout.
  for (let i = 0; i < 5; i++) {
    await l.clock.run(500);
    l.host.tick();
    await poll(l, 's', request('b', 'Shared', { partitions: [{ partition: 0, permits: 0 }] }));
  }
  const b = await poll(l, 's', request('b', 'Shared'));
  t.deepEqual(b.offsets, a.offsets);
  t.true(b.counts.every((c) => c === 1));
});

test('nothing is delivered before a cursor record of the leadership has committed', async (t) => {
  const l = await leader();
  await l.produce(keys(2));
  l.holdAppends = true;
  l.subs.push(subscription('s', 'latest'));
  l.host.metadataChanged();
  await settle();
  await l.produce(keys(3, 'n'));
  await settle();
  const before = await poll(l, 's', request('a', 'Exclusive'));
  t.deepEqual(before.offsets, []);
  l.held.splice(0).forEach((release) => release());
  await settle();
  await settle();
  const after = await poll(l, 's', request('a', 'Exclusive'));
  // 'latest' placed the cursor at the high watermark when the subscription arrived: only n0..n2.
  t.deepEqual(after.values, ['v-n0', 'v-n1', 'v-n2']);
});

test('cumulative ack is refused on Shared and accepted on Failover', async (t) => {
  const l = await leader({ subs: [subscription('s'), { ...subscription('f'), id: 8 }] });
  await l.produce(keys(3));
  await settle();
  await poll(l, 's', request('a', 'Shared'));
  const refused = await ack(l, 's', 'a', [], 2);
  t.is(refused.partitions[0]!.error?.code, 'CUMULATIVE_ACK_NOT_ALLOWED');
  const got = await poll(l, 'f', request('a', 'Failover'));
  t.deepEqual(got.values, ['v-k0', 'v-k1', 'v-k2']);
  const accepted = await ack(l, 'f', 'a', [], got.offsets[2]! + 1);
  t.deepEqual(accepted.partitions, [{ partition: 0 }]);
});

test("a new leader whose high watermark has not caught up keeps a retried ack (it names a record below the log end)", async (t) => {
  const first = await leader({ subs: [subscription('s')] });
  await first.produce(keys(4));
  await settle();
  const got = await poll(first, 's', request('a', 'Exclusive'));
  first.host.close();
  // The successor's high watermark starts low and climbs as followers report; the ack comes now.
  const second = await leader({ store: first.store, subs: [subscription('s')], epoch: 2 });
  await settle();
  second.host.committed(TOPIC_ID, 0, 2, 0, 0);
  const reply = await ack(second, 's', 'b', [got.offsets[0]!, got.offsets[1]!]);
  t.deepEqual(reply.partitions, [{ partition: 0 }]);
  const third = await leader({ store: first.store, subs: [subscription('s')], epoch: 3 });
  await settle();
  const again = await poll(third, 's', request('c', 'Exclusive'));
  t.deepEqual(again.values, ['v-k2', 'v-k3']);
});

test('a deposed leader that has not heard refuses acks past its log end instead of calling them durable', async (t) => {
  // A stale leader: its cursor is clean (every ack it took is durable), its log shorter than the
  // real leader's, whose deliveries the consumer acknowledges here because its metadata is behind.
  const stale = await leader({ subs: [subscription('s'), { ...subscription('f'), id: 8 }] });
  await stale.produce(keys(3));
  await settle();
  const got = await poll(stale, 's', request('a', 'Shared'));
  t.deepEqual((await ack(stale, 's', 'a', got.offsets)).partitions, [{ partition: 0 }]);
  await settle();
  const end = stale.store.logEndOffset();
  // Offsets the real leader delivered, past this log's end: nothing here can make them durable.
  const ranges = await ack(stale, 's', 'a', [end, end + 1]);
  t.is(ranges.partitions[0]!.error?.code, 'NOT_LEADER');
  const cumulative = await ack(stale, 'f', 'a', [], end + 2);
  t.is(cumulative.partitions[0]!.error?.code, 'NOT_LEADER');
  // Acks within the log are taken as before.
  t.deepEqual((await ack(stale, 's', 'a', [got.offsets[0]!])).partitions, [{ partition: 0 }]);
});

test('the delivery lease: a new leader waits one lease; a leader its followers stopped copying from delivers nothing', async (t) => {
  const first = await leader({ subs: [subscription('s')] });
  await first.produce(keys(3));
  first.host.close();
  let following = true;
  const second = await leader({ store: first.store, subs: [subscription('s')], epoch: 2, leaseMs: 1000, follows: () => following, clock: first.clock });
  await settle();
  const early = await poll(second, 's', request('a', 'Shared'));
  t.deepEqual(early.values, [], 'within the lease after taking over: nothing');
  await second.clock.run(1000);
  const later = await poll(second, 's', request('a', 'Shared', { received: early.seq }));
  t.deepEqual(later.values, ['v-k0', 'v-k1', 'v-k2']);
  await second.produce(keys(1, 'z'));
  following = false; // a follower was elected elsewhere: it no longer copies from this leader
  const deposed = await poll(second, 's', request('a', 'Shared', { received: later.seq }));
  t.deepEqual(deposed.values, []);
});

test('a batch the consumer says it holds goes as deliveries only: a batch handed out in slices is sent once', async (t) => {
  const l = await leader({ subs: [subscription('s')] });
  await l.produce(keys(6)); // one batch of six records
  await settle();
  let reply: ConsumeReply | undefined;
  const raw = (req: ConsumeRequest) =>
    new Promise<ConsumeReply>((resolve) => {
      l.host.consume('t', 's', req, (data) => resolve((reply = decode(data) as ConsumeReply)));
      void l.clock.run(req.maxWaitMs);
    });
  const first = await raw(request('a', 'Exclusive', { partitions: [{ partition: 0, permits: 2 }] }));
  const records = first.partitions[0]!.records!;
  t.true(records.length > 0);
  const base = splitBatches(records).map((b) => readBatchHeader(b).baseOffset)[0]!;
  const second = await raw(request('a', 'Exclusive', { received: first.seq, partitions: [{ partition: 0, permits: 2, cached: [base] }] }));
  t.is(second.partitions[0]!.records?.length ?? 0, 0, 'no bytes again');
  const offsets: number[] = [];
  forEachDelivery(second.partitions[0]!.deliveries ?? [], (o) => offsets.push(o));
  t.deepEqual(offsets, [base + 2, base + 3]);
  t.truthy(reply);
});
