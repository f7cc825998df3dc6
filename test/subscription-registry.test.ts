/**
 * The subscription registry in the metadata log (issue 11): the planner's create (idempotent,
 * bounded) and delete, the image (ids are creation offsets, topic deletion drops them), snapshots
 * keeping them with their ids, the metadata reply carrying them, and the controller serving the two
 * admin ops over a transport on simulated time.
 */
import test from 'ava';
import { pino } from 'pino';
import { createActor, SimulatedClock } from 'xstate';
import { metadataReply as buildMetadataReply } from '../src/actors/broker/metadata-view.js';
import { controllerMachine } from '../src/actors/controller/machine.js';
import { applyRecords, emptyImage, imageRecords, topicByName, type MetadataImage } from '../src/metadata/image.js';
import { createMemoryMetadataStore } from '../src/metadata/metadata-store.js';
import { planCreateSubscription, planCreatePartitions, planCreateTopic, planDeleteSubscription, planDeleteTopic } from '../src/metadata/planner.js';
import { decodeEntry, encodeEntry, type MetadataRecord } from '../src/metadata/records.js';
import { TidemarkError } from '../src/protocol/errors.js';
import { decodeReply, deleteTopicReply, encodeMessage, metadataReply } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import { createSubscriptionReply, TOPIC_SUBSCRIPTIONS_MAX } from '../src/protocol/subscription-messages.js';
import { LoopbackTransport } from './helpers/loopback-transport.js';

/** Applies each record list as one entry at the next offset (as the metadata log does). */
function commit(image: MetadataImage, records: MetadataRecord[]): MetadataImage {
  return applyRecords(image, decodeEntry(encodeEntry(records)), image.offset + 1);
}

function withTopic(partitions = 3): MetadataImage {
  const brokers = commit(emptyImage, [
    { type: 'RegisterBroker', brokerId: 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'a' },
    { type: 'RegisterBroker', brokerId: 2, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'b' },
  ]);
  return commit(brokers, planCreateTopic(brokers, { name: 'orders', partitions, replicationFactor: 2, config: {} }, 'ab'.repeat(16), 0));
}

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return e instanceof TidemarkError ? e.code : `not typed: ${String(e)}`;
  }
  return 'no error';
};

test('create: one record; the id is the creating entry offset, partitionsAtCreation the count then', (t) => {
  const image = withTopic(3);
  const plan = planCreateSubscription(image, { topic: 'orders', name: 'billing', initialPosition: 'earliest' });
  t.is(plan.existing, undefined);
  t.is(plan.records.length, 1);
  const next = commit(image, plan.records);
  t.deepEqual(topicByName(next, 'orders')!.subscriptions, [{ name: 'billing', id: next.offset, initialPosition: 'earliest', partitionsAtCreation: 3 }]);
});

test('create is idempotent: an existing one comes back with its original settings and nothing to commit', (t) => {
  let image = withTopic(2);
  image = commit(image, planCreateSubscription(image, { topic: 'orders', name: 'billing', initialPosition: 'earliest' }).records);
  const id = image.offset;
  // Partitions added later do not change it; asking again with another initial position neither.
  image = commit(image, planCreatePartitions(image, 'orders', 5, 0));
  const again = planCreateSubscription(image, { topic: 'orders', name: 'billing', initialPosition: 'latest' });
  t.deepEqual(again, { records: [], existing: { name: 'billing', id, initialPosition: 'earliest', partitionsAtCreation: 2 } });
});

test('create refusals: unknown topic, invalid name, more than TOPIC_SUBSCRIPTIONS_MAX', (t) => {
  let image = withTopic(1);
  t.is(code(() => planCreateSubscription(image, { topic: 'nope', name: 's', initialPosition: 'latest' })), 'UNKNOWN_TOPIC');
  t.is(code(() => planCreateSubscription(image, { topic: 'orders', name: 'a b', initialPosition: 'latest' })), 'INVALID_REQUEST');
  t.is(code(() => planCreateSubscription(image, { topic: 'orders', name: '..', initialPosition: 'latest' })), 'INVALID_REQUEST');
  const records = Array.from({ length: TOPIC_SUBSCRIPTIONS_MAX }, (_, i): MetadataRecord => ({
    type: 'Subscription',
    topicId: 'ab'.repeat(16),
    name: `s${i}`,
    initialPosition: 'latest',
    partitionsAtCreation: 1,
  }));
  image = commit(image, records);
  t.is(topicByName(image, 'orders')!.subscriptions.length, TOPIC_SUBSCRIPTIONS_MAX);
  t.is(code(() => planCreateSubscription(image, { topic: 'orders', name: 'one-more', initialPosition: 'latest' })), 'INVALID_REQUEST');
  // An existing one is still answered at the bound (idempotent retries keep working).
  t.is(planCreateSubscription(image, { topic: 'orders', name: 's7', initialPosition: 'latest' }).existing?.name, 's7');
});

test('delete: removes it; unknown subscription or topic refused; a re-created one gets a new id', (t) => {
  let image = withTopic(1);
  image = commit(image, planCreateSubscription(image, { topic: 'orders', name: 'billing', initialPosition: 'latest' }).records);
  const firstId = topicByName(image, 'orders')!.subscriptions[0]!.id;
  image = commit(image, planDeleteSubscription(image, { topic: 'orders', name: 'billing' }));
  t.deepEqual(topicByName(image, 'orders')!.subscriptions, []);
  t.is(code(() => planDeleteSubscription(image, { topic: 'orders', name: 'billing' })), 'UNKNOWN_SUBSCRIPTION');
  t.is(code(() => planDeleteSubscription(image, { topic: 'nope', name: 'billing' })), 'UNKNOWN_TOPIC');
  image = commit(image, planCreateSubscription(image, { topic: 'orders', name: 'billing', initialPosition: 'latest' }).records);
  t.not(topicByName(image, 'orders')!.subscriptions[0]!.id, firstId);
});

test('subscriptions are sorted by name; deleting the topic drops them and a new topic of the name has none', (t) => {
  let image = withTopic(1);
  for (const name of ['zeta', 'alpha', 'mid']) image = commit(image, planCreateSubscription(image, { topic: 'orders', name, initialPosition: 'latest' }).records);
  t.deepEqual(
    topicByName(image, 'orders')!.subscriptions.map((s) => s.name),
    ['alpha', 'mid', 'zeta'],
  );
  image = commit(image, planDeleteTopic(image, { name: 'orders' }));
  t.is(topicByName(image, 'orders'), undefined);
  image = commit(image, planCreateTopic(image, { name: 'orders', partitions: 1, replicationFactor: 1, config: {} }, 'cd'.repeat(16), 0));
  t.deepEqual(topicByName(image, 'orders')!.subscriptions, []);
  // A record for a topic that is gone changes nothing but the offset.
  const after = commit(image, [{ type: 'Subscription', topicId: 'ab'.repeat(16), name: 'x', initialPosition: 'latest', partitionsAtCreation: 1 }]);
  t.deepEqual(after.topicsById, image.topicsById);
});

test('snapshots keep subscriptions with their original ids', (t) => {
  let image = withTopic(2);
  image = commit(image, planCreateSubscription(image, { topic: 'orders', name: 'billing', initialPosition: 'earliest' }).records);
  image = commit(image, planCreatePartitions(image, 'orders', 4, 0));
  image = commit(image, planCreateSubscription(image, { topic: 'orders', name: 'audit', initialPosition: 'latest' }).records);
  const before = topicByName(image, 'orders')!.subscriptions;
  // Rebuilt from the snapshot's records, applied as one entry at a much later offset.
  const rebuilt = applyRecords(emptyImage, decodeEntry(encodeEntry(imageRecords(image))), image.offset + 1000);
  t.deepEqual(topicByName(rebuilt, 'orders')!.subscriptions, before);
  t.deepEqual(
    before.map((s) => [s.name, s.partitionsAtCreation]),
    [
      ['audit', 4],
      ['billing', 2],
    ],
  );
});

test('the memory metadata store snapshot()/install() round trip keeps them', async (t) => {
  const a = createMemoryMetadataStore();
  await a.propose([{ type: 'RegisterBroker', brokerId: 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'a' }]);
  await a.propose(planCreateTopic(a.image(), { name: 'orders', partitions: 2, replicationFactor: 1, config: {} }, 'ab'.repeat(16), 0));
  await a.propose(planCreateSubscription(a.image(), { topic: 'orders', name: 'billing', initialPosition: 'earliest' }).records);
  const snap = a.snapshot();
  const b = createMemoryMetadataStore();
  b.install(snap.index, snap.data);
  t.deepEqual(topicByName(b.image(), 'orders')!.subscriptions, topicByName(a.image(), 'orders')!.subscriptions);
});

test('the metadata reply carries subscriptions (only when a topic has some) and its schema checks them', (t) => {
  let image = withTopic(1);
  const empty = buildMetadataReply(image, ['orders'], true);
  t.false('subscriptions' in empty.topics[0]!, 'a topic without subscriptions replies as before');
  t.false('subscriptions' in metadataReply(decodeReply(encodeMessage(empty), metadataReply) as unknown, ''), 'absent stays absent');
  image = commit(image, planCreateSubscription(image, { topic: 'orders', name: 'billing', initialPosition: 'earliest' }).records);
  const reply = buildMetadataReply(image, ['orders'], true);
  const decoded = decodeReply(encodeMessage(reply), metadataReply);
  t.deepEqual(decoded.topics[0]!.subscriptions, [{ name: 'billing', id: image.offset, initialPosition: 'earliest', partitionsAtCreation: 1 }]);
  // A bad entry is refused where it enters the SDK (a malformed reply: INTERNAL).
  const bad = { ...reply, topics: [{ ...reply.topics[0]!, subscriptions: [{ name: 'a b', id: 1, initialPosition: 'earliest', partitionsAtCreation: 1 }] }] };
  t.is(code(() => decodeReply(encodeMessage(bad), metadataReply)), 'INTERNAL');
  const badPosition = { ...reply, topics: [{ ...reply.topics[0]!, subscriptions: [{ name: 'a', id: 1, initialPosition: 'middle', partitionsAtCreation: 1 }] }] };
  t.is(code(() => decodeReply(encodeMessage(badPosition), metadataReply)), 'INTERNAL');
});

// ---- the controller serving the admin ops ----------------------------------------------------------

test('controller: create-subscription (created, then idempotent), delete-subscription, typed refusals', async (t) => {
  const subjects = new Subjects('t');
  const clock = new SimulatedClock();
  clock.set(1_000_000);
  const transport = new LoopbackTransport(clock);
  const metadata = createMemoryMetadataStore();
  await metadata.propose([{ type: 'RegisterBroker', brokerId: 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'a' }]);
  await metadata.propose(planCreateTopic(metadata.image(), { name: 'orders', partitions: 3, replicationFactor: 1, config: {} }, 'ab'.repeat(16), 0));
  const raft = { status: () => ({ role: 'leader', leaderReady: true }) };
  const controller = createActor(controllerMachine, {
    clock,
    input: {
      subjects,
      transport,
      metadata,
      raft,
      clock,
      random: { next: () => 0.5 },
      logger: pino({ level: 'silent' }),
      adminQueueMax: 16,
      sessionTimeoutMs: 60_000,
      tickMs: 50,
      preferredElectionIntervalMs: 0,
      producerSessionTimeoutMs: 10_000,
    },
  }).start();
  const advance = async (ms: number) => {
    for (let i = 0; i < ms; i += 10) {
      clock.increment(10);
      for (let j = 0; j < 5; j++) await new Promise((r) => setImmediate(r));
    }
  };
  await advance(100);
  const call = async <T>(op: 'create-subscription' | 'delete-subscription', body: object, schema: (v: unknown, p: string) => T): Promise<T> => {
    const pending = transport.request(subjects.admin(op, (body as { topic: string }).topic, (body as { name: string }).name), encodeMessage({ timeoutMs: 1000, ...body }), 1000).then((d) => decodeReply(d, schema));
    await advance(50);
    return pending;
  };
  const created = await call('create-subscription', { topic: 'orders', name: 'billing', initialPosition: 'earliest' }, createSubscriptionReply);
  t.true(created.created);
  t.deepEqual(created.subscription, { name: 'billing', id: created.metadataOffset, initialPosition: 'earliest', partitionsAtCreation: 3 });

  const before = metadata.image().offset;
  const again = await call('create-subscription', { topic: 'orders', name: 'billing', initialPosition: 'latest' }, createSubscriptionReply);
  t.false(again.created);
  t.deepEqual(again.subscription, created.subscription, 'the original settings');
  t.is(metadata.image().offset, before + 1, 'only a barrier entry (no record) was committed');
  t.deepEqual(topicByName(metadata.image(), 'orders')!.subscriptions, [created.subscription]);

  const refusal = async (op: 'create-subscription' | 'delete-subscription', body: object) => {
    const error = await t.throwsAsync(call(op, body, createSubscriptionReply), { instanceOf: TidemarkError });
    return error?.code;
  };
  t.is(await refusal('create-subscription', { topic: 'nope', name: 'billing', initialPosition: 'earliest' }), 'UNKNOWN_TOPIC');
  t.is(await refusal('create-subscription', { topic: 'orders', name: 'bad name', initialPosition: 'earliest' }), 'INVALID_REQUEST');
  t.is(await refusal('create-subscription', { topic: 'orders', name: 'x', initialPosition: 'middle' }), 'INVALID_REQUEST');

  const deleted = await call('delete-subscription', { topic: 'orders', name: 'billing' }, deleteTopicReply);
  t.is(deleted.metadataOffset, metadata.image().offset);
  t.deepEqual(topicByName(metadata.image(), 'orders')!.subscriptions, []);
  t.is(await refusal('delete-subscription', { topic: 'orders', name: 'billing' }), 'UNKNOWN_SUBSCRIPTION');
  t.is(await refusal('delete-subscription', { topic: 'nope', name: 'billing' }), 'UNKNOWN_TOPIC');
  controller.send({ type: 'STOP' });
});
