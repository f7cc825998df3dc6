/**
 * Producer sessions on the controller (issue 12), as pure functions of (state, topic, request,
 * nowMs): Pulsar's refusals, the grace of a new controller, waiters first come first served,
 * fencing, expiry (and the paused-controller rule), bounds. Grants are effects here; `commitGrant`
 * plays the controller's job (plan, commit, grantDone).
 */
import test from 'ava';
import {
  activeSessions,
  attach,
  detach,
  grantDone,
  heartbeat,
  heartbeatIntervalMs,
  releaseDone,
  standby,
  tick,
  type ProducerSessionConfig,
  type ProducerSessions,
  type Step,
} from '../src/actors/controller/producer-sessions.js';
import type { OutboxEvent } from '../src/actors/outbox.js';
import { applyRecords, emptyImage, topicByName, type MetadataImage } from '../src/metadata/image.js';
import { planCreateTopic } from '../src/metadata/planner.js';
import { planProducerGrant, planProducerRelease, type ProducerGrant } from '../src/metadata/producer-planner.js';
import type { MetadataRecord } from '../src/metadata/records.js';
import type { AccessMode, ProducerAttachRequest } from '../src/protocol/producer-messages.js';

const TIMEOUT_MS = 3000;
const cfg: ProducerSessionConfig = { timeoutMs: TIMEOUT_MS };
const T0 = 1_000_000;
/** After the grace of a controller that became active at T0. */
const LATER = T0 + TIMEOUT_MS;

function commit(image: MetadataImage, records: MetadataRecord[]): MetadataImage {
  return applyRecords(image, records, image.offset + 1);
}
function withTopic(): MetadataImage {
  const brokers = commit(emptyImage, [{ type: 'RegisterBroker', brokerId: 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'a' }]);
  return commit(brokers, planCreateTopic(brokers, { name: 'orders', partitions: 2, replicationFactor: 1, config: {} }, 'ab'.repeat(16), 0));
}

const ask = (sessionId: string, accessMode: AccessMode, extra: Partial<ProducerAttachRequest> = {}): ProducerAttachRequest => ({
  timeoutMs: 5000,
  topic: 'orders',
  accessMode,
  producerName: `p-${sessionId}`,
  sessionId,
  maxWaitMs: 0,
  ...extra,
});

/** A harness: the image and the sessions, stepped as the controller steps them. */
function world() {
  let image = withTopic();
  let state: ProducerSessions = activeSessions(T0, TIMEOUT_MS);
  const topic = () => topicByName(image, 'orders');
  const take = (step: Step) => {
    state = step.state;
    return step;
  };
  return {
    image: () => image,
    state: () => state,
    access: () => topic()!.producerAccess,
    attach: (r: ProducerAttachRequest, nowMs = LATER, replyTo = `r-${r.sessionId}-${nowMs}`) => take(attach(state, topic(), r, replyTo, nowMs, cfg)),
    heartbeat: (sessionId: string, accessMode: AccessMode, epoch: number, nowMs = LATER) =>
      take(heartbeat(state, topic(), { timeoutMs: 1000, topic: 'orders', accessMode, producerName: `p-${sessionId}`, sessionId, epoch }, 'hb', nowMs, cfg)),
    detach: (sessionId: string, nowMs = LATER) => take(detach(state, topic(), { timeoutMs: 1000, topic: 'orders', sessionId }, 'd', nowMs, image.offset)),
    tick: (nowMs: number, paused = false) => take(tick(state, image, nowMs, paused, cfg)),
    /** The controller's job for a grant: plan at apply time, commit, then grantDone. */
    commitGrant: (grant: ProducerGrant) => {
      let ok = true;
      try {
        image = commit(image, planProducerGrant(image, grant));
      } catch {
        ok = false;
      }
      return take(grantDone(state, image, grant, ok, cfg));
    },
    commitRelease: (topicId: string, sessionId: string) => {
      image = commit(image, planProducerRelease(image, topicId, sessionId));
      state = releaseDone(state, image, topicId);
    },
  };
}

const body = (step: Step, i = 0) => {
  const a = step.answers[i] as OutboxEvent;
  return a.type === 'REPLY' ? a.body : { error: a.error.code };
};

test('Shared is granted from memory at the current epoch, no commit', (t) => {
  const w = world();
  const step = w.attach(ask('s1', 'Shared'), T0);
  t.deepEqual(body(step), { status: 'granted', epoch: 0, fence: false, heartbeatIntervalMs: Math.floor(TIMEOUT_MS / 3) });
  t.is(step.grants.length, 0);
  t.is(heartbeatIntervalMs(TIMEOUT_MS), 1000);
});

test('Exclusive: refused BUSY during a new controller\'s grace, then granted with a commit; a retry is idempotent', (t) => {
  const w = world();
  t.deepEqual(body(w.attach(ask('x', 'Exclusive'), T0 + 10)), { error: 'BUSY' });
  const step = w.attach(ask('x', 'Exclusive'));
  t.is(step.answers.length, 0, 'answered by the grant job');
  t.like(step.grants[0]!.grant, { expectEpoch: 0, fencing: false, owner: { sessionId: 'x', accessMode: 'Exclusive' } });
  t.deepEqual(body(w.attach(ask('y', 'Exclusive'))), { error: 'PRODUCER_FENCED' }, 'a grant being committed is seen at once');
  t.deepEqual(body(w.attach(ask('y', 'Shared'))), { error: 'PRODUCER_BUSY' });
  w.commitGrant(step.grants[0]!.grant);
  t.like(w.access(), { epoch: 1, owner: { sessionId: 'x' } });
  t.deepEqual(body(w.attach(ask('x', 'Exclusive'))), { status: 'granted', epoch: 1, fence: true, heartbeatIntervalMs: 1000 });
  t.deepEqual(body(w.attach(ask('y', 'Exclusive'))), { error: 'PRODUCER_FENCED' });
  t.deepEqual(body(w.attach(ask('y', 'Shared'))), { error: 'PRODUCER_BUSY' });
});

test('Exclusive is refused PRODUCER_BUSY while live shared producers or waiters exist', (t) => {
  const w = world();
  w.attach(ask('s1', 'Shared'));
  t.deepEqual(body(w.attach(ask('x', 'Exclusive'))), { error: 'PRODUCER_BUSY' });
  // The shared producer goes silent: not live any more.
  t.is(w.attach(ask('x', 'Exclusive'), LATER + TIMEOUT_MS + 1).grants.length, 1);
});

test('ExclusiveWithFencing takes an owned topic: epoch and fencedEpoch move, waiters and shared sessions go', (t) => {
  const w = world();
  w.commitGrant(w.attach(ask('x', 'Exclusive')).grants[0]!.grant);
  const parked = w.attach(ask('w', 'WaitForExclusive', { maxWaitMs: 1000 }), LATER, 'parked-w');
  t.is(parked.answers.length, 0, 'parked');
  const step = w.attach(ask('f', 'ExclusiveWithFencing'));
  t.deepEqual(step.answers, [{ type: 'REPLY_ERROR', replyTo: 'parked-w', error: { code: 'PRODUCER_FENCED', message: step.answers[0]!.type === 'REPLY_ERROR' ? step.answers[0]!.error.message : '' } }]);
  t.deepEqual(w.state().topics[step.grants[0]!.grant.topicId]!.waiters, []);
  w.commitGrant(step.grants[0]!.grant);
  t.deepEqual(w.access(), { epoch: 2, fencedEpoch: 2, owner: { name: 'p-f', sessionId: 'f', accessMode: 'ExclusiveWithFencing' } });
  t.deepEqual(body(w.heartbeat('x', 'Exclusive', 1)), { error: 'PRODUCER_FENCED' }, 'the old owner');
  t.deepEqual(body(w.attach(ask('w', 'WaitForExclusive', { waitingSince: 1 }))), { error: 'PRODUCER_FENCED' }, 'a waiter from before the fencing');
});

test('WaitForExclusive: granted at once when free; else waits in order and is handed the topic when the owner detaches', (t) => {
  const w = world();
  const first = w.attach(ask('a', 'WaitForExclusive'));
  t.is(first.grants[0]!.grant.owner.accessMode, 'WaitForExclusive');
  w.commitGrant(first.grants[0]!.grant);
  t.deepEqual(body(w.attach(ask('b', 'WaitForExclusive'))), { status: 'waiting', epoch: 1, position: 0, fence: false, heartbeatIntervalMs: 1000 });
  t.like(body(w.attach(ask('c', 'WaitForExclusive'))), { status: 'waiting', position: 1 });
  t.like(body(w.attach(ask('b', 'WaitForExclusive'))), { status: 'waiting', position: 0 }, 'asking again keeps its place');
  t.deepEqual(body(w.attach(ask('s', 'Shared'))), { error: 'PRODUCER_BUSY' });
  // c asks with a long poll; a detaches; the next tick grants b (not parked: it learns on its next ask).
  t.is(w.attach(ask('c', 'WaitForExclusive', { maxWaitMs: 2000 }), LATER + 10, 'parked-c').answers.length, 0);
  const d = w.detach('a', LATER + 20);
  t.is(d.releases.length, 1);
  t.is(w.tick(LATER + 30).grants.length, 0, 'not before the release commits');
  w.commitRelease(d.releases[0]!.topicId, 'a');
  const promoted = w.tick(LATER + 40);
  t.like(promoted.grants[0], { grant: { owner: { sessionId: 'b', accessMode: 'WaitForExclusive' }, expectEpoch: 1 }, replyTo: undefined });
  w.commitGrant(promoted.grants[0]!.grant);
  t.deepEqual(body(w.attach(ask('b', 'WaitForExclusive'), LATER + 50)), { status: 'granted', epoch: 2, fence: true, heartbeatIntervalMs: 1000 });
  // b detaches; c is parked: its parked ask is the grant's reply.
  w.commitRelease(w.detach('b', LATER + 60).releases[0]!.topicId, 'b');
  const toC = w.tick(LATER + 70);
  t.like(toC.grants[0], { grant: { owner: { sessionId: 'c' } }, replyTo: 'parked-c' });
});

test('a parked wait is answered `waiting` when its time is up', (t) => {
  const w = world();
  w.commitGrant(w.attach(ask('a', 'Exclusive')).grants[0]!.grant);
  w.attach(ask('b', 'WaitForExclusive', { maxWaitMs: 500 }), LATER, 'parked-b');
  t.deepEqual(w.tick(LATER + 400).answers, []);
  t.deepEqual(w.tick(LATER + 500).answers, [{ type: 'REPLY', replyTo: 'parked-b', body: { status: 'waiting', epoch: 1, position: 0, fence: false, heartbeatIntervalMs: 1000 } }]);
});

test('a silent owner loses its claim after the timeout (a release); a live one keeps it; a paused controller refreshes instead', (t) => {
  const w = world();
  w.commitGrant(w.attach(ask('a', 'Exclusive')).grants[0]!.grant);
  w.heartbeat('a', 'Exclusive', 1, LATER + 1000);
  t.is(w.tick(LATER + 1000 + TIMEOUT_MS).releases.length, 0);
  t.is(w.tick(LATER + 1000 + TIMEOUT_MS * 3, true).releases.length, 0, 'paused: every session is refreshed');
  t.is(w.tick(LATER + 1000 + TIMEOUT_MS * 4).releases.length, 0);
  const expired = w.tick(LATER + 1001 + TIMEOUT_MS * 4);
  t.like(expired.releases[0], { sessionId: 'a', replyTo: undefined, expired: true });
  t.is(w.tick(LATER + 1002 + TIMEOUT_MS * 4).releases.length, 0, 'released once');
  t.deepEqual(body(w.heartbeat('a', 'Exclusive', 1, LATER + 1003 + TIMEOUT_MS * 4)), { epoch: 1 }, 'still the owner until the release commits');
});

test('a new controller: owners count as heard from when it became active; shared producers are learned from heartbeats', (t) => {
  const w = world();
  w.commitGrant(w.attach(ask('a', 'Exclusive')).grants[0]!.grant);
  w.commitRelease(w.detach('a').releases[0]!.topicId, 'a');
  t.deepEqual(body(w.heartbeat('s', 'Shared', 1)), { epoch: 1 }, 'a shared producer registers by heartbeat');
  t.deepEqual(body(w.attach(ask('x', 'Exclusive'))), { error: 'PRODUCER_BUSY' });
  t.deepEqual(body(w.heartbeat('s', 'Shared', 0)), { error: 'PRODUCER_FENCED' }, 'an epoch below the topic\'s');
  t.deepEqual(body(w.heartbeat('q', 'Exclusive', 1)), { error: 'PRODUCER_FENCED' }, 'not the owner: its claim expired');
});

test('detach: shared and waiters go at once (a parked ask is closed); unknown sessions are answered at once', (t) => {
  const w = world();
  w.attach(ask('s', 'Shared'));
  t.deepEqual(body(w.detach('s')), { metadataOffset: w.image().offset });
  t.is(w.attach(ask('x', 'Exclusive')).grants.length, 1, 'the topic is free for an exclusive producer');
  t.deepEqual(body(w.detach('nobody')), { metadataOffset: w.image().offset });
});

test('bounds: sessions per topic and per node, and parked asks', (t) => {
  let state = activeSessions(T0, TIMEOUT_MS);
  const image = withTopic();
  const topic = topicByName(image, 'orders');
  const small = { ...cfg, topicProducersMax: 2, parkedMax: 1 };
  for (const id of ['a', 'b']) state = attach(state, topic, ask(id, 'Shared'), id, LATER, small).state;
  const third = attach(state, topic, ask('c', 'Shared'), 'c', LATER, small);
  t.is(third.answers[0]!.type === 'REPLY_ERROR' && third.answers[0]!.error.code, 'BUSY');
  t.is(attach(state, topic, ask('a', 'Shared'), 'a', LATER, small).answers[0]!.type, 'REPLY', 'a known session refreshes');
  t.is(attach(state, topic, ask('c', 'Shared'), 'c', LATER, { ...cfg, nodeProducersMax: 2 }).answers[0]!.type, 'REPLY_ERROR');
  // Parked asks are bounded: beyond the bound, a waiter is answered `waiting` at once.
  let waits = activeSessions(T0, TIMEOUT_MS);
  waits = attach(waits, topic, ask('o', 'Exclusive'), 'o', LATER, small).state; // granting: others wait
  waits = attach(waits, topic, ask('w1', 'WaitForExclusive', { maxWaitMs: 1000 }), 'w1', LATER, small).state;
  const w2 = attach(waits, topic, ask('w2', 'WaitForExclusive', { maxWaitMs: 1000 }), 'w2', LATER, small);
  t.like(w2.answers[0], { type: 'REPLY', replyTo: 'w2', body: { status: 'waiting', position: 1 } });
});

test('losing leadership refuses every parked ask NOT_CONTROLLER; unknown topics are UNKNOWN_TOPIC', (t) => {
  const w = world();
  w.commitGrant(w.attach(ask('a', 'Exclusive')).grants[0]!.grant);
  w.attach(ask('b', 'WaitForExclusive', { maxWaitMs: 1000 }), LATER, 'parked-b');
  t.like(standby(w.state()), [{ type: 'REPLY_ERROR', replyTo: 'parked-b', error: { code: 'NOT_CONTROLLER' } }]);
  const unknown = attach(w.state(), undefined, ask('z', 'Shared', { topic: 'nope' }), 'z', LATER, cfg);
  t.like(unknown.answers[0], { type: 'REPLY_ERROR', error: { code: 'UNKNOWN_TOPIC' } });
});

test('a failed grant leaves the waiter first in line, and the next tick tries again', (t) => {
  const w = world();
  w.commitGrant(w.attach(ask('a', 'Exclusive')).grants[0]!.grant);
  w.attach(ask('b', 'WaitForExclusive'));
  w.commitRelease(w.detach('a').releases[0]!.topicId, 'a');
  const g = w.tick(LATER + 10).grants[0]!.grant;
  // The commit fails (e.g. its deadline passed): grantDone with ok=false.
  w.commitGrant({ ...g, expectEpoch: 99 });
  t.is(w.state().topics[g.topicId]!.waiters[0]!.sessionId, 'b');
  t.is(w.tick(LATER + 20).grants[0]!.grant.owner.sessionId, 'b');
});

test('a waiter parked for longer than the session timeout keeps its place', (t) => {
  const w = world();
  w.commitGrant(w.attach(ask('a', 'Exclusive')).grants[0]!.grant);
  w.attach(ask('b', 'WaitForExclusive', { maxWaitMs: TIMEOUT_MS * 2, timeoutMs: TIMEOUT_MS * 5 }), LATER, 'parked-b');
  w.attach(ask('c', 'WaitForExclusive'), LATER + 10);
  w.heartbeat('a', 'Exclusive', 1, LATER + TIMEOUT_MS);
  w.attach(ask('c', 'WaitForExclusive'), LATER + TIMEOUT_MS);
  const answered = w.tick(LATER + TIMEOUT_MS * 2);
  t.like(answered.answers[0], { replyTo: 'parked-b', body: { status: 'waiting', position: 0 } });
  t.deepEqual(w.state().topics['ab'.repeat(16)]!.waiters.map((x) => x.sessionId), ['b', 'c'], 'b, parked all along, is still first');
});
