/**
 * Bad input never hurts: every malformed or out-of-bounds request gets a typed error reply,
 * nothing is written, and the node keeps serving.
 */
import { decode, encode } from '@msgpack/msgpack';
import test from 'ava';
import { encodeBatch, type BatchRecord } from '../src/protocol/batch.js';
import { crc32c } from '../src/protocol/crc32c.js';
import { TidemarkError, type ErrorCode } from '../src/protocol/errors.js';
import {
  createTopicReply,
  decodeReply,
  deleteTopicReply,
  encodeMessage,
  fetchReply,
  metadataReply,
  offsetsReply,
  produceResponse,
} from '../src/protocol/messages.js';
import type { Schema } from '../src/protocol/validate.js';
import { ackReply, consumeReply, createSubscriptionReply, subscriptionAdminReply } from '../src/protocol/subscription-messages.js';
import { producerAttachReply, producerDetachReply, producerHeartbeatReply } from '../src/protocol/producer-messages.js';
import { isValidTopicName, Subjects } from '../src/protocol/subjects.js';
import { connectNats, type NatsTransport } from '../src/runtime/nats-transport.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { startTestNode, type TestNode } from './helpers/node.js';

const s = new Subjects('tidemark');
const enc = new TextEncoder();
let nats: NatsServer;
let node: TestNode;
let t0: NatsTransport;

const record = (value: string | Uint8Array): BatchRecord => ({
  key: null,
  value: typeof value === 'string' ? enc.encode(value) : value,
  headers: {},
  timestamp: 1_700_000_000_000,
});

async function call<T>(subject: string, body: Uint8Array, schema: Schema<T>): Promise<T> {
  return decodeReply(await t0.request(subject, body, 5000), schema);
}

/** A produce request's outcome for its one batch: an error of the whole request or of the batch throws. */
async function produced(subject: string, body: Uint8Array): Promise<{ baseOffset: number }> {
  const reply = await call(subject, body, produceResponse);
  const outcome = reply.partitions[0]!;
  if (outcome.error !== undefined) throw TidemarkError.fromWire(outcome.error);
  return outcome;
}

async function refused(t: import('ava').ExecutionContext, subject: string, body: Uint8Array, code: ErrorCode): Promise<void> {
  const err = await t.throwsAsync(produced(subject, body), { instanceOf: TidemarkError });
  t.is(err?.code, code, err?.message);
}

async function logEnd(topic: string, partition: number): Promise<number> {
  const reply = await call(s.offsets(1), encodeMessage({ timeoutMs: 1000, partitions: [{ topic, partition }] }), offsetsReply);
  return reply.partitions[0]!.logEndOffset;
}

/** A produce request with one batch for `partition`; `extra` adds fields to its entry. */
const produce = (batch: Uint8Array, acks = 1, partition = 0, extra: object = {}) => encodeMessage({ timeoutMs: 5000, acks, partitions: [{ partition, batch, ...extra }] });
const raw = (fields: object, entry: object = {}) => encode({ timeoutMs: 1000, acks: 1, partitions: [{ partition: 0, batch: encodeBatch([record('x')]), ...entry }], ...fields });

test.before(async () => {
  nats = await startNatsServer();
  node = await startTestNode(nats.url);
  t0 = await connectNats({ servers: nats.url });
  await call(
    s.admin('create-topic', 'orders'),
    encodeMessage({ timeoutMs: 5000, name: 'orders', partitions: 2, replicationFactor: 1, config: { 'max.message.bytes': '4096' } }),
    createTopicReply,
  );
  // The partition actors start right after the commit; retry (bounded) until produce is accepted.
  for (let attempt = 0; ; attempt++) {
    if (attempt > 200) throw new Error('partition never became available');
    try {
      await produced(s.produce(1, 'orders'), produce(encodeBatch([record('first')])));
      break;
    } catch (error) {
      // The broker learns the new topic from the controller a moment after the commit.
      if (!(error instanceof TidemarkError) || !['LEADER_NOT_AVAILABLE', 'UNKNOWN_TOPIC'].includes(error.code)) throw error;
    }
  }
});

test.after.always(async () => {
  await t0?.close();
  await node?.destroy();
  await nats?.stop();
});

test.serial('bad produce requests are refused with typed errors and write nothing', async (t) => {
  const subject = s.produce(1, 'orders');
  const before = await logEnd('orders', 0);
  const good = encodeBatch([record('x')]);
  const corrupt = good.slice();
  corrupt[corrupt.length - 1]! ^= 1;
  const lyingLength = good.slice();
  new DataView(lyingLength.buffer).setUint32(57, 9999);
  new DataView(lyingLength.buffer).setUint32(17, crc32c(lyingLength, 21));

  await refused(t, subject, new Uint8Array([0xc1, 0xff, 0x00]), 'INVALID_REQUEST'); // not msgpack
  await refused(t, subject, raw({ timeoutMs: '1' }), 'INVALID_REQUEST'); // wrong type
  await refused(t, subject, raw({ acks: 7 }), 'INVALID_REQUEST'); // bad acks
  await refused(t, subject, raw({ timeoutMs: -5 }), 'INVALID_REQUEST'); // negative budget
  await refused(t, subject, encode([1, 2, 3]), 'INVALID_REQUEST'); // not a map
  await refused(t, subject, raw({ partitions: 'all' }), 'INVALID_REQUEST'); // partitions not a list
  await refused(t, subject, raw({}, { partition: -1 }), 'INVALID_REQUEST'); // negative partition
  await refused(t, subject, raw({}, { leaderEpoch: -2 }), 'INVALID_REQUEST'); // negative leader epoch
  await refused(t, subject, raw({}, { leaderEpoch: '0' }), 'INVALID_REQUEST'); // wrong type
  await refused(t, subject, produce(good, 1, 0, { leaderEpoch: 99 }), 'UNKNOWN_LEADER_EPOCH'); // ahead of the leader
  await refused(t, subject, produce(new Uint8Array(10)), 'CORRUPT_MESSAGE'); // short batch
  await refused(t, subject, produce(corrupt), 'CORRUPT_MESSAGE'); // CRC
  await refused(t, subject, produce(lyingLength), 'CORRUPT_MESSAGE'); // framing
  await refused(t, subject, produce(encodeBatch([record(new Uint8Array(5000))])), 'RECORD_TOO_LARGE');
  await refused(t, s.produce(1, 'nope'), produce(good), 'UNKNOWN_TOPIC');
  await refused(t, subject, produce(good, 1, 9), 'UNKNOWN_TOPIC');
  await refused(t, `${s.prefix}.b.1.produce.orders.0`, produce(good), 'NO_RESPONDERS'); // the per-partition subject is gone
  await refused(t, `${s.prefix}.b.1.produce.or*ders`, produce(good), 'INVALID_REQUEST');
  t.is(await logEnd('orders', 0), before, 'nothing was written');

  // One bad batch fails alone: the other entries of its request are written and answered.
  const mixed = await call(subject, encodeMessage({ timeoutMs: 5000, acks: 1, partitions: [{ partition: 0, batch: corrupt }, { partition: 0, batch: good }, { partition: 9, batch: good }] }), produceResponse);
  t.deepEqual(mixed.partitions.map((p) => (p.error !== undefined ? p.error.code : p.baseOffset)), ['CORRUPT_MESSAGE', before, 'UNKNOWN_TOPIC']);
  t.is(await logEnd('orders', 0), before + 1, 'only the good batch was written');
  const ok = await produced(subject, produce(good));
  t.is(ok.baseOffset, before + 1, 'the node still serves, at the next offset');
});

test.serial('bad fence requests are refused with typed errors and write nothing', async (t) => {
  // Only refusals here: a fence that succeeded would fence the unversioned producers of the other tests.
  const subject = s.fence(1, 'orders');
  const before = [await logEnd('orders', 0), await logEnd('orders', 1)];
  const fence = (fields: object = {}, entry: object = {}) => encode({ timeoutMs: 1000, accessEpoch: 1, partitions: [{ partition: 0, ...entry }], ...fields });
  await refused(t, subject, new Uint8Array([0xc1, 0xff, 0x00]), 'INVALID_REQUEST'); // not msgpack
  await refused(t, subject, encode([1, 2, 3]), 'INVALID_REQUEST'); // not a map
  await refused(t, subject, fence({ accessEpoch: -1 }), 'INVALID_REQUEST'); // negative epoch
  await refused(t, subject, fence({ accessEpoch: '1' }), 'INVALID_REQUEST'); // wrong type
  await refused(t, subject, fence({ accessEpoch: undefined }), 'INVALID_REQUEST'); // missing
  await refused(t, subject, fence({ timeoutMs: 0 }), 'INVALID_REQUEST'); // no budget
  await refused(t, subject, fence({ partitions: 'all' }), 'INVALID_REQUEST'); // partitions not a list
  await refused(t, subject, fence({}, { partition: -1 }), 'INVALID_REQUEST'); // negative partition
  await refused(t, subject, fence({}, { leaderEpoch: -2 }), 'INVALID_REQUEST'); // negative leader epoch
  await refused(t, subject, fence({}, { leaderEpoch: 99 }), 'UNKNOWN_LEADER_EPOCH'); // ahead of the leader: checked as produce checks it
  await refused(t, s.fence(1, 'nope'), fence(), 'UNKNOWN_TOPIC');
  await refused(t, subject, fence({}, { partition: 9 }), 'UNKNOWN_TOPIC');
  await refused(t, `${s.prefix}.b.1.fence.or*ders`, fence(), 'INVALID_REQUEST');
  await refused(t, `${s.prefix}.b.1.fence.orders.0`, fence(), 'NO_RESPONDERS'); // one subject per topic, not per partition
  t.deepEqual([await logEnd('orders', 0), await logEnd('orders', 1)], before, 'nothing was written');
  const ok = await produced(s.produce(1, 'orders'), produce(encodeBatch([record('after')])));
  t.is(ok.baseOffset, before[0]!, 'the node still serves, unfenced');
});

test.serial('bad fetches: negative and out-of-range offsets, wrong types, unknown partitions', async (t) => {
  const subject = s.partition('fetch', 1, 'orders', 0);
  const end = await logEnd('orders', 0);
  const fetch = (offset: number) => encodeMessage({ timeoutMs: 1000, offset, maxBytes: 1 << 20, maxWaitMs: 0 });
  await refused(t, subject, fetch(-1), 'INVALID_REQUEST');
  await refused(t, subject, fetch(end + 1), 'OFFSET_OUT_OF_RANGE');
  await refused(t, subject, encode({ timeoutMs: 1000, offset: 0, maxBytes: 0, maxWaitMs: 0 }), 'INVALID_REQUEST');
  await refused(t, subject, encode({ timeoutMs: 1000, offset: 0, maxBytes: 10, maxWaitMs: 10 ** 9 }), 'INVALID_REQUEST');
  await refused(t, s.partition('fetch', 1, 'orders', 5), fetch(0), 'UNKNOWN_TOPIC');
  const ok = await call(subject, fetch(0), fetchReply);
  t.is(ok.highWatermark, end);
  t.true(ok.records.length > 0);
});

test.serial('bad admin requests: illegal names, bounds, config, duplicates', async (t) => {
  const create = (body: object) => encode({ timeoutMs: 5000, partitions: 1, replicationFactor: 1, config: {}, ...body });
  // The subject names the topic; an illegal name cannot be a subject token, so those go on another topic's subject.
  const subjectOf = (body: Uint8Array) => {
    const name = (decode(body) as { name?: unknown } | undefined)?.name;
    return s.admin('create-topic', typeof name === 'string' && isValidTopicName(name) ? name : 'ok');
  };
  const err = async (body: Uint8Array, code: ErrorCode, subject = subjectOf(body)) => {
    const e = await t.throwsAsync(call(subject, body, createTopicReply), { instanceOf: TidemarkError });
    t.is(e?.code, code, e?.message);
  };
  await err(create({ name: 'has space' }), 'INVALID_TOPIC');
  await err(create({ name: 'star*' }), 'INVALID_TOPIC');
  await err(create({ name: '..' }), 'INVALID_TOPIC');
  await err(create({ name: 'ok', partitions: 0 }), 'INVALID_REQUEST');
  await err(create({ name: 'ok', replicationFactor: 3 }), 'INVALID_REPLICATION_FACTOR');
  await err(create({ name: 'ok', config: { 'retention.ms': 'soon' } }), 'INVALID_CONFIG');
  await err(create({ name: 'ok', config: { 'no.such.key': '1' } }), 'INVALID_CONFIG');
  await err(create({ name: 'orders' }), 'TOPIC_ALREADY_EXISTS');
  await err(new Uint8Array([0xc1]), 'INVALID_REQUEST', s.admin('create-topic', 'ok'));
  const e = await t.throwsAsync(call(s.admin('delete-topic', 'nope'), encode({ timeoutMs: 1000, name: 'nope' }), createTopicReply), { instanceOf: TidemarkError });
  t.is(e?.code, 'UNKNOWN_TOPIC');
  // The subject's topic is what NATS permissions see: a body naming another topic is refused, and nothing happens to either.
  await err(create({ name: 'elsewhere' }), 'INVALID_REQUEST', s.admin('create-topic', 'allowed'));
  await err(encode({ timeoutMs: 1000, name: 'orders' }), 'INVALID_REQUEST', s.admin('delete-topic', 'allowed'));
  await err(encode({ timeoutMs: 1000, name: 'orders', totalCount: 5 }), 'INVALID_REQUEST', s.admin('create-partitions', 'allowed'));
  await err(encode({ timeoutMs: 1000, name: 'orders', set: { 'retention.ms': '1' }, delete: [] }), 'INVALID_REQUEST', s.admin('alter-config', 'allowed'));
  const metadata = await call(s.metadata(), encodeMessage({ timeoutMs: 1000 }), metadataReply);
  const names = metadata.topics.map((topic) => topic.name);
  t.false(names.includes('elsewhere') || names.includes('allowed'));
  const orders = metadata.topics.find((topic) => topic.name === 'orders');
  t.is(orders?.partitions.length, 2, 'orders kept its partitions');
  t.is(orders?.config['retention.ms'], undefined, 'orders kept its config');
});

test.serial('bad subscription requests: consume, ack, sub-admin and the registry refuse with typed errors, write nothing, and the node keeps serving', async (t) => {
  await call(s.admin('create-subscription', 'orders', 'bad-input'), encodeMessage({ timeoutMs: 5000, topic: 'orders', name: 'bad-input', initialPosition: 'earliest' }), createSubscriptionReply);
  const consume = s.consumer('consume', 1, 'orders', 'bad-input');
  const ack = s.consumer('ack', 1, 'orders', 'bad-input');
  const goodPoll = { timeoutMs: 2000, consumerId: 'c1', consumerName: 'c1', priorityLevel: 0, type: 'Shared', sessionTimeoutMs: 5000, ackTimeoutMs: 0, partitions: [{ partition: 0, permits: 5 }], maxBytes: 1 << 20, maxWaitMs: 0 };
  const before = await logEnd('orders', 0);
  const err = async <T>(subject: string, body: Uint8Array, schema: Schema<T>, code: ErrorCode) => {
    const e = await t.throwsAsync(call(subject, body, schema), { instanceOf: TidemarkError });
    t.is(e?.code, code, `${subject}: ${e?.message}`);
  };
  await err(consume, new Uint8Array([0xc1, 0xff]), consumeReply, 'INVALID_REQUEST'); // not msgpack
  await err(consume, encode({ ...goodPoll, type: 'Queue' }), consumeReply, 'INVALID_REQUEST');
  await err(consume, encode({ ...goodPoll, partitions: [{ partition: 0, permits: 10 ** 9 }] }), consumeReply, 'INVALID_REQUEST');
  await err(consume, encode({ ...goodPoll, sessionTimeoutMs: 1 }), consumeReply, 'INVALID_REQUEST');
  await err(consume, encode({ ...goodPoll, consumerId: 'x'.repeat(65) }), consumeReply, 'INVALID_REQUEST');
  await err(s.consumer('consume', 1, 'nope', 'bad-input'), encode(goodPoll), consumeReply, 'UNKNOWN_TOPIC');
  await err(`${s.prefix}.b.1.consume.orders.bad*input`, encode(goodPoll), consumeReply, 'INVALID_REQUEST');
  const unknown = await call(s.consumer('consume', 1, 'orders', 'no-such-sub'), encode(goodPoll), consumeReply);
  t.is(unknown.partitions[0]?.error?.code, 'UNKNOWN_SUBSCRIPTION');
  const unled = await call(consume, encode({ ...goodPoll, partitions: [{ partition: 9, permits: 1 }] }), consumeReply);
  t.is(unled.partitions[0]?.error?.code, 'NOT_LEADER');
  const goodAck = { timeoutMs: 2000, consumerId: 'c1', partitions: [{ partition: 0, ranges: [0, 1] }] };
  await err(ack, encode({ ...goodAck, partitions: [{ partition: 0, ranges: [5, 3] }] }), ackReply, 'INVALID_REQUEST'); // empty range
  await err(ack, encode({ ...goodAck, partitions: [{ partition: 0, ranges: [4, 5, 1, 2] }] }), ackReply, 'INVALID_REQUEST'); // out of order
  await err(ack, encode({ ...goodAck, partitions: [{ partition: 0, ranges: [1, 2, 3] }] }), ackReply, 'INVALID_REQUEST'); // odd
  await err(ack, encode({ ...goodAck, partitions: [{ partition: 0, nacks: [-1] }] }), ackReply, 'INVALID_REQUEST');
  await err(s.subscriptionAdmin(1, 'orders'), encode({ timeoutMs: 1000, op: 'drop', partitions: [0] }), subscriptionAdminReply, 'INVALID_REQUEST');
  const reset = await call(s.subscriptionAdmin(1, 'orders'), encode({ timeoutMs: 1000, op: 'reset', subscription: 'bad-input', partitions: [0], target: { kind: 'offset' } }), subscriptionAdminReply);
  t.is(reset.partitions[0]?.error?.code, 'INVALID_REQUEST', 'a reset to an offset needs one');
  await err(s.admin('create-subscription', 'orders', 'x'), encode({ timeoutMs: 1000, topic: 'orders', name: 'bad name', initialPosition: 'earliest' }), createSubscriptionReply, 'INVALID_REQUEST');
  await err(s.admin('create-subscription', 'nope', 'x'), encode({ timeoutMs: 1000, topic: 'nope', name: 'x', initialPosition: 'earliest' }), createSubscriptionReply, 'UNKNOWN_TOPIC');
  // Subject and body must name the same subscription (of the same topic).
  await err(s.admin('create-subscription', 'orders', 'mine'), encode({ timeoutMs: 1000, topic: 'orders', name: 'theirs', initialPosition: 'earliest' }), createSubscriptionReply, 'INVALID_REQUEST');
  await err(s.admin('delete-subscription', 'other', 'bad-input'), encode({ timeoutMs: 1000, topic: 'orders', name: 'bad-input' }), deleteTopicReply, 'INVALID_REQUEST');
  // A client may not write control batches (the broker's cursor records).
  await refused(t, s.produce(1, 'orders'), produce(encodeBatch([record('fake cursor')], undefined, 0x20)), 'INVALID_RECORD');
  // Nothing above wrote a record or a cursor: the log end is where it was, bar cursor records the
  // registry's own subscription may append.
  const after = await logEnd('orders', 0);
  t.true(after - before <= 1, `log end ${before} -> ${after}`);
  // Still serving: a good poll and a good ack work.
  const served = await call(consume, encode(goodPoll), consumeReply);
  t.is(served.partitions[0]?.error, undefined);
  const acked = await call(ack, encode({ ...goodAck, consumerId: 'c1' }), ackReply);
  t.is(acked.partitions[0]?.error, undefined);
});

test.serial('bad producer-access requests: attach, heartbeat and detach refuse with typed errors, write nothing, and the controller keeps serving', async (t) => {
  const attach = { timeoutMs: 2000, topic: 'orders', accessMode: 'Shared', producerName: 'bad-input', sessionId: 'b1', maxWaitMs: 0 };
  const beat = { timeoutMs: 2000, topic: 'orders', accessMode: 'Shared', producerName: 'bad-input', sessionId: 'b1', epoch: 0 };
  const err = async <T>(subject: string, body: Uint8Array, schema: Schema<T>, code: ErrorCode) => {
    const e = await t.throwsAsync(call(subject, body, schema), { instanceOf: TidemarkError });
    t.is(e?.code, code, `${subject}: ${e?.message}`);
  };
  const a = s.admin('producer-attach', 'orders');
  const h = s.admin('producer-heartbeat', 'orders');
  const d = s.admin('producer-detach', 'orders');
  const before = (await call(s.metadata(), encodeMessage({ timeoutMs: 1000 }), metadataReply)).offset;
  for (const subject of [a, h, d]) await err(subject, new Uint8Array([0xc1, 0xff]), producerDetachReply, 'INVALID_REQUEST'); // not msgpack
  await err(a, encode({ ...attach, accessMode: 'Exclusiveish' }), producerAttachReply, 'INVALID_REQUEST');
  await err(a, encode({ ...attach, producerName: 'has space' }), producerAttachReply, 'INVALID_REQUEST');
  await err(a, encode({ ...attach, sessionId: 'x'.repeat(65) }), producerAttachReply, 'INVALID_REQUEST');
  await err(a, encode({ ...attach, maxWaitMs: 10 ** 9 }), producerAttachReply, 'INVALID_REQUEST');
  await err(a, encode({ ...attach, waitingSince: -1 }), producerAttachReply, 'INVALID_REQUEST');
  await err(a, encode({ ...attach, timeoutMs: 0 }), producerAttachReply, 'INVALID_REQUEST');
  await err(s.admin('producer-attach', 'nope'), encode({ ...attach, topic: 'nope' }), producerAttachReply, 'UNKNOWN_TOPIC');
  await err(s.admin('producer-attach', 'other'), encode(attach), producerAttachReply, 'INVALID_REQUEST'); // the subject names another topic
  await err(h, encode({ ...beat, epoch: -1 }), producerHeartbeatReply, 'INVALID_REQUEST');
  await err(h, encode({ ...beat, epoch: '0' }), producerHeartbeatReply, 'INVALID_REQUEST');
  await err(s.admin('producer-heartbeat', 'nope'), encode({ ...beat, topic: 'nope' }), producerHeartbeatReply, 'UNKNOWN_TOPIC');
  await err(s.admin('producer-detach', 'other'), encode({ timeoutMs: 1000, topic: 'orders', sessionId: 'b1' }), producerDetachReply, 'INVALID_REQUEST');
  await err(h, encode({ ...beat, accessMode: 'Exclusive' }), producerHeartbeatReply, 'PRODUCER_FENCED'); // claims a topic it does not hold
  await err(d, encode({ timeoutMs: 1000, topic: 'orders' }), producerDetachReply, 'INVALID_REQUEST'); // no session id
  await err(d, encode({ timeoutMs: 1000, topic: 'orders', sessionId: 7 }), producerDetachReply, 'INVALID_REQUEST');
  // Nothing above was committed; a good attach and detach still work.
  const after = (await call(s.metadata(), encodeMessage({ timeoutMs: 1000 }), metadataReply)).offset;
  t.is(after, before, 'no metadata entry was written');
  t.like(await call(a, encode(attach), producerAttachReply), { status: 'granted', epoch: 0, fence: false });
  const detached = await call(d, encode({ timeoutMs: 1000, topic: 'orders', sessionId: 'b1' }), producerDetachReply);
  t.true(detached.metadataOffset >= after, 'a shared detach is answered from memory with the controller\'s offset');
});
