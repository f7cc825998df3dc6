/**
 * The SDK consumer against an in-process fake partition leader (consume, ack and the subscription
 * registry) layered over the fake cluster (test/helpers/fake-transport.ts: metadata, topics,
 * produce), on a fake clock: nothing sleeps; time moves only through clock.advance().
 */
import test, { type ExecutionContext } from 'ava';
import { coalesceRanges } from '../src/client/ack-batcher.js';
import { utf8 } from '../src/client/codecs.js';
import { codecs, Tidemark, TidemarkError, type Consumer, type ConsumerOptions, type ErrorCode } from '../src/index.js';
import { encodeBatch, readBatchHeader, stampBatch } from '../src/protocol/batch.js';
import { decodeRequest, encodeError, encodeMessage } from '../src/protocol/messages.js';
import {
  deliveryRuns,
  ackRequest,
  consumeRequest,
  createSubscriptionRequest,
  encodeConsumeReply,
  type AckRequest,
  type ConsumePartitionReply,
  type ConsumeRequest,
} from '../src/protocol/subscription-messages.js';
import type { InboundMessage, SubscribeOptions, Subscription, Transport } from '../src/runtime/ports.js';
import { FakeClock, FakeCluster, SeededRandom, settle } from './helpers/fake-transport.js';

// --- a fake partition leader ------------------------------------------------------------------

interface SubPartition {
  /** Next offset never delivered. */
  next: number;
  acked: Set<number>;
  /** Deliveries so far per offset. */
  deliveries: Map<number, number>;
  /** Nacked or released offsets to deliver again, ascending. */
  redeliver: number[];
  /** Exclusive: the consumer holding it. */
  owner: string | undefined;
}

interface ConsumeCall {
  brokerId: number;
  body: ConsumeRequest;
  /** Messages the consumer held, and permits of its other requests in flight, as this one arrived. */
  bufferedAtArrival: number;
  permitsInFlightElsewhere: number;
}

/**
 * Plays the leader side of subscriptions over a FakeCluster: every offset goes to whoever asks
 * first (as a Shared subscription with one consumer), nacks come back at once with a higher
 * redelivery count, Exclusive refuses a second consumer with CONSUMER_BUSY.
 */
class FakeLeader implements Transport {
  readonly consumeCalls: ConsumeCall[] = [];
  readonly ackCalls: Array<{ brokerId: number; body: AckRequest }> = [];
  readonly createSubscriptionCalls: unknown[] = [];
  /** Per-partition errors a leader answers with. */
  partitionError: (brokerId: number, partition: number, op: 'consume' | 'ack') => ErrorCode | undefined = () => undefined;
  /** Offsets this consumer is meant to get (others are skipped, as if sent to another consumer). */
  deliverable: (partition: number, offset: number) => boolean = () => true;
  /** Read at each consume request's arrival, to check the window. */
  buffered: () => number = () => 0;
  holdAcks = false;
  private readonly heldAcks: Array<() => void> = [];
  private readonly subs = new Map<string, SubPartition>();
  private readonly waiters = new Set<() => void>();
  private readonly inFlight = new Map<ConsumeCall, number>();

  constructor(
    readonly cluster: FakeCluster,
    readonly clock: FakeClock,
  ) {}

  get maxPayloadBytes(): number {
    return this.cluster.maxPayloadBytes;
  }

  publish(subject: string, data: Uint8Array): void {
    this.cluster.publish(subject, data);
  }

  subscribe(subject: string, handler: (msg: InboundMessage) => void, options?: SubscribeOptions): Subscription {
    return this.cluster.subscribe(subject, handler, options);
  }

  requestMany(): Promise<Uint8Array[]> {
    return Promise.resolve([]);
  }

  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    const subjects = this.cluster.subjects;
    if (subjects.parseAdmin(subject)?.op === 'create-subscription') {
      const req = decodeRequest(data, createSubscriptionRequest);
      this.createSubscriptionCalls.push(req);
      const partitions = this.cluster.topics.get(req.topic)?.partitions.length ?? 1;
      return Promise.resolve(
        encodeMessage({ subscription: { name: req.name, id: 1, initialPosition: req.initialPosition, partitionsAtCreation: partitions }, created: true, metadataOffset: 0 }),
      );
    }
    const where = subjects.parseConsumer(subject);
    if (where === undefined) return this.cluster.request(subject, data, timeoutMs);
    const tokens = subject.split('.');
    const brokerId = Number(tokens[3]);
    if (!this.cluster.brokers.has(brokerId)) return Promise.reject(new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`));
    return tokens[4] === 'consume' ? this.consume(brokerId, where.topic, where.subscription, decodeRequest(data, consumeRequest)) : this.ack(brokerId, where.topic, where.subscription, decodeRequest(data, ackRequest));
  }

  /** New records: held polls look again. */
  wake(): void {
    for (const w of [...this.waiters]) w();
  }

  releaseAcks(): void {
    for (const run of this.heldAcks.splice(0)) run();
  }

  sub(topic: string, subscription: string, partition: number): SubPartition {
    const key = `${topic}/${subscription}/${partition}`;
    let s = this.subs.get(key);
    if (s === undefined) {
      s = { next: 0, acked: new Set(), deliveries: new Map(), redeliver: [], owner: undefined };
      this.subs.set(key, s);
    }
    return s;
  }

  private consume(brokerId: number, topic: string, subscription: string, req: ConsumeRequest): Promise<Uint8Array> {
    let elsewhere = 0;
    for (const [call, permits] of this.inFlight) if (call.body.consumerId === req.consumerId && call.brokerId !== brokerId) elsewhere += permits;
    const call: ConsumeCall = { brokerId, body: req, bufferedAtArrival: this.buffered(), permitsInFlightElsewhere: elsewhere };
    this.consumeCalls.push(call);
    if (req.close === true) {
      for (const { partition } of req.partitions) {
        const s = this.sub(topic, subscription, partition);
        if (s.owner === req.consumerId) s.owner = undefined;
        // What it held and did not acknowledge goes to the others.
        for (const [offset] of s.deliveries) if (!s.acked.has(offset) && !s.redeliver.includes(offset)) s.redeliver.push(offset);
        s.redeliver.sort((a, b) => a - b);
      }
      return Promise.resolve(encodeConsumeReply({ seq: 0, partitions: [] }));
    }
    this.inFlight.set(call, req.partitions.reduce((a, p) => a + p.permits, 0));
    return new Promise<Uint8Array>((resolve) => {
      let timer: unknown;
      const finish = (force: boolean): boolean => {
        const reply = this.answer(brokerId, topic, subscription, req);
        const delivered = reply.some((p) => (p.deliveries?.length ?? 0) > 0 || p.error !== undefined);
        if (!delivered && !force) return false;
        this.waiters.delete(waiter);
        if (timer !== undefined) this.clock.clearTimeout(timer);
        this.inFlight.delete(call);
        queueMicrotask(() => resolve(encodeConsumeReply({ seq: 0, partitions: reply })));
        return true;
      };
      const waiter = () => void finish(false);
      if (finish(req.maxWaitMs === 0)) return;
      this.waiters.add(waiter);
      timer = this.clock.setTimeout(() => finish(true), req.maxWaitMs);
    });
  }

  private answer(brokerId: number, topic: string, subscription: string, req: ConsumeRequest): ConsumePartitionReply[] {
    const t = this.cluster.topics.get(topic)!;
    return req.partitions.map(({ partition, permits }) => {
      const p = t.partitions[partition];
      if (p === undefined) return { partition, error: { code: 'UNKNOWN_TOPIC', message: 'no such partition' } };
      if (p.leader !== brokerId) return { partition, error: { code: 'NOT_LEADER', message: 'not leader' } };
      const injected = this.partitionError(brokerId, partition, 'consume');
      if (injected !== undefined) return { partition, error: { code: injected, message: `injected ${injected}` } };
      const s = this.sub(topic, subscription, partition);
      if (req.type === 'Exclusive') {
        if (s.owner !== undefined && s.owner !== req.consumerId) return { partition, error: { code: 'CONSUMER_BUSY', message: 'exclusive subscription has a consumer' } };
        s.owner = req.consumerId;
      }
      const offsets: number[] = [];
      while (offsets.length < permits && s.redeliver.length > 0) offsets.push(s.redeliver.shift()!);
      while (offsets.length < permits && s.next < p.logEndOffset) {
        const o = s.next++;
        if (this.deliverable(partition, o)) offsets.push(o);
      }
      offsets.sort((a, b) => a - b);
      const sent: Array<{ offset: number; redeliveryCount: number }> = [];
      for (const o of offsets) {
        const n = s.deliveries.get(o) ?? 0;
        sent.push({ offset: o, redeliveryCount: n });
        s.deliveries.set(o, n + 1);
      }
      const deliveries = deliveryRuns(sent);
      const batches = p.batches.filter((b) => {
        const h = readBatchHeader(b);
        return offsets.some((o) => o >= h.baseOffset && o < h.baseOffset + h.recordCount);
      });
      const records = new Uint8Array(batches.reduce((a, b) => a + b.length, 0));
      let at = 0;
      for (const b of batches) {
        records.set(b, at);
        at += b.length;
      }
      const backlog = p.logEndOffset - [...s.acked].filter((o) => o < p.logEndOffset).length;
      return offsets.length === 0 ? { partition, backlog } : { partition, records, deliveries, backlog };
    });
  }

  private ack(brokerId: number, topic: string, subscription: string, req: AckRequest): Promise<Uint8Array> {
    this.ackCalls.push({ brokerId, body: { ...req, partitions: req.partitions.map((e) => Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) as typeof e) } });
    return new Promise<Uint8Array>((resolve) => {
      const run = () => {
        const t = this.cluster.topics.get(topic)!;
        const partitions = req.partitions.map((entry) => {
          const { partition } = entry;
          if (t.partitions[partition]?.leader !== brokerId) return { partition, error: { code: 'NOT_LEADER', message: 'not leader' } };
          const injected = this.partitionError(brokerId, partition, 'ack');
          if (injected !== undefined) return { partition, error: { code: injected, message: `injected ${injected}` } };
          const s = this.sub(topic, subscription, partition);
          const ranges = entry.ranges ?? [];
          for (let i = 0; i < ranges.length; i += 2) for (let o = ranges[i]!; o < ranges[i + 1]!; o++) s.acked.add(o);
          if (entry.cumulative !== undefined) for (let o = 0; o < entry.cumulative; o++) s.acked.add(o);
          for (const o of entry.nacks ?? []) if (!s.acked.has(o) && !s.redeliver.includes(o)) s.redeliver.push(o);
          s.redeliver.sort((a, b) => a - b);
          return { partition };
        });
        queueMicrotask(() => resolve(encodeMessage({ partitions })));
        this.wake();
      };
      if (this.holdAcks) this.heldAcks.push(run);
      else run();
    });
  }
}

// Silences "unused" for encodeError (kept for whole-request error injection in future tests).
void encodeError;

// --- helpers ----------------------------------------------------------------------------------

function setup(partitions = 1, seed = 7) {
  const clock = new FakeClock();
  const cluster = new FakeCluster(clock);
  cluster.addTopic('orders', partitions);
  const leader = new FakeLeader(cluster, clock);
  const client = Tidemark.fromTransport(leader, { cluster: 'test', clock, random: new SeededRandom(seed) });
  return { clock, cluster, leader, client };
}

/** Appends one batch of string values to a partition, as its leader would. */
function append(cluster: FakeCluster, leader: FakeLeader, partition: number, values: string[], topic = 'orders'): void {
  const p = cluster.topics.get(topic)!.partitions[partition]!;
  const batch = encodeBatch(values.map((v) => ({ key: utf8(`k-${v}`), value: utf8(v), headers: { h: utf8(`h-${v}`) }, timestamp: 1_000 })));
  stampBatch(batch, p.logEndOffset, p.leaderEpoch);
  p.batches.push(batch);
  p.logEndOffset += values.length;
  leader.wake();
}

function options(extra: Partial<ConsumerOptions<string>> = {}): ConsumerOptions<string> {
  return { topic: 'orders', subscription: 'sub', codec: codecs.string(), ...extra };
}

/** The next message, moving the fake clock until it comes (at most `maxMs`). */
async function next<T>(clock: FakeClock, consumer: Consumer<T>, maxMs = 20_000) {
  let settled = false;
  const p = consumer.next();
  void p.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let waited = 0; !settled && waited < maxMs; waited += 10) await clock.advance(10);
  if (!settled) throw new Error(`no message within ${maxMs} ms`);
  return p;
}

async function take<T>(clock: FakeClock, consumer: Consumer<T>, n: number) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const r = await next(clock, consumer);
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

async function rejection(t: ExecutionContext, promise: Promise<unknown>): Promise<ErrorCode> {
  const error = await t.throwsAsync(promise, { instanceOf: TidemarkError });
  return (error as TidemarkError).code;
}

// --- tests ------------------------------------------------------------------------------------

test('coalesceRanges: sorted, de-duplicated [start, end) pairs', (t) => {
  t.deepEqual(coalesceRanges([]), []);
  t.deepEqual(coalesceRanges([5]), [5, 6]);
  t.deepEqual(coalesceRanges([5, 3, 4, 9, 4, 10, 12]), [3, 6, 9, 11, 12, 13]);
});

test('creating a consumer registers the subscription, and its first poll does not wait', async (t) => {
  const { leader, client } = setup();
  const consumer = await client.consumer(options({ initialPosition: 'earliest', type: 'Shared' }));
  t.deepEqual(leader.createSubscriptionCalls, [{ timeoutMs: 10_000, topic: 'orders', name: 'sub', initialPosition: 'earliest' }]);
  t.true(leader.consumeCalls.length >= 1);
  const first = leader.consumeCalls[0]!.body;
  t.is(first.maxWaitMs, 0);
  t.is(first.type, 'Shared');
  t.is(first.consumerId, consumer.consumerId);
  t.deepEqual(first.partitions.map(({ partition, permits }) => ({ partition, permits })), [{ partition: 0, permits: 1000 }]);
  t.is(first.sessionTimeoutMs, 10_000);
  await client.close();
});

test('messages carry key, headers, offset and redelivery count; only delivered offsets of a batch are yielded', async (t) => {
  const { clock, cluster, leader, client } = setup();
  leader.deliverable = (_partition, offset) => offset % 2 === 0;
  append(cluster, leader, 0, ['a', 'b', 'c', 'd', 'e', 'f']);
  const consumer = await client.consumer(options());
  const got = await take(clock, consumer, 3);
  t.deepEqual(
    got.map((m) => [m.offset, m.value, m.keyString, m.headerString('h'), m.redeliveryCount, m.partition, m.topic, m.timestamp]),
    [
      [0, 'a', 'k-a', 'h-a', 0, 0, 'orders', 1000],
      [2, 'c', 'k-c', 'h-c', 0, 0, 'orders', 1000],
      [4, 'e', 'k-e', 'h-e', 0, 0, 'orders', 1000],
    ],
  );
  t.is(consumer.buffered, 0);
  await client.close();
});

test('permits never exceed the free part of the receive window, across brokers', async (t) => {
  const { clock, cluster, leader, client } = setup(3);
  cluster.moveLeader('orders', 1, 2);
  cluster.moveLeader('orders', 2, 3);
  for (let p = 0; p < 3; p++) for (let i = 0; i < 10; i++) append(cluster, leader, p, Array.from({ length: 5 }, (_, j) => `${p}-${i * 5 + j}`));
  const consumer = await client.consumer(options({ receiverQueueSize: 10 }));
  leader.buffered = () => consumer.buffered;
  const got = await take(clock, consumer, 150);
  t.is(got.length, 150);
  t.is(new Set(got.map((m) => m.value)).size, 150);
  for (const call of leader.consumeCalls) {
    const permits = call.body.partitions.reduce((a, p) => a + p.permits, 0);
    t.true(permits + call.bufferedAtArrival + call.permitsInFlightElsewhere <= 10, `permits ${permits} + held ${call.bufferedAtArrival} + elsewhere ${call.permitsInFlightElsewhere}`);
  }
  t.true(leader.consumeCalls.some((c) => c.brokerId === 2) && leader.consumeCalls.some((c) => c.brokerId === 3));
  // Each broker sees only the partitions it leads.
  for (const call of leader.consumeCalls) t.true(call.body.partitions.every((p) => p.partition === call.brokerId - 1));
  await client.close();
});

test('a full window stops asking; an empty poll every maxWaitMs keeps the session alive', async (t) => {
  const { clock, cluster, leader, client } = setup();
  append(cluster, leader, 0, Array.from({ length: 20 }, (_, i) => `v${i}`));
  const consumer = await client.consumer(options({ receiverQueueSize: 5, maxWaitMs: 500 }));
  await clock.advance(10);
  t.is(consumer.buffered, 5);
  const before = leader.consumeCalls.length;
  await clock.advance(2_000);
  const idle = leader.consumeCalls.slice(before);
  t.true(idle.length >= 3 && idle.length <= 5, `${idle.length} keepalives in 2 s`);
  t.true(idle.every((c) => c.body.partitions.every((p) => p.permits === 0) && c.body.maxWaitMs === 0));
  t.is(consumer.buffered, 5);
  await client.close();
});

test('with maxWaitMs 0 a full consumer still polls only every 100 ms', async (t) => {
  const { clock, cluster, leader, client } = setup();
  append(cluster, leader, 0, Array.from({ length: 5 }, (_, i) => `v${i}`));
  const consumer = await client.consumer(options({ receiverQueueSize: 2, maxWaitMs: 0 }));
  await clock.advance(10);
  t.is(consumer.buffered, 2);
  const before = leader.consumeCalls.length;
  await clock.advance(1_000);
  const polls = leader.consumeCalls.length - before;
  t.true(polls >= 9 && polls <= 11, `${polls} polls in 1 s`);
  await client.close();
});

test('acks coalesce into ranges in one request and resolve when the leader answers', async (t) => {
  const { clock, cluster, leader, client } = setup();
  append(cluster, leader, 0, ['a', 'b', 'c', 'd', 'e', 'f']);
  const consumer = await client.consumer(options());
  const got = await take(clock, consumer, 6);
  leader.holdAcks = true;
  let resolved = 0;
  const acks = [0, 1, 2, 4, 5].map((i) => got[i]!.ack().then(() => resolved++));
  got[3]!.nack();
  await settle();
  t.is(leader.ackCalls.length, 1);
  t.deepEqual(leader.ackCalls[0]!.body.partitions, [{ partition: 0, ranges: [0, 3, 4, 6], nacks: [3], nackDelayMs: 1000 }]);
  t.is(resolved, 0, 'not durable yet');
  leader.releaseAcks();
  await Promise.all(acks);
  t.is(resolved, 5);
  // The nacked message comes back with a higher redelivery count.
  const again = await next(clock, consumer);
  t.is(again.value?.offset, 3);
  t.is(again.value?.redeliveryCount, 1);
  await client.close();
});

test('acks made while one ack request is in flight go together in the next', async (t) => {
  const { clock, cluster, leader, client } = setup();
  append(cluster, leader, 0, ['a', 'b', 'c', 'd']);
  const consumer = await client.consumer(options());
  const got = await take(clock, consumer, 4);
  leader.holdAcks = true;
  const first = consumer.ack(got[0]!);
  await settle();
  const rest = [consumer.ack(got[1]!), consumer.ack(got[3]!)];
  await settle();
  t.is(leader.ackCalls.length, 1);
  leader.releaseAcks();
  await first;
  await settle();
  t.is(leader.ackCalls.length, 2);
  t.deepEqual(leader.ackCalls[1]!.body.partitions, [{ partition: 0, ranges: [1, 2, 3, 4] }]);
  leader.releaseAcks();
  await Promise.all(rest);
  await client.close();
});

test('a retriable error reroutes the partition to its new leader after a metadata refresh; acks follow it', async (t) => {
  const { clock, cluster, leader, client } = setup();
  append(cluster, leader, 0, ['a', 'b']);
  const consumer = await client.consumer(options());
  const got = await take(clock, consumer, 2);
  const metadataBefore = cluster.callsOf('metadata').length;
  cluster.moveLeader('orders', 0, 2);
  append(cluster, leader, 0, ['c']);
  const c = await next(clock, consumer);
  t.is(c.value?.value, 'c');
  t.true(cluster.callsOf('metadata').length > metadataBefore, 'metadata refreshed');
  t.true(leader.consumeCalls.some((call) => call.brokerId === 2));
  await Promise.all([...got, c.value!].map((m) => m.ack()));
  t.true(leader.ackCalls.every((a) => a.brokerId === 2));
  await client.close();
});

test('an ack answered NOT_LEADER is retried at the new leader after a metadata refresh', async (t) => {
  const { clock, cluster, leader, client } = setup();
  append(cluster, leader, 0, ['a', 'b']);
  const consumer = await client.consumer(options());
  const got = await take(clock, consumer, 2);
  cluster.moveLeader('orders', 0, 2);
  const acks = Promise.all(got.map((m) => m.ack()));
  for (let i = 0; i < 100 && leader.ackCalls.length < 2; i++) await clock.advance(10);
  await acks;
  t.deepEqual(
    leader.ackCalls.map((a) => a.brokerId),
    [1, 2],
  );
  t.deepEqual(leader.ackCalls[1]!.body.partitions, [{ partition: 0, ranges: [0, 2] }]);
  t.true(leader.sub('orders', 'sub', 0).acked.has(1));
  await client.close();
});

test('UNKNOWN_SUBSCRIPTION (registry not yet known at the leader) is retried', async (t) => {
  const { clock, cluster, leader, client } = setup();
  let refusals = 3;
  leader.partitionError = (_b, _p, op) => (op === 'consume' && refusals-- > 0 ? 'UNKNOWN_SUBSCRIPTION' : undefined);
  append(cluster, leader, 0, ['a']);
  const consumer = await client.consumer(options());
  const a = await next(clock, consumer);
  t.is(a.value?.value, 'a');
  t.true(refusals < 0, 'refused three times first');
  await client.close();
});

test('a second Exclusive consumer fails fast with CONSUMER_BUSY', async (t) => {
  const { leader, client } = setup();
  const first = await client.consumer(options());
  t.is(await rejection(t, client.consumer(options())), 'CONSUMER_BUSY');
  // The first one is unaffected; a Shared consumer on another subscription is fine.
  t.is(first.type, 'Exclusive');
  const other = await client.consumer(options({ subscription: 'other', type: 'Shared' }));
  t.is(other.type, 'Shared');
  t.true(leader.consumeCalls.length >= 3);
  await client.close();
});

test('CONSUMER_BUSY after startup is thrown by the iterator', async (t) => {
  const { clock, leader, client } = setup();
  const consumer = await client.consumer(options());
  leader.partitionError = () => 'CONSUMER_BUSY';
  t.is(await rejection(t, next(clock, consumer)), 'CONSUMER_BUSY');
  await client.close();
});

test('cumulative ack is refused locally on Shared and Key_Shared, allowed on Exclusive', async (t) => {
  const { clock, cluster, leader, client } = setup();
  append(cluster, leader, 0, ['a', 'b', 'c']);
  const shared = await client.consumer(options({ type: 'Shared', subscription: 's1' }));
  const [m] = await take(clock, shared, 1);
  t.is(await rejection(t, shared.ackCumulative(m!)), 'CUMULATIVE_ACK_NOT_ALLOWED');
  await settle();
  t.is(leader.ackCalls.length, 0, 'nothing sent');
  const keyShared = await client.consumer(options({ type: 'Key_Shared', subscription: 's2' }));
  const [k] = await take(clock, keyShared, 1);
  t.is(await rejection(t, keyShared.ackCumulative(k!)), 'CUMULATIVE_ACK_NOT_ALLOWED');
  const exclusive = await client.consumer(options({ subscription: 's3' }));
  const got = await take(clock, exclusive, 3);
  await exclusive.ackCumulative(got[1]!);
  t.deepEqual(leader.ackCalls.at(-1)!.body.partitions, [{ partition: 0, cumulative: 2 }]);
  await client.close();
});

test('dead letters: a message redelivered maxRedeliverCount times is produced to the DLQ, then acknowledged', async (t) => {
  const { clock, cluster, leader, client } = setup();
  append(cluster, leader, 0, ['ok', 'poison']);
  const consumer = await client.consumer(options({ type: 'Shared', deadLetterPolicy: { maxRedeliverCount: 2 } }));
  const seen: Array<[string | null, number]> = [];
  for (;;) {
    const r = await next(clock, consumer);
    const m = r.value!;
    seen.push([m.value, m.redeliveryCount]);
    if (m.value === 'ok') await m.ack();
    else m.nack();
    if (seen.filter(([v]) => v === 'poison').length === 2) break;
  }
  t.deepEqual(seen, [
    ['ok', 0],
    ['poison', 0],
    ['poison', 1],
  ]);
  // The third delivery (count 2) goes to the DLQ, not to the application.
  const deadLetters = () => (cluster.topics.has('orders-sub-DLQ') ? cluster.records('orders-sub-DLQ', 0) : []);
  for (let i = 0; i < 200 && deadLetters().length === 0; i++) await clock.advance(10);
  for (let i = 0; i < 50 && !leader.sub('orders', 'sub', 0).acked.has(1); i++) await clock.advance(10);
  t.true(cluster.topics.has('orders-sub-DLQ'));
  const dead = deadLetters();
  t.is(dead.length, 1);
  t.deepEqual(dead[0]!.value, utf8('poison'));
  t.deepEqual(dead[0]!.key, utf8('k-poison'));
  t.deepEqual(dead[0]!.headers['tidemark-dlq-origin-offset'], utf8('1'));
  t.true(leader.sub('orders', 'sub', 0).acked.has(1), 'acknowledged after the DLQ write');
  t.is(consumer.buffered, 0);
  await client.close();
});

test('deadLetterPolicy is refused on Exclusive (Shared and Key_Shared only, as Pulsar)', async (t) => {
  const { client } = setup();
  t.is(await rejection(t, client.consumer(options({ deadLetterPolicy: { maxRedeliverCount: 3 } }))), 'INVALID_REQUEST');
  t.is(await rejection(t, client.consumer(options({ maxWaitMs: 5000, sessionTimeoutMs: 10_000 }))), 'INVALID_REQUEST');
  await client.close();
});

test('close flushes acks, sends close:true to each leader, and ends a pending next()', async (t) => {
  const { clock, cluster, leader, client } = setup(2);
  cluster.moveLeader('orders', 1, 2);
  append(cluster, leader, 0, ['a']);
  const consumer = await client.consumer(options());
  const [a] = await take(clock, consumer, 1);
  const acked = a!.ack();
  const pending = consumer.next();
  await consumer.close();
  await acked;
  t.deepEqual(await pending, { done: true, value: undefined });
  const closes = leader.consumeCalls.filter((c) => c.body.close === true);
  t.deepEqual(closes.map((c) => c.brokerId).sort(), [1, 2]);
  t.deepEqual(closes.find((c) => c.brokerId === 1)!.body.partitions.map(({ partition, permits }) => ({ partition, permits })), [{ partition: 0, permits: 0 }]);
  t.true(leader.ackCalls.length === 1);
  t.is(await rejection(t, a!.ack()), 'CLOSED');
  await client.close();
});

test('partitions added to the topic are picked up on the periodic metadata refresh', async (t) => {
  const { clock, cluster, leader, client } = setup(1);
  const consumer = await client.consumer(options({ metadataRefreshMs: 1000 }));
  const topic = cluster.topics.get('orders')!;
  topic.partitions.push({ leader: 2, leaderEpoch: 0, replicas: [2], batches: [], logStartOffset: 0, logEndOffset: 0 });
  append(cluster, leader, 1, ['new']);
  const m = await next(clock, consumer);
  t.is(m.value?.partition, 1);
  t.is(m.value?.value, 'new');
  await client.close();
});

test('backlog and caughtUp follow the replies and the acks', async (t) => {
  const { clock, cluster, leader, client } = setup(2);
  append(cluster, leader, 0, ['a', 'b']);
  const consumer = await client.consumer(options({ maxWaitMs: 100 }));
  const got = await take(clock, consumer, 2);
  t.is(consumer.backlog(), 2);
  t.false(consumer.caughtUp());
  await Promise.all(got.map((m) => m.ack()));
  for (let i = 0; i < 50 && !consumer.caughtUp(); i++) await clock.advance(10);
  t.true(consumer.caughtUp());
  t.is(consumer.backlog(), 0);
  await client.close();
});

test('a mixed run: acks and nacks at random, a leader move midway; everything is acknowledged once, the window holds', async (t) => {
  const { clock, cluster, leader, client } = setup(3);
  cluster.moveLeader('orders', 2, 2);
  for (let p = 0; p < 3; p++) for (let i = 0; i < 10; i++) append(cluster, leader, p, Array.from({ length: 10 }, (_, j) => `${p}-${i * 10 + j}`));
  const consumer = await client.consumer(options({ type: 'Shared', receiverQueueSize: 25, nackRedeliveryDelayMs: 0 }));
  leader.buffered = () => consumer.buffered;
  const random = new SeededRandom(3);
  const acked = new Set<string>();
  const acks: Promise<void>[] = [];
  let received = 0;
  while (acked.size < 300) {
    const r = await next(clock, consumer);
    const m = r.value!;
    received++;
    if (received === 100) cluster.moveLeader('orders', 0, 3);
    if (random.next() < 0.1) m.nack();
    else {
      acked.add(m.value!);
      acks.push(m.ack());
    }
  }
  await Promise.all(acks);
  t.is(acked.size, 300);
  for (let p = 0; p < 3; p++) t.is(leader.sub('orders', 'sub', p).acked.size, 100, `partition ${p} fully acknowledged`);
  for (const call of leader.consumeCalls) {
    const permits = call.body.partitions.reduce((a, p) => a + p.permits, 0);
    t.true(permits + call.bufferedAtArrival + call.permitsInFlightElsewhere <= 25);
  }
  t.true(leader.consumeCalls.some((c) => c.brokerId === 3));
  await client.close();
});
