import { encode } from '@msgpack/msgpack';
import test from 'ava';
import { ErrorCodes, logRangeOf, TidemarkError } from '../src/protocol/errors.js';
import { createTopicRequest, decodeReply, decodeRequest, encodeError, fetchRequest, produceRequest, produceReply } from '../src/protocol/messages.js';
import { isValidTopicName, Subjects, topicFromToken, topicToken } from '../src/protocol/subjects.js';

function refused(t: import('ava').ExecutionContext, fn: () => unknown, code: TidemarkError['code']) {
  const err = t.throws(fn, { instanceOf: TidemarkError }) as TidemarkError;
  t.is(err.code, code, err.message);
}

test('malformed msgpack is INVALID_REQUEST', (t) => {
  refused(t, () => decodeRequest(new Uint8Array([0xc1]), produceRequest), 'INVALID_REQUEST');
  refused(t, () => decodeRequest(new Uint8Array([0x92, 0x01]), produceRequest), 'INVALID_REQUEST');
});

test('wrong field types and out-of-range values are INVALID_REQUEST naming the field', (t) => {
  const bad = [
    { timeoutMs: '5', acks: 1, batch: new Uint8Array(1) },
    { timeoutMs: 5, acks: 2, batch: new Uint8Array(1) },
    { timeoutMs: 5, acks: 1, batch: 'x' },
    { timeoutMs: 0, acks: 1, batch: new Uint8Array(1) },
    { timeoutMs: 1.5, acks: 1, batch: new Uint8Array(1) },
    [1, 2, 3],
    null,
  ];
  for (const body of bad) refused(t, () => decodeRequest(encode(body), produceRequest), 'INVALID_REQUEST');
  const err = t.throws(() => decodeRequest(encode({ timeoutMs: 5, offset: -1, maxBytes: 10, maxWaitMs: 0 }), fetchRequest)) as TidemarkError;
  t.regex(err.message, /offset/);
});

test('createTopic bounds: partitions, replication factor, config map', (t) => {
  const ok = { timeoutMs: 1000, name: 'a', partitions: 3, replicationFactor: 1, config: { 'retention.ms': '10' } };
  t.deepEqual(decodeRequest(encode(ok), createTopicRequest), ok);
  refused(t, () => decodeRequest(encode({ ...ok, partitions: 0 }), createTopicRequest), 'INVALID_REQUEST');
  refused(t, () => decodeRequest(encode({ ...ok, partitions: 1e9 }), createTopicRequest), 'INVALID_REQUEST');
  refused(t, () => decodeRequest(encode({ ...ok, config: { a: 1 } }), createTopicRequest), 'INVALID_REQUEST');
  refused(t, () => decodeRequest(encode({ ...ok, name: 'x'.repeat(300) }), createTopicRequest), 'INVALID_REQUEST');
});

test('an error reply decodes to the TidemarkError with its code and retriable flag', (t) => {
  const err = t.throws(() => decodeReply(encodeError({ code: 'NOT_LEADER', message: 'moved' }), produceReply)) as TidemarkError;
  t.is(err.code, 'NOT_LEADER');
  t.true(err.retriable);
  t.is(err.message, 'moved');
  t.false(new TidemarkError('RECORD_TOO_LARGE').retriable);
});

test('OFFSET_OUT_OF_RANGE carries the answering replica\'s log range over the wire; other codes carry none', (t) => {
  const sent = new TidemarkError('OFFSET_OUT_OF_RANGE', 'below the log start', { context: { topicId: 'x', logStartOffset: 100, logEndOffset: 120 } });
  t.deepEqual(sent.toWire(), { code: 'OFFSET_OUT_OF_RANGE', message: 'below the log start', logRange: { logStartOffset: 100, logEndOffset: 120 } });
  const got = t.throws(() => decodeReply(encodeError(sent.toWire()), produceReply), { instanceOf: TidemarkError }) as TidemarkError;
  t.deepEqual(logRangeOf(got), { logStartOffset: 100, logEndOffset: 120 });
  t.deepEqual(new TidemarkError('NOT_LEADER', undefined, { context: { logStartOffset: 1, logEndOffset: 2 } }).toWire(), { code: 'NOT_LEADER', message: ErrorCodes.NOT_LEADER.message });
  const bare = t.throws(() => decodeReply(encodeError({ code: 'OFFSET_OUT_OF_RANGE', message: 'm' }), produceReply)) as TidemarkError;
  t.is(logRangeOf(bare), undefined);
});

test('every error code has a message and a retriable flag', (t) => {
  for (const [code, spec] of Object.entries(ErrorCodes)) {
    t.is(typeof spec.retriable, 'boolean', code);
    t.true(spec.message.length > 0, code);
  }
});

test('topic names: Kafka charset, dots survive the subject token mapping', (t) => {
  for (const name of ['orders', 'orders.v1', 'a_b-c', 'x'.repeat(249)]) t.true(isValidTopicName(name), name);
  for (const name of ['', '.', '..', 'a b', 'a*', 'a>', 'a~b', 'ü', 'x'.repeat(250)]) t.false(isValidTopicName(name), name);
  t.is(topicToken('orders.v1'), 'orders~v1');
  t.is(topicFromToken(topicToken('a.b.c')), 'a.b.c');
  const s = new Subjects('tidemark');
  const subject = s.partition('fetch', 7, 'orders.v1', 12);
  t.is(subject, 'tm.tidemark.b.7.fetch.orders~v1.12');
  t.deepEqual(s.parsePartition(subject), { topic: 'orders.v1', partition: 12 });
  t.is(s.parsePartition('tm.tidemark.b.7.fetch.orders.-1'), undefined);
  t.is(s.parsePartition('tm.tidemark.b.7.fetch.orders.01'), undefined);
  t.is(s.produce(7, 'orders.v1'), 'tm.tidemark.b.7.produce.orders~v1');
  t.is(s.parseProduce(s.produce(7, 'orders.v1')), 'orders.v1');
  t.is(s.parseProduce('tm.tidemark.b.7.produce.a*b'), undefined);
  t.is(s.parseProduce('tm.tidemark.b.7.fetch.orders'), undefined);
  t.throws(() => new Subjects('bad.name'), { instanceOf: TidemarkError });
});
