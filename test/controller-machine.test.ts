/**
 * Controller and broker machines together in one process on simulated time, over an in-memory
 * transport: registration, unfencing once caught up, fencing after the session timeout (and the
 * leadership moves it implies), stale epochs, and the controller going quiet when it stops leading.
 */
import test from 'ava';
import { pino } from 'pino';
import { createActor, SimulatedClock } from 'xstate';
import { brokerMachine } from '../src/actors/broker/machine.js';
import { controllerMachine } from '../src/actors/controller/machine.js';
import { DEFAULT_PARTITION_LIMITS } from '../src/actors/partition/types.js';
import { createPendingBytesBudget, NODE_PENDING_APPEND_BYTES_MAX_DEFAULT } from '../src/actors/partition/pending-budget.js';
import { createFollowedView } from '../src/metadata/followed-view.js';
import { topicByName } from '../src/metadata/image.js';
import { createMemoryMetadataStore } from '../src/metadata/metadata-store.js';
import { planCreateTopic } from '../src/metadata/planner.js';
import { heartbeatReply } from '../src/protocol/controller-messages.js';
import { TidemarkError } from '../src/protocol/errors.js';
import { decodeReply, encodeMessage } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import type { Random } from '../src/runtime/ports.js';
import { createMemoryNodeStorage } from '../src/storage/memory-storage.js';
import { LoopbackTransport } from './helpers/loopback-transport.js';

const SESSION_TIMEOUT_MS = 2000;
const subjects = new Subjects('t');
const random: Random = { next: () => 0.5 };
const silent = pino({ level: 'silent' });

function cluster() {
  const clock = new SimulatedClock();
  clock.set(1_000_000);
  const transport = new LoopbackTransport(clock);
  const metadata = createMemoryMetadataStore();
  const raft = { role: 'leader', leaderReady: true, status() { return { role: this.role, leaderReady: this.leaderReady }; } };
  const controller = createActor(controllerMachine, {
    clock,
    input: { subjects, transport, metadata, raft, clock, random, logger: silent, adminQueueMax: 16, sessionTimeoutMs: SESSION_TIMEOUT_MS, tickMs: 50, preferredElectionIntervalMs: 0, producerSessionTimeoutMs: 10_000 },
  }).start();
  const startBroker = (id: number, incarnation: string) =>
    createActor(brokerMachine, {
      clock,
      input: {
        brokerId: id,
        rack: '',
        incarnation,
        subjects,
        transport,
        metadata: createFollowedView(),
        storage: createMemoryNodeStorage(),
        clock,
        random: { next: () => 0.5 },
        logger: silent,
        partitionLimits: DEFAULT_PARTITION_LIMITS,
        pendingBudget: createPendingBytesBudget(NODE_PENDING_APPEND_BYTES_MAX_DEFAULT),
        timeouts: { heartbeatIntervalMs: 250, metadataFetchWaitMs: 1000, shutdownTimeoutMs: 5000 },
      },
    }).start();
  /** Moves simulated time forward in small steps, letting I/O callbacks run in between. */
  const advance = async (ms: number) => {
    for (let t = 0; t < ms; t += 10) {
      clock.increment(10);
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    }
  };
  return { clock, transport, metadata, raft, controller, startBroker, advance };
}

test('brokers register fenced, are unfenced once caught up, and lead what they are given', async (t) => {
  const c = cluster();
  const b1 = c.startBroker(1, 'a');
  const b2 = c.startBroker(2, 'b');
  await c.advance(1000);
  for (const b of [b1, b2]) t.like(b.getSnapshot().context, { brokerEpoch: 1, fenced: false });
  t.false(c.metadata.image().brokers.get(1)!.fenced);
  await c.metadata.propose(planCreateTopic(c.metadata.image(), { name: 'o', partitions: 4, replicationFactor: 1, config: {} }, 'aa'.repeat(16), 0));
  await c.advance(500);
  const led = (b: typeof b1) => Object.keys(b.getSnapshot().context.partitions).length;
  t.is(led(b1) + led(b2), 4);
  t.is(b1.getSnapshot().context.image.offset, c.metadata.image().offset, 'the broker followed metadata to the end');
});

test('a silent broker is fenced after the session timeout and its partitions lose it as leader', async (t) => {
  const c = cluster();
  const b1 = c.startBroker(1, 'a');
  const b2 = c.startBroker(2, 'b');
  await c.advance(1000);
  await c.metadata.propose(planCreateTopic(c.metadata.image(), { name: 'r', partitions: 4, replicationFactor: 2, config: {} }, 'bb'.repeat(16), 0));
  await c.advance(500);
  b1.stop(); // dies: no more heartbeats
  await c.advance(SESSION_TIMEOUT_MS - 300);
  t.false(c.metadata.image().brokers.get(1)!.fenced, 'not before the session timeout');
  await c.advance(600);
  t.true(c.metadata.image().brokers.get(1)!.fenced);
  for (const p of topicByName(c.metadata.image(), 'r')!.partitions) {
    t.is(p.leader, 2, 'leadership moved to the other in-sync replica');
    t.deepEqual(p.isr, [2]);
  }
  t.false(c.metadata.image().brokers.get(2)!.fenced, 'the live broker keeps its session');
  await c.advance(300);
  t.is(Object.keys(b2.getSnapshot().context.partitions).length, 4);
});

test('a restarted broker gets a new epoch; the old epoch is refused', async (t) => {
  const c = cluster();
  const first = c.startBroker(1, 'a');
  await c.advance(1000);
  first.stop();
  const second = c.startBroker(1, 'b');
  await c.advance(1000);
  t.like(second.getSnapshot().context, { brokerEpoch: 2, fenced: false });
  const stale = c.transport.request(
    subjects.controller('heartbeat'),
    encodeMessage({ timeoutMs: 500, brokerId: 1, brokerEpoch: 1, metadataOffset: 0 }),
    500,
  );
  const pending = stale.then((data) => decodeReply(data, heartbeatReply));
  await c.advance(50);
  const err = await t.throwsAsync(pending, { instanceOf: TidemarkError });
  t.is(err?.code, 'STALE_BROKER_EPOCH');
});

test('a controller that stops leading stops answering; a new active controller gives brokers a full session', async (t) => {
  const c = cluster();
  const b1 = c.startBroker(1, 'a');
  await c.advance(1000);
  t.true(c.transport.hasSubscriber(subjects.admin('create-topic', 'any')));
  c.raft.role = 'follower';
  await c.advance(100);
  t.false(c.transport.hasSubscriber(subjects.admin('create-topic', 'any')));
  t.false(c.transport.hasSubscriber(subjects.controller('heartbeat')));
  // While no controller answers, the broker's heartbeats fail, but nobody fences it.
  await c.advance(SESSION_TIMEOUT_MS * 2);
  c.raft.role = 'leader';
  await c.advance(SESSION_TIMEOUT_MS / 2);
  t.false(c.metadata.image().brokers.get(1)!.fenced, 'no fencing right after a controller change');
  t.false(b1.getSnapshot().context.fenced);
});

test('a controller that was itself paused restarts broker sessions instead of fencing everyone', async (t) => {
  const c = cluster();
  c.startBroker(1, 'a');
  c.startBroker(2, 'b');
  await c.advance(1000);
  // The whole process stops for longer than the session timeout: nothing runs, then the clock jumps.
  c.clock.increment(SESSION_TIMEOUT_MS * 2);
  await c.advance(100);
  t.false(c.metadata.image().brokers.get(1)!.fenced);
  t.false(c.metadata.image().brokers.get(2)!.fenced);
});

test('a broker fenced for its session is unfenced only once its metadata reaches the fence, not its older registration', async (t) => {
  const c = cluster();
  const b1 = c.startBroker(1, 'a');
  c.startBroker(2, 'b');
  await c.advance(1000);
  await c.metadata.propose(planCreateTopic(c.metadata.image(), { name: 'g', partitions: 2, replicationFactor: 2, config: {} }, 'cc'.repeat(16), 0));
  await c.advance(500);
  const staleOffset = b1.getSnapshot().context.image.offset;
  b1.stop(); // silent, as a paused process is
  await c.advance(SESSION_TIMEOUT_MS + 300);
  t.true(c.metadata.image().brokers.get(1)!.fenced);
  const fencedAt = c.metadata.image().offset;
  t.true(fencedAt > staleOffset);
  // The paused process resumes and heartbeats with the image it had before the fence.
  const heartbeat = (metadataOffset: number) =>
    c.transport.request(subjects.controller('heartbeat'), encodeMessage({ timeoutMs: 1000, brokerId: 1, brokerEpoch: 1, metadataOffset }), 1000);
  await heartbeat(staleOffset);
  await c.advance(300);
  t.true(c.metadata.image().brokers.get(1)!.fenced, 'stale metadata: stays fenced (it would restart leaders of gone epochs)');
  await heartbeat(c.metadata.image().offset);
  await c.advance(300);
  t.false(c.metadata.image().brokers.get(1)!.fenced, 'caught up with the fence: unfenced');
});

test('a refusal is answered only after a barrier commits: a deposed controller cannot refuse from its stale image', async (t) => {
  const c = cluster();
  c.startBroker(1, 'a');
  c.startBroker(2, 'b');
  await c.advance(1000);
  await c.metadata.propose(planCreateTopic(c.metadata.image(), { name: 'r', partitions: 1, replicationFactor: 2, config: {} }, 'dd'.repeat(16), 0));
  await c.advance(500);
  const topic = topicByName(c.metadata.image(), 'r')!;
  const p = topic.partitions[0]!;
  // An ISR naming a broker that is not a replica: the planner refuses it (INVALID_REQUEST).
  const alter = () =>
    c.transport
      .request(
        subjects.controller('alter-partition'),
        encodeMessage({
          timeoutMs: 1000,
          brokerId: p.leader,
          brokerEpoch: c.metadata.image().brokers.get(p.leader)!.epoch,
          topicId: topic.topicId,
          partition: 0,
          leaderEpoch: p.leaderEpoch,
          partitionEpoch: p.partitionEpoch,
          isr: [p.leader, 9],
        }),
        1000,
      )
      .then((data) => decodeReply(data, heartbeatReply));
  const before = c.metadata.image().offset;
  const refused = alter();
  await c.advance(50);
  t.is((await t.throwsAsync(refused, { instanceOf: TidemarkError }))?.code, 'INVALID_REQUEST');
  t.is(c.metadata.image().offset, before + 1, 'the refusal waited for a barrier entry to commit');

  // Deposed without knowing it (paused, cut off): its barrier cannot commit, so it refuses nothing.
  const propose = c.metadata.propose.bind(c.metadata);
  c.metadata.propose = () => Promise.reject(new TidemarkError('NOT_CONTROLLER', 'a newer term exists'));
  const stale = alter();
  await c.advance(50);
  t.is((await t.throwsAsync(stale, { instanceOf: TidemarkError }))?.code, 'NOT_CONTROLLER');
  c.metadata.propose = propose;
});
