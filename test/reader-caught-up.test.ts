/**
 * Reader.caughtUp(): the end of a partition as the reader last heard it (what `consume --exit-at-end`
 * waits for), over the in-memory cluster and a fake clock: nothing sleeps.
 */
import test from 'ava';
import { codecs, Tidemark } from '../src/index.js';
import { FakeClock, FakeCluster, SeededRandom, settle } from './helpers/fake-transport.js';

function setup() {
  const clock = new FakeClock();
  const cluster = new FakeCluster(clock);
  cluster.addTopic('events', 1);
  const client = Tidemark.fromTransport(cluster, { cluster: 'test', clock, random: new SeededRandom(3) });
  return { clock, client };
}

async function produce(clock: FakeClock, client: Tidemark, values: string[]): Promise<void> {
  const producer = client.producer<string>({ topic: 'events', codec: codecs.string(), lingerMs: 1 });
  const sends = values.map((value) => producer.send({ value }));
  await clock.advance(1);
  await Promise.all(sends);
  await producer.close();
}

test('an empty partition is caught up once the start is resolved, before any fetch answers', async (t) => {
  const { clock, client } = setup();
  const reader = client.reader<string>({ topic: 'events', partition: 0, from: 'earliest', codec: codecs.string(), maxWaitMs: 5000 });
  t.false(reader.caughtUp(), 'nothing known before the first pull');
  const pending = reader.next();
  await settle();
  t.true(reader.caughtUp(), 'log start = high watermark = 0, while the long poll is still open');
  t.is(reader.highWatermark, 0);
  await reader.close();
  t.deepEqual(await pending, { done: true, value: undefined });
  await clock.advance(0);
  await client.close();
});

test('caught up exactly when the last record below the high watermark is returned', async (t) => {
  const { clock, client } = setup();
  await produce(clock, client, ['a', 'b', 'c']);
  const reader = client.reader<string>({ topic: 'events', partition: 0, from: 'earliest', codec: codecs.string(), maxWaitMs: 100 });
  for (const expected of ['a', 'b']) {
    t.is((await reader.next()).value?.value, expected);
    t.false(reader.caughtUp(), `after ${expected}: records left below the high watermark`);
  }
  t.is((await reader.next()).value?.value, 'c');
  t.true(reader.caughtUp(), 'after the last record');
  // More records: the reader learns of them with its next fetch, and is behind until it returns them.
  await produce(clock, client, ['d', 'e']);
  const next = reader.next();
  await clock.advance(100);
  t.is((await next).value?.value, 'd');
  t.false(reader.caughtUp());
  t.is((await reader.next()).value?.value, 'e');
  t.true(reader.caughtUp());
  await reader.close();
  await client.close();
});

test('a reader from an explicit offset knows nothing until its first fetch answers', async (t) => {
  const { clock, client } = setup();
  await produce(clock, client, ['a', 'b']);
  const reader = client.reader<string>({ topic: 'events', partition: 0, from: { offset: 1 }, codec: codecs.string() });
  t.false(reader.caughtUp());
  t.is((await reader.next()).value?.value, 'b');
  t.true(reader.caughtUp());
  await reader.close();
  await client.close();
});
