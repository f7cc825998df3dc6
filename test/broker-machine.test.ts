/**
 * The broker machine on in-memory storage and a local metadata store: it runs one partition actor
 * per partition it leads, deletes them when their topic goes, and forgets finished children. And
 * its controlled shutdown on simulated time: retried with the shared backoff, then done as soon as
 * the metadata view shows the change (no polling), or at its deadline.
 */
import test from 'ava';
import { pino } from 'pino';
import { createActor, fromCallback, fromPromise, SimulatedClock, waitFor } from 'xstate';
import { controlledShutdown } from '../src/actors/broker/controlled-shutdown.js';
import { brokerMachine } from '../src/actors/broker/machine.js';
import { DEFAULT_PARTITION_LIMITS } from '../src/actors/partition/types.js';
import { createPendingBytesBudget, NODE_PENDING_APPEND_BYTES_MAX_DEFAULT } from '../src/actors/partition/pending-budget.js';
import { createFollowedView } from '../src/metadata/followed-view.js';
import { emptyImage } from '../src/metadata/image.js';
import { createMemoryMetadataStore } from '../src/metadata/metadata-store.js';
import { planCreateTopic, planDeleteTopic } from '../src/metadata/planner.js';
import { TidemarkError } from '../src/protocol/errors.js';
import { encodeMessage } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import type { Transport } from '../src/runtime/ports.js';
import { createMemoryNodeStorage } from '../src/storage/memory-storage.js';

const silentTransport: Transport = {
  maxPayloadBytes: 1 << 20,
  publish() {},
  subscribe: () => ({ unsubscribe() {} }),
  request: () => Promise.reject(new Error('not used')),
  requestMany: () => Promise.reject(new Error('not used')),
};

/** The broker with its controller session, metadata fetch and controlled shutdown replaced: the test drives them. */
const isolated = brokerMachine.provide({
  actors: {
    metadataFetcher: fromCallback(() => {}),
    controllerSession: fromCallback(() => {}),
    controlledShutdown: fromPromise(async () => ({ remainingLeaders: 0 })),
  },
});

async function setup() {
  const clock = new SimulatedClock();
  const storage = createMemoryNodeStorage();
  const metadata = createMemoryMetadataStore();
  const view = createFollowedView();
  metadata.subscribe((image, records) => view.replace(image, records));
  await metadata.propose([{ type: 'RegisterBroker', brokerId: 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'test' }]);
  const broker = createActor(isolated, {
    clock,
    input: {
      brokerId: 1,
      rack: '',
      incarnation: 'test',
      subjects: new Subjects('t'),
      transport: silentTransport,
      metadata: view,
      storage,
      clock,
      random: { next: () => 0.5 },
      logger: pino({ level: 'silent' }),
      partitionLimits: DEFAULT_PARTITION_LIMITS,
      pendingBudget: createPendingBytesBudget(NODE_PENDING_APPEND_BYTES_MAX_DEFAULT),
      timeouts: { heartbeatIntervalMs: 250, metadataFetchWaitMs: 1000, shutdownTimeoutMs: 10_000 },
    },
  }).start();
  broker.send({ type: 'SESSION', brokerEpoch: 1, fenced: false });
  return { broker, metadata, storage };
}

const partitionChildren = (broker: ReturnType<typeof createActor<typeof brokerMachine>>) =>
  Object.keys(broker.getSnapshot().children).filter((id) => id.startsWith('partition:'));

test('partition actors follow topic creation and deletion, and finished ones are dropped', async (t) => {
  const { broker, metadata, storage } = await setup();
  const topicId = 'ab'.repeat(16);
  await metadata.propose(planCreateTopic(metadata.image(), { name: 'orders', partitions: 3, replicationFactor: 1, config: {} }, topicId, 0));
  t.is(Object.keys(broker.getSnapshot().context.partitions).length, 3);
  t.is(partitionChildren(broker).length, 3);
  const store = await storage.openPartition({ topicId, partition: 0 });
  await metadata.propose(planDeleteTopic(metadata.image(), { name: 'orders' }));
  await waitFor(broker, (s) => Object.keys(s.context.partitions).length === 0, { timeout: 5000 });
  t.deepEqual(partitionChildren(broker), [], 'no finished child is kept');
  await t.throwsAsync(store.read(0, 1024, 1), undefined, 'the deleted partition has no data left');
  broker.send({ type: 'STOP' });
  await waitFor(broker, (s) => s.status === 'done', { timeout: 5000 });
});

test('STOP closes every partition, then the broker ends', async (t) => {
  const { broker, metadata } = await setup();
  await metadata.propose(planCreateTopic(metadata.image(), { name: 'a', partitions: 4, replicationFactor: 1, config: {} }, 'cd'.repeat(16), 0));
  broker.send({ type: 'STOP' });
  const done = await waitFor(broker, (s) => s.status === 'done', { timeout: 5000 });
  t.deepEqual(done.context.partitions, {});
});

test('a fenced broker leads nothing; unfenced again, it leads them again', async (t) => {
  const { broker, metadata } = await setup();
  await metadata.propose(planCreateTopic(metadata.image(), { name: 'f', partitions: 2, replicationFactor: 1, config: {} }, 'ef'.repeat(16), 0));
  t.is(partitionChildren(broker).length, 2);
  broker.send({ type: 'SESSION', brokerEpoch: 1, fenced: true });
  await waitFor(broker, (s) => Object.keys(s.context.partitions).length === 0, { timeout: 5000 });
  t.deepEqual(partitionChildren(broker), []);
  broker.send({ type: 'SESSION', brokerEpoch: 1, fenced: false });
  t.is(partitionChildren(broker).length, 2);
  broker.send({ type: 'STOP' });
  await waitFor(broker, (s) => s.status === 'done', { timeout: 5000 });
});

test('unfenced by a controller that knows newer metadata, a broker starts its partitions only once its own metadata reaches that offset', async (t) => {
  const { broker, metadata } = await setup();
  await metadata.propose(planCreateTopic(metadata.image(), { name: 'g', partitions: 2, replicationFactor: 1, config: {} }, 'ab'.repeat(16), 0));
  t.is(partitionChildren(broker).length, 2);
  broker.send({ type: 'SESSION', brokerEpoch: 1, fenced: true });
  await waitFor(broker, (s) => Object.keys(s.context.partitions).length === 0, { timeout: 5000 });
  // The controller's metadata is one entry ahead of this broker's: a leader started now could count
  // its high watermark over an ISR older than the committed one (sim seed 40501044).
  const ahead = metadata.image().offset + 1;
  broker.send({ type: 'SESSION', brokerEpoch: 1, fenced: false, metadataOffset: ahead });
  t.deepEqual(partitionChildren(broker), [], 'nothing starts from stale metadata');
  await metadata.propose(planCreateTopic(metadata.image(), { name: 'h', partitions: 1, replicationFactor: 1, config: {} }, 'ac'.repeat(16), 0));
  await waitFor(broker, (s) => s.context.image.offset >= ahead, { timeout: 5000 });
  t.is(partitionChildren(broker).length, 3, 'caught up: every partition starts');
  broker.send({ type: 'STOP' });
  await waitFor(broker, (s) => s.status === 'done', { timeout: 5000 });
});

/** Lets pending promise callbacks and I/O callbacks run (no time passes on the simulated clock). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function shutdownAgainst(answers: Array<() => Promise<Uint8Array>>) {
  const clock = new SimulatedClock();
  const view = createFollowedView();
  const requests: number[] = [];
  const transport: Transport = {
    ...silentTransport,
    request: () => {
      requests.push(clock.now());
      return answers.shift()!();
    },
  };
  const actor = createActor(controlledShutdown, {
    input: {
      brokerId: 1,
      brokerEpoch: 1,
      subjects: new Subjects('t'),
      transport,
      view,
      clock,
      random: { next: () => 0.5 },
      logger: pino({ level: 'silent' }),
      budgetMs: 5_000,
      backoff: { backoffMsInitial: 250, backoffMsMax: 1_000 },
    },
  }).start();
  return { actor, clock, view, requests };
}

test('controlled shutdown: a failed request is retried after the jittered backoff; done as soon as metadata shows the moves', async (t) => {
  const reply = encodeMessage({ remainingLeaders: 0, metadataOffset: 7 });
  const { actor, clock, view, requests } = shutdownAgainst([
    () => Promise.reject(new TidemarkError('NOT_CONTROLLER')),
    () => Promise.resolve(reply),
  ]);
  await settle();
  t.deepEqual(requests, [0]);
  // Full jitter: random 0.5 under the first ceiling (250 ms) is 125 ms.
  clock.increment(124);
  await settle();
  t.deepEqual(requests, [0]);
  clock.increment(1);
  await settle();
  t.deepEqual(requests, [0, 125]);
  t.is(actor.getSnapshot().status, 'active', 'waiting for metadata to show offset 7');
  view.replace({ ...emptyImage, offset: 6 }, []);
  await settle();
  t.is(actor.getSnapshot().status, 'active');
  view.replace({ ...emptyImage, offset: 7 }, []);
  await settle();
  t.is(actor.getSnapshot().status, 'done', 'done on the view change, no time passing');
  t.deepEqual(actor.getSnapshot().output, { remainingLeaders: 0 });
});

test('controlled shutdown: metadata that never shows the change ends the wait at the deadline', async (t) => {
  const { actor, clock } = shutdownAgainst([() => Promise.resolve(encodeMessage({ remainingLeaders: 2, metadataOffset: 9 }))]);
  await settle();
  clock.increment(4_999);
  await settle();
  t.is(actor.getSnapshot().status, 'active');
  clock.increment(1);
  await settle();
  t.is(actor.getSnapshot().status, 'done');
  t.deepEqual(actor.getSnapshot().output, { remainingLeaders: 2 });
});
