/**
 * Producer backpressure and bad records, over the in-memory cluster and a fake clock (nothing
 * sleeps; time moves only through clock.advance()): maxBlockMs, sendsWaitingMax, and a codec that
 * throws failing its own send alone.
 */
import test, { type ExecutionContext } from 'ava';
import { ByteBudget } from '../src/client/byte-budget.js';
import { codecs, Tidemark, TidemarkError, type Codec, type ErrorCode } from '../src/index.js';
import { recordBytes } from '../src/protocol/batch.js';
import { FakeClock, FakeCluster, SeededRandom, settle } from './helpers/fake-transport.js';

interface Order {
  id: number;
  item: string;
}

const json = codecs.json<Order>();
/** Every Order below has a one-digit id, so every record costs the same bytes. */
const ORDER_BYTES = recordBytes({ key: null, value: json.encode({ id: 0, item: 'x' }), headers: {}, timestamp: 0 });

function setup() {
  const clock = new FakeClock();
  const cluster = new FakeCluster(clock);
  cluster.addTopic('orders', 1);
  const client = Tidemark.fromTransport(cluster, { cluster: 'test', clock, random: new SeededRandom(7) });
  return { clock, cluster, client };
}

async function rejection(t: ExecutionContext, promise: Promise<unknown>): Promise<TidemarkError> {
  return (await t.throwsAsync(promise, { instanceOf: TidemarkError })) as TidemarkError;
}

/** 'pending', or how the promise settled (an offset, or an error code) as far as settled now. */
function outcome(promise: Promise<{ offset: number }>): () => number | ErrorCode | 'pending' {
  let state: number | ErrorCode | 'pending' = 'pending';
  promise.then(
    (m) => (state = m.offset),
    (e: unknown) => (state = e instanceof TidemarkError ? e.code : 'INTERNAL'),
  );
  return () => state;
}

const storedIds = (cluster: FakeCluster) => cluster.records('orders', 0).map((r) => json.decode(r.value!).id);

/** Sends one record and waits for it, so the producer has the topic's metadata cached. */
async function warm(clock: FakeClock, producer: { send(r: { value: Order }): Promise<unknown> }): Promise<void> {
  const sent = producer.send({ value: { id: 9, item: 'x' } });
  await clock.advance(0);
  await sent;
}

test('a send() blocked on a full inFlightBytesMax rejects with TIMEOUT after maxBlockMs; the send behind it still gets in, in order', async (t) => {
  const { clock, cluster, client } = setup();
  const producer = client.producer<Order>({ topic: 'orders', codec: json, lingerMs: 0, inFlightBytesMax: 2 * ORDER_BYTES, maxBlockMs: 1000 });
  await warm(clock, producer);
  cluster.holdProduce = true;
  const a = outcome(producer.send({ value: { id: 0, item: 'x' } }));
  const b = outcome(producer.send({ value: { id: 1, item: 'x' } }));
  const blocked = producer.send({ value: { id: 2, item: 'x' } });
  const c = outcome(blocked);
  await clock.advance(500);
  const d = outcome(producer.send({ value: { id: 3, item: 'x' } }));
  t.is(cluster.heldProduce.length, 1, 'a and b hold the whole budget, in one request');
  await clock.advance(499);
  t.deepEqual([a(), b(), c(), d()], ['pending', 'pending', 'pending', 'pending'], 'c has waited 999 ms of its 1000');

  await clock.advance(1);
  const error = await rejection(t, blocked);
  t.is(error.code, 'TIMEOUT');
  t.true(error.retriable, 'nothing of it was sent: the caller may send it again');
  t.is(error.context['waitingFor'], 'budget');
  t.is(d(), 'pending', 'd waits on, with its own deadline (500 ms later)');

  // The expired send took no bytes: once a and b are acknowledged, d fits and goes.
  cluster.releaseProduce();
  await settle();
  t.deepEqual([a(), b()], [1, 2]);
  t.is(cluster.heldProduce.length, 1, 'd was admitted and sent');
  cluster.releaseProduce();
  await settle();
  t.is(d(), 3);
  t.deepEqual(storedIds(cluster), [9, 0, 1, 3], 'c never left the client; the others kept send order');
  t.is(clock.pendingTimers, 1, 'no expiry timer is left once nobody waits (the one timer is the producer session heartbeat)');
  await client.close();
});

test('maxBlockMs 0: a send that cannot be admitted at once rejects with TIMEOUT without time passing', async (t) => {
  const { clock, cluster, client } = setup();
  const producer = client.producer<Order>({ topic: 'orders', codec: json, lingerMs: 0, inFlightBytesMax: ORDER_BYTES, maxBlockMs: 0 });
  await warm(clock, producer);
  cluster.holdProduce = true;
  const first = outcome(producer.send({ value: { id: 0, item: 'x' } }));
  const second = producer.send({ value: { id: 1, item: 'x' } });
  const startedAt = clock.now();
  await clock.advance(0);
  t.is((await rejection(t, second)).code, 'TIMEOUT');
  t.is(clock.now(), startedAt);
  cluster.releaseProduce();
  await settle();
  t.is(first(), 1);
  await client.close();
});

test('the codec runs once per record, whether a send is admitted at once or waits for budget', async (t) => {
  const { clock, cluster, client } = setup();
  const encoded: number[] = [];
  const counting: Codec<Order> = {
    encode: (order) => (encoded.push(order.id), json.encode(order)),
    decode: json.decode,
  };
  const producer = client.producer<Order>({ topic: 'orders', codec: counting, lingerMs: 0, inFlightBytesMax: 2 * ORDER_BYTES });
  await warm(clock, producer);
  cluster.holdProduce = true;
  const sends = [0, 1, 2, 3, 4].map((id) => producer.send({ value: { id, item: 'x' } }));
  await settle();
  t.is(cluster.heldProduce.length, 1, 'the budget holds two records; the third waits, heading the queue');
  cluster.holdProduce = false;
  cluster.releaseProduce();
  await clock.advance(0);
  t.deepEqual((await Promise.all(sends)).map((m) => m.offset), [1, 2, 3, 4, 5]);
  t.deepEqual(encoded, [9, 0, 1, 2, 3, 4], 'each value encoded once, in send order');
  t.deepEqual(storedIds(cluster), [9, 0, 1, 2, 3, 4]);
  await client.close();
});

test('sendsWaitingMax: the send beyond it rejects at once with BUSY; the waiting ones still land', async (t) => {
  const { clock, cluster, client } = setup();
  const producer = client.producer<Order>({ topic: 'orders', codec: json, lingerMs: 0, inFlightBytesMax: ORDER_BYTES, sendsWaitingMax: 2 });
  await warm(clock, producer);
  cluster.holdProduce = true;
  const startedAt = clock.now();
  const admitted = producer.send({ value: { id: 0, item: 'x' } });
  const waiting = [producer.send({ value: { id: 1, item: 'x' } }), producer.send({ value: { id: 2, item: 'x' } })];
  const refused = await rejection(t, producer.send({ value: { id: 3, item: 'x' } }));
  t.is(refused.code, 'BUSY');
  t.true(refused.retriable);
  t.is(refused.context['sendsWaitingMax'], 2);
  t.is(clock.now(), startedAt, 'refused before any time passed');

  cluster.holdProduce = false;
  cluster.releaseProduce();
  await clock.advance(0);
  t.deepEqual((await Promise.all([admitted, ...waiting])).map((m) => m.offset), [1, 2, 3]);
  t.deepEqual(storedIds(cluster), [9, 0, 1, 2], 'the refused send never left the client');
  const again = producer.send({ value: { id: 4, item: 'x' } });
  await clock.advance(0);
  t.is((await again).offset, 4, 'room again once the waiting ones are admitted');
  await client.close();
});

test('a codec that throws rejects its own send alone with INVALID_RECORD; its neighbours in the queue and the batch are sent', async (t) => {
  const { clock, cluster, client } = setup();
  const boom = new Error('cannot encode order 1');
  const picky: Codec<Order> = {
    encode: (o) => {
      if (o.id === 1) throw boom;
      return json.encode(o);
    },
    decode: json.decode,
  };
  const wrongType: Codec<Order> = { encode: (o) => (o.id === 4 ? ('not bytes' as unknown as Uint8Array) : json.encode(o)), decode: json.decode };
  const producer = client.producer<Order>({ topic: 'orders', codec: picky, lingerMs: 5 });
  // No metadata yet: all three wait in the admission queue behind the first.
  const sends = [0, 1, 2].map((id) => producer.send({ value: { id, item: 'x' } }));
  await clock.advance(5);
  const results = await Promise.allSettled(sends);
  t.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? r.value.offset : (r.reason as TidemarkError).code)),
    [0, 'INVALID_RECORD', 1],
  );
  const error = (results[1] as PromiseRejectedResult).reason as TidemarkError;
  t.true(error instanceof TidemarkError);
  t.false(error.retriable);
  t.is(error.cause, boom, 'the codec error is kept as the cause');
  t.deepEqual(cluster.callsOf('produce').map((c) => c.recordCount), [2], 'the neighbours share one batch');

  const other = client.producer<Order>({ topic: 'orders', codec: wrongType, lingerMs: 5 });
  const more = [3, 4, 5].map((id) => other.send({ value: { id, item: 'x' } }));
  await clock.advance(5);
  const moreResults = await Promise.allSettled(more);
  t.deepEqual(
    moreResults.map((r) => (r.status === 'fulfilled' ? r.value.offset : (r.reason as TidemarkError).code)),
    [2, 'INVALID_RECORD', 3],
    'a codec returning something other than bytes fails that record, not its batch',
  );
  t.deepEqual(storedIds(cluster), [0, 2, 3, 5]);
  await client.close();
});

test('maxBlockMs bounds the wait for metadata too; bad options are refused', async (t) => {
  const { clock, client } = setup();
  const producer = client.producer<string>({ topic: 'nope', codec: codecs.string(), maxBlockMs: 2000 });
  const send = outcome(producer.send({ value: 'v' }));
  for (let i = 0; i < 20 && send() === 'pending'; i++) await clock.advance(100);
  t.true(send() === 'UNKNOWN_TOPIC' || send() === 'TIMEOUT', `settled as ${send()}`);
  t.throws(() => client.producer({ topic: 'orders', codec: codecs.string(), maxBlockMs: -1 }), { instanceOf: TidemarkError });
  t.throws(() => client.producer({ topic: 'orders', codec: codecs.string(), sendsWaitingMax: 0 }), { instanceOf: TidemarkError });
  await client.close();
});

test('byte budget: a cancelled wait takes nothing and lets the taker behind it in', async (t) => {
  const budget = new ByteBudget(100);
  t.true(budget.tryTake(60));
  const big = budget.take(80);
  const small = budget.take(30);
  let smallTaken: boolean | undefined;
  void small.taken.then((v) => (smallTaken = v));
  await settle(1);
  t.is(smallTaken, undefined, 'FIFO: the small taker waits behind the big one');
  big.cancel();
  t.false(await big.taken);
  t.true(await small.taken);
  t.is(budget.usedBytes, 90, '60 held + 30 granted; the cancelled 80 were never taken');
  small.cancel(); // after the grant: a no-op
  t.is(budget.usedBytes, 90);
  budget.release(90);
  t.is(budget.usedBytes, 0);
  t.is(budget.waiting, 0);
});
