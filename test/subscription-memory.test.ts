/**
 * A consumer that stops reading costs its leader no memory beyond its receive window: one real
 * `tidemark node start` process, a Shared subscription whose consumer (receiverQueueSize 1,000)
 * takes a few messages and then stops calling next(), while producers write MEMORY_BYTES behind
 * it for at least PAUSE_S seconds. The leader holds, per subscription, only offsets of what is out
 * (at most the window) and a bounded read-ahead of offsets; the backlog waits in the log. Checked:
 * the subscription never has more out than the window, the node's resident set (VmRSS) stays under
 * RSS_BOUND_BYTES, and once the consumer reads again it gets every record, in order, from where it
 * stopped.
 *
 * CI writes 384 MiB over at least 10 s; the run (1 GiB while the consumer stops for 60 s):
 *   TM_SUB_MEMORY_BYTES=1073741824 TM_SUB_MEMORY_PAUSE_S=60 npx ava dist/test/subscription-memory.test.js
 * TM_SUB_MEMORY_CONTROL=1 runs the same load with no subscription (the RSS it reports is the
 * node's own under that load, for comparison). Figures in docs/subscriptions.md.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { codecs } from '../src/client/codecs.js';
import { behaviourFixture } from './helpers/behaviour-fixture.js';
import { mib, rssBytes } from './helpers/rss.js';

const MiB = 1024 * 1024;
const MEMORY_BYTES = Number(process.env['TM_SUB_MEMORY_BYTES'] ?? 384 * MiB);
const PAUSE_S = Number(process.env['TM_SUB_MEMORY_PAUSE_S'] ?? 10);
const CONTROL = process.env['TM_SUB_MEMORY_CONTROL'] === '1';
const PARTITIONS = 4;
const VALUE_BYTES = 8_192;
const WINDOW = 1_000;
/** The node-memory test's bound (memtables, tail caches, heap); a leader holding the backlog would pass it. */
const RSS_BOUND_BYTES = 768 * MiB;
const LOG_DIR = join(tmpdir(), `tidemark-subscription-memory-${process.pid}`);

const fx = behaviourFixture(test, { cluster: 'submem', nodes: [{ id: 1 }], voters: [1], logDir: LOG_DIR, client: { requestTimeoutMs: 10_000 } });

test.serial(`a consumer that stops reading while ${mib(MEMORY_BYTES)} are written keeps its leader's memory bounded, and then reads on from where it stopped`, async (t) => {
  t.timeout(Math.max(120, PAUSE_S * 3) * 1000);
  const admin = fx.client.admin();
  const pid = fx.cluster.incarnation(1).proc.pid;
  const topic = 'mem-sub';
  await admin.createTopic({ name: topic, partitions: PARTITIONS, replicationFactor: 1 });
  const producer = fx.client.producer<string>({ topic, codec: codecs.string(), acks: 1, lingerMs: 5 });
  t.teardown(() => producer.close());
  const value = (p: number, i: number) => `${p}:${i}:`.padEnd(VALUE_BYTES, 'v');
  const sent = Array.from({ length: PARTITIONS }, () => 0);
  const send = (p: number) => producer.send({ partition: p, value: value(p, sent[p]!++) });

  // A few records, read by the consumer; then it stops reading.
  for (let i = 0; i < 10; i++) await send(i % PARTITIONS);
  const consumer = CONTROL
    ? undefined
    : await fx.client.consumer<string>({ topic, subscription: 'stalled', type: 'Shared', codec: codecs.string(), initialPosition: 'earliest', receiverQueueSize: WINDOW });
  t.teardown(() => consumer?.close());
  const next = Array.from({ length: PARTITIONS }, () => 0);
  const take = async () => {
    const r = await consumer!.next();
    const m = r.value!;
    const [p, i] = m.value!.split(':').map(Number) as [number, number];
    t.is(p, m.partition);
    t.is(i, next[p]!, `partition ${p}: record ${next[p]} next, got ${i}`);
    next[p] = i + 1;
    acks.push(m.ack());
  };
  const acks: Array<Promise<void>> = [];
  if (consumer !== undefined) for (let i = 0; i < 10; i++) await take();
  await Promise.all(acks);

  const before = await rssBytes(pid);
  let peak = before;
  let maxUnacked = 0;
  const started = performance.now();
  const inFlight = new Set<Promise<unknown>>();
  let written = 0;
  let n = 0;
  let sampledAt = 0;
  while (written < MEMORY_BYTES || performance.now() - started < PAUSE_S * 1000) {
    if (written < MEMORY_BYTES) {
      const s = send(n++ % PARTITIONS);
      inFlight.add(s);
      void s.finally(() => inFlight.delete(s));
      written += VALUE_BYTES;
      if (inFlight.size >= 2_000) await Promise.race(inFlight);
    } else {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    if (performance.now() - sampledAt >= 250) {
      sampledAt = performance.now();
      peak = Math.max(peak, await rssBytes(pid));
      if (consumer !== undefined) {
        const d = await admin.describeSubscription(topic, 'stalled');
        maxUnacked = Math.max(maxUnacked, ...d.partitions.map((p) => p.unacked));
        t.true(d.partitions.reduce((a, p) => a + p.unacked, 0) <= WINDOW, 'never more out than the window');
      }
    }
  }
  await Promise.all(inFlight);
  const seconds = (performance.now() - started) / 1000;
  const after = await rssBytes(pid);
  peak = Math.max(peak, after);
  t.log(
    `${CONTROL ? 'no subscription' : 'stalled Shared consumer (window 1000)'}: wrote ${mib(written)} in ${seconds.toFixed(1)} s; node RSS before ${mib(before)}, peak ${mib(peak)}, after ${mib(after)}` +
      (CONTROL ? '' : `; most unacked on a partition: ${maxUnacked}`),
  );
  t.true(peak < RSS_BOUND_BYTES, `RSS peak ${mib(peak)} < ${mib(RSS_BOUND_BYTES)}`);
  if (consumer === undefined) return;

  // Reading again: everything, in order, from where it stopped (the first few thousand suffice).
  for (let i = 0; i < 4_000; i++) await take();
  await Promise.all(acks);
  const d = await admin.describeSubscription(topic, 'stalled');
  t.true(d.backlog > 0, 'the rest waits in the log');
});

test.serial('a consumer of several partitions holding ~1 MiB batches gets them all: consume replies stay within max_payload', async (t) => {
  t.timeout(60_000);
  const topic = 'mem-big-batches';
  const BIG = 64 * 1024;
  await fx.client.admin().createTopic({ name: topic, partitions: PARTITIONS, replicationFactor: 1 });
  const producer = fx.client.producer<string>({ codec: codecs.string(), topic, acks: 1, lingerMs: 50 });
  const pad = 'v'.repeat(BIG - 16);
  const count = PARTITIONS * 32; // 32 records of 64 KiB per partition: about 1 MiB batches
  await Promise.all(Array.from({ length: count }, (_, i) => producer.send({ partition: i % PARTITIONS, value: `${i}:${pad}` })));
  await producer.close();
  const consumer = await fx.client.consumer<string>({ topic, subscription: 'big', type: 'Exclusive', codec: codecs.string(), initialPosition: 'earliest' });
  t.teardown(() => consumer.close());
  let got = 0;
  const deadline = Date.now() + 5_000;
  let timer: NodeJS.Timeout | undefined;
  while (got < count && Date.now() < deadline) {
    const next = await Promise.race([consumer.next(), new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()))))]);
    clearTimeout(timer);
    if (next === undefined || next.done === true) break;
    void next.value.ack();
    got++;
  }
  t.is(fx.cluster.logs(1, 'consume reply dropped').length, 0, 'no consume reply dropped by the node');
  t.is(got, count, `${got} of ${count} records received within 5 s (less than one request timeout)`);
});
