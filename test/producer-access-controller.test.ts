/**
 * Producer access at the controller (issue 12), end to end: a real nats-server and one node (with
 * RocksDB), raw requests on the three admin subjects. Exclusive refusals, ExclusiveWithFencing
 * taking over, WaitForExclusive handed the topic when the holder detaches or goes silent, the
 * epoch and owner in the metadata reply, and both kept across a controller restart.
 */
import test from 'ava';
import { TidemarkError } from '../src/protocol/errors.js';
import { createTopicReply, decodeReply, encodeMessage, metadataReply, type TopicMetadata } from '../src/protocol/messages.js';
import { producerAttachReply, producerDetachReply, producerHeartbeatReply, type AccessMode, type ProducerAttachReply } from '../src/protocol/producer-messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import { connectNats, type NatsTransport } from '../src/runtime/nats-transport.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { startTestNode, type TestNode } from './helpers/node.js';

const SESSION_TIMEOUT_MS = 1500;
const s = new Subjects('tidemark');
let nats: NatsServer;
let node: TestNode;
let client: NatsTransport;

async function call<T>(subject: string, body: object, schema: (v: unknown, path: string) => T, timeoutMs = 5000): Promise<T> {
  return decodeReply(await client.request(subject, encodeMessage({ timeoutMs, ...body }), timeoutMs + 1000), schema);
}
const attach = (topic: string, sessionId: string, accessMode: AccessMode, extra: object = {}) =>
  call(s.admin('producer-attach', topic), { topic, accessMode, producerName: `p-${sessionId}`, sessionId, maxWaitMs: 0, ...extra }, producerAttachReply);
const heartbeat = (topic: string, sessionId: string, accessMode: AccessMode, epoch: number) =>
  call(s.admin('producer-heartbeat', topic), { topic, accessMode, producerName: `p-${sessionId}`, sessionId, epoch }, producerHeartbeatReply);
const detach = (topic: string, sessionId: string) => call(s.admin('producer-detach', topic), { topic, sessionId }, producerDetachReply);

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return e instanceof TidemarkError ? e.code : `untyped: ${String(e)}`;
  }
}

/**
 * Exclusive attach, asked again while the controller is BUSY (a new controller's grace, one
 * session timeout): what a client's retry does. Bounded by twice the grace.
 */
async function attachExclusive(topic: string, sessionId: string, accessMode: AccessMode = 'Exclusive'): Promise<ProducerAttachReply> {
  const untilMs = Date.now() + 2 * SESSION_TIMEOUT_MS + 2000;
  for (;;) {
    try {
      return await attach(topic, sessionId, accessMode);
    } catch (e) {
      if (!(e instanceof TidemarkError) || e.code !== 'BUSY' || Date.now() > untilMs) throw e;
      // The grace ends at a time, not an event: the retry's backoff.
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The topic's metadata once `ok` holds: each retry waits (minOffset) for the next metadata change, so no sleeps. */
async function metadataUntil(topic: string, ok: (t: TopicMetadata) => boolean): Promise<TopicMetadata> {
  let minOffset = -1;
  for (let i = 0; i < 20; i++) {
    const reply = await call(s.metadata(), { topics: [topic], minOffset }, metadataReply, 3000);
    const t = reply.topics.find((x) => x.name === topic);
    if (t !== undefined && ok(t)) return t;
    minOffset = reply.offset + 1;
  }
  throw new Error(`metadata of ${topic} never matched`);
}

async function createTopic(name: string): Promise<void> {
  await call(s.admin('create-topic', name), { name, partitions: 2, replicationFactor: 1, config: {} }, createTopicReply);
}

test.before(async () => {
  nats = await startNatsServer();
  node = await startTestNode(nats.url, { producerSessionTimeoutMs: SESSION_TIMEOUT_MS });
  client = await connectNats({ servers: nats.url });
});

test.after.always(async () => {
  await client?.close();
  await node?.destroy();
  await nats?.stop();
});

test.serial('Exclusive: a second Exclusive is fenced, a Shared is busy; the metadata shows the epoch and owner', async (t) => {
  await createTopic('pa-exclusive');
  const granted = await attachExclusive('pa-exclusive', 'x1');
  t.like(granted, { status: 'granted', epoch: 1, fence: true, heartbeatIntervalMs: Math.floor(SESSION_TIMEOUT_MS / 3) });
  t.deepEqual(await attach('pa-exclusive', 'x1', 'Exclusive'), granted, 'a retried attach is the same grant');
  t.is(await code(attach('pa-exclusive', 'x2', 'Exclusive')), 'PRODUCER_FENCED');
  t.is(await code(attach('pa-exclusive', 's1', 'Shared')), 'PRODUCER_BUSY');
  const meta = await metadataUntil('pa-exclusive', (m) => m.producerEpoch === 1);
  t.deepEqual(meta.exclusiveProducer, { name: 'p-x1', accessMode: 'Exclusive' });
  await detach('pa-exclusive', 'x1');
  t.like(await attach('pa-exclusive', 's1', 'Shared'), { status: 'granted', epoch: 1, fence: false }, 'free again: shared at the current epoch');
});

test.serial('ExclusiveWithFencing takes the topic (epoch + 1); the old owner\'s heartbeat is fenced', async (t) => {
  await createTopic('pa-fencing');
  const first = await attachExclusive('pa-fencing', 'old');
  const taken = await attach('pa-fencing', 'new', 'ExclusiveWithFencing');
  t.like(taken, { status: 'granted', epoch: first.epoch + 1, fence: true });
  t.is(await code(heartbeat('pa-fencing', 'old', 'Exclusive', first.epoch)), 'PRODUCER_FENCED');
  t.deepEqual(await heartbeat('pa-fencing', 'new', 'ExclusiveWithFencing', taken.epoch), { epoch: taken.epoch });
  const meta = await metadataUntil('pa-fencing', (m) => m.producerEpoch === taken.epoch);
  t.deepEqual(meta.exclusiveProducer, { name: 'p-new', accessMode: 'ExclusiveWithFencing' });
  await detach('pa-fencing', 'new');
});

test.serial('WaitForExclusive waits, and is granted right after the holder detaches', async (t) => {
  await createTopic('pa-wait');
  const holder = await attachExclusive('pa-wait', 'holder');
  const waiting = await attach('pa-wait', 'w', 'WaitForExclusive');
  t.like(waiting, { status: 'waiting', epoch: holder.epoch, position: 0, fence: false });
  // A long poll: parked at the controller until it can be granted.
  const parked = attach('pa-wait', 'w', 'WaitForExclusive', { maxWaitMs: 4000, waitingSince: waiting.epoch });
  await detach('pa-wait', 'holder');
  t.like(await parked, { status: 'granted', epoch: holder.epoch + 1, fence: true });
  const meta = await metadataUntil('pa-wait', (m) => m.producerEpoch === holder.epoch + 1);
  t.deepEqual(meta.exclusiveProducer, { name: 'p-w', accessMode: 'WaitForExclusive' });
  await detach('pa-wait', 'w');
});

test.serial('WaitForExclusive is granted once a holder that stopped heartbeating loses its session', async (t) => {
  await createTopic('pa-silent');
  const holder = await attachExclusive('pa-silent', 'silent');
  const started = Date.now();
  let reply: ProducerAttachReply | undefined;
  // The waiter keeps asking (its heartbeat); the holder never heartbeats. Bounded by a few timeouts.
  for (let i = 0; i < 20 && reply?.status !== 'granted'; i++) reply = await attach('pa-silent', 'patient', 'WaitForExclusive', { maxWaitMs: 500, waitingSince: holder.epoch });
  t.like(reply, { status: 'granted', epoch: holder.epoch + 1 });
  t.true(Date.now() - started >= SESSION_TIMEOUT_MS - 100, 'not before the holder\'s session timed out');
  t.is(await code(heartbeat('pa-silent', 'silent', 'Exclusive', holder.epoch)), 'PRODUCER_FENCED', 'the silent holder has lost its claim');
  await detach('pa-silent', 'patient');
});

test.serial('a controller restart keeps the epoch and the owner (the metadata log); the owner carries on', async (t) => {
  await createTopic('pa-restart');
  const granted = await attachExclusive('pa-restart', 'keeper');
  const dataDir = node.dataDir;
  await node.close();
  node = await startTestNode(nats.url, { dataDir, producerSessionTimeoutMs: SESSION_TIMEOUT_MS });
  const meta = await metadataUntil('pa-restart', (m) => m.producerEpoch === granted.epoch);
  t.deepEqual(meta.exclusiveProducer, { name: 'p-keeper', accessMode: 'Exclusive' });
  t.deepEqual(await heartbeat('pa-restart', 'keeper', 'Exclusive', granted.epoch), { epoch: granted.epoch });
  t.is(await code(attach('pa-restart', 'other', 'Exclusive')), 'PRODUCER_FENCED', 'the owner survived the restart');
  t.like(await attach('pa-restart', 'keeper', 'Exclusive'), { status: 'granted', epoch: granted.epoch, fence: true });
});
