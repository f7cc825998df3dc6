/**
 * The SDK against a real nats-server and a real node: the README flow end to end.
 */
import test from 'ava';
import { utf8 } from '../src/client/codecs.js';
import { codecs, partitionForKey, Tidemark, TidemarkError, type Reader, type ReaderRecord, type RecordMetadata } from '../src/index.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { startTestNode, type TestNode } from './helpers/node.js';

interface Order {
  id: number;
  source: string;
}

let nats: NatsServer;
let node: TestNode;
let client: Tidemark;

test.before(async () => {
  nats = await startNatsServer();
  node = await startTestNode(nats.url);
  client = await Tidemark.connect({ servers: nats.url, cluster: node.cluster });
});

test.after.always(async () => {
  await client?.close();
  await node?.destroy();
  await nats?.stop();
});

/** Reads exactly `n` records, or fails after `timeoutMs` (a bound for the test, not a sleep). */
async function readN<T>(reader: Reader<T>, n: number, timeoutMs = 15_000): Promise<ReaderRecord<T>[]> {
  const out: ReaderRecord<T>[] = [];
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`read ${out.length} of ${n} records within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    while (out.length < n) {
      const r = await Promise.race([reader.next(), expired]);
      if (r.done) break;
      out.push(r.value);
    }
  } finally {
    clearTimeout(timer);
  }
  return out;
}

test.serial('README flow: create, produce keyed and keyless with acks all/1/0, read back in order, describe, delete', async (t) => {
  const admin = client.admin();
  const created = await admin.createTopic({ name: 'orders', partitions: 3, replicationFactor: 1, config: {} });
  t.is(created.partitions.length, 3);
  t.true((await admin.listTopics()).includes('orders'));

  const codec = codecs.json<Order>();
  const all = client.producer<Order>({ topic: 'orders', codec, acks: 'all', lingerMs: 5, batchBytesMax: 1 << 20 });
  const one = client.producer<Order>({ topic: 'orders', codec, acks: 1, lingerMs: 0 });
  const zero = client.producer<Order>({ topic: 'orders', codec, acks: 0, lingerMs: 2 });

  const keyed = Array.from({ length: 40 }, (_, id) => ({ key: `o-${id}`, value: { id, source: 'all' } }));
  const keyedSends = keyed.map((r) => all.send({ ...r, headers: { 'content-type': 'application/json' } }));
  const unackedSends = Array.from({ length: 10 }, (_, id) => zero.send({ key: `z-${id}`, value: { id, source: 'zero' } }));
  // Keyless records stick to one partition per batch: send them in rounds so batches close between.
  const keylessAcks: RecordMetadata[] = [];
  for (let round = 0; round < 6; round++) {
    const batch = Array.from({ length: 5 }, (_, i) => one.send({ value: { id: round * 5 + i, source: 'one' } }));
    keylessAcks.push(...(await Promise.all(batch)));
  }
  const keyedAcks = await Promise.all(keyedSends);
  const unacked = await Promise.all(unackedSends);
  await Promise.all([all.flush(), one.flush(), zero.flush()]);

  keyed.forEach((r, i) => t.is(keyedAcks[i]!.partition, partitionForKey(utf8(r.key), 3), `key ${r.key} on its murmur2 partition`));
  unacked.forEach((m, id) => t.deepEqual([m.offset, m.partition], [-1, partitionForKey(utf8(`z-${id}`), 3)], 'acks 0: no offset'));
  t.is(new Set(keylessAcks.map((m) => m.partition)).size, 3, 'keyless records round-robin over the partitions');

  // Read every partition back from the start.
  const expected = new Map<number, number>();
  for (const m of [...keyedAcks, ...keylessAcks, ...unacked]) expected.set(m.partition, (expected.get(m.partition) ?? 0) + 1);
  const byPartition = new Map<number, ReaderRecord<Order>[]>();
  for (let p = 0; p < 3; p++) {
    const reader = client.reader<Order>({ topic: 'orders', partition: p, from: 'earliest', codec, maxWaitMs: 200 });
    byPartition.set(p, await readN(reader, expected.get(p) ?? 0));
    await reader.close();
  }
  for (const [p, records] of byPartition) {
    t.is(records.length, expected.get(p) ?? 0, `partition ${p} count`);
    t.deepEqual(records.map((r) => r.offset), records.map((_, i) => i), `partition ${p}: contiguous offsets from 0`);
    // Each producer's records keep their send order within the partition.
    for (const source of ['all', 'one', 'zero']) {
      const ids = records.filter((r) => r.value!.source === source).map((r) => r.value!.id);
      t.deepEqual(ids, [...ids].sort((a, b) => a - b), `partition ${p}, acks ${source}: in send order`);
    }
  }
  // Acknowledged offsets are where the records are.
  const at = (m: RecordMetadata) => byPartition.get(m.partition)![m.offset]!;
  keyedAcks.forEach((m, id) => {
    const rec = at(m);
    t.deepEqual(rec.value, { id, source: 'all' });
    t.is(rec.keyString, `o-${id}`);
    t.is(rec.headerString('content-type'), 'application/json');
    t.true(rec.timestamp > 1_600_000_000_000);
  });
  keylessAcks.forEach((m, id) => {
    t.deepEqual(at(m).value, { id, source: 'one' });
    t.is(at(m).key, null);
  });
  for (const records of byPartition.values()) {
    for (const r of records.filter((x) => x.value!.source === 'zero')) t.is(r.partition, partitionForKey(utf8(r.keyString!), 3));
  }

  const described = await admin.describeTopic('orders');
  t.is(described.name, 'orders');
  t.is(described.topicId, created.topicId);
  for (const p of described.partitions) {
    const n = expected.get(p.partition) ?? 0;
    t.is(p.leader, node.id);
    t.deepEqual([p.logStartOffset, p.logEndOffset, p.highWatermark], [0, n, n], `partition ${p.partition} offsets`);
    t.deepEqual([p.leaderEpoch, p.replicas, p.isr], [0, [node.id], [node.id]], `partition ${p.partition}: epoch 0, one replica, in sync`);
    t.deepEqual(p.replicaStates, [{ brokerId: node.id, logEndOffset: n, lagMs: 0 }], `partition ${p.partition}: the leader reports itself`);
  }

  // One replica each: nothing to elect, per partition, and the call as a whole succeeds.
  const preferred = await admin.electLeaders({ topic: 'orders' });
  t.deepEqual(
    preferred.map((r) => [r.topic, r.partition, r.leader, r.error?.code]),
    [0, 1, 2].map((p) => ['orders', p, node.id, 'ELECTION_NOT_NEEDED']),
  );
  const unclean = await admin.electLeaders({ type: 'unclean', topic: 'orders', partitions: [2, 2, 9] });
  t.deepEqual(
    unclean.map((r) => [r.partition, r.leader, r.error?.code]),
    [
      [2, node.id, 'ELECTION_NOT_NEEDED'],
      [9, -1, 'UNKNOWN_TOPIC'],
    ],
    'a partition the topic lacks is a per-partition UNKNOWN_TOPIC; duplicates are asked once',
  );
  t.true((await admin.electLeaders()).some((r) => r.topic === 'orders'), 'without a topic: every topic');
  const noTopic = await t.throwsAsync(admin.electLeaders({ topic: 'no-such-topic' }), { instanceOf: TidemarkError });
  t.is(noTopic?.code, 'UNKNOWN_TOPIC', 'an unknown topic rejects the call, at once (not retried)');
  const noPartitionsWithoutTopic = await t.throwsAsync(admin.electLeaders({ partitions: [0] }), { instanceOf: TidemarkError });
  t.is(noPartitionsWithoutTopic?.code, 'INVALID_REQUEST');

  await Promise.all([all.close(), one.close(), zero.close()]);
  await admin.deleteTopic('orders');
  t.false((await admin.listTopics()).includes('orders'));
  const missing = await t.throwsAsync(admin.describeTopic('orders'), { instanceOf: TidemarkError });
  t.is(missing?.code, 'UNKNOWN_TOPIC');
});

test.serial('a producer with a tiny inFlightBytesMax still delivers everything in order', async (t) => {
  await client.admin().createTopic({ name: 'tiny', partitions: 1 });
  const codec = codecs.json<Order>();
  const producer = client.producer<Order>({ topic: 'tiny', codec, lingerMs: 5, inFlightBytesMax: 300 });
  const sends = Array.from({ length: 300 }, (_, id) => producer.send({ key: null, value: { id, source: 'tiny' } }));
  const acks = await Promise.all(sends);
  t.deepEqual(acks.map((m) => m.offset), acks.map((_, i) => i));
  const reader = client.reader<Order>({ topic: 'tiny', partition: 0, codec, fetchBytesMax: 2048 });
  const records = await readN(reader, 300);
  t.deepEqual(records.map((r) => r.value!.id), acks.map((_, i) => i));
  await producer.close();
  await reader.close();
});

test.serial('a reader waiting on an empty partition stops on close()', async (t) => {
  await client.admin().createTopic({ name: 'quiet', partitions: 1 });
  const reader = client.reader<string>({ topic: 'quiet', partition: 0, from: 'latest', codec: codecs.string(), maxWaitMs: 5000 });
  const pending = reader.next();
  // Let the fetch reach the broker and park there (a 5 s long poll).
  await client.admin().describeTopic('quiet');
  const closedAt = performance.now();
  await reader.close();
  t.deepEqual(await pending, { done: true, value: undefined });
  t.true(performance.now() - closedAt < 1000, 'close() does not wait out the long poll');
});
