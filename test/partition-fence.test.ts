/**
 * Producer access on the partition leader's side (issue 12): fence records, the PRODUCER_FENCED
 * check, and a new leader learning the fence from its log. Real stores (memory, and RocksDB for the
 * reopen), xstate's SimulatedClock, and transition() where the question is one step.
 */
import { encode } from '@msgpack/msgpack';
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createActor, SimulatedClock, transition, waitFor } from 'xstate';
import { encodeFenceBatch, fenceEpochOf } from '../src/actors/partition/fence-records.js';
import { partitionMachine } from '../src/actors/partition/machine.js';
import { rebuildProducerStates } from '../src/actors/partition/producer-state.js';
import type { PartitionEvent, ProduceAccess } from '../src/actors/partition/types.js';
import { decodeCursorBatch, encodeCursorBatch } from '../src/actors/subscription/cursor-records.js';
import { CONTROL_ATTRIBUTE, encodeBatch, isControlBatch, NO_PRODUCER_SEQUENCE, readBatchHeader, stampBatch } from '../src/protocol/batch.js';
import { createMemoryNodeStorage } from '../src/storage/memory-storage.js';
import type { NodeStorage } from '../src/storage/partition-store.js';
import { openRocksNodeStorage } from '../src/storage/rocksdb-storage.js';
import { leaderInput, recordingTransport, TOPIC_ID, type Reply } from './helpers/partition-harness.js';

const enc = new TextEncoder();

/** A single-replica leader on `storage` (shared by two actors in turn: a new leader on the same log). */
async function leader(storage: NodeStorage, leaderEpoch = 0) {
  const clock = new SimulatedClock();
  const transport = recordingTransport();
  const actor = createActor(partitionMachine, { clock, input: leaderInput(storage, transport, clock, { leaderEpoch }) });
  actor.start();
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  return { actor, transport };
}

const batchOf = (n: number) => encodeBatch(Array.from({ length: n }, (_, i) => ({ key: null, value: enc.encode(`v${i}`), headers: {}, timestamp: 1000 })));
const sequenced = (n: number, baseSequence: number, producerId = 77) =>
  encodeBatch(
    Array.from({ length: n }, (_, i) => ({ key: null, value: enc.encode(`s${baseSequence + i}`), headers: {}, timestamp: 1000 })),
    { producerId, producerEpoch: 0, baseSequence },
  );

const produce = (replyTo: string, batch: Uint8Array, access?: ProduceAccess, acks: 0 | 1 | -1 = 1): PartitionEvent => {
  const h = readBatchHeader(batch);
  return {
    type: 'PRODUCE',
    replyTo,
    acks,
    batch,
    recordCount: h.recordCount,
    producer: h.producerId < 0 ? undefined : { producerId: h.producerId, producerEpoch: h.producerEpoch, baseSequence: h.baseSequence },
    nowMs: 0,
    timeoutMs: 30_000,
    leaderEpoch: undefined,
    ...(access === undefined ? {} : { access }),
  };
};
const fence = (replyTo: string, epoch: number, known = 0) => produce(replyTo, encodeFenceBatch(epoch, 1000), { epoch, known }, -1);
const at = (epoch: number, known = 0): ProduceAccess => ({ epoch, known });

const errorOf = (r: Reply) => r.body['error'] as { code?: string; message?: string } | undefined;

// --- fence records --------------------------------------------------------------------------

test('a fence batch is one control record, and fenceEpochOf reads its epoch back', (t) => {
  const batch = encodeFenceBatch(7, 1000);
  t.true(isControlBatch(batch));
  t.is(readBatchHeader(batch).recordCount, 1);
  t.is(readBatchHeader(batch).producerId, -1, 'no producer sequence: the broker writes it');
  t.is(fenceEpochOf(batch), 7);
});

test('fenceEpochOf is tolerant: data, cursor records, foreign keys, bad values and broken framing hold no fence', (t) => {
  const control = (key: string, value: unknown) =>
    encodeBatch([{ key: enc.encode(key), value: value instanceof Uint8Array ? value : encode(value), headers: {}, timestamp: 1 }], NO_PRODUCER_SEQUENCE, CONTROL_ATTRIBUTE);
  t.is(fenceEpochOf(batchOf(2)), undefined, 'not a control batch');
  t.is(fenceEpochOf(encodeBatch([{ key: enc.encode('tm.fence'), value: encode({ v: 1, epoch: 9 }), headers: {}, timestamp: 1 }])), undefined, 'a client record with the key is no fence');
  t.is(fenceEpochOf(encodeCursorBatch([{ name: 's', id: 1, markDelete: 4, ranges: [] }], 1)), undefined, 'cursor records');
  t.is(fenceEpochOf(control('tm.other', { v: 1, epoch: 3 })), undefined, 'another key');
  t.is(fenceEpochOf(control('tm.fence', { v: 2, epoch: 3 })), undefined, 'unknown version');
  t.is(fenceEpochOf(control('tm.fence', { v: 1, epoch: -1 })), undefined, 'negative epoch');
  t.is(fenceEpochOf(control('tm.fence', { v: 1, epoch: 1.5 })), undefined, 'not an integer');
  t.is(fenceEpochOf(control('tm.fence', { v: 1, epoch: '3' })), undefined, 'not a number');
  t.is(fenceEpochOf(control('tm.fence', null)), undefined, 'nil value');
  t.is(fenceEpochOf(control('tm.fence', new Uint8Array([0xc1]))), undefined, 'not msgpack');
  t.is(fenceEpochOf(new Uint8Array(10)), undefined, 'short');
  const truncated = encodeFenceBatch(5, 1).slice(0, -3);
  t.is(fenceEpochOf(truncated), undefined, 'truncated');
  const two = encodeBatch(
    [
      { key: enc.encode('tm.fence'), value: encode({ v: 1, epoch: 4 }), headers: {}, timestamp: 1 },
      { key: enc.encode('tm.fence'), value: encode({ v: 1, epoch: 6 }), headers: {}, timestamp: 1 },
      { key: enc.encode('tm.fence'), value: new Uint8Array([0xc1]), headers: {}, timestamp: 1 },
    ],
    NO_PRODUCER_SEQUENCE,
    CONTROL_ATTRIBUTE,
  );
  t.is(fenceEpochOf(two), 6, 'the highest of several; the bad one skipped');
});

test('decodeCursorBatch ignores fence records (it filters by key)', (t) => {
  t.deepEqual(decodeCursorBatch(encodeFenceBatch(3, 1)), []);
});

// --- the leader's check ---------------------------------------------------------------------

test('after a fence at 2, a produce at epoch 1 is refused PRODUCER_FENCED and nothing is written; 2 and 3 are accepted', async (t) => {
  const { actor, transport } = await leader(createMemoryNodeStorage());
  actor.send(fence('f', 2));
  t.like((await transport.next('f')).body, { baseOffset: 0 });
  t.is(actor.getSnapshot().context.accessEpoch, 2);
  const end = actor.getSnapshot().context.nextOffset;

  actor.send(produce('old', batchOf(1), at(1)));
  const refused = await transport.next('old');
  t.is(errorOf(refused)?.code, 'PRODUCER_FENCED');
  t.is(errorOf(refused)?.message, 'producer epoch 1 < 2');
  t.is(actor.getSnapshot().context.nextOffset, end, 'nothing written');

  actor.send(produce('two', batchOf(1), at(2)));
  t.like((await transport.next('two')).body, { baseOffset: end });
  actor.send(produce('three', batchOf(1), at(3)));
  t.like((await transport.next('three')).body, { baseOffset: end + 1 });
  t.is(actor.getSnapshot().context.accessEpoch, 3, 'an accepted epoch raises the leader\'s');
  actor.send(produce('two-again', batchOf(1), at(2)));
  t.is(errorOf(await transport.next('two-again'))?.code, 'PRODUCER_FENCED', 'and then fences the one before it');
});

test('the metadata\'s epoch (known) refuses without any fence, and is remembered once a produce is accepted', async (t) => {
  const { actor, transport } = await leader(createMemoryNodeStorage());
  actor.send(produce('a', batchOf(1), at(0, 4)));
  t.like(errorOf(await transport.next('a')), { code: 'PRODUCER_FENCED', message: 'producer epoch 0 < 4' });
  t.is(actor.getSnapshot().context.nextOffset, 0);
  t.is(actor.getSnapshot().context.accessEpoch, 0, 'a refusal changes nothing');
  actor.send(produce('b', batchOf(1), at(4, 4)));
  t.like((await transport.next('b')).body, { baseOffset: 0 });
  actor.send(produce('c', batchOf(1), at(3, 0)));
  t.is(errorOf(await transport.next('c'))?.code, 'PRODUCER_FENCED', 'a broker whose metadata is behind cannot let it through any more');
});

test('a produce without access is not checked (the broker\'s own appends: subscription cursors)', async (t) => {
  const { actor, transport } = await leader(createMemoryNodeStorage());
  actor.send(fence('f', 5));
  await transport.next('f');
  actor.send(produce('unchecked', batchOf(1)));
  t.like((await transport.next('unchecked')).body, { baseOffset: 1 });
  t.is(actor.getSnapshot().context.accessEpoch, 5);
});

test('the check is one pure step, before the sequence checks: a fenced producer\'s idempotent state is not touched', async (t) => {
  const { actor, transport } = await leader(createMemoryNodeStorage());
  actor.send(produce('s0', sequenced(2, 0), at(1)));
  await transport.next('s0');
  actor.send(fence('f', 2));
  await transport.next('f');
  const snapshot = actor.getSnapshot();
  // Its next batch in sequence, and a retry of its first: both refused as fenced, not appended or answered as duplicates.
  for (const batch of [sequenced(1, 2), sequenced(2, 0)]) {
    const [next, actions] = transition(partitionMachine, snapshot, produce('x', batch, at(1)));
    t.is(next.context.producers, snapshot.context.producers, 'idempotent state untouched');
    t.is(next.context.nextOffset, snapshot.context.nextOffset);
    const sent = actions.filter((a) => a.type === 'xstate.sendTo').map((a) => (a.params as unknown as { event: { type: string; error?: { code: string } } }).event);
    t.deepEqual(
      sent.map((e) => [e.type, e.error?.code]),
      [['REPLY_ERROR', 'PRODUCER_FENCED']],
    );
  }
});

test('a producer\'s idempotent sequence keeps working across the fence', async (t) => {
  const { actor, transport } = await leader(createMemoryNodeStorage());
  actor.send(produce('s0', sequenced(2, 0), at(2)));
  t.like((await transport.next('s0')).body, { baseOffset: 0 });
  actor.send(fence('f', 2));
  t.like((await transport.next('f')).body, { baseOffset: 2 });
  actor.send(produce('s2', sequenced(3, 2), at(2)));
  t.like((await transport.next('s2')).body, { baseOffset: 3 }, 'the next sequence is appended after the fence');
  actor.send(produce('retry', sequenced(3, 2), at(2)));
  t.like((await transport.next('retry')).body, { baseOffset: 3 }, 'a retry is still a duplicate');
  actor.send(produce('gap', sequenced(1, 9), at(2)));
  t.is(errorOf(await transport.next('gap'))?.code, 'OUT_OF_ORDER_SEQUENCE', 'and order is still enforced');
  t.is(actor.getSnapshot().context.nextOffset, 6);
});

// --- a new leader ---------------------------------------------------------------------------

test('rebuildProducerStates returns the highest fence epoch of the log tail, beside the producer states', async (t) => {
  const storage = createMemoryNodeStorage();
  const store = await storage.openPartition({ topicId: TOPIC_ID, partition: 0 });
  let offset = 0;
  for (const batch of [sequenced(2, 0), encodeFenceBatch(3, 1), batchOf(1), encodeFenceBatch(2, 1), encodeCursorBatch([{ name: 's', id: 1, markDelete: 0, ranges: [] }], 1)]) {
    stampBatch(batch, offset, 0);
    await store.append([batch]);
    offset += readBatchHeader(batch).recordCount;
  }
  const rebuilt = await rebuildProducerStates(store);
  t.is(rebuilt.accessEpoch, 3, 'the highest, not the last');
  t.is(rebuilt.producers.get(77)?.nextSequence, 2);
});

test('a new leader opened on the same store after a fence knows the epoch and refuses the old one (memory and RocksDB)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-fence-'));
  try {
    const rocks = await openRocksNodeStorage(dir);
    for (const [name, storage] of [
      ['memory', createMemoryNodeStorage()],
      ['rocksdb', rocks],
    ] as const) {
      const first = await leader(storage, 0);
      first.actor.send(produce('before', batchOf(1), at(0)));
      await first.transport.next('before');
      first.actor.send(fence('f', 2));
      t.like((await first.transport.next('f')).body, { baseOffset: 1 }, name);
      first.actor.send({ type: 'STOP' });
      await waitFor(first.actor, (s) => s.status === 'done');

      const second = await leader(storage, 1);
      t.is(second.actor.getSnapshot().context.accessEpoch, 2, `${name}: learnt from the log tail`);
      second.actor.send(produce('old', batchOf(1), at(1)));
      t.is(errorOf(await second.transport.next('old'))?.code, 'PRODUCER_FENCED', name);
      second.actor.send(produce('new', batchOf(1), at(2)));
      t.like((await second.transport.next('new')).body, { baseOffset: 2 }, name);
      second.actor.send({ type: 'STOP' });
      await waitFor(second.actor, (s) => s.status === 'done');
    }
    await rocks.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

