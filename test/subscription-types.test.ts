/**
 * Subscriptions end to end: the SDK consumer and `tidemark consume --subscription` against a real
 * nats-server and a real node (the partition leader's subscription side included). Each wait is
 * bounded; nothing sleeps.
 */
import test, { type ExecutionContext } from 'ava';
import { codecs, Tidemark, TidemarkError, type Consumer, type ConsumerMessage, type ConsumerOptions, type ErrorCode } from '../src/index.js';
import { runCli } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { startTestNode, type TestNode } from './helpers/node.js';

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

async function topicWith(name: string, partitions: number, count: number): Promise<string[]> {
  await client.admin().createTopic({ name, partitions, replicationFactor: 1 });
  const producer = client.producer<string>({ topic: name, codec: codecs.string(), acks: 'all' });
  const values = Array.from({ length: count }, (_, i) => `${name}-${i}`);
  await Promise.all(values.map((value, i) => producer.send({ key: `k${i % 17}`, value })));
  await producer.close();
  return values;
}

function consumer(topic: string, subscription: string, extra: Partial<ConsumerOptions<string>> = {}): Promise<Consumer<string>> {
  return client.consumer<string>({ topic, subscription, codec: codecs.string(), initialPosition: 'earliest', ...extra });
}

/** A next() still pending from a nextWithin that gave up: the next call waits on it, so no message is lost to it. */
const pendingNext = new WeakMap<object, Promise<IteratorResult<unknown, unknown>>>();

/** The next message within `timeoutMs`, or undefined when none came (a bound, not a sleep). */
async function nextWithin<T>(c: Consumer<T>, timeoutMs: number): Promise<ConsumerMessage<T> | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const none = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), timeoutMs);
  });
  const next = (pendingNext.get(c) as Promise<IteratorResult<ConsumerMessage<T>, undefined>> | undefined) ?? c.next();
  pendingNext.set(c, next);
  try {
    const r = await Promise.race([next, none]);
    if (r === undefined) return undefined;
    pendingNext.delete(c);
    return r.done ? undefined : r.value;
  } finally {
    clearTimeout(timer);
  }
}

async function drain<T>(c: Consumer<T>, n: number, quietMs = 3000): Promise<ConsumerMessage<T>[]> {
  const out: ConsumerMessage<T>[] = [];
  while (out.length < n) {
    const m = await nextWithin(c, quietMs);
    if (m === undefined) break;
    out.push(m);
    await m.ack();
  }
  return out;
}

async function rejection(t: ExecutionContext, promise: Promise<unknown>): Promise<ErrorCode> {
  const error = await t.throwsAsync(promise, { instanceOf: TidemarkError });
  return (error as TidemarkError).code;
}

test.serial('Shared: two consumers get disjoint messages whose union is everything', async (t) => {
  const values = await topicWith('shared-t', 3, 300);
  const a = await consumer('shared-t', 'work', { type: 'Shared', receiverQueueSize: 20 });
  const b = await consumer('shared-t', 'work', { type: 'Shared', receiverQueueSize: 20 });
  const [fromA, fromB] = await Promise.all([drain(a, 300), drain(b, 300)]);
  const seenA = fromA.map((m) => `${m.partition}@${m.offset}`);
  const seenB = fromB.map((m) => `${m.partition}@${m.offset}`);
  t.true(seenA.length > 0 && seenB.length > 0, `both got some: ${seenA.length} / ${seenB.length}`);
  t.deepEqual(seenA.filter((x) => seenB.includes(x)), [], 'disjoint');
  t.deepEqual([...fromA, ...fromB].map((m) => m.value).sort(), [...values].sort(), 'union is everything');
  await Promise.all([a.close(), b.close()]);
});

test.serial('Exclusive refuses a second consumer with CONSUMER_BUSY; after the first closes, a new one gets in', async (t) => {
  await topicWith('excl-t', 2, 10);
  const first = await consumer('excl-t', 'only');
  t.is(await rejection(t, consumer('excl-t', 'only')), 'CONSUMER_BUSY');
  await first.close();
  const next = await consumer('excl-t', 'only');
  t.is((await drain(next, 10)).length, 10);
  await next.close();
});

test.serial('cumulative ack is refused on Shared and works on Exclusive', async (t) => {
  await topicWith('cumul-t', 1, 5);
  const shared = await consumer('cumul-t', 'sh', { type: 'Shared' });
  const m = await nextWithin(shared, 5000);
  t.truthy(m);
  t.is(await rejection(t, shared.ackCumulative(m!)), 'CUMULATIVE_ACK_NOT_ALLOWED');
  await shared.close();
  const exclusive = await consumer('cumul-t', 'ex');
  const got: ConsumerMessage<string>[] = [];
  for (let i = 0; i < 5; i++) got.push((await nextWithin(exclusive, 5000))!);
  await exclusive.ackCumulative(got[4]!);
  await exclusive.close();
  // Everything was acknowledged: a new consumer of the subscription gets nothing.
  const again = await consumer('cumul-t', 'ex');
  t.is(await nextWithin(again, 1500), undefined);
  await again.close();
});

test.serial('nack and ack timeout redeliver with a growing redelivery count', async (t) => {
  await topicWith('redeliver-t', 1, 1);
  const c = await consumer('redeliver-t', 'r', { type: 'Shared', nackRedeliveryDelayMs: 100, ackTimeoutMs: 1000 });
  const counts: number[] = [];
  for (let i = 0; i < 2; i++) {
    const m = await nextWithin(c, 5000);
    t.truthy(m, `delivery ${i}`);
    counts.push(m!.redeliveryCount);
    m!.nack();
  }
  // Not acknowledged, not nacked: the ack timeout sends it again.
  const timedOut = await nextWithin(c, 5000);
  t.truthy(timedOut);
  counts.push(timedOut!.redeliveryCount);
  const last = await nextWithin(c, 5000);
  t.truthy(last, 'the ack timeout redelivered it');
  counts.push(last!.redeliveryCount);
  await last!.ack();
  t.deepEqual(counts, [0, 1, 2, 3]);
  await c.close();
});

test.serial('the dead-letter topic receives a message after maxRedeliverCount, and it is acknowledged', async (t) => {
  await topicWith('dlq-t', 1, 2);
  const c = await consumer('dlq-t', 'd', { type: 'Shared', nackRedeliveryDelayMs: 50, deadLetterPolicy: { maxRedeliverCount: 2 } });
  const seen: string[] = [];
  for (;;) {
    const m = await nextWithin(c, 3000);
    if (m === undefined) break;
    seen.push(`${m.value}:${m.redeliveryCount}`);
    if (m.offset === 0) await m.ack();
    else m.nack();
  }
  t.deepEqual(seen, ['dlq-t-0:0', 'dlq-t-1:0', 'dlq-t-1:1']);
  const reader = client.reader<string>({ topic: 'dlq-t-d-DLQ', partition: 0, from: 'earliest', codec: codecs.string() });
  const dead = await reader.next();
  t.is(dead.value?.value, 'dlq-t-1');
  t.is(dead.value?.headerString('tidemark-dlq-origin-offset'), '1');
  await reader.close();
  t.true(c.caughtUp() || (await waitCaughtUp(c)), 'the dead-lettered message was acknowledged');
  await c.close();
});

async function waitCaughtUp<T>(c: Consumer<T>, timeoutMs = 5000): Promise<boolean> {
  // caughtUp() changes as replies arrive; the consumer's own polls drive it.
  const deadline = Date.now() + timeoutMs;
  while (!c.caughtUp() && Date.now() < deadline) await nextWithin(c, 100);
  return c.caughtUp();
}

test.serial('Failover: when the active consumer closes, the other takes over and nothing is lost', async (t) => {
  const values = await topicWith('failover-t', 1, 100);
  const a = await consumer('failover-t', 'f', { type: 'Failover', consumerName: 'a' });
  const b = await consumer('failover-t', 'f', { type: 'Failover', consumerName: 'b' });
  // 'a' sorts first: it is active on partition 0; 'b' stands by and gets nothing.
  const fromA: ConsumerMessage<string>[] = [];
  for (let i = 0; i < 40; i++) {
    const m = await nextWithin(a, 5000);
    t.truthy(m);
    fromA.push(m!);
    if (i < 30) await m!.ack(); // 30..39 are received but never acknowledged
  }
  t.is(await nextWithin(b, 500), undefined, 'the standby gets nothing while the active one is there');
  await a.close();
  const fromB = await drain(b, 100);
  const acknowledged = new Set(fromA.slice(0, 30).map((m) => m.value));
  const union = new Set([...acknowledged, ...fromB.map((m) => m.value)]);
  t.deepEqual([...union].sort(), [...values].sort(), 'nothing lost');
  t.true(fromB.some((m) => m.value === fromA[30]!.value), 'the unacknowledged ones came to the new active consumer');
  t.is(fromB[0]!.offset, 30, 'it starts from the last acknowledged position');
  await b.close();
});

test.serial('CLI: consume --subscription --exit-at-end prints everything once, acknowledges it, and exits 0; a second Exclusive consumer exits non-zero naming CONSUMER_BUSY', async (t) => {
  const values = await topicWith('cli-sub-t', 2, 50);
  const env = { nats: nats.url, timeoutMs: 30_000 };
  const args = ['consume', 'cli-sub-t', '--subscription', 'cli', '--initial-position', 'earliest', '--exit-at-end', '--cluster', node.cluster];
  const first = await runCli(args, env);
  t.is(first.code, 0, first.stderr);
  t.deepEqual(first.stdout.split('\n').filter(Boolean).sort(), [...values].sort());
  // Everything was acknowledged: a second run has nothing to print.
  const second = await runCli(args, env);
  t.is(second.code, 0, second.stderr);
  t.is(second.stdout, '');

  const json = await runCli(['consume', 'cli-sub-t', '--subscription', 'cli-json', '--initial-position', 'earliest', '--max-messages', '1', '--json', '--cluster', node.cluster], env);
  t.is(json.code, 0, json.stderr);
  const record = JSON.parse(json.stdout) as Record<string, unknown>;
  t.deepEqual(Object.keys(record), ['topic', 'partition', 'offset', 'key', 'value', 'headers', 'timestamp', 'redeliveryCount']);
  t.is(record['redeliveryCount'], 0);

  const holder = await consumer('cli-sub-t', 'held');
  const busy = await runCli(['consume', 'cli-sub-t', '--subscription', 'held', '--cluster', node.cluster], env);
  t.is(busy.code, 1);
  t.regex(busy.stderr, /^tidemark: [^\n]*CONSUMER_BUSY[^\n]*\n$/);
  await holder.close();
});
