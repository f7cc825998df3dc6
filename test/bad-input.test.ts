/**
 * Bad input never hurts: every malformed or out-of-bounds request gets a typed error reply,
 * nothing is written, and the node keeps serving.
 */
import { encode } from '@msgpack/msgpack';
import test from 'ava';
import { encodeBatch, type BatchRecord } from '../src/protocol/batch.js';
import { crc32c } from '../src/protocol/crc32c.js';
import { TidemarkError, type ErrorCode } from '../src/protocol/errors.js';
import {
  createTopicReply,
  decodeReply,
  encodeMessage,
  fetchReply,
  offsetsReply,
  produceResponse,
} from '../src/protocol/messages.js';
import type { Schema } from '../src/protocol/validate.js';
import { Subjects } from '../src/protocol/subjects.js';
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
    s.admin('create-topic'),
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
  const subject = s.admin('create-topic');
  const err = async (body: Uint8Array, code: ErrorCode) => {
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
  await err(new Uint8Array([0xc1]), 'INVALID_REQUEST');
  const e = await t.throwsAsync(call(s.admin('delete-topic'), encode({ timeoutMs: 1000, name: 'nope' }), createTopicReply), { instanceOf: TidemarkError });
  t.is(e?.code, 'UNKNOWN_TOPIC');
});
