/**
 * The controller serving producer access (issue 12) on simulated time over an in-memory transport:
 * the grace of a new controller, exclusive grants committed through the job queue, a parked
 * WaitForExclusive handed the topic when the owner detaches or goes silent, parked asks refused
 * when leadership is lost; and `transition()` showing a grant is a queued job, not an effect.
 */
import test from 'ava';
import { pino } from 'pino';
import { createActor, SimulatedClock, transition } from 'xstate';
import { controllerMachine } from '../src/actors/controller/machine.js';
import { producerSessionFlags } from '../src/cli/node-flags.js';
import { topicByName } from '../src/metadata/image.js';
import { createMemoryMetadataStore } from '../src/metadata/metadata-store.js';
import { planCreateTopic } from '../src/metadata/planner.js';
import { TidemarkError } from '../src/protocol/errors.js';
import { decodeReply, encodeMessage } from '../src/protocol/messages.js';
import { producerAttachReply, producerDetachReply, producerHeartbeatReply, type AccessMode } from '../src/protocol/producer-messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import { LoopbackTransport } from './helpers/loopback-transport.js';

const TIMEOUT_MS = 3000;
const subjects = new Subjects('t');

async function start() {
  const clock = new SimulatedClock();
  clock.set(1_000_000);
  const transport = new LoopbackTransport(clock);
  const metadata = createMemoryMetadataStore();
  await metadata.propose([{ type: 'RegisterBroker', brokerId: 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'a' }]);
  await metadata.propose(planCreateTopic(metadata.image(), { name: 'orders', partitions: 2, replicationFactor: 1, config: {} }, 'ab'.repeat(16), 0));
  const raft = { role: 'leader', leaderReady: true, status() { return { role: this.role, leaderReady: this.leaderReady }; } };
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line).msg as string) });
  const controller = createActor(controllerMachine, {
    clock,
    input: { subjects, transport, metadata, raft, clock, random: { next: () => 0.5 }, logger, adminQueueMax: 16, sessionTimeoutMs: 60_000, tickMs: 50, preferredElectionIntervalMs: 0, producerSessionTimeoutMs: TIMEOUT_MS },
  }).start();
  const advance = async (ms: number) => {
    for (let i = 0; i < ms; i += 10) {
      clock.increment(10);
      for (let j = 0; j < 5; j++) await new Promise((r) => setImmediate(r));
    }
  };
  const attach = (sessionId: string, accessMode: AccessMode, extra: object = {}) =>
    transport
      .request(subjects.admin('producer-attach', 'orders'), encodeMessage({ timeoutMs: 10_000, topic: 'orders', accessMode, producerName: `p-${sessionId}`, sessionId, maxWaitMs: 0, ...extra }), 10_000)
      .then((d) => decodeReply(d, producerAttachReply));
  const heartbeat = (sessionId: string, accessMode: AccessMode, epoch: number) =>
    transport
      .request(subjects.admin('producer-heartbeat', 'orders'), encodeMessage({ timeoutMs: 1000, topic: 'orders', accessMode, producerName: `p-${sessionId}`, sessionId, epoch }), 1000)
      .then((d) => decodeReply(d, producerHeartbeatReply));
  const detach = (sessionId: string) =>
    transport.request(subjects.admin('producer-detach', 'orders'), encodeMessage({ timeoutMs: 1000, topic: 'orders', sessionId }), 1000).then((d) => decodeReply(d, producerDetachReply));
  const access = () => topicByName(metadata.image(), 'orders')!.producerAccess;
  await advance(100);
  return { clock, transport, metadata, raft, controller, advance, attach, heartbeat, detach, access, warnings };
}

/** Runs `call` while simulated time passes, and returns its result or its error code. */
async function settle<T>(c: { advance: (ms: number) => Promise<void> }, call: Promise<T>, ms = 100): Promise<T | string> {
  const outcome = call.then(
    (v) => v,
    (e: unknown) => (e instanceof TidemarkError ? e.code : `untyped: ${String(e)}`),
  );
  await c.advance(ms);
  return outcome;
}

test('a new controller refuses Exclusive (BUSY) for one session timeout, then grants it through a commit', async (t) => {
  const c = await start();
  t.is(await settle(c, c.attach('x', 'Exclusive')), 'BUSY');
  await c.advance(TIMEOUT_MS);
  const before = c.metadata.image().offset;
  t.like(await settle(c, c.attach('x', 'Exclusive')), { status: 'granted', epoch: 1, fence: true, heartbeatIntervalMs: 1000 });
  t.is(c.metadata.image().offset, before + 1);
  t.deepEqual(c.access(), { epoch: 1, fencedEpoch: 0, owner: { name: 'p-x', sessionId: 'x', accessMode: 'Exclusive' } });
  t.is(await settle(c, c.attach('y', 'Exclusive')), 'PRODUCER_FENCED');
  t.is(await settle(c, c.attach('y', 'Shared')), 'PRODUCER_BUSY');
  t.deepEqual(await settle(c, c.heartbeat('x', 'Exclusive', 1)), { epoch: 1 });
  c.controller.send({ type: 'STOP' });
});

test('a parked WaitForExclusive is granted when the owner detaches, and the next when that owner goes silent', async (t) => {
  const c = await start();
  await c.advance(TIMEOUT_MS);
  t.like(await settle(c, c.attach('a', 'Exclusive')), { status: 'granted', epoch: 1 });
  const b = c.attach('b', 'WaitForExclusive', { maxWaitMs: 4000 });
  await c.advance(100);
  t.like(await settle(c, c.attach('c', 'WaitForExclusive')), { status: 'waiting', position: 1 });
  const owned = c.metadata.image().offset;
  const released = await settle(c, c.detach('a'));
  t.is((released as { metadataOffset: number }).metadataOffset, owned + 1, 'answered once the release committed');
  t.like(await settle(c, b), { status: 'granted', epoch: 2, fence: true, heartbeatIntervalMs: 1000 });
  t.like(c.access(), { owner: { sessionId: 'b', accessMode: 'WaitForExclusive' } });
  // b never heartbeats; c keeps asking (its heartbeat) and gets the topic once b's session expires.
  let answer: unknown;
  for (let i = 0; i < 10 && (answer as { status?: string } | undefined)?.status !== 'granted'; i++) answer = await settle(c, c.attach('c', 'WaitForExclusive', { maxWaitMs: 1000 }), 1200);
  t.like(answer, { status: 'granted', epoch: 3 });
  t.true(c.warnings.includes('exclusive producer session expired; releasing the topic'));
  c.controller.send({ type: 'STOP' });
});

test('losing leadership answers a parked ask NOT_CONTROLLER', async (t) => {
  const c = await start();
  await c.advance(TIMEOUT_MS);
  await settle(c, c.attach('a', 'Exclusive'));
  const parked = c.attach('b', 'WaitForExclusive', { maxWaitMs: 5000 });
  await c.advance(100);
  c.raft.role = 'follower';
  t.is(await settle(c, parked), 'NOT_CONTROLLER');
  c.controller.send({ type: 'STOP' });
});

test('transition(): an Exclusive attach queues a producer-grant job and sends nothing; the grant is the job\'s', async (t) => {
  const c = await start();
  await c.advance(TIMEOUT_MS);
  const snapshot = c.controller.getSnapshot();
  const request = { timeoutMs: 1000, topic: 'orders', accessMode: 'Exclusive' as const, producerName: 'p-x', sessionId: 'x', maxWaitMs: 0 };
  const [next, actions] = transition(controllerMachine, snapshot, { type: 'PRODUCER_ATTACH', replyTo: 'r1', request, nowMs: c.clock.now() });
  t.like(next.context.queue[0], { op: 'producer-grant', replyTo: 'r1', grant: { expectEpoch: 0, owner: { sessionId: 'x' } } });
  t.like(next.context.producers.topics['ab'.repeat(16)], { granting: { sessionId: 'x' } });
  t.false(actions.some((a) => a.type === 'xstate.sendTo'), 'no reply before the commit');
  // A second exclusive attach in the same state is refused at once: it sees the pending grant.
  const [, refusals] = transition(controllerMachine, next, { type: 'PRODUCER_ATTACH', replyTo: 'r2', request: { ...request, sessionId: 'y' }, nowMs: c.clock.now() });
  const sent = refusals.filter((a) => a.type === 'xstate.sendTo').map((a) => (a.params as unknown as { event: { replyTo: string; error: { code: string } } }).event);
  t.deepEqual(sent.map((e) => [e.replyTo, e.error.code]), [['r2', 'PRODUCER_FENCED']]);
  t.is(c.metadata.image().topicsById.get('ab'.repeat(16))!.producerAccess.epoch, 0, 'nothing committed');
  c.controller.send({ type: 'STOP' });
});

test('the node flag: --producer-session-timeout-ms gives producerSessionTimeoutMs, bounded', (t) => {
  t.deepEqual(producerSessionFlags({}), {});
  t.deepEqual(producerSessionFlags({ 'producer-session-timeout-ms': '1500' }), { producerSessionTimeoutMs: 1500 });
  t.throws(() => producerSessionFlags({ 'producer-session-timeout-ms': '10' }), { message: /300\.\.600000/ });
  t.throws(() => producerSessionFlags({ 'producer-session-timeout-ms': 'soon' }));
});

test('a controller that was itself paused refreshes producer sessions instead of releasing its owners', async (t) => {
  const c = await start();
  await c.advance(TIMEOUT_MS);
  t.like(await settle(c, c.attach('a', 'Exclusive')), { status: 'granted', epoch: 1 });
  // The whole process stops for longer than the session timeout: nothing runs, then the clock jumps.
  c.clock.increment(TIMEOUT_MS * 2);
  await c.advance(200);
  t.like(c.access(), { owner: { sessionId: 'a' } }, 'the owner keeps its claim');
  t.false(c.warnings.includes('exclusive producer session expired; releasing the topic'));
  // Silent for a whole timeout after the pause: now it goes.
  await c.advance(TIMEOUT_MS + 200);
  t.is(c.access().owner, undefined);
  c.controller.send({ type: 'STOP' });
});
