/**
 * Producer backpressure and bad records, over the in-memory cluster and a fake clock (nothing
 * sleeps; time moves only through clock.advance()): maxBlockMs, sendsWaitingMax, and a codec that
 * throws failing its own send alone.
 */
import test, { type ExecutionContext } from 'ava';
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
