/**
 * The admin SDK's subscription calls over a fake responder (no NATS, fake clock): a controller
 * holding the registry, and partition leader brokers answering sub-admin describe/reset as a test
 * scripts them. Checks one request per leader broker, the merge with the registry (unreported
 * partitions, totals), the typed refusals, reset targets on the wire, and the CLI's --to parsing.
 */
import test, { type ExecutionContext } from 'ava';
import { decode } from '@msgpack/msgpack';
import { mergeSubscription, resetTargetWire } from '../src/client/admin.js';
import { parseResetTarget } from '../src/cli/commands/subscription.js';
import { UsageError } from '../src/cli/cli-error.js';
import { Tidemark, TidemarkError, type ErrorCode } from '../src/index.js';
import { encodeError, encodeMessage, type TopicMetadata } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import type { SubscriptionAdminReply, SubscriptionMetadata, SubscriptionPartitionInfo } from '../src/protocol/subscription-messages.js';
import type { InboundMessage, SubscribeOptions, Subscription, Transport } from '../src/runtime/ports.js';
import { FakeClock, SeededRandom } from './helpers/fake-transport.js';

type Call = { subject: string; body: Record<string, unknown> };
type SubAdminHandler = (brokerId: number, body: { op: string; subscription?: string; partitions: number[]; target?: { kind: string; value?: number } }) => SubscriptionAdminReply | ErrorCode;

/** A controller with the registry, brokers 1-3, and a scripted sub-admin responder per broker. */
class FakeSubscriptionCluster implements Transport {
  readonly maxPayloadBytes = 1 << 20;
  readonly subjects = new Subjects('test');
  readonly calls: Call[] = [];
  offset = 10;
  topic: TopicMetadata = {
    name: 'orders',
    topicId: 'ab'.repeat(16),
    config: {},
    partitions: [0, 1, 2, 3].map((partition) => ({ partition, leader: partition === 3 ? 2 : 1, leaderEpoch: 0, replicas: [1, 2], isr: [1, 2] })),
  };
  subscriptions: SubscriptionMetadata[] = [];
  /** Brokers that answer sub-admin; others give NO_RESPONDERS. */
  serving = new Set([1, 2, 3]);
  subAdmin: SubAdminHandler = (_brokerId, body) => ({ partitions: body.partitions.map((partition) => ({ partition, highWatermark: 100, subscriptions: [] })) });

  publish(): void {}
  subscribe(_s: string, _h: (msg: InboundMessage) => void, _o?: SubscribeOptions): Subscription {
    return { unsubscribe: () => undefined };
  }
  requestMany(): Promise<Uint8Array[]> {
    return Promise.resolve([]);
  }

  callsTo(part: string): Call[] {
    return this.calls.filter((c) => c.subject.includes(part));
  }

  request(subject: string, data: Uint8Array): Promise<Uint8Array> {
    const body = decode(data) as Record<string, unknown>;
    this.calls.push({ subject, body });
    const p = this.subjects;
    try {
      if (subject === p.metadata()) {
        const topics = (body['topics'] as string[] | undefined)?.includes('orders') !== false ? [{ ...this.topic, ...(this.subscriptions.length > 0 ? { subscriptions: this.subscriptions } : {}) }] : [];
        return Promise.resolve(encodeMessage({ offset: this.offset, brokers: [1, 2, 3].map((id) => ({ id, epoch: 1, rack: '', fenced: false })), topics }));
      }
      if (p.parseAdmin(subject)?.op === 'create-subscription') {
        if (body['topic'] !== 'orders') throw new TidemarkError('UNKNOWN_TOPIC', 'no topic');
        const existing = this.subscriptions.find((s) => s.name === body['name']);
        this.offset++;
        if (existing !== undefined) return Promise.resolve(encodeMessage({ subscription: existing, created: false, metadataOffset: this.offset }));
        const s: SubscriptionMetadata = { name: body['name'] as string, id: this.offset, initialPosition: body['initialPosition'] as 'earliest', partitionsAtCreation: this.topic.partitions.length };
        this.subscriptions = [...this.subscriptions, s].sort((a, b) => a.name.localeCompare(b.name));
        return Promise.resolve(encodeMessage({ subscription: s, created: true, metadataOffset: this.offset }));
      }
      if (p.parseAdmin(subject)?.op === 'delete-subscription') {
        if (!this.subscriptions.some((s) => s.name === body['name'])) throw new TidemarkError('UNKNOWN_SUBSCRIPTION', 'no subscription');
        this.subscriptions = this.subscriptions.filter((s) => s.name !== body['name']);
        this.offset++;
        return Promise.resolve(encodeMessage({ metadataOffset: this.offset }));
      }
      const tokens = subject.split('.');
      if (tokens[2] === 'b' && tokens[4] === 'sub-admin') {
        const brokerId = Number(tokens[3]);
        if (!this.serving.has(brokerId)) return Promise.reject(new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`));
        const reply = this.subAdmin(brokerId, body as Parameters<SubAdminHandler>[1]);
        return Promise.resolve(typeof reply === 'string' ? encodeError({ code: reply, message: `injected ${reply}` }) : encodeMessage(reply));
      }
      return Promise.reject(new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`));
    } catch (error) {
      return Promise.resolve(encodeError((error as TidemarkError).toWire()));
    }
  }
}

function setup() {
  const clock = new FakeClock();
  const cluster = new FakeSubscriptionCluster();
  const client = Tidemark.fromTransport(cluster, { cluster: 'test', clock, random: new SeededRandom(3) });
  return { clock, cluster, client, admin: client.admin() };
}

/** Runs an admin call to completion, moving fake time so retries back off and fire. */
async function run<T>(clock: FakeClock, promise: Promise<T>): Promise<T> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 400 && !settled; i++) await clock.advance(100);
  return promise;
}

async function rejection(t: ExecutionContext, clock: FakeClock, promise: Promise<unknown>): Promise<ErrorCode> {
  const error = await t.throwsAsync(run(clock, promise), { instanceOf: TidemarkError });
  return (error as TidemarkError).code;
}

const info = (subscription: string, over: Partial<SubscriptionPartitionInfo> = {}): SubscriptionPartitionInfo => ({
  subscription,
  markDelete: 5,
  ackedAbove: 0,
  backlog: 95,
  unacked: 0,
  consumers: [],
  ...over,
});

test('createSubscription: default initial position latest, idempotent, waits for metadata; UNKNOWN_TOPIC is final', async (t) => {
  const { clock, cluster, admin, client } = setup();
  const s = await run(clock, admin.createSubscription({ topic: 'orders', name: 'billing' }));
  t.deepEqual(s, { name: 'billing', id: 11, initialPosition: 'latest', partitionsAtCreation: 4 });
  t.is(cluster.callsTo('create-subscription')[0]!.body['initialPosition'], 'latest');
  // The metadata request after the commit asks for at least its offset (read-your-writes).
  const after = cluster.calls.filter((c) => c.subject === cluster.subjects.metadata()).at(-1)!;
  t.true((after.body['minOffset'] as number) >= 11);
  const again = await run(clock, admin.createSubscription({ topic: 'orders', name: 'billing', initialPosition: 'earliest' }));
  t.deepEqual(again, s, 'the existing one, with its original settings');
  const before = cluster.callsTo('create-subscription').length;
  t.is(await rejection(t, clock, admin.createSubscription({ topic: 'nope', name: 'x' })), 'UNKNOWN_TOPIC');
  t.is(cluster.callsTo('create-subscription').length, before + 1, 'not retried');
  await client.close();
});

test('deleteSubscription: deletes; UNKNOWN_SUBSCRIPTION is final (one request)', async (t) => {
  const { clock, cluster, admin, client } = setup();
  await run(clock, admin.createSubscription({ topic: 'orders', name: 'billing' }));
  await run(clock, admin.deleteSubscription('orders', 'billing'));
  t.deepEqual(cluster.subscriptions, []);
  const before = cluster.callsTo('delete-subscription').length;
  t.is(await rejection(t, clock, admin.deleteSubscription('orders', 'billing')), 'UNKNOWN_SUBSCRIPTION');
  t.is(cluster.callsTo('delete-subscription').length, before + 1);
  await client.close();
});

test('describe: one request per leader broker, merged with the registry; partitions not reported show -1; totals', async (t) => {
  const { clock, cluster, admin, client } = setup();
  await run(clock, admin.createSubscription({ topic: 'orders', name: 'billing', initialPosition: 'earliest' }));
  cluster.topic.partitions[2]!.leader = -1; // partition 2 has no leader now
  cluster.subAdmin = (brokerId, body) => ({
    partitions: body.partitions.map((partition) => {
      if (partition === 1) return { partition, error: { code: 'UNKNOWN_SUBSCRIPTION', message: 'not yet' } };
      const consumers = [{ consumerId: `c${brokerId}`, consumerName: 'worker', priorityLevel: 0, active: true, unacked: 2, idleMs: 10 }];
      return { partition, highWatermark: 100 + partition, subscriptions: [info('billing', { markDelete: 10 * partition, backlog: 100 - partition, unacked: 2, type: 'Shared', consumers }), info('other')] };
    }),
  });
  const d = await run(clock, admin.describeSubscription('orders', 'billing'));
  const subAdmin = cluster.callsTo('sub-admin');
  t.deepEqual(
    subAdmin.map((c) => [c.subject, c.body['op'], c.body['subscription'], c.body['partitions']]),
    [
      ['tm.test.b.1.sub-admin.orders', 'describe', 'billing', [0, 1]],
      ['tm.test.b.2.sub-admin.orders', 'describe', 'billing', [3]],
    ],
  );
  t.like(d, { topic: 'orders', name: 'billing', initialPosition: 'earliest', type: 'Shared', backlog: 100 + 97, backlogComplete: false, unacked: 4, consumerCount: 2 });
  t.deepEqual(
    d.partitions.map((p) => [p.partition, p.leader, p.reported, p.markDelete, p.backlog, p.highWatermark, p.consumers.length]),
    [
      [0, 1, true, 0, 100, 100, 1],
      [1, 1, false, -1, -1, -1, 0],
      [2, -1, false, -1, -1, -1, 0],
      [3, 2, true, 30, 97, 103, 1],
    ],
  );
  await client.close();
});

test('list: every registered subscription, sorted; ones a leader reports but metadata lacks are ignored; a broker nobody answers for leaves its partitions unreported', async (t) => {
  const { clock, cluster, admin, client } = setup();
  t.deepEqual(await run(clock, admin.listSubscriptions('orders')), [], 'none: no leader is asked');
  t.is(cluster.callsTo('sub-admin').length, 0);
  for (const name of ['zeta', 'alpha']) await run(clock, admin.createSubscription({ topic: 'orders', name }));
  cluster.serving.delete(2);
  cluster.subAdmin = (_b, body) => ({
    partitions: body.partitions.map((partition) => ({ partition, highWatermark: 50, subscriptions: [info('alpha', { backlog: 1 }), info('zeta', { backlog: 2 }), info('deleted-meanwhile')] })),
  });
  const list = await run(clock, admin.listSubscriptions('orders'));
  t.is(cluster.callsTo('sub-admin')[0]!.body['subscription'], undefined, 'list asks for all subscriptions');
  t.deepEqual(
    list.map((s) => [s.name, s.backlog, s.backlogComplete, s.partitions.map((p) => p.reported)]),
    [
      ['alpha', 3, false, [true, true, true, false]],
      ['zeta', 6, false, [true, true, true, false]],
    ],
  );
  await client.close();
});

test('describe refusals: unknown topic and unknown subscription answer at once; a retriable partition error is retried', async (t) => {
  const { clock, cluster, admin, client } = setup();
  t.is(await rejection(t, clock, admin.describeSubscription('orders', 'nope')), 'UNKNOWN_SUBSCRIPTION');
  t.is(await rejection(t, clock, admin.listSubscriptions('missing')), 'UNKNOWN_TOPIC');
  t.is(cluster.callsTo('sub-admin').length, 0);
  await run(clock, admin.createSubscription({ topic: 'orders', name: 'billing' }));
  let failures = 2;
  cluster.subAdmin = (_b, body) =>
    failures-- > 0
      ? { partitions: body.partitions.map((partition) => ({ partition, error: { code: 'NOT_LEADER', message: 'moved' } })) }
      : { partitions: body.partitions.map((partition) => ({ partition, highWatermark: 9, subscriptions: [info('billing', { backlog: 4 })] })) };
  const d = await run(clock, admin.describeSubscription('orders', 'billing'));
  t.is(d.backlog, 16);
  t.true(d.backlogComplete);
  t.true(cluster.callsTo('sub-admin').length > 2);
  // A non-retriable one is thrown.
  cluster.subAdmin = () => 'INVALID_REQUEST';
  t.is(await rejection(t, clock, admin.describeSubscription('orders', 'billing')), 'INVALID_REQUEST');
  await client.close();
});

test('reset: the target goes to every leader broker, for all its partitions; a partition without a leader is waited for', async (t) => {
  const { clock, cluster, admin, client } = setup();
  await run(clock, admin.createSubscription({ topic: 'orders', name: 'billing' }));
  const targets: unknown[] = [];
  cluster.subAdmin = (_b, body) => {
    targets.push(body.target);
    return { partitions: body.partitions.map((partition) => ({ partition, highWatermark: 9, subscriptions: [info('billing')] })) };
  };
  await run(clock, admin.resetSubscription('orders', 'billing', { offset: 7 }));
  t.deepEqual(
    cluster.callsTo('sub-admin').map((c) => [c.subject, c.body['op'], c.body['subscription'], c.body['partitions']]),
    [
      ['tm.test.b.1.sub-admin.orders', 'reset', 'billing', [0, 1, 2]],
      ['tm.test.b.2.sub-admin.orders', 'reset', 'billing', [3]],
    ],
  );
  t.deepEqual(targets, [{ kind: 'offset', value: 7 }, { kind: 'offset', value: 7 }]);
  await run(clock, admin.resetSubscription('orders', 'billing', { timestamp: new Date(1_700_000_000_000) }));
  t.deepEqual(targets.at(-1), { kind: 'timestamp', value: 1_700_000_000_000 });
  // No leader for partition 0 for a while: retried until it has one.
  cluster.topic.partitions[0]!.leader = -1;
  const pending = admin.resetSubscription('orders', 'billing', 'earliest');
  await clock.advance(1000);
  t.is(targets.length, 4, 'nothing sent while a partition has no leader');
  cluster.topic.partitions[0]!.leader = 3;
  await run(clock, pending);
  t.deepEqual(targets.slice(4), [{ kind: 'earliest' }, { kind: 'earliest' }, { kind: 'earliest' }]);
  // A broker that does not answer fails the reset (every partition must be reset).
  cluster.serving.delete(3);
  t.is(await rejection(t, clock, admin.resetSubscription('orders', 'billing', 'latest')), 'NO_RESPONDERS');
  t.is(await rejection(t, clock, admin.resetSubscription('orders', 'nope', 'latest')), 'UNKNOWN_SUBSCRIPTION');
  t.is(await rejection(t, clock, admin.resetSubscription('orders', 'billing', { offset: -1 })), 'INVALID_REQUEST');
  await client.close();
});

test('mergeSubscription and resetTargetWire are pure', (t) => {
  const topic: TopicMetadata = { name: 't', topicId: 'x', config: {}, partitions: [{ partition: 0, leader: 1, leaderEpoch: 0, replicas: [1], isr: [1] }] };
  const s: SubscriptionMetadata = { name: 's', id: 3, initialPosition: 'latest', partitionsAtCreation: 1 };
  const merged = mergeSubscription(topic, s, new Map());
  t.like(merged, { backlog: 0, backlogComplete: false, consumerCount: 0, unacked: 0 });
  t.false('type' in merged);
  t.deepEqual(resetTargetWire('latest'), { kind: 'latest' });
  t.deepEqual(resetTargetWire({ timestamp: 5 }), { kind: 'timestamp', value: 5 });
  t.throws(() => resetTargetWire({ offset: 1.5 }), { instanceOf: TidemarkError });
});

test('CLI --to parsing: earliest, latest, offsets, ISO times; anything else is a usage error', (t) => {
  t.is(parseResetTarget('earliest'), 'earliest');
  t.is(parseResetTarget('latest'), 'latest');
  t.deepEqual(parseResetTarget('42'), { offset: 42 });
  t.deepEqual(parseResetTarget('2026-12-04T10:00:00Z'), { timestamp: Date.UTC(2026, 11, 4, 10) });
  t.deepEqual(parseResetTarget('2026-12-04'), { timestamp: Date.UTC(2026, 11, 4) });
  for (const bad of [undefined, '-1', 'soon', '2026-13-45', '99999999999999999999', '1.5']) t.throws(() => parseResetTarget(bad), { instanceOf: UsageError }, String(bad));
});
