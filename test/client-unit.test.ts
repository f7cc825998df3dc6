/**
 * SDK unit tests over an in-memory cluster (test/helpers/fake-transport.ts) and a fake clock:
 * nothing sleeps; time moves only through clock.advance().
 */
import test, { type ExecutionContext } from 'ava';
import { Accumulator, type PendingSend, type PipelineState, type ReadyBatch } from '../src/client/accumulator.js';
import { utf8 } from '../src/client/codecs.js';
import { backoffMs, retry, retryPolicy } from '../src/runtime/retry.js';
import { codecs, murmur2, partitionForKey, Tidemark, TidemarkError, toPositive, type ErrorCode, type RecordMetadata } from '../src/index.js';
import { BATCH_HEADER_BYTES, decodeBatch, recordBytes, type BatchRecord } from '../src/protocol/batch.js';
import { FakeClock, FakeCluster, SeededRandom, settle } from './helpers/fake-transport.js';

interface Order {
  id: number;
  item: string;
}

function setup(partitions = 1, seed = 7) {
  const clock = new FakeClock();
  const cluster = new FakeCluster(clock);
  cluster.addTopic('orders', partitions);
  const client = Tidemark.fromTransport(cluster, { cluster: 'test', clock, random: new SeededRandom(seed) });
  return { clock, cluster, client };
}

async function rejection(t: ExecutionContext, promise: Promise<unknown>): Promise<ErrorCode> {
  const error = await t.throwsAsync(promise, { instanceOf: TidemarkError });
  return (error as TidemarkError).code;
}

/** Records of produce calls, in the order the fake saw them: e.g. [2, 2, 1]. */
const produceShape = (cluster: FakeCluster) => cluster.callsOf('produce').map((c) => `${c.brokerId}:${c.recordCount}`);

const storedIds = (cluster: FakeCluster, partition = 0) =>
  cluster.records('orders', partition).map((r) => (codecs.json<Order>().decode(r.value!)).id);

// --- partitioner ------------------------------------------------------------------------------

test('murmur2 matches Kafka Utils.murmur2 (UtilsTest vectors)', (t) => {
  const kafkaUtilsTest: Array<[string, number]> = [
    ['21', -973932308],
    ['foobar', -790332482],
    ['a-little-bit-long-string', -985981536],
    ['a-little-bit-longer-string', -1486304829],
    ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
    ['abc', 479470107],
  ];
  // Also every tail length 1..5 (vectors computed with Kafka's implementation, as used by Akka's Murmur2Spec).
  const tails: Array<[string, number]> = [
    ['1', -1993445489],
    ['12', 126087238],
    ['123', -267702483],
    ['1234', -1614185708],
    ['12345', -1188365604],
  ];
  for (const [key, hash] of [...kafkaUtilsTest, ...tails]) t.is(murmur2(utf8(key)), hash, key);
});

test('keys pick partitions as Kafka does: toPositive(murmur2) % n', (t) => {
  t.is(toPositive(-1), 0x7fffffff);
  t.is(toPositive(-(2 ** 31)), 0);
  t.is(toPositive(479470107), 479470107);
  t.is(partitionForKey(utf8('21'), 7), (-973932308 & 0x7fffffff) % 7);
  t.is(partitionForKey(utf8('foobar'), 3), (-790332482 & 0x7fffffff) % 3);
});

// --- codecs -----------------------------------------------------------------------------------

test('codecs round-trip', (t) => {
  const order: Order = { id: 1, item: 'crème brûlée ☕' };
  t.deepEqual(codecs.json<Order>().decode(codecs.json<Order>().encode(order)), order);
  t.deepEqual(codecs.msgpack<Order>().decode(codecs.msgpack<Order>().encode(order)), order);
  t.is(codecs.string().decode(codecs.string().encode('héllo ✓')), 'héllo ✓');
  t.deepEqual([...codecs.string().encode('é')], [0xc3, 0xa9]);
  const bytes = new Uint8Array([0, 1, 255]);
  t.deepEqual(codecs.bytes().decode(codecs.bytes().encode(bytes)), bytes);
  t.throws(() => codecs.string().decode(new Uint8Array([0xff, 0xfe])));
});

// --- retry helper -----------------------------------------------------------------------------

test('backoff is full jitter under an exponential ceiling (seeded)', (t) => {
  const policy = retryPolicy({ backoffMsInitial: 100, backoffMsMax: 1000 });
  const random = new SeededRandom(42);
  for (let retryNo = 1; retryNo <= 8; retryNo++) {
    const ceiling = Math.min(1000, 100 * 2 ** (retryNo - 1));
    const draws = Array.from({ length: 200 }, () => backoffMs(retryNo, policy, random));
    t.true(draws.every((d) => Number.isInteger(d) && d >= 0 && d < ceiling), `retry ${retryNo}`);
    t.true(Math.max(...draws) > ceiling * 0.8, 'draws spread up to the ceiling');
  }
  // Same seed, same waits: failures replay.
  const a = new SeededRandom(9);
  const b = new SeededRandom(9);
  t.deepEqual([1, 2, 3].map((n) => backoffMs(n, policy, a)), [1, 2, 3].map((n) => backoffMs(n, policy, b)));
});

test('retry stops at attemptsMax, at the deadline, and at once on a non-retriable error', async (t) => {
  const clock = new FakeClock();
  const random = new SeededRandom(1);
  const busy = () => Promise.reject(new TidemarkError('BUSY'));

  let attempts = 0;
  const byAttempts = retry(() => (attempts++, busy()), { policy: retryPolicy({ attemptsMax: 4, totalMsMax: 1_000_000 }), clock, random });
  const start = clock.now();
  await clock.advance(10_000);
  t.is(await rejection(t, byAttempts), 'BUSY');
  t.is(attempts, 4);

  attempts = 0;
  const byTime = retry(() => (attempts++, busy()), { policy: retryPolicy({ attemptsMax: 1000, backoffMsMax: 200, totalMsMax: 1000 }), clock, random });
  const begun = clock.now();
  let settledAt = -1;
  byTime.catch(() => (settledAt = clock.now()));
  for (let i = 0; i < 30; i++) await clock.advance(50);
  t.is(await rejection(t, byTime), 'BUSY');
  t.true(settledAt - begun < 1000, 'gives up before the deadline rather than waiting past it');
  t.true(attempts > 4);

  attempts = 0;
  const fatal = retry(() => (attempts++, Promise.reject(new TidemarkError('INVALID_REQUEST'))), { policy: retryPolicy({}), clock, random });
  t.is(await rejection(t, fatal), 'INVALID_REQUEST');
  t.is(attempts, 1);
  t.true(clock.now() - start < 20_000);
});

// --- accumulator ------------------------------------------------------------------------------

function pending(clock: FakeClock, size: number): PendingSend {
  const record: BatchRecord = { key: null, value: new Uint8Array(size), headers: {}, timestamp: clock.now() };
  return { ...record, bytes: recordBytes(record), sentAtMs: clock.now(), resolve: () => undefined, reject: () => undefined };
}

test('accumulator closes batches by size', (t) => {
  const clock = new FakeClock();
  const ready: ReadyBatch[] = [];
  const one = pending(clock, 100).bytes;
  const acc = new Accumulator({ batchBytesMax: BATCH_HEADER_BYTES + 3 * one, lingerMs: 1000, clock, onReady: (b) => ready.push(b), pipelineState: () => 'busy' });
  for (let i = 0; i < 7; i++) acc.append(0, pending(clock, 100));
  acc.append(1, pending(clock, 100));
  t.deepEqual(ready.map((b) => [b.partition, b.sends.length]), [
    [0, 3],
    [0, 3],
  ]);
  t.true(ready.every((b) => BATCH_HEADER_BYTES + b.recordBytes <= BATCH_HEADER_BYTES + 3 * one));
  t.is(acc.bytesOpen, 2 * one);
  // A record that does not fit the open batch closes it first.
  acc.append(1, pending(clock, 2 * one));
  t.deepEqual(ready.map((b) => [b.partition, b.sends.length]), [
    [0, 3],
    [0, 3],
    [1, 1],
  ]);
});

test('accumulator: a batch past its linger waits (and fills) while the pipeline has no room; lingerMs 0 sends at once when it has', async (t) => {
  const clock = new FakeClock();
  const ready: ReadyBatch[] = [];
  let room = false;
  const state = (): PipelineState => (room ? 'busy' : 'full');
  const acc = new Accumulator({ batchBytesMax: 1 << 20, lingerMs: 5, clock, onReady: (b) => ready.push(b), pipelineState: state });
  acc.append(0, pending(clock, 10));
  await clock.advance(10);
  t.is(ready.length, 0, 'no room: the batch stays open past its linger');
  acc.append(0, pending(clock, 10));
  t.is(ready.length, 0);
  room = true;
  acc.room(0);
  t.deepEqual(ready.map((b) => b.sends.length), [2], 'both records go in one batch when a slot frees');
  const eager = new Accumulator({ batchBytesMax: 1 << 20, lingerMs: 0, clock, onReady: (b) => ready.push(b), pipelineState: state });
  eager.append(3, pending(clock, 10));
  eager.append(3, pending(clock, 10));
  t.is(clock.pendingTimers, 0, 'lingerMs 0: no timer');
  await Promise.resolve();
  t.deepEqual(ready.map((b) => [b.partition, b.sends.length]).at(-1), [3, 2], 'lingerMs 0 with room: the records of one synchronous run go together, at once');
});

test('accumulator closes batches after lingerMs', async (t) => {
  const clock = new FakeClock();
  const ready: ReadyBatch[] = [];
  const acc = new Accumulator({ batchBytesMax: 1 << 20, lingerMs: 5, clock, onReady: (b) => ready.push(b), pipelineState: () => 'busy' });
  acc.append(0, pending(clock, 10));
  await clock.advance(3);
  acc.append(0, pending(clock, 10));
  acc.append(2, pending(clock, 10));
  await clock.advance(1);
  t.is(ready.length, 0);
  await clock.advance(1);
  t.deepEqual(ready.map((b) => [b.partition, b.sends.length]), [[0, 2]]);
  await clock.advance(3);
  t.deepEqual(ready.map((b) => [b.partition, b.sends.length]), [
    [0, 2],
    [2, 1],
  ]);
  acc.append(0, pending(clock, 10));
  acc.closeAll();
  t.is(ready.length, 3);
  t.is(clock.pendingTimers, 0);
});

test('accumulator: a batch opened with nothing in flight closes at the end of the synchronous run; one opened while busy closes when the pipeline goes idle', async (t) => {
  const clock = new FakeClock();
  const ready: ReadyBatch[] = [];
  let state: PipelineState = 'idle';
  const acc = new Accumulator({ batchBytesMax: 1 << 20, lingerMs: 1000, clock, onReady: (b) => ready.push(b), pipelineState: () => state });
  acc.append(0, pending(clock, 10));
  acc.append(0, pending(clock, 10));
  t.is(clock.pendingTimers, 0, 'idle: no linger timer');
  await Promise.resolve();
  t.deepEqual(ready.map((b) => b.sends.length), [2], 'idle: the records of one synchronous run go together, with no linger');
  state = 'busy';
  acc.append(0, pending(clock, 10));
  acc.append(0, pending(clock, 10));
  await clock.advance(999);
  t.is(ready.length, 1, 'busy: the batch keeps filling');
  acc.room(0);
  t.is(ready.length, 1, 'a free slot alone does not close a batch within its linger');
  state = 'idle';
  acc.room(0);
  t.deepEqual(ready.map((b) => b.sends.length), [2, 2], 'the in-flight requests completed: it goes at once');
  t.is(clock.pendingTimers, 0, 'its linger timer is cleared');
});

// --- producer ---------------------------------------------------------------------------------

test('producer batches, acks with offsets, and keeps send order', async (t) => {
  const { clock, cluster, client } = setup();
  const producer = client.producer<Order>({ topic: 'orders', codec: codecs.json<Order>(), lingerMs: 5 });
  const sends = Array.from({ length: 10 }, (_, id) => producer.send({ value: { id, item: 'x' }, headers: { trace: 'abc', raw: new Uint8Array([1]), none: null } }));
  await clock.advance(5);
  const acks = await Promise.all(sends);
  t.deepEqual(acks, Array.from({ length: 10 }, (_, i) => ({ topic: 'orders', partition: 0, offset: i })));
  t.deepEqual(produceShape(cluster), ['1:10']);
  t.is(cluster.callsOf('produce')[0]!.body['acks'], -1, "acks 'all' is -1 on the wire");
  const r = cluster.records('orders', 0)[0]!;
  t.deepEqual(r.headers, { trace: utf8('abc'), raw: new Uint8Array([1]), none: null });
  t.is(r.timestamp, clock.now() - 5);
  await client.close();
});

test('adaptive linger: a lone send goes at once; sends made while a request is in flight go together when it completes; a busy batch waits at most lingerMs', async (t) => {
  const { clock, cluster, client } = setup();
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), lingerMs: 1000 });
  const first = producer.send({ value: 'warm' }); // also loads the metadata
  await settle();
  t.deepEqual(produceShape(cluster), ['1:1'], 'nothing in flight: sent without waiting lingerMs');
  t.is((await first).offset, 0);

  cluster.holdProduce = true;
  const lone = producer.send({ value: 'a' });
  await settle();
  t.deepEqual(produceShape(cluster), ['1:1', '1:1'], 'a lone send goes at once, no time passed');
  const during = ['b', 'c', 'd'].map((value) => producer.send({ value }));
  await settle();
  t.is(cluster.callsOf('produce').length, 2, 'while a request is in flight the next batch fills');
  cluster.holdProduce = false;
  cluster.releaseProduce();
  await settle();
  t.deepEqual(produceShape(cluster), ['1:1', '1:1', '1:3'], 'the request completed: the sends made meanwhile go together, at once');
  t.deepEqual((await Promise.all([lone, ...during])).map((m) => m.offset), [1, 2, 3, 4]);

  cluster.holdProduce = true;
  const held = producer.send({ value: 'e' });
  await settle();
  const waiting = producer.send({ value: 'f' });
  await clock.advance(999);
  t.is(cluster.callsOf('produce').length, 4, 'within lingerMs: still batching behind the request in flight');
  await clock.advance(1);
  t.deepEqual(produceShape(cluster).slice(3), ['1:1', '1:1'], 'lingerMs bounds the wait while a request is outstanding');
  cluster.holdProduce = false;
  cluster.releaseProduce();
  t.deepEqual((await Promise.all([held, waiting])).map((m) => m.offset), [5, 6]);
  await client.close();
});

test('adaptive linger with acks 0: no replies say when a request is done, so batches wait lingerMs', async (t) => {
  const { clock, cluster, client } = setup();
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), acks: 0, lingerMs: 5 });
  const first = producer.send({ value: 'a' });
  await settle();
  t.is(cluster.callsOf('produce').length, 0);
  await clock.advance(5);
  t.deepEqual(produceShape(cluster), ['1:1']);
  t.is((await first).offset, -1);
  const later = [producer.send({ value: 'b' })];
  await settle();
  later.push(producer.send({ value: 'c' }));
  await clock.advance(5);
  t.deepEqual(produceShape(cluster), ['1:1', '1:2'], 'sends made apart still share a batch');
  await Promise.all(later);
  await client.close();
});

test('adaptive linger under load: sends made while requests are in flight form full batches', async (t) => {
  const { clock, cluster, client } = setup();
  const codec = codecs.string();
  const value = (id: number) => `record-${String(id).padStart(3, '0')}`;
  const size = recordBytes({ key: null, value: codec.encode(value(0)), headers: {}, timestamp: 0 });
  const producer = client.producer<string>({ topic: 'orders', codec, lingerMs: 5, batchBytesMax: BATCH_HEADER_BYTES + 4 * size });
  await producer.send({ value: value(0) }); // metadata cached
  cluster.holdProduce = true;
  const sends = [producer.send({ value: value(1) })];
  await settle();
  for (let id = 2; id <= 13; id++) sends.push(producer.send({ value: value(id) }));
  await settle();
  t.deepEqual(produceShape(cluster), ['1:1', '1:1', '1:4', '1:4', '1:4'], 'the first goes alone, the rest in full batches');
  cluster.holdProduce = false;
  cluster.releaseProduce();
  t.deepEqual((await Promise.all(sends)).map((m) => m.offset), Array.from({ length: 13 }, (_, i) => i + 1));
  t.deepEqual(cluster.records('orders', 0).map((r) => codec.decode(r.value!)), Array.from({ length: 14 }, (_, i) => value(i)));
  t.is(clock.pendingTimers, 1, 'no timer but the producer session heartbeat');
  await client.close();
});

test('send() waits while inFlightBytesMax is used up, and everything still lands in order', async (t) => {
  const { clock, cluster, client } = setup();
  const codec = codecs.json<Order>();
  const size = recordBytes({ key: null, value: codec.encode({ id: 0, item: 'x' }), headers: {}, timestamp: 0 });
  const inFlightBytesMax = 3 * size;
  cluster.holdProduce = true;
  const producer = client.producer<Order>({ topic: 'orders', codec, lingerMs: 1000, inFlightBytesMax });
  const acked: number[] = [];
  const sends = Array.from({ length: 10 }, (_, id) =>
    producer.send({ value: { id, item: 'x' } }).then((m) => {
      acked.push(id);
      return m;
    }),
  );
  // The budget fills with 3 records; the 4th waits, which closes the lingering batch at once.
  await settle();
  t.deepEqual(produceShape(cluster), ['1:3']);
  for (let round = 0; round < 10 && acked.length < 10; round++) {
    const heldRecords = cluster.heldProduce.reduce((n, c) => n + c.recordCount!, 0);
    t.true(heldRecords * size <= inFlightBytesMax, `round ${round}: ${heldRecords} records in flight`);
    cluster.releaseProduce();
    await settle();
    await clock.advance(1000);
  }
  const metas = await Promise.all(sends);
  t.deepEqual(metas.map((m) => m.offset), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.deepEqual(acked, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.deepEqual(storedIds(cluster), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.true(cluster.callsOf('produce').length >= 4);
  await client.close();
});

test('order is kept when the leader moves under batches in flight (NOT_LEADER, refresh, resend in order)', async (t) => {
  const { clock, cluster, client } = setup();
  const codec = codecs.json<Order>();
  const size = recordBytes({ key: null, value: codec.encode({ id: 0, item: 'x' }), headers: {}, timestamp: 0 });
  let produced = 0;
  cluster.inject = (call) => {
    // The leader moves just as the 2nd batch arrives: it and the 3rd are refused by broker 1.
    if (call.kind === 'produce' && ++produced === 2) cluster.moveLeader('orders', 0, 2);
    return undefined;
  };
  const producer = client.producer<Order>({ topic: 'orders', codec, lingerMs: 0, batchBytesMax: BATCH_HEADER_BYTES + 2 * size });
  const sends = Array.from({ length: 6 }, (_, id) => producer.send({ value: { id, item: 'x' } }));
  await clock.advance(0);
  t.deepEqual(produceShape(cluster), ['1:2', '1:2', '1:2'], 'three batches in flight at once');
  await clock.advance(2000);
  const metas = await Promise.all(sends);
  t.deepEqual(produceShape(cluster), ['1:2', '1:2', '1:2', '2:2', '2:2']);
  t.deepEqual(metas.map((m) => m.offset), [0, 1, 2, 3, 4, 5]);
  t.deepEqual(storedIds(cluster), [0, 1, 2, 3, 4, 5]);
  t.true(cluster.callsOf('metadata').length >= 2, 'metadata refreshed after NOT_LEADER');
  await client.close();
});

test('with one batch in flight, a retried batch goes before the next one (BUSY once)', async (t) => {
  const { clock, cluster, client } = setup();
  const codec = codecs.json<Order>();
  const size = recordBytes({ key: null, value: codec.encode({ id: 0, item: 'x' }), headers: {}, timestamp: 0 });
  let produced = 0;
  cluster.inject = (call) => (call.kind === 'produce' && ++produced === 2 ? 'BUSY' : undefined);
  const producer = client.producer<Order>({
    topic: 'orders',
    codec,
    lingerMs: 0,
    batchBytesMax: BATCH_HEADER_BYTES + size,
    inFlightBatchesPerPartitionMax: 1,
  });
  const sends = Array.from({ length: 4 }, (_, id) => producer.send({ value: { id, item: 'x' } }));
  await clock.advance(0);
  await clock.advance(2000);
  const metas = await Promise.all(sends);
  const produceIds = cluster.callsOf('produce').map((c) => c.body['batch'] as Uint8Array);
  t.is(produceIds.length, 5, '4 batches, one sent twice');
  t.deepEqual(metas.map((m) => m.offset), [0, 1, 2, 3]);
  t.deepEqual(storedIds(cluster), [0, 1, 2, 3]);
  await client.close();
});

test('a non-retriable error rejects the affected sends at once; the others succeed', async (t) => {
  const { clock, cluster, client } = setup();
  const codec = codecs.json<Order>();
  const size = recordBytes({ key: null, value: codec.encode({ id: 0, item: 'x' }), headers: {}, timestamp: 0 });
  let produced = 0;
  cluster.inject = (call) => (call.kind === 'produce' && ++produced === 2 ? 'CORRUPT_MESSAGE' : undefined);
  const producer = client.producer<Order>({ topic: 'orders', codec, lingerMs: 0, batchBytesMax: BATCH_HEADER_BYTES + 2 * size });
  const sends = Array.from({ length: 6 }, (_, id) => producer.send({ value: { id, item: 'x' } }));
  await clock.advance(0);
  // The batch after the refused one is refused as out of sequence and resent under a fresh
  // producer id after a backoff; the refused batch itself is never retried.
  await clock.advance(2000);
  const results = await Promise.allSettled(sends);
  t.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? r.value.offset : (r.reason as TidemarkError).code)),
    [0, 1, 'CORRUPT_MESSAGE', 'CORRUPT_MESSAGE', 2, 3],
  );
  const attemptsOfRefused = cluster
    .callsOf('produce')
    .filter((c) => decodeBatch(c.body['batch'] as Uint8Array).some((r) => (codec.decode(r.value!) as Order).id === 2)).length;
  t.is(attemptsOfRefused, 1, 'not retried');
  const producedBefore = cluster.callsOf('produce').length;
  // A record that alone exceeds batchBytesMax never leaves the client.
  const big = client.producer<string>({ topic: 'orders', codec: codecs.string(), batchBytesMax: 1000 });
  t.is(await rejection(t, big.send({ value: 'x'.repeat(1000) })), 'RECORD_TOO_LARGE');
  t.is(cluster.callsOf('produce').length, producedBefore);
  await client.close();
});

test('retriable errors are retried with backoff until deliveryTimeoutMs, then rejected with the last error', async (t) => {
  const { clock, cluster, client } = setup();
  cluster.inject = (call) => (call.kind === 'produce' ? 'BUSY' : undefined);
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), lingerMs: 0, deliveryTimeoutMs: 5000 });
  const start = clock.now();
  let rejectedAt = -1;
  const send = producer.send({ value: 'v' });
  send.catch(() => (rejectedAt = clock.now()));
  for (let i = 0; i < 80 && rejectedAt < 0; i++) await clock.advance(100);
  t.is(await rejection(t, send), 'BUSY');
  t.true(rejectedAt - start <= 5000, `rejected ${rejectedAt - start} ms after send`);
  const attempts = cluster.callsOf('produce').length;
  t.true(attempts > 3 && attempts <= 25, `${attempts} attempts`);
  await client.close();
});

test('a dropped request times out and is retried', async (t) => {
  const { clock, cluster, client } = setup();
  let produced = 0;
  cluster.inject = (call) => (call.kind === 'produce' && ++produced === 1 ? 'drop' : undefined);
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), lingerMs: 0, requestTimeoutMs: 1000 });
  const send = producer.send({ value: 'v' });
  await clock.advance(0);
  t.is(cluster.callsOf('produce')[0]!.body['timeoutMs'], 1000);
  await clock.advance(1100 + 2000);
  t.is((await send).offset, 0);
  t.is(cluster.callsOf('produce').length, 2);
  await client.close();
});

test('keyed records land on murmur2 partitions; keyless ones spread sticky per batch', async (t) => {
  const { clock, cluster, client } = setup(4);
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), lingerMs: 1 });
  const keys = ['21', 'foobar', 'abc', 'order-7', 'customer-42', 'é'];
  const keyed = await Promise.all(
    keys.map(async (key) => {
      const p = producer.send({ key, value: key });
      await clock.advance(1);
      return p;
    }),
  );
  keys.forEach((key, i) => t.is(keyed[i]!.partition, partitionForKey(utf8(key), 4), key));
  const binaryKey = new Uint8Array([1, 2, 3, 250]);
  const b = producer.send({ key: binaryKey, value: 'bin' });
  await clock.advance(1);
  t.is((await b).partition, partitionForKey(binaryKey, 4));

  const partitions: number[] = [];
  for (let round = 0; round < 8; round++) {
    const batch = Array.from({ length: 3 }, () => producer.send({ value: 'keyless' }));
    await clock.advance(1);
    const metas: RecordMetadata[] = await Promise.all(batch);
    t.is(new Set(metas.map((m) => m.partition)).size, 1, 'one partition per batch');
    partitions.push(metas[0]!.partition);
  }
  t.is(new Set(partitions).size, 4, `round robin over all partitions: ${partitions.join(',')}`);
  t.true(cluster.records('orders', 0).length > 0);
  await client.close();
});

test('acks 0 publishes without waiting for a reply; acks 1 is 1 on the wire', async (t) => {
  const { clock, cluster, client } = setup();
  const fireAndForget = client.producer<string>({ topic: 'orders', codec: codecs.string(), acks: 0, lingerMs: 0 });
  const p0 = fireAndForget.send({ value: 'a' });
  await clock.advance(0);
  t.deepEqual(await p0, { topic: 'orders', partition: 0, offset: -1 });
  t.true(cluster.callsOf('produce')[0]!.published);
  t.is(cluster.callsOf('produce')[0]!.body['acks'], 0);
  const leaderOnly = client.producer<string>({ topic: 'orders', codec: codecs.string(), acks: 1, lingerMs: 0 });
  const p1 = leaderOnly.send({ value: 'b' });
  await clock.advance(0);
  t.is((await p1).offset, 1);
  t.is(cluster.callsOf('produce')[1]!.body['acks'], 1);
  t.false(cluster.callsOf('produce')[1]!.published);
  await client.close();
});

test('flush sends lingering batches; close flushes and refuses later sends', async (t) => {
  const { cluster, client } = setup();
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), lingerMs: 60_000 });
  const a = producer.send({ value: 'a', key: 'k' });
  await producer.flush();
  t.is((await a).offset, 0);
  const b = producer.send({ value: 'b' });
  await client.close(); // closes the producer, which flushes first
  t.is((await b).offset, 1);
  t.is(await rejection(t, producer.send({ value: 'c' })), 'CLOSED');
  t.throws(() => client.producer({ topic: 'orders', codec: codecs.string() }), { instanceOf: TidemarkError });
  t.is(cluster.records('orders', 0).length, 2);
});

test('flush waits for exactly the sends made before it: later sends do not hold it, rejected sends count as settled', async (t) => {
  const { cluster, client } = setup();
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), lingerMs: 60_000 });
  await producer.flush(); // nothing sent yet: resolves at once
  await producer.send({ value: 'warm' });
  cluster.holdProduce = true;
  const a = producer.send({ value: 'a' });
  const bad = producer.send({ value: 'x', partition: -1 }); // rejected at admission
  let firstDone = false;
  const first = producer.flush().then(() => (firstDone = true));
  // Let a's request leave on its own: batches handed over in one turn share a request (one per
  // broker, produce-channel.ts) and are answered together.
  await settle();
  const b = producer.send({ value: 'b' });
  let secondDone = false;
  const second = producer.flush().then(() => (secondDone = true));
  await settle();
  t.is(cluster.heldProduce.length, 2, 'both flushes closed their lingering batches');
  cluster.releaseProduce(1);
  await first;
  t.is((await a).offset, 1);
  t.is((await rejection(t, bad)), 'INVALID_RECORD');
  await settle();
  t.false(secondDone, 'the second flush still waits for b');
  t.true(firstDone);
  cluster.releaseProduce();
  await second;
  t.is((await b).offset, 2);
  await client.close();
});

test('sending to a topic that does not exist fails with UNKNOWN_TOPIC after deliveryTimeoutMs', async (t) => {
  const { clock, client } = setup();
  const producer = client.producer<string>({ topic: 'nope', codec: codecs.string(), deliveryTimeoutMs: 3000 });
  const send = producer.send({ value: 'v' });
  for (let i = 0; i < 40; i++) await clock.advance(100);
  t.is(await rejection(t, send), 'UNKNOWN_TOPIC');
  await client.close();
});

// --- reader -----------------------------------------------------------------------------------

async function produceAll(clock: FakeClock, client: Tidemark, count: number, first = 0): Promise<void> {
  const producer = client.producer<Order>({ topic: 'orders', codec: codecs.json<Order>(), lingerMs: 1 });
  const sends = Array.from({ length: count }, (_, i) => producer.send({ key: `k${first + i}`, value: { id: first + i, item: 'x' }, headers: { n: String(first + i) } }));
  await clock.advance(1);
  await Promise.all(sends);
  await producer.close();
}

test('reader starts mid-batch, skips earlier records, and stops on close()', async (t) => {
  const { clock, cluster, client } = setup();
  await produceAll(clock, client, 5);
  t.is(cluster.callsOf('produce').length, 1, 'one batch holds offsets 0..4');
  const reader = client.reader<Order>({ topic: 'orders', partition: 0, from: { offset: 2 }, codec: codecs.json<Order>() });
  const got: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await reader.next();
    if (r.done) break;
    t.is(r.value.value?.id, r.value.offset);
    t.is(r.value.keyString, `k${r.value.offset}`);
    t.deepEqual(r.value.key, utf8(`k${r.value.offset}`));
    t.is(r.value.headerString('n'), String(r.value.offset));
    t.is(r.value.headerString('absent'), undefined);
    t.is(r.value.timestamp, clock.now() - 1);
    got.push(r.value.offset);
  }
  t.deepEqual(got, [2, 3, 4]);
  t.is(cluster.callsOf('fetch')[0]!.body['offset'], 2);
  t.is(reader.position, 5);
  // Nothing more: the reader long-polls until closed.
  const pending = reader.next();
  await clock.advance(1200);
  t.true(cluster.callsOf('fetch').length >= 2);
  await reader.close();
  t.deepEqual(await pending, { done: true, value: undefined });
  t.deepEqual(await reader.next(), { done: true, value: undefined });
  await client.close();
});

test('reader from earliest and latest; for-await and break close it', async (t) => {
  const { clock, client } = setup();
  await produceAll(clock, client, 3);
  const earliest = client.reader<Order>({ topic: 'orders', partition: 0, from: 'earliest', codec: codecs.json<Order>() });
  const ids: number[] = [];
  for await (const rec of earliest) {
    ids.push(rec.value!.id);
    if (ids.length === 3) break;
  }
  t.deepEqual(ids, [0, 1, 2]);
  t.deepEqual(await earliest.next(), { done: true, value: undefined }, 'break closed it');

  const latest = client.reader<Order>({ topic: 'orders', partition: 0, from: 'latest', codec: codecs.json<Order>(), maxWaitMs: 100 });
  const next = latest.next();
  await clock.advance(100);
  await produceAll(clock, client, 2, 3);
  await clock.advance(100);
  const r = await next;
  t.false(r.done);
  t.is(r.done ? -1 : r.value.offset, 3, 'latest starts at the high watermark');
  t.is(latest.highWatermark, 5);
  await client.close();
});

test('reader holds one fetch reply: it fetches only when pulled', async (t) => {
  const { clock, cluster, client } = setup();
  for (let i = 0; i < 4; i++) await produceAll(clock, client, 2, 2 * i);
  const reader = client.reader<Order>({ topic: 'orders', partition: 0, codec: codecs.json<Order>(), fetchBytesMax: 1 });
  t.is((await reader.next()).value?.offset, 0);
  await clock.advance(1000);
  t.is(cluster.callsOf('fetch').length, 1, 'no read-ahead while the caller is not pulling');
  t.is((await reader.next()).value?.offset, 1);
  t.is(cluster.callsOf('fetch').length, 1, 'the second record came from the same reply');
  t.is((await reader.next()).value?.offset, 2);
  t.is(cluster.callsOf('fetch').length, 2);
  t.true(cluster.callsOf('fetch').every((c) => c.body['maxBytes'] === 1));
  await reader.close();
  await client.close();
});

test('reader: OFFSET_OUT_OF_RANGE is thrown, not retried', async (t) => {
  const { clock, cluster, client } = setup();
  await produceAll(clock, client, 2);
  const reader = client.reader<Order>({ topic: 'orders', partition: 0, from: { offset: 100 }, codec: codecs.json<Order>() });
  t.is(await rejection(t, reader.next()), 'OFFSET_OUT_OF_RANGE');
  t.is(cluster.callsOf('fetch').length, 1);
  await client.close();
});

test('reader: a leader move is retried after a metadata refresh', async (t) => {
  const { clock, cluster, client } = setup();
  await produceAll(clock, client, 2);
  const reader = client.reader<Order>({ topic: 'orders', partition: 0, codec: codecs.json<Order>() });
  t.is((await reader.next()).value?.offset, 0);
  t.is((await reader.next()).value?.offset, 1);
  cluster.moveLeader('orders', 0, 3);
  const metadataCalls = cluster.callsOf('metadata').length;
  const next = reader.next();
  await clock.advance(0);
  await produceAll(clock, client, 1, 2);
  await clock.advance(2000);
  t.is((await next).value?.offset, 2);
  t.true(cluster.callsOf('fetch').some((c) => c.brokerId === 1) && cluster.callsOf('fetch').some((c) => c.brokerId === 3));
  t.true(cluster.callsOf('metadata').length > metadataCalls);
  await client.close();
});

test('reader: null values stay null and are not given to the codec', async (t) => {
  const { clock, client } = setup();
  const producer = client.producer<Order>({ topic: 'orders', codec: codecs.json<Order>(), lingerMs: 0 });
  const sent = producer.send({ key: 'gone', value: null });
  await clock.advance(0);
  await sent;
  const reader = client.reader<Order>({ topic: 'orders', partition: 0, codec: { encode: () => new Uint8Array(), decode: () => t.fail('decode called') as never } });
  const r = await reader.next();
  t.is(r.value?.value, null);
  t.is(r.value?.keyString, 'gone');
  await client.close();
});

// --- admin ------------------------------------------------------------------------------------

test('admin: create, list, describe with offsets, delete', async (t) => {
  const { clock, cluster, client } = setup();
  const admin = client.admin();
  const created = await admin.createTopic({ name: 'payments', partitions: 3, replicationFactor: 1, config: { 'retention.ms': '1000' } });
  t.is(created.partitions.length, 3);
  t.deepEqual(await admin.listTopics(), ['orders', 'payments']);
  cluster.moveLeader('payments', 2, 2);
  const producer = client.producer<string>({ topic: 'payments', codec: codecs.string(), lingerMs: 0 });
  const sends = [producer.send({ value: 'a', partition: 2 }), producer.send({ value: 'b', partition: 2 }), producer.send({ value: 'c', partition: 0 })];
  await clock.advance(0);
  await Promise.all(sends);
  const d = await admin.describeTopic('payments');
  t.is(d.name, 'payments');
  t.deepEqual(d.config, { 'retention.ms': '1000' });
  t.deepEqual(
    d.partitions.map((p) => [p.partition, p.leader, p.logStartOffset, p.logEndOffset, p.highWatermark]),
    [
      [0, 1, 0, 1, 1],
      [1, 1, 0, 0, 0],
      [2, 2, 0, 2, 2],
    ],
  );
  t.deepEqual(new Set(cluster.callsOf('offsets').map((c) => c.brokerId)), new Set([1, 2]), 'one offsets request per leader');
  t.is(await rejection(t, admin.createTopic({ name: 'payments' })), 'TOPIC_ALREADY_EXISTS');
  await admin.deleteTopic('payments');
  t.deepEqual(await admin.listTopics(), ['orders']);
  t.is(await rejection(t, admin.describeTopic('payments')), 'UNKNOWN_TOPIC');
  await client.close();
});

test('lookupTopic answers from metadata alone: no offsets request to any leader', async (t) => {
  const { cluster, client } = setup(3);
  const offsetsBefore = cluster.callsOf('offsets').length;
  const topic = await client.admin().lookupTopic('orders');
  t.is(topic.name, 'orders');
  t.deepEqual(
    topic.partitions.map((p) => p.partition),
    [0, 1, 2],
  );
  t.true(topic.partitions.every((p) => p.leader >= 0 && p.isr.includes(p.leader)));
  t.is(cluster.callsOf('offsets').length, offsetsBefore, 'no leader was asked');
  t.is(await rejection(t, client.admin().lookupTopic('nosuch')), 'UNKNOWN_TOPIC');
  await client.close();
});

test('deleteTopic whose reply was lost: the retry is told UNKNOWN_TOPIC at once, not after the whole retry budget (sim seed 1)', async (t) => {
  const { clock, cluster, client } = setup();
  let deletes = 0;
  cluster.inject = (call) => (call.kind === 'delete-topic' && ++deletes === 1 ? 'drop-reply' : undefined);
  const outcome = client.admin().deleteTopic('orders').then(
    () => 'deleted',
    (error: unknown) => (error as TidemarkError).code,
  );
  await clock.advance(0);
  await clock.advance(15_000);
  t.is(await Promise.race([outcome, Promise.resolve('still retrying')]), 'UNKNOWN_TOPIC', 'the controller is the authority: the topic is gone');
  t.is(cluster.callsOf('delete-topic').length, 2);
  await client.close();
});

test('metadata refreshes are single-flight when many partitions fail at once', async (t) => {
  const { clock, cluster, client } = setup(8);
  let moved = false;
  cluster.inject = (call) => {
    if (call.kind === 'produce' && !moved) {
      moved = true;
      for (let p = 0; p < 8; p++) cluster.moveLeader('orders', p, 2);
    }
    return undefined;
  };
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), lingerMs: 1 });
  const sends = Array.from({ length: 8 }, (_, p) => producer.send({ value: `v${p}`, partition: p }));
  const before = cluster.callsOf('metadata').length;
  await clock.advance(1);
  await clock.advance(2000);
  const metas = await Promise.all(sends);
  t.deepEqual(metas.map((m) => [m.partition, m.offset]), Array.from({ length: 8 }, (_, p) => [p, 0]));
  const refreshes = cluster.callsOf('metadata').length - before;
  t.true(refreshes >= 1 && refreshes <= 2, `${refreshes} metadata requests for 8 failed partitions`);
  await client.close();
});

/** The README flow must type-check exactly as written (compiled, never run here). */
export async function readmeUsage(order: Order): Promise<void> {
  const client = await Tidemark.connect({ servers: 'nats://127.0.0.1:4222', cluster: 'tidemark' });
  await client.admin().createTopic({ name: 'orders', partitions: 3, replicationFactor: 1, config: {} });
  const producer = client.producer<Order>({ topic: 'orders', codec: codecs.json<Order>(), acks: 'all', lingerMs: 5, batchBytesMax: 1 << 20 });
  const { partition, offset } = await producer.send({ key: 'o-1', value: order, headers: {} });
  void [partition, offset];
  await producer.flush();
  const codec = codecs.json<Order>();
  const reader = client.reader<Order>({ topic: 'orders', partition: 0, from: 'earliest', codec });
  for await (const rec of reader) {
    void [rec.offset, rec.key, rec.value, rec.headers, rec.timestamp];
  }
  await client.close();
}

test('idempotent sequences keep order when one batch of several in flight fails alone (BUSY)', async (t) => {
  const { clock, cluster, client } = setup();
  const codec = codecs.json<Order>();
  const size = recordBytes({ key: null, value: codec.encode({ id: 0, item: 'x' }), headers: {}, timestamp: 0 });
  let produced = 0;
  cluster.inject = (call) => (call.kind === 'produce' && ++produced === 2 ? 'BUSY' : undefined);
  const producer = client.producer<Order>({ topic: 'orders', codec, lingerMs: 0, batchBytesMax: BATCH_HEADER_BYTES + size, inFlightBatchesPerPartitionMax: 5 });
  const sends = Array.from({ length: 5 }, (_, id) => producer.send({ value: { id, item: 'x' } }));
  await clock.advance(0);
  await clock.advance(2000);
  const metas = await Promise.all(sends);
  t.deepEqual(metas.map((m) => m.offset), [0, 1, 2, 3, 4]);
  t.deepEqual(storedIds(cluster), [0, 1, 2, 3, 4], 'the batches after the refused one were refused too, then resent in order');
  await client.close();
});

test('idempotent sequences: a lost first batch is not overtaken by the next ones (sim seed 10)', async (t) => {
  const { clock, cluster, client } = setup();
  const codec = codecs.json<Order>();
  const size = recordBytes({ key: null, value: codec.encode({ id: 0, item: 'x' }), headers: {}, timestamp: 0 });
  let produced = 0;
  // NATS core drops the first request alone; the partition has never seen this producer.
  cluster.inject = (call) => (call.kind === 'produce' && ++produced === 1 ? 'drop' : undefined);
  const producer = client.producer<Order>({ topic: 'orders', codec, lingerMs: 0, batchBytesMax: BATCH_HEADER_BYTES + size, requestTimeoutMs: 1000 });
  const sends = Array.from({ length: 3 }, (_, id) => producer.send({ value: { id, item: 'x' } }));
  await clock.advance(0);
  await clock.advance(5000);
  const metas = await Promise.all(sends);
  t.deepEqual(metas.map((m) => m.offset), [0, 1, 2]);
  t.deepEqual(storedIds(cluster), [0, 1, 2], 'written in the order sent');
  await client.close();
});

test('idempotent sequences: a batch whose reply was lost is retried and not written twice', async (t) => {
  const { clock, cluster, client } = setup();
  let produced = 0;
  cluster.inject = (call) => (call.kind === 'produce' && ++produced === 1 ? 'drop-reply' : undefined);
  const producer = client.producer<Order>({ topic: 'orders', codec: codecs.json<Order>(), lingerMs: 0, requestTimeoutMs: 1000 });
  const send = producer.send({ value: { id: 7, item: 'x' } });
  await clock.advance(0);
  await clock.advance(5000);
  t.is((await send).offset, 0);
  t.deepEqual(storedIds(cluster), [7], 'written once');
  t.is(cluster.callsOf('produce').length, 2);
  await client.close();
});

test('idempotent sequences: after a batch is given up, later batches renumber and get through', async (t) => {
  const { clock, cluster, client } = setup();
  const codec = codecs.json<Order>();
  const size = recordBytes({ key: null, value: codec.encode({ id: 0, item: 'x' }), headers: {}, timestamp: 0 });
  let produced = 0;
  // The second batch is refused before the partition sees it, so its sequences are never used.
  cluster.inject = (call) => (call.kind === 'produce' && ++produced === 2 ? 'CORRUPT_MESSAGE' : undefined);
  const producer = client.producer<Order>({ topic: 'orders', codec, lingerMs: 0, batchBytesMax: BATCH_HEADER_BYTES + size });
  const sends = Array.from({ length: 4 }, (_, id) => producer.send({ value: { id, item: 'x' } }));
  await clock.advance(0);
  await clock.advance(2000);
  const results = await Promise.allSettled(sends);
  t.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? r.value.offset : (r.reason as TidemarkError).code)),
    [0, 'CORRUPT_MESSAGE', 1, 2],
  );
  t.deepEqual(storedIds(cluster), [0, 2, 3]);
  await client.close();
});

test('a topic or partition missing from a caught-up broker\'s metadata fails at once; from a lagging one it is asked for again', async (t) => {
  const { clock, cluster, client } = setup(2);
  // Lagging (caughtUp absent): the reader keeps asking while time passes, then gives up retriable.
  const lagging = client.reader({ topic: 'nosuch', partition: 0, from: 'earliest', codec: codecs.string() });
  const laggingFailure = t.throwsAsync(lagging.next(), { instanceOf: TidemarkError });
  for (let i = 0; i < 40 && cluster.callsOf('metadata').length < 3; i++) await clock.advance(100);
  t.true(cluster.callsOf('metadata').length >= 3, 'retried while the broker may lag');
  cluster.metadataCaughtUp = true;
  const before = cluster.callsOf('metadata').length;
  const current = client.reader({ topic: 'nosuch', partition: 0, from: 'earliest', codec: codecs.string() });
  // Time moves only as far as the answers need: at most one short backoff, far below the budget.
  const settled = async <T>(promise: Promise<T>): Promise<T> => {
    let done = false;
    promise.then(() => (done = true), () => (done = true));
    for (let i = 0; i < 300 && !done; i++) await clock.advance(1);
    return promise;
  };
  const error = (await t.throwsAsync(settled(current.next()), { instanceOf: TidemarkError })) as TidemarkError;
  t.is(error.code, 'UNKNOWN_TOPIC');
  t.false(error.retriable, 'confirmed by a caught-up broker: final');
  const confirms = cluster.callsOf('metadata').slice(before).map((c) => (c.body as { confirm?: boolean }).confirm === true);
  t.true(confirms.length <= 3 && confirms.at(-1) === true, `asked again, confirmed, and stopped: ${JSON.stringify(confirms)}`);
  const producer = client.producer({ topic: 'orders', codec: codecs.string() });
  const partition = (await t.throwsAsync(settled(producer.send({ value: 'x', partition: 5 })), { instanceOf: TidemarkError })) as TidemarkError;
  t.is(partition.code, 'UNKNOWN_TOPIC');
  t.false(partition.retriable);
  t.regex(partition.message, /no partition 5 \(it has 2\)/);
  for (let i = 0; i < 400; i++) await clock.advance(100);
  const late = (await laggingFailure) as TidemarkError;
  t.is(late.code, 'UNKNOWN_TOPIC');
  await Promise.all([lagging.close(), current.close(), producer.close()]);
  await client.close();
});
