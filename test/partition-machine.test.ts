/**
 * The partition machine on in-memory storage and a recording transport, with xstate's
 * SimulatedClock: parked fetches and retention run on simulated time, no real waiting.
 */
import { decode } from '@msgpack/msgpack';
import test from 'ava';
import { wantsLagCheck } from '../src/actors/partition/leader-state.js';
import { createActor, fromCallback, fromPromise, SimulatedClock, transition, waitFor } from 'xstate';
import type { WriterInput } from '../src/actors/partition/log-writer.js';
import type { PartitionStore } from '../src/storage/partition-store.js';
import { partitionMachine } from '../src/actors/partition/machine.js';
import type { ProducerRebuild } from '../src/actors/partition/producer-state.js';
import { createPendingBytesBudget, NODE_PENDING_APPEND_BYTES_MAX_DEFAULT, type PendingBytesBudget } from '../src/actors/partition/pending-budget.js';
import { DEFAULT_PARTITION_LIMITS, type PartitionEvent, type PartitionInput, type PartitionLimits, type ReplicaWatch, type WriterEvent } from '../src/actors/partition/types.js';
import { parseTopicConfig } from '../src/metadata/topic-config.js';
import { decodeBatch, encodeBatch, readBatchHeader, splitBatches } from '../src/protocol/batch.js';
import { encodeError, encodeMessage } from '../src/protocol/messages.js';
import type { Transport } from '../src/runtime/ports.js';
import { createMemoryNodeStorage, MemoryDisk } from '../src/storage/memory-storage.js';
import { leaderInput, recordingTransport, type Reply } from './helpers/partition-harness.js';

const enc = new TextEncoder();

function start(
  options: {
    config?: Record<string, string>;
    limits?: Partial<PartitionLimits>;
    clock?: SimulatedClock;
    budget?: PendingBytesBudget;
    leaderEpoch?: number;
    replicas?: number[];
    isr?: number[];
    /** Answers the partition's requests to the controller (AlterPartition). */
    controller?: (subject: string, data: Uint8Array) => Promise<Uint8Array>;
    disk?: MemoryDisk;
    /** Hears the leader's written end (the node's fetch sessions). */
    watch?: ReplicaWatch;
  } = {},
) {
  const clock = options.clock ?? new SimulatedClock();
  const transport = recordingTransport();
  if (options.controller !== undefined) transport.request = options.controller;
  const storage = createMemoryNodeStorage(options.disk);
  const actor = createActor(partitionMachine, {
    clock,
    input: leaderInput(storage, transport, clock, {
      leaderEpoch: options.leaderEpoch ?? 0,
      replicas: options.replicas ?? [1],
      isr: options.isr ?? [1],
      config: parseTopicConfig(options.config ?? {}),
      ...(options.watch === undefined ? {} : { replicaWatch: options.watch }),
      limits: { ...DEFAULT_PARTITION_LIMITS, ...options.limits },
      pendingBudget: options.budget ?? createPendingBytesBudget(NODE_PENDING_APPEND_BYTES_MAX_DEFAULT),
    }),
  });
  actor.start();
  return { actor, transport, clock, storage };
}

const batchOf = (n: number, timestamp = 1000) =>
  encodeBatch(Array.from({ length: n }, (_, i) => ({ key: null, value: enc.encode(`v${i}`), headers: {}, timestamp })));

const produce = (
  replyTo: string,
  batch: Uint8Array,
  acks: 0 | 1 | -1 = 1,
  request: { nowMs?: number; timeoutMs?: number; leaderEpoch?: number } = {},
): PartitionEvent => {
  const h = readBatchHeader(batch);
  return {
    type: 'PRODUCE',
    replyTo,
    acks,
    batch,
    recordCount: h.recordCount,
    producer: h.producerId < 0 ? undefined : { producerId: h.producerId, producerEpoch: h.producerEpoch, baseSequence: h.baseSequence },
    nowMs: request.nowMs ?? 0,
    timeoutMs: request.timeoutMs ?? 30_000,
    leaderEpoch: request.leaderEpoch,
  };
};

const sequenced = (n: number, baseSequence: number, producerId = 77) =>
  encodeBatch(
    Array.from({ length: n }, (_, i) => ({ key: null, value: enc.encode(`s${baseSequence + i}`), headers: {}, timestamp: 1000 })),
    { producerId, producerEpoch: 0, baseSequence },
  );

const errorCode = (r: Reply | undefined) => (r?.body['error'] as { code?: string } | undefined)?.code;

test('pipelined produces get consecutive offsets and replies in order', async (t) => {
  const { actor, transport } = start();
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('r1', batchOf(3)));
  actor.send(produce('r2', batchOf(2)));
  actor.send(produce('r3', batchOf(4), 0));
  actor.send(produce('r4', batchOf(1)));
  await waitFor(actor, (s) => s.context.highWatermark === 10);
  t.deepEqual(
    transport.replies.map((r) => [r.subject, r.body['baseOffset']]),
    [
      ['r1', 0],
      ['r2', 3],
      ['r4', 9],
    ],
    'acks=0 gets no reply; the others in order with their base offsets',
  );
});

test('a fetch at the high watermark is parked until data arrives', async (t) => {
  const { actor, transport } = start();
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send({ type: 'FETCH', replyTo: 'f1', offset: 0, maxBytes: 1 << 20, maxWaitMs: 5000 });
  t.is(actor.getSnapshot().context.waiters.length, 1);
  actor.send(produce('p1', batchOf(2)));
  const reply = await transport.next('f1');
  const records = splitBatches(reply.body['records'] as Uint8Array).flatMap(decodeBatch);
  t.deepEqual(
    records.map((r) => r.offset),
    [0, 1],
  );
  t.is(reply.body['highWatermark'], 2);
});

test('a parked fetch is answered empty when maxWaitMs passes on the clock', async (t) => {
  const clock = new SimulatedClock();
  const { actor, transport } = start({ clock });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send({ type: 'FETCH', replyTo: 'f1', offset: 0, maxBytes: 1024, maxWaitMs: 500 });
  clock.increment(499);
  t.is(transport.replies.length, 0);
  clock.increment(1);
  const reply = await transport.next('f1');
  t.is((reply.body['records'] as Uint8Array).length, 0);
  t.is(actor.getSnapshot().context.waiters.length, 0);
});

test('parked fetches are bounded: beyond fetchWaitersMax a fetch is answered at once', async (t) => {
  const { actor, transport } = start({ limits: { fetchWaitersMax: 2 } });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  for (const id of ['a', 'b', 'c']) actor.send({ type: 'FETCH', replyTo: id, offset: 0, maxBytes: 1024, maxWaitMs: 10_000 });
  t.is(actor.getSnapshot().context.waiters.length, 2);
  t.deepEqual(
    transport.replies.map((r) => r.subject),
    ['c'],
  );
});

test('produce beyond the pending bound gets BUSY, and nothing of it is written', async (t) => {
  // A writer that never finishes keeps appends pending.
  const clock = new SimulatedClock();
  const transport = recordingTransport();
  const stuck = partitionMachine.provide({ actors: { logWriter: fromCallback<WriterEvent, WriterInput>(() => {}) } });
  const actor = createActor(stuck, {
    clock,
    input: leaderInput(createMemoryNodeStorage(), transport, clock, { limits: { ...DEFAULT_PARTITION_LIMITS, pendingAppendsMax: 2 } }),
  }).start();
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  for (const id of ['a', 'b', 'c']) actor.send(produce(id, batchOf(1)));
  t.deepEqual(
    transport.replies.map((r) => [r.subject, (r.body['error'] as { code: string } | undefined)?.code]),
    [['c', 'BUSY']],
  );
  t.is(actor.getSnapshot().context.nextOffset, 2);
});

test('too large a batch is refused with RECORD_TOO_LARGE', async (t) => {
  const { actor, transport } = start({ config: { 'max.message.bytes': '100' } });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('big', batchOf(10)));
  const reply = await transport.next('big');
  t.is((reply.body['error'] as { code: string }).code, 'RECORD_TOO_LARGE');
  t.is(actor.getSnapshot().context.nextOffset, 0);
});

test('STOP finishes pending writes, answers them, refuses new work and ends', async (t) => {
  const { actor, transport } = start();
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send({ type: 'FETCH', replyTo: 'parked', offset: 0, maxBytes: 1024, maxWaitMs: 10_000 });
  actor.send(produce('before', batchOf(2)));
  actor.send({ type: 'STOP' });
  actor.send(produce('after', batchOf(1)));
  await waitFor(actor, (s) => s.status === 'done');
  const code = (subject: string) => (transport.replies.find((r) => r.subject === subject)?.body['error'] as { code?: string } | undefined)?.code;
  t.is(transport.replies.find((r) => r.subject === 'before')?.body['baseOffset'], 0);
  t.is(code('after'), 'SHUTTING_DOWN');
  t.is(code('parked'), 'SHUTTING_DOWN');
});

test('retention runs on the node tick and moves the log start past expired batches', async (t) => {
  const clock = new SimulatedClock();
  clock.set(1_000_000);
  const { actor } = start({ clock, config: { 'retention.ms': '1000' }, limits: { retentionCheckIntervalMs: 60_000 } });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('old', batchOf(3, 1_000_000)));
  actor.send(produce('new', batchOf(2, 1_000_000 + 59_500)));
  await waitFor(actor, (s) => s.context.highWatermark === 5);
  clock.increment(60_000);
  // The partition keeps no retention timer of its own: the broker's one node tick asks.
  actor.send({ type: 'TICK', nowMs: clock.now(), retain: true });
  const snap = await waitFor(actor, (s) => s.context.logStartOffset > 0);
  t.is(snap.context.logStartOffset, 3, 'the old batch went, the recent one stays');
  t.is(snap.context.logEndOffset, 5);
});

test('idempotent producer: a retried batch is answered with its first offset and not written twice', async (t) => {
  const { actor, transport } = start();
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  const first = sequenced(3, 0);
  actor.send(produce('a', first));
  actor.send(produce('a-retry-while-pending', first));
  await waitFor(actor, (s) => s.context.highWatermark === 3);
  actor.send(produce('a-retry-after', first));
  const replies = await Promise.all(['a', 'a-retry-while-pending', 'a-retry-after'].map((s) => transport.next(s)));
  t.deepEqual(
    replies.map((r) => r.body['baseOffset']),
    [0, 0, 0],
  );
  t.is(actor.getSnapshot().context.logEndOffset, 3, 'written once');
});

test('idempotent producer: a batch that overtakes a missing one is refused, then order is restored', async (t) => {
  const { actor, transport } = start();
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('b0', sequenced(2, 0)));
  // batch 2..3 is "lost"; 4..5 arrives first
  actor.send(produce('b2-early', sequenced(2, 4)));
  t.is(errorCode(await transport.next('b2-early')), 'OUT_OF_ORDER_SEQUENCE');
  actor.send(produce('b1', sequenced(2, 2)));
  actor.send(produce('b2', sequenced(2, 4)));
  await waitFor(actor, (s) => s.context.highWatermark === 6);
  const values = (await Promise.all(['b0', 'b1', 'b2'].map((s) => transport.next(s)))).map((r) => r.body['baseOffset']);
  t.deepEqual(values, [0, 2, 4]);
  // An older sequence the partition no longer remembers is a duplicate, never written again.
  for (let seq = 6; seq < 6 + 2 * 6; seq += 2) actor.send(produce(`later${seq}`, sequenced(2, seq)));
  await waitFor(actor, (s) => s.context.highWatermark === 18);
  actor.send(produce('ancient', sequenced(2, 0)));
  t.is(errorCode(await transport.next('ancient')), 'DUPLICATE_SEQUENCE');
  t.is(actor.getSnapshot().context.logEndOffset, 18);
});

test('idempotent producer: a batch refused as too large uses up its sequences', async (t) => {
  const { actor, transport } = start({ config: { 'max.message.bytes': '200' } });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('ok', sequenced(1, 0)));
  actor.send(produce('big', sequenced(20, 1)));
  actor.send(produce('next', sequenced(1, 21)));
  t.is(errorCode(await transport.next('big')), 'RECORD_TOO_LARGE');
  t.is((await transport.next('next')).body['baseOffset'], 1);
});

function startWith(machine: typeof partitionMachine, clock = new SimulatedClock(), overrides: Partial<PartitionInput> = {}) {
  const transport = recordingTransport();
  const actor = createActor(machine, {
    clock,
    input: leaderInput(createMemoryNodeStorage(), transport, clock, overrides),
  }).start();
  return { actor, transport, clock };
}

test('while its log is loading, a partition answers LEADER_NOT_AVAILABLE (retriable) and keeps running', async (t) => {
  const never = partitionMachine.provide({ actors: { openLog: fromPromise<{ store: PartitionStore } & ProducerRebuild, PartitionInput>(() => new Promise(() => {})) } });
  const { actor, transport } = startWith(never);
  actor.send(produce('p', batchOf(1)));
  actor.send({ type: 'FETCH', replyTo: 'f', offset: 0, maxBytes: 1024, maxWaitMs: 100 });
  t.is(errorCode(await transport.next('p')), 'LEADER_NOT_AVAILABLE');
  t.is(errorCode(await transport.next('f')), 'LEADER_NOT_AVAILABLE');
  t.is(actor.getSnapshot().status, 'active');
  actor.send({ type: 'STOP' });
  t.is(actor.getSnapshot().status, 'done');
});

test('a write that fails while draining still lets the partition close', async (t) => {
  const failing = partitionMachine.provide({
    actors: {
      logWriter: fromCallback<WriterEvent, WriterInput>(({ receive, sendBack }) => {
        receive(() => queueMicrotask(() => sendBack({ type: 'APPEND_FAILED', message: 'disk on fire' })));
      }),
    },
  });
  const { actor, transport } = startWith(failing);
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('p', batchOf(1)));
  actor.send({ type: 'STOP' });
  await waitFor(actor, (s) => s.status === 'done', { timeout: 5000 });
  t.is(errorCode(await transport.next('p')), 'INTERNAL');
});

test('answering a parked fetch cancels its expiry timer', async (t) => {
  const clock = new SimulatedClock();
  const { actor } = start({ clock });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  const timers = () => (clock as unknown as { timeouts: Map<unknown, unknown> }).timeouts.size;
  const idle = timers(); // the retention tick
  for (let i = 0; i < 50; i++) actor.send({ type: 'FETCH', replyTo: `f${i}`, offset: 0, maxBytes: 1024, maxWaitMs: 30_000 });
  t.is(timers(), idle + 50);
  actor.send(produce('p', batchOf(1)));
  await waitFor(actor, (s) => s.context.waiters.length === 0);
  t.is(timers(), idle);
});

test('replication: acks=all waits for the ISR follower; a refused ISR expansion is dropped and not proposed again at once', async (t) => {
  const alters: unknown[] = [];
  const { actor, transport, clock } = start({
    replicas: [1, 2, 3],
    isr: [1, 2],
    controller: async (_subject, data) => {
      alters.push(decode(data));
      return encodeError({ code: 'INVALID_REQUEST', message: 'broker 3 may not join the ISR (fenced or shutting down)' });
    },
  });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('p1', batchOf(2), -1));
  await waitFor(actor, (s) => s.context.logEndOffset === 2);
  t.is(actor.getSnapshot().context.highWatermark, 0, 'not committed before follower 2 has it');
  const fetch = (replicaId: number, fetchOffset: number, replyTo: string): PartitionEvent => ({
    type: 'REPLICA_FETCH', replyTo, replicaId, leaderEpoch: 0, fetchOffset, lastFetchedEpoch: fetchOffset > 0 ? 0 : -1, maxBytes: 1 << 20, maxWaitMs: 0,
  });
  actor.send(fetch(2, 0, 'f2a'));
  await transport.next('f2a');
  actor.send(fetch(2, 2, 'f2b'));
  t.like((await transport.next('p1')).body, { baseOffset: 0 });
  t.is(actor.getSnapshot().context.highWatermark, 2);
  // Follower 3 (outside the ISR) catches up: the leader asks to add it; the controller refuses.
  actor.send(fetch(3, 2, 'f3'));
  await waitFor(actor, (s) => alters.length === 1 && s.context.pendingIsr === undefined && s.matches({ open: { isr: 'idle' } }));
  t.like(alters[0] as object, { isr: [1, 2, 3], partitionEpoch: 0 });
  actor.send(fetch(3, 2, 'f3b'));
  clock.increment(1_000);
  await transport.next('f3b');
  t.is(alters.length, 1, 'not proposed again within the cooldown');
  // The HW follows the committed ISR again: a new acks=all batch needs follower 2 only.
  actor.send(produce('p2', batchOf(1), -1));
  await waitFor(actor, (s) => s.context.logEndOffset === 3);
  actor.send(fetch(2, 3, 'f2c'));
  t.like((await transport.next('p2')).body, { baseOffset: 2 });
});

// --- produce deadline (Kafka's delayed produce), leader epoch, node-wide pending bytes ---------------

const replicaFetch = (replicaId: number, fetchOffset: number, replyTo: string, leaderEpoch = 0): PartitionEvent => ({
  type: 'REPLICA_FETCH', replyTo, replicaId, leaderEpoch, fetchOffset, lastFetchedEpoch: fetchOffset > 0 ? leaderEpoch : -1, maxBytes: 1 << 20, maxWaitMs: 0,
});

/** Timers armed on a SimulatedClock (xstate keeps them in a private map). */
const timersOf = (clock: SimulatedClock) => (clock as unknown as { timeouts: Map<unknown, unknown> }).timeouts.size;

test('produce deadline: an acks=all batch the ISR does not commit is answered REQUEST_TIMED_OUT at arrival + timeoutMs, freeing its slot; the retry is answered once committed', async (t) => {
  const clock = new SimulatedClock();
  clock.set(10_000);
  const budget = createPendingBytesBudget(NODE_PENDING_APPEND_BYTES_MAX_DEFAULT);
  const { actor, transport } = start({ clock, replicas: [1, 2], isr: [1, 2], budget });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  const batch = sequenced(2, 0);
  actor.send(produce('p', batch, -1, { nowMs: clock.now(), timeoutMs: 500 }));
  await waitFor(actor, (s) => s.context.logEndOffset === 2);
  t.is(budget.usedBytes, batch.length, 'the waiting batch holds its bytes of the node budget');
  clock.increment(499);
  t.is(transport.replies.length, 0, 'nothing before the deadline');
  clock.increment(1);
  const expired = await transport.next('p');
  t.is(errorCode(expired), 'REQUEST_TIMED_OUT');
  const snap = actor.getSnapshot().context;
  t.deepEqual([snap.pending.length, snap.pendingBytes, budget.usedBytes, snap.deadlineTimerAtMs], [0, 0, 0, undefined], 'slot, bytes and budget freed');
  t.is(snap.logEndOffset, 2, 'the batch stays written: it may still commit');

  // The producer's retry (same sequence) waits as a duplicate with its own deadline; the follower
  // catches up and it is answered with the first write's offset, written once.
  actor.send(produce('p-retry', batch, -1, { nowMs: clock.now(), timeoutMs: 500 }));
  actor.send(replicaFetch(2, 0, 'f0'));
  await transport.next('f0');
  actor.send(replicaFetch(2, 2, 'f2'));
  t.like((await transport.next('p-retry')).body, { baseOffset: 0 });
  t.is(actor.getSnapshot().context.logEndOffset, 2, 'written once');
  t.is(actor.getSnapshot().context.deadlineTimerAtMs, undefined, 'the timer is dropped with nothing left to expire');
});

test('fetch sessions: the written end is reported; maxBytes 0 records progress only; maxWaitMs 0 parks nothing; an idle, caught-up follower gets no ISR check', async (t) => {
  const clock = new SimulatedClock();
  const written: number[] = [];
  const { actor, transport } = start({ clock, replicas: [1, 2], isr: [1, 2], watch: { written: (_topicId, _p, end) => written.push(end) } });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  t.deepEqual(written, [0], 'reported when it opens');
  const idle = timersOf(clock);
  actor.send(produce('p', sequenced(2, 0), -1, { nowMs: clock.now(), timeoutMs: 60_000 }));
  await waitFor(actor, (s) => s.context.writtenEnd === 2);
  t.deepEqual(written, [0, 2], 'and when it moves');
  actor.send({ ...(replicaFetch(2, 0, 'progress-only') as Extract<PartitionEvent, { type: 'REPLICA_FETCH' }>), maxBytes: 0 });
  t.deepEqual((await transport.next('progress-only')).body['records'], new Uint8Array(0), 'no records read');
  t.is(actor.getSnapshot().context.followers[2]!.logEndOffset, 0, 'the progress is recorded');
  actor.send(replicaFetch(2, 2, 'caught-up'));
  t.like((await transport.next('p')).body, { baseOffset: 0 });
  await transport.next('caught-up');
  const snap = actor.getSnapshot().context;
  t.is(snap.waiters.length, 0, 'nothing parked');
  t.is(timersOf(clock), idle, 'and no timer of its own');
  t.false(wantsLagCheck(snap), 'the node tick skips it');
});

test('produce deadline: one timer per partition for the earliest deadline; batches and waiting duplicates expire in deadline order', async (t) => {
  const clock = new SimulatedClock();
  const { actor, transport } = start({ clock, replicas: [1, 2], isr: [1, 2] });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  const idle = timersOf(clock);
  // Deadlines arrive out of order.
  const timeouts = [300, 100, 200, 400, 150];
  timeouts.forEach((timeoutMs, i) => actor.send(produce(`p${timeoutMs}`, sequenced(1, i), -1, { nowMs: clock.now(), timeoutMs })));
  await waitFor(actor, (s) => s.context.logEndOffset === timeouts.length);
  // A retry of batch 0 waits as a duplicate, with a later deadline of its own.
  actor.send(produce('dup', sequenced(1, 0), -1, { nowMs: clock.now(), timeoutMs: 250 }));
  t.is(timersOf(clock), idle + 1, 'one timer, whatever the number of waiting batches');
  t.is(actor.getSnapshot().context.deadlineTimerAtMs, 100);
  const order: string[] = [];
  for (let ms = 0; ms < 400; ms += 10) {
    clock.increment(10);
    for (const r of transport.replies) if (!order.includes(r.subject)) order.push(r.subject);
    t.true(timersOf(clock) <= idle + 1);
  }
  t.deepEqual(order, ['p100', 'p150', 'p200', 'dup', 'p300', 'p400']);
  t.true(transport.replies.every((r) => errorCode(r) === 'REQUEST_TIMED_OUT'));
  t.is(actor.getSnapshot().context.pending.length, 0);
  t.is(timersOf(clock), idle, 'no timer left');
});

test('produce deadline: a batch still being written when it expires is answered but keeps its slot until the writer is done with it', async (t) => {
  const clock = new SimulatedClock();
  const budget = createPendingBytesBudget(NODE_PENDING_APPEND_BYTES_MAX_DEFAULT);
  const stuck = partitionMachine.provide({ actors: { logWriter: fromCallback<WriterEvent, WriterInput>(() => {}) } });
  const { actor, transport } = startWith(stuck, clock, { replicas: [1, 2], isr: [1, 2], limits: { ...DEFAULT_PARTITION_LIMITS, pendingAppendsMax: 1 }, pendingBudget: budget });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  const batch = batchOf(1);
  actor.send(produce('p', batch, -1, { nowMs: clock.now(), timeoutMs: 100 }));
  clock.increment(100);
  t.is(errorCode(await transport.next('p')), 'REQUEST_TIMED_OUT');
  t.is(actor.getSnapshot().context.pending.length, 1, 'the writer still has it');
  t.is(budget.usedBytes, batch.length);
  actor.send(produce('next', batchOf(1), -1, { nowMs: clock.now(), timeoutMs: 100 }));
  t.is(errorCode(await transport.next('next')), 'BUSY', 'pendingAppendsMax still counts it');
  // It is never written: the partition drains forever, until its broker stops the actor.
  actor.send({ type: 'STOP' });
  t.true(actor.getSnapshot().matches({ open: { log: 'draining' } }));
  actor.stop();
  t.is(budget.usedBytes, 0, 'a stopped actor gives its share back, however it stopped');
});

test('produce deadline: the expiry is a pure transition: transition() returns the reply and the next timer, and executes nothing', async (t) => {
  const clock = new SimulatedClock();
  const budget = createPendingBytesBudget(NODE_PENDING_APPEND_BYTES_MAX_DEFAULT);
  const { actor, transport } = start({ clock, replicas: [1, 2], isr: [1, 2], budget });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('a', batchOf(1), -1, { nowMs: 0, timeoutMs: 100 }));
  actor.send(produce('b', batchOf(1), -1, { nowMs: 0, timeoutMs: 300 }));
  const snapshot = await waitFor(actor, (s) => s.context.logEndOffset === 2);
  const held = budget.usedBytes;
  const [next, actions] = transition(partitionMachine, snapshot, { type: 'PRODUCE_DEADLINE', atMs: 100 });
  t.deepEqual(
    next.context.pending.map((p) => p.replyTo),
    ['b'],
  );
  t.is(next.context.deadlineTimerAtMs, 300);
  const sent = actions.filter((a) => a.type === 'xstate.sendTo').map((a) => (a.params as unknown as { event: { replyTo: string; error: { code: string } } }).event);
  t.deepEqual(
    sent.map((e) => [e.replyTo, e.error.code]),
    [['a', 'REQUEST_TIMED_OUT']],
  );
  const raised = actions.find((a) => a.type === 'xstate.raise')?.params as { delay: number; event: { atMs: number } } | undefined;
  t.deepEqual([raised?.delay, raised?.event.atMs], [200, 300], 'the next timer, for b');
  t.is(budget.usedBytes, held, 'nothing released: the release is an effect transition() does not run');
  t.is(transport.replies.length, 0);
});

test('leader epoch: a produce with an older epoch is refused FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH, nothing written; none or the same is accepted', async (t) => {
  const { actor, transport } = start({ leaderEpoch: 5 });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('stale', sequenced(1, 0), 1, { leaderEpoch: 4 }));
  actor.send(produce('newer', sequenced(1, 0), 1, { leaderEpoch: 6 }));
  t.is(errorCode(await transport.next('stale')), 'FENCED_LEADER_EPOCH');
  t.is(errorCode(await transport.next('newer')), 'UNKNOWN_LEADER_EPOCH');
  t.is(actor.getSnapshot().context.nextOffset, 0, 'nothing written');
  // The refused batches used no sequence: the same batch at the right epoch is the next in order.
  actor.send(produce('current', sequenced(1, 0), 1, { leaderEpoch: 5 }));
  actor.send(produce('unchecked', sequenced(1, 1), 1));
  t.like((await transport.next('current')).body, { baseOffset: 0 });
  t.like((await transport.next('unchecked')).body, { baseOffset: 1 });
});

test('node budget: a second partition sharing it is refused BUSY while the first holds it, and accepted once the first releases it', async (t) => {
  const clock = new SimulatedClock();
  const held = batchOf(20);
  const budget = createPendingBytesBudget(held.length + 10);
  const first = start({ clock, replicas: [1, 2], isr: [1, 2], budget });
  const second = start({ clock, budget });
  await waitFor(first.actor, (s) => s.matches({ open: { log: 'serving' } }));
  await waitFor(second.actor, (s) => s.matches({ open: { log: 'serving' } }));
  first.actor.send(produce('held', held, -1, { nowMs: clock.now(), timeoutMs: 1_000 }));
  await waitFor(first.actor, (s) => s.context.logEndOffset === 20);
  t.is(budget.usedBytes, held.length);
  const other = batchOf(2);
  second.actor.send(produce('refused', other));
  const refused = await second.transport.next('refused');
  t.is(errorCode(refused), 'BUSY');
  t.regex((refused.body['error'] as { message: string }).message, /nodePendingAppendBytesMax/);
  t.is(second.actor.getSnapshot().context.nextOffset, 0, 'nothing written');
  t.is(second.actor.getSnapshot().context.pendingBytes, 0);
  // Committed (the follower has it): the first partition's bytes go back; the second is accepted.
  first.actor.send(replicaFetch(2, 0, 'f0'));
  await first.transport.next('f0');
  first.actor.send(replicaFetch(2, 20, 'f20'));
  await first.transport.next('held');
  t.is(budget.usedBytes, 0);
  second.actor.send(produce('accepted', other));
  t.like((await second.transport.next('accepted')).body, { baseOffset: 0 });
  await waitFor(second.actor, (s) => s.context.pending.length === 0);
  t.is(budget.usedBytes, 0, 'exact after answers');
  // And after expiry, and after a stop with writes pending.
  first.actor.send(produce('expires', held, -1, { nowMs: clock.now(), timeoutMs: 50 }));
  await waitFor(first.actor, (s) => s.context.logEndOffset === 40);
  t.is(budget.usedBytes, held.length);
  clock.increment(50);
  t.is(errorCode(await first.transport.next('expires')), 'REQUEST_TIMED_OUT');
  t.is(budget.usedBytes, 0, 'exact after expiry');
  first.actor.send(produce('abandoned', batchOf(1), -1, { nowMs: clock.now(), timeoutMs: 1_000 }));
  first.actor.send({ type: 'STOP' });
  await waitFor(first.actor, (s) => s.status === 'done');
  t.is(errorCode(await first.transport.next('abandoned')), 'NOT_LEADER');
  t.is(budget.usedBytes, 0, 'exact after a stop');
});

test('flush.mode=replicated: the leader takes suspect members out of the ISR, and makes its log durable before any shrink', async (t) => {
  const disk = new MemoryDisk();
  const alters: Array<{ isr: number[]; unsyncedWrites: number }> = [];
  const { actor } = start({
    disk,
    config: { 'flush.mode': 'replicated' },
    replicas: [1, 2, 3],
    isr: [1, 2, 3],
    controller: async (_subject, data) => {
      const request = decode(data) as { isr: number[] };
      alters.push({ isr: request.isr, unsyncedWrites: disk.unsyncedWrites });
      return encodeMessage({ leaderEpoch: 0, partitionEpoch: 2, isr: request.isr, metadataOffset: 10 });
    },
  });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('p1', batchOf(2), 1));
  await waitFor(actor, (s) => s.context.logEndOffset === 2);
  t.true(disk.unsyncedWrites > 0, 'replicated: the append is not synced');
  // Broker 3 restarted after an unclean shutdown: metadata names it a suspect.
  actor.send({ type: 'ASSIGNMENT', replicas: [1, 2, 3], isr: [1, 2, 3], partitionEpoch: 1, suspects: [3] });
  await waitFor(actor, () => alters.length === 1);
  t.deepEqual(alters[0], { isr: [1, 2], unsyncedWrites: 0 }, 'asked without the suspect, after an fsync');
  await waitFor(actor, (s) => s.context.partitionEpoch === 2 && s.matches({ open: { isr: 'idle' } }));
  t.deepEqual(actor.getSnapshot().context.isr, [1, 2]);
});

test('STOP while an acks=all batch is still being written: answered NOT_LEADER at once, but the actor ends only once the writer wrote it', async (t) => {
  let release: (() => void) | undefined;
  const slow = partitionMachine.provide({
    actors: {
      logWriter: fromCallback<WriterEvent, WriterInput>(({ sendBack, receive }) => {
        receive((event) => {
          if (event.type !== 'APPEND') return;
          const end = event.baseOffset + readBatchHeader(event.batch).recordCount;
          release = () => {
            sendBack({ type: 'WRITTEN', logEndOffset: end });
            sendBack({ type: 'APPENDED', logEndOffset: end });
          };
        });
      }),
    },
  });
  const { actor, transport } = startWith(slow, new SimulatedClock(), { replicas: [1, 2], isr: [1, 2] });
  await waitFor(actor, (s) => s.matches({ open: { log: 'serving' } }));
  actor.send(produce('p', batchOf(2), -1));
  await waitFor(actor, () => release !== undefined);
  actor.send({ type: 'STOP' });
  t.is(errorCode(await transport.next('p')), 'NOT_LEADER');
  t.true(actor.getSnapshot().matches({ open: { log: 'draining' } }), 'waits for its writer');
  release!();
  await waitFor(actor, (s) => s.status === 'done');
  t.pass();
});
