/**
 * The SDK's side of producer access modes (issue 12) over the in-memory cluster
 * (test/helpers/fake-transport.ts) and a fake clock: what goes on the wire, and what a producer
 * does when it is refused or fenced. The cluster's side runs in test/producer-access*.test.ts.
 */
import test from 'ava';
import { codecs, Tidemark, TidemarkError } from '../src/index.js';
import { FakeClock, FakeCluster, SeededRandom, settle } from './helpers/fake-transport.js';

function setup(partitions = 3) {
  const clock = new FakeClock();
  const cluster = new FakeCluster(clock);
  const topic = cluster.addTopic('orders', partitions);
  // Partitions led by brokers 1, 2, 3 in turn.
  topic.partitions.forEach((p, i) => (p.leader = 1 + (i % 3)));
  const client = Tidemark.fromTransport(cluster, { cluster: 'test', clock, random: new SeededRandom(11) });
  return { clock, cluster, client };
}

const granted = (epoch: number, fence: boolean) => ({ status: 'granted' as const, epoch, fence, heartbeatIntervalMs: 1_000 });

test('an exclusive grant fences every partition, one request per leader broker, before the first record; records carry the epoch', async (t) => {
  const { cluster, client } = setup(3);
  cluster.attach = (r) => (r.accessMode === 'Exclusive' ? granted(4, true) : 'PRODUCER_BUSY');
  const producer = await client.createProducer({ topic: 'orders', codec: codecs.string(), accessMode: 'Exclusive', producerName: 'writer' });
  t.is(producer.epoch, 4);
  const attach = cluster.callsOf('producer-attach')[0]!.body;
  t.like(attach, { topic: 'orders', accessMode: 'Exclusive', producerName: 'writer' });
  const fences = cluster.callsOf('fence');
  t.deepEqual(fences.map((c) => c.brokerId).sort(), [1, 2, 3]);
  t.true(fences.every((c) => c.body['accessEpoch'] === 4));
  t.deepEqual(cluster.topics.get('orders')!.partitions.map((p) => p.accessEpoch), [4, 4, 4]);
  t.is(cluster.callsOf('produce').length, 0, 'nothing written before the fences');
  await producer.send({ value: 'a', partition: 1 });
  t.is(cluster.callsOf('produce')[0]!.body['accessEpoch'], 4);
  await producer.close();
  t.is(cluster.callsOf('producer-detach').length, 1, 'close gives the topic up');
  await client.close();
});

test('a refused mode rejects createProducer, and a Shared producer refused fails its sends with the code', async (t) => {
  const { cluster, client } = setup(1);
  cluster.attach = () => 'PRODUCER_BUSY';
  const error = await t.throwsAsync(client.createProducer({ topic: 'orders', codec: codecs.string(), accessMode: 'Exclusive' }), { instanceOf: TidemarkError });
  t.is(error!.code, 'PRODUCER_BUSY');
  const shared = client.producer({ topic: 'orders', codec: codecs.string() });
  const sends = [shared.send({ value: 'a' }), shared.send({ value: 'b' })];
  for (const s of sends) t.is((await t.throwsAsync(s, { instanceOf: TidemarkError }))!.code, 'PRODUCER_BUSY');
  t.is((await t.throwsAsync(shared.send({ value: 'c' }), { instanceOf: TidemarkError }))!.code, 'PRODUCER_BUSY', 'and every later send');
  t.is(cluster.callsOf('produce').length, 0);
  t.throws(() => client.producer({ topic: 'orders', codec: codecs.string(), accessMode: 'Exclusive' }), { instanceOf: TidemarkError }, 'exclusive modes need createProducer');
  await client.close();
});

test('WaitForExclusive asks again while it waits, saying since which epoch, until granted', async (t) => {
  const { clock, cluster, client } = setup(1);
  let asked = 0;
  cluster.attach = () => (++asked < 3 ? { status: 'waiting', epoch: 7, fence: false, position: 0, heartbeatIntervalMs: 1_000 } : granted(8, true));
  let done = false;
  const creating = client.createProducer({ topic: 'orders', codec: codecs.string(), accessMode: 'WaitForExclusive' }).then((p) => ((done = true), p));
  await settle();
  await clock.advance(10);
  await settle();
  const producer = await creating;
  t.true(done);
  t.is(producer.epoch, 8);
  const bodies = cluster.callsOf('producer-attach').map((c) => c.body);
  t.is(bodies.length, 3);
  t.is(bodies[0]!['waitingSince'], undefined);
  t.is(bodies[1]!['waitingSince'], 7, 'a waiter says the epoch it began waiting at');
  t.true((bodies[0]!['maxWaitMs'] as number) > 0, 'the controller may hold a waiter');
  await client.close();
});

test('fenced at a partition leader: the send fails PRODUCER_FENCED and every later send fails at once, without a request', async (t) => {
  const { cluster, client } = setup(2);
  cluster.attach = () => granted(1, true);
  const producer = await client.createProducer({ topic: 'orders', codec: codecs.string(), accessMode: 'Exclusive' });
  await producer.send({ value: 'a', partition: 0 });
  cluster.topics.get('orders')!.partitions[0]!.accessEpoch = 2; // a newer producer's fence
  t.is((await t.throwsAsync(producer.send({ value: 'b', partition: 0 }), { instanceOf: TidemarkError }))!.code, 'PRODUCER_FENCED');
  const before = cluster.callsOf('produce').length;
  t.is((await t.throwsAsync(producer.send({ value: 'c', partition: 1 }), { instanceOf: TidemarkError }))!.code, 'PRODUCER_FENCED');
  t.is(cluster.callsOf('produce').length, before, 'no request for a send after the fencing');
  t.deepEqual(cluster.records('orders', 0).map((r) => new TextDecoder().decode(r.value!)), ['a']);
  await client.close();
});

test('a heartbeat answered PRODUCER_FENCED ends the producer: its sends fail at once', async (t) => {
  const { clock, cluster, client } = setup(1);
  cluster.attach = () => granted(1, true);
  const producer = await client.createProducer({ topic: 'orders', codec: codecs.string(), accessMode: 'Exclusive' });
  await producer.send({ value: 'a' });
  await clock.advance(1_000);
  t.is(cluster.callsOf('producer-heartbeat').length, 1, 'heartbeats at the interval the grant named');
  cluster.heartbeat = () => 'PRODUCER_FENCED';
  await clock.advance(1_000);
  await settle();
  t.is((await t.throwsAsync(producer.send({ value: 'b' }), { instanceOf: TidemarkError }))!.code, 'PRODUCER_FENCED');
  const beats = cluster.callsOf('producer-heartbeat').length;
  await clock.advance(5_000);
  t.is(cluster.callsOf('producer-heartbeat').length, beats, 'a fenced producer stops heartbeating');
  await client.close();
});
