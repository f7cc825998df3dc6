/**
 * One produce request per leader broker: the SDK gathers the batches of many partitions into one
 * request per broker and topic, and each batch keeps its own outcome (over the in-memory cluster of
 * test/helpers/fake-transport.ts; nothing sleeps).
 */
import test from 'ava';
import { codecs, Tidemark, TidemarkError } from '../src/index.js';
import { withLocalReplies } from '../src/runtime/local-replies.js';
import { FakeClock, FakeCluster, SeededRandom } from './helpers/fake-transport.js';

function setup() {
  const clock = new FakeClock();
  const cluster = new FakeCluster(clock);
  cluster.addTopic('orders', 6, 1);
  for (const p of [3, 4, 5]) cluster.moveLeader('orders', p, 2);
  const client = Tidemark.fromTransport(cluster, { cluster: 'test', clock, random: new SeededRandom(3) });
  return { clock, cluster, client };
}

test('batches for six partitions on two brokers leave as two requests, one per broker', async (t) => {
  const { clock, cluster, client } = setup();
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), lingerMs: 0 });
  await producer.send({ value: 'warm', partition: 0 }); // metadata loaded
  cluster.produceRequests.length = 0;
  const sends = [0, 1, 2, 3, 4, 5].map((partition) => producer.send({ value: `v${partition}`, partition }));
  await clock.advance(0);
  const metas = await Promise.all(sends);
  t.deepEqual(
    cluster.produceRequests.map((r) => `${r.brokerId}:${r.partitions.join(',')}`),
    ['1:0,1,2', '2:3,4,5'],
  );
  t.deepEqual(metas.map((m) => `${m.partition}@${m.offset}`), ['0@1', '1@0', '2@0', '3@0', '4@0', '5@0']);
  await client.close();
});

test('one batch refused in a shared request fails alone; the others are acknowledged', async (t) => {
  const { clock, cluster, client } = setup();
  const producer = client.producer<string>({ topic: 'orders', codec: codecs.string(), lingerMs: 0 });
  await producer.send({ value: 'warm', partition: 0 });
  cluster.inject = (call) => (call.kind === 'produce' && call.partition === 1 ? 'INVALID_RECORD' : undefined);
  const sends = [0, 1, 2].map((partition) => producer.send({ value: `v${partition}`, partition }).then(
    (m) => `ok ${m.partition}`,
    (e: unknown) => `${(e as TidemarkError).code} ${partition}`,
  ));
  await clock.advance(0);
  t.deepEqual(await Promise.all(sends), ['ok 0', 'INVALID_RECORD 1', 'ok 2']);
  t.is(cluster.produceRequests.length, 2, 'the warm-up, then one request for the three');
  t.deepEqual(cluster.records('orders', 1), [], 'nothing of the refused batch was stored');
  await client.close();
});

test('local replies: a publish on a local subject is delivered in-process once; other subjects go to the transport', (t) => {
  const sent: string[] = [];
  const inner = { publish: (subject: string) => sent.push(subject) } as unknown as Parameters<typeof withLocalReplies>[0];
  const { transport, local } = withLocalReplies(inner);
  const got: number[] = [];
  const subject = local.open((data) => got.push(data[0]!));
  t.is(local.openCount, 1);
  transport.publish(subject, new Uint8Array([7]));
  transport.publish(subject, new Uint8Array([8]));
  t.deepEqual(got, [7], 'delivered once, the duplicate dropped');
  t.is(local.openCount, 0);
  const closed = local.open(() => got.push(99));
  local.close(closed);
  transport.publish(closed, new Uint8Array([9]));
  transport.publish('tm.x.b.1.produce.orders', new Uint8Array([1]));
  t.deepEqual(got, [7], 'a closed local subject drops what comes');
  t.deepEqual(sent, ['tm.x.b.1.produce.orders'], 'local subjects never reach NATS');
  const routed: string[] = [];
  local.route('_TM_LOCAL.rs.', (s) => routed.push(s));
  transport.publish('_TM_LOCAL.rs.2.7', new Uint8Array([1]));
  transport.publish('_TM_LOCAL.rs.2.8', new Uint8Array([1]));
  transport.publish('_TM_LOCAL.other.1', new Uint8Array([1]));
  t.deepEqual(routed, ['_TM_LOCAL.rs.2.7', '_TM_LOCAL.rs.2.8'], 'a route takes every subject under its prefix, again and again');
  t.deepEqual(sent, ['tm.x.b.1.produce.orders'], 'an unrouted local subject is dropped, not sent');
  t.throws(() => local.route('tm.x.', () => undefined), undefined, 'routes live under the local prefix only');
});
