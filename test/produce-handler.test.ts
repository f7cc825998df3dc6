/**
 * The broker's produce handler gathers its partitions' answers into one reply: an entry nobody
 * answers by the deadline is answered REQUEST_TIMED_OUT in its place, and the reply always has one
 * outcome per entry, in order (over a fake actor system and clock; nothing sleeps).
 */
import test from 'ava';
import pino from 'pino';
import { createProduceHandlers } from '../src/actors/broker/produce-handler.js';
import { partitionActorId } from '../src/actors/broker/metadata-view.js';
import { createMemoryMetadataStore } from '../src/metadata/metadata-store.js';
import { fenceEpochOf } from '../src/actors/partition/fence-records.js';
import type { PartitionEvent } from '../src/actors/partition/types.js';
import { encodeBatch, isControlBatch } from '../src/protocol/batch.js';
import { decodeReply, encodeMessage, produceResponse } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import { withLocalReplies } from '../src/runtime/local-replies.js';
import type { InboundMessage, Transport } from '../src/runtime/ports.js';
import { FakeClock } from './helpers/fake-transport.js';

const TOPIC_ID = 'a'.repeat(32);

test('entries no partition answers are REQUEST_TIMED_OUT after the deadline; the reply keeps one outcome per entry, in order', async (t) => {
  const clock = new FakeClock();
  const metadata = createMemoryMetadataStore();
  await metadata.propose([
    { type: 'RegisterBroker', brokerId: 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'x' } as never,
    { type: 'Topic', topicId: TOPIC_ID, name: 'orders', config: {} } as never,
    ...[0, 1, 2].map((partition) => ({ type: 'Partition', topicId: TOPIC_ID, partition, replicas: [1], isr: [1], leader: 1, leaderEpoch: 0, partitionEpoch: 0 }) as never),
  ]);
  const inner = { publish: () => undefined, get maxPayloadBytes() { return 1 << 20; } } as unknown as Transport;
  const { transport, local } = withLocalReplies(inner);
  // Partition 0 answers at once, partition 1 never does, partition 2 is refused by its actor.
  const actors = new Map<string, { send(e: { replyTo?: string }): void }>([
    [partitionActorId(TOPIC_ID, 0), { send: (e) => transport.publish(e.replyTo!, encodeMessage({ baseOffset: 7, logStartOffset: 0 })) }],
    [partitionActorId(TOPIC_ID, 1), { send: () => undefined }],
    [partitionActorId(TOPIC_ID, 2), { send: (e) => transport.publish(e.replyTo!, encodeMessage({ error: { code: 'NOT_ENOUGH_REPLICAS', message: 'short' } })) }],
  ]);
  const handler = createProduceHandlers({
    brokerId: 1,
    subjects: new Subjects('test'),
    transport,
    local,
    metadata,
    system: { get: (id: string) => actors.get(id) },
    clock,
    logger: pino({ level: 'silent' }),
  }).produce;
  const replies: Uint8Array[] = [];
  const batch = encodeBatch([{ key: null, value: new Uint8Array([1]), headers: {}, timestamp: 1 }]);
  const msg: InboundMessage = {
    subject: 'tm.test.b.1.produce.orders',
    data: encodeMessage({ timeoutMs: 1000, acks: -1, partitions: [0, 1, 2].map((partition) => ({ partition, batch })) }),
    reply: '_INBOX.x',
    respond: (data) => replies.push(data) > 0,
  };
  handler(msg);
  t.is(replies.length, 0, 'partition 1 has not answered: no reply yet');
  await clock.advance(999);
  t.is(replies.length, 0, 'not before the deadline');
  await clock.advance(600);
  t.is(replies.length, 1);
  const reply = decodeReply(replies[0]!, produceResponse);
  t.deepEqual(
    reply.partitions.map((p) => (p.error === undefined ? `${p.partition}@${p.baseOffset}` : `${p.partition}:${p.error.code}`)),
    ['0@7', '1:REQUEST_TIMED_OUT', '2:NOT_ENOUGH_REPLICAS'],
  );
  t.is(local.openCount, 0, 'the unanswered entry\'s local subject was given up');
});

/** A broker (1) with topic orders: partitions 0 and 1 led here, 2 by broker 2, and the topic's producer epoch at 3. */
async function fencingFixture() {
  const clock = new FakeClock();
  const metadata = createMemoryMetadataStore();
  await metadata.propose([
    { type: 'RegisterBroker', brokerId: 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'x' } as never,
    { type: 'Topic', topicId: TOPIC_ID, name: 'orders', config: {} } as never,
    ...[0, 1, 2].map((partition) => ({ type: 'Partition', topicId: TOPIC_ID, partition, replicas: [1], isr: [1], leader: partition === 2 ? 2 : 1, leaderEpoch: 0, partitionEpoch: 0 }) as never),
    { type: 'ProducerAccess', topicId: TOPIC_ID, epoch: 3, fencedEpoch: 0 } as never,
  ]);
  const inner = { publish: () => undefined, get maxPayloadBytes() { return 1 << 20; } } as unknown as Transport;
  const { transport, local } = withLocalReplies(inner);
  const events: PartitionEvent[] = [];
  const answering = { send: (e: PartitionEvent) => (events.push(e), e.type === 'PRODUCE' && e.replyTo !== undefined && transport.publish(e.replyTo, encodeMessage({ baseOffset: events.length, logStartOffset: 0 }))) };
  const actors = new Map([[partitionActorId(TOPIC_ID, 0), answering], [partitionActorId(TOPIC_ID, 1), answering]]);
  const handlers = createProduceHandlers({
    brokerId: 1,
    subjects: new Subjects('test'),
    transport,
    local,
    metadata,
    system: { get: (id: string) => actors.get(id) },
    clock,
    logger: pino({ level: 'silent' }),
  });
  const replies: Uint8Array[] = [];
  const message = (subject: string, body: object, reply: string | null = '_INBOX.x'): InboundMessage => ({ subject, data: encodeMessage(body), reply: reply ?? undefined, respond: (data) => replies.push(data) > 0 });
  return { handlers, events, replies, message, local };
}

test('fence: each entry is a PRODUCE of one fence record at acks=all, checked at the request\'s epoch and the metadata\'s; the answers gathered as produce gathers them', async (t) => {
  const { handlers, events, replies, message, local } = await fencingFixture();
  handlers.fence(message('tm.test.b.1.fence.orders', { timeoutMs: 1000, accessEpoch: 4, partitions: [{ partition: 0, leaderEpoch: 0 }, { partition: 1 }, { partition: 2 }] }));
  t.is(events.length, 2, 'nothing sent for the partition another broker leads');
  for (const e of events) {
    if (e.type !== 'PRODUCE') return t.fail();
    t.is(e.acks, -1);
    t.deepEqual(e.access, { epoch: 4, known: 3 });
    t.is(fenceEpochOf(e.batch), 4);
    t.true(isControlBatch(e.batch));
    t.is(e.recordCount, 1);
    t.is(e.producer, undefined);
    t.is(e.timeoutMs, 1000);
  }
  t.deepEqual(
    events.map((e) => (e.type === 'PRODUCE' ? e.leaderEpoch : null)),
    [0, undefined],
  );
  t.is(replies.length, 1);
  t.deepEqual(
    decodeReply(replies[0]!, produceResponse).partitions.map((p) => (p.error === undefined ? `${p.partition}@${p.baseOffset}` : `${p.partition}:${p.error.code}`)),
    ['0@1', '1@2', '2:NOT_LEADER'],
  );
  t.is(local.openCount, 0);
  t.throws(() => handlers.fence(message('tm.test.b.1.fence.orders', { timeoutMs: 1000, accessEpoch: 4, partitions: [{ partition: 0 }] }, null)), { message: /reply subject/ });
  t.is(events.length, 2, 'a fence nobody can hear the outcome of is not written');
});

test('produce: every PRODUCE carries the request\'s accessEpoch (absent: 0) and the topic\'s epoch in the broker\'s metadata', async (t) => {
  const { handlers, events, message } = await fencingFixture();
  const batch = encodeBatch([{ key: null, value: new Uint8Array([1]), headers: {}, timestamp: 1 }]);
  handlers.produce(message('tm.test.b.1.produce.orders', { timeoutMs: 1000, acks: 1, accessEpoch: 5, partitions: [{ partition: 0, batch }, { partition: 1, batch }] }));
  handlers.produce(message('tm.test.b.1.produce.orders', { timeoutMs: 1000, acks: 0, partitions: [{ partition: 0, batch }] }));
  t.deepEqual(
    events.map((e) => (e.type === 'PRODUCE' ? e.access : null)),
    [
      { epoch: 5, known: 3 },
      { epoch: 5, known: 3 },
      { epoch: 0, known: 3 },
    ],
  );
});
