/**
 * In-memory stand-ins for the SDK's ports: a Transport that plays a whole cluster (metadata,
 * admin, produce, fetch, offsets) with failure injection and held replies, a controllable clock,
 * and a seeded random. No real timers: time moves only when a test calls `clock.advance()`.
 */
import { fenceRequest, producerAttachRequest, type ProducerAttachReply, type ProducerAttachRequest } from '../../src/protocol/producer-messages.js';
import { checkSequence, recordAppend, type ProducerStates } from '../../src/actors/partition/producer-state.js';
import { decode } from '@msgpack/msgpack';
import { decodeBatch, readBatchHeader, splitBatches, stampBatch, verifyBatch, type StoredRecord } from '../../src/protocol/batch.js';
import { TidemarkError, type ErrorCode } from '../../src/protocol/errors.js';
import {
  createTopicRequest,
  decodeReply,
  decodeRequest,
  deleteTopicRequest,
  encodeError,
  encodeMessage,
  fetchRequest,
  metadataRequest,
  offsetsRequest,
  produceReply,
  produceRequest,
  type TopicMetadata,
} from '../../src/protocol/messages.js';
import { Subjects } from '../../src/protocol/subjects.js';
import type { Clock, InboundMessage, Random, SubscribeOptions, Subscription, Transport } from '../../src/runtime/ports.js';

// --- clock and random -------------------------------------------------------------------------

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

/** Lets every promise chain that can make progress do so (no time passes). */
export async function settle(rounds = 10): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class FakeClock implements Clock {
  private nowMs: number;
  private readonly timers = new Map<number, Timer>();
  private nextId = 1;

  constructor(startMs = 1_700_000_000_000) {
    this.nowMs = startMs;
  }

  now(): number {
    return this.nowMs;
  }

  setTimeout(fn: (...args: unknown[]) => void, timeoutMs: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.nowMs + Math.max(0, timeoutMs), seq: id, fn: () => fn() });
    return id;
  }

  clearTimeout(id: unknown): void {
    if (typeof id === 'number') this.timers.delete(id);
  }

  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing due timers in order and settling promises after each. */
  async advance(ms: number): Promise<void> {
    const target = this.nowMs + ms;
    await settle();
    for (let fired = 0; fired < 100_000; fired++) {
      let next: [number, Timer] | undefined;
      for (const entry of this.timers) {
        const t = entry[1];
        if (t.at <= target && (next === undefined || t.at < next[1].at || (t.at === next[1].at && t.seq < next[1].seq))) next = entry;
      }
      if (next === undefined) break;
      this.timers.delete(next[0]);
      this.nowMs = next[1].at;
      next[1].fn();
      await settle();
    }
    this.nowMs = target;
    await settle();
  }
}

/** mulberry32: small, seeded, good enough for jitter. */
export class SeededRandom implements Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

// --- the fake cluster -------------------------------------------------------------------------

export interface FakePartition {
  /** Idempotent-producer state, with the broker's own rules (src/actors/partition/producer-state.ts). */
  producers?: ProducerStates;
  leader: number;
  leaderEpoch: number;
  replicas: number[];
  batches: Uint8Array[];
  logStartOffset: number;
  logEndOffset: number;
  /** The highest producer epoch a fence or a produce brought here (issue 12). */
  accessEpoch?: number;
}

export interface FakeTopic {
  name: string;
  topicId: string;
  config: Record<string, string>;
  partitions: FakePartition[];
}

export type RequestKind = 'metadata' | 'create-topic' | 'delete-topic' | 'produce' | 'fetch' | 'offsets' | 'producer-attach' | 'producer-heartbeat' | 'producer-detach' | 'fence';

/** A request as it arrived, for assertions and failure injection. */
export interface FakeCall {
  kind: RequestKind;
  subject: string;
  brokerId?: number;
  topic?: string;
  partition?: number;
  /** The decoded request body. */
  body: Record<string, unknown>;
  /** Records in a produce request's batch. */
  recordCount?: number;
  /** Bytes of a produce request's batch. */
  batchBytes?: number;
  /** Whether it came by publish (no reply wanted). */
  published: boolean;
}

/**
 * What an injected failure does: answer with an error code, never answer (`drop`: the request is
 * lost and times out), or handle it and lose the reply (`drop-reply`: written, but the producer
 * only sees a timeout).
 */
export type Injected = ErrorCode | 'drop' | 'drop-reply' | undefined;

interface Held {
  call: FakeCall;
  run: () => void;
}

interface FetchWaiter {
  topic: string;
  partition: number;
  wake: () => void;
}

export class FakeCluster implements Transport {
  readonly subjects: Subjects;
  maxPayloadBytes = 1 << 20;
  readonly brokers = new Set<number>([1, 2, 3]);
  readonly topics = new Map<string, FakeTopic>();
  /** Whether a `confirm` metadata request is answered caught up (a topic missing from it is then final). */
  metadataCaughtUp = false;
  /** Every request and publish, in arrival order (a produce request: one call per batch). */
  readonly calls: FakeCall[] = [];
  /** Every produce request or publish as it went on the wire: its broker and the partitions of its batches. */
  readonly produceRequests: Array<{ brokerId: number; partitions: number[] }> = [];
  /** Decides a failure for each call before it is handled. */
  inject: (call: FakeCall) => Injected = () => undefined;
  /**
   * The controller's answer to a producer attach (issue 12). Default: every producer is granted
   * the topic's current epoch (0), no fence.
   */
  attach: (request: ProducerAttachRequest) => ProducerAttachReply | ErrorCode = () => ({ status: 'granted', epoch: 0, fence: false, heartbeatIntervalMs: 3_000 });
  /** The controller's answer to a heartbeat. Default: the epoch it carries. */
  heartbeat: (request: { epoch: number }) => { epoch: number } | ErrorCode = (r) => ({ epoch: r.epoch });
  /** When true, produce requests wait in `held` until released (they are not even appended). */
  holdProduce = false;
  private readonly held: Held[] = [];
  private fetchWaiters: FetchWaiter[] = [];
  private nextTopicId = 1;

  constructor(
    readonly clock: FakeClock,
    cluster = 'test',
  ) {
    this.subjects = new Subjects(cluster);
  }

  // --- test controls ---

  addTopic(name: string, partitions: number, leader = 1, config: Record<string, string> = {}): FakeTopic {
    const topic: FakeTopic = {
      name,
      topicId: (this.nextTopicId++).toString(16).padStart(32, '0'),
      config,
      partitions: Array.from({ length: partitions }, () => ({
        leader,
        leaderEpoch: 0,
        replicas: [leader],
        batches: [],
        logStartOffset: 0,
        logEndOffset: 0,
      })),
    };
    this.topics.set(name, topic);
    return topic;
  }

  moveLeader(topic: string, partition: number, leader: number): void {
    const p = this.partition(topic, partition);
    p.leader = leader;
    p.leaderEpoch++;
    p.replicas = [leader];
  }

  /** Every record stored in a partition, in offset order. */
  records(topic: string, partition: number): StoredRecord[] {
    return this.partition(topic, partition).batches.flatMap((b) => decodeBatch(b));
  }

  /** Produce requests waiting for `releaseProduce`. */
  get heldProduce(): readonly FakeCall[] {
    return this.held.map((h) => h.call);
  }

  /** Handles up to `n` held produce requests, oldest first. */
  releaseProduce(n = Number.MAX_SAFE_INTEGER): void {
    for (const h of this.held.splice(0, n)) h.run();
  }

  callsOf(kind: RequestKind): FakeCall[] {
    return this.calls.filter((c) => c.kind === kind);
  }

  // --- Transport ---

  publish(subject: string, data: Uint8Array): void {
    if (this.subjects.parseProduce(subject) !== undefined) {
      for (const call of this.produceCalls(subject, data, true)) {
        this.calls.push(call);
        if (this.inject(call) !== undefined) continue;
        try {
          this.handle(call);
        } catch {
          // acks 0: nobody hears about failures.
        }
      }
      return;
    }
    const call = this.parse(subject, data, true);
    this.calls.push(call);
    if (this.inject(call) !== undefined) return;
    try {
      this.handle(call);
    } catch {
      // acks 0: nobody hears about failures.
    }
  }

  subscribe(_subject: string, _handler: (msg: InboundMessage) => void, _options?: SubscribeOptions): Subscription {
    return { unsubscribe: () => undefined };
  }

  requestMany(): Promise<Uint8Array[]> {
    return Promise.resolve([]);
  }

  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.subjects.parseProduce(subject) !== undefined) return this.produceRequest(subject, data, timeoutMs);
    return this.requestOne(subject, data, timeoutMs);
  }

  /**
   * A produce request carries one entry per partition batch: each is recorded and handled as its
   * own call (so failures are injected per batch), and the reply gathers their outcomes. A batch
   * whose call is dropped, or whose reply is lost, loses the whole reply (a TIMEOUT), as a lost
   * NATS reply would.
   */
  private produceRequest(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    let calls: FakeCall[];
    try {
      calls = this.produceCalls(subject, data, false);
    } catch (error) {
      return Promise.reject(error);
    }
    const outcomes = calls.map((call) => {
      this.calls.push(call);
      return this.answer(call, subject, timeoutMs).then(
        (bytes) => {
          try {
            const reply = decodeReply(bytes, produceReply);
            return { partition: call.partition!, baseOffset: reply.baseOffset, logStartOffset: reply.logStartOffset };
          } catch (error) {
            return { partition: call.partition!, error: (error as TidemarkError).toWire() };
          }
        },
      );
    });
    return Promise.all(outcomes).then((partitions) => encodeMessage({ partitions }));
  }

  private produceCalls(subject: string, data: Uint8Array, published: boolean): FakeCall[] {
    const brokerId = Number(subject.slice(this.subjects.prefix.length + 1).split('.')[1]);
    const topic = this.subjects.parseProduce(subject)!;
    const req = decodeRequest(data, produceRequest);
    if (!this.brokers.has(brokerId)) throw new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`);
    this.produceRequests.push({ brokerId, partitions: req.partitions.map((e) => e.partition) });
    return req.partitions.map((entry) => ({
      kind: 'produce' as const,
      subject,
      brokerId,
      topic,
      partition: entry.partition,
      body: { timeoutMs: req.timeoutMs, acks: req.acks, batch: entry.batch, accessEpoch: req.accessEpoch ?? 0, ...(entry.leaderEpoch === undefined ? {} : { leaderEpoch: entry.leaderEpoch }) },
      recordCount: readBatchHeader(entry.batch).recordCount,
      batchBytes: entry.batch.length,
      published,
    }));
  }

  private requestOne(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    let call: FakeCall;
    try {
      call = this.parse(subject, data, false);
    } catch (error) {
      return Promise.reject(error);
    }
    this.calls.push(call);
    return this.answer(call, subject, timeoutMs);
  }

  /** The reply to one call, with its injected failure; rejects with TIMEOUT when it is lost. */
  private answer(call: FakeCall, subject: string, timeoutMs: number): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const injected = this.inject(call);
      if (injected === 'drop') {
        this.clock.setTimeout(() => reject(new TidemarkError('TIMEOUT', `no reply on ${subject} within ${timeoutMs} ms`)), timeoutMs);
        return;
      }
      if (injected === 'drop-reply') {
        try {
          void this.handle(call);
        } catch {
          // the reply is lost either way
        }
        this.clock.setTimeout(() => reject(new TidemarkError('TIMEOUT', `no reply on ${subject} within ${timeoutMs} ms`)), timeoutMs);
        return;
      }
      if (injected !== undefined) {
        queueMicrotask(() => resolve(encodeError({ code: injected, message: `injected ${injected}` })));
        return;
      }
      if (call.brokerId !== undefined && !this.brokers.has(call.brokerId)) {
        queueMicrotask(() => reject(new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`)));
        return;
      }
      const run = () => {
        try {
          const reply = this.handle(call);
          if (reply instanceof Promise) reply.then(resolve, (e: unknown) => resolve(errorBytes(e)));
          else queueMicrotask(() => resolve(reply));
        } catch (error) {
          queueMicrotask(() => resolve(errorBytes(error)));
        }
      };
      if (call.kind === 'produce' && this.holdProduce) this.held.push({ call, run });
      else run();
    });
  }

  // --- the cluster's behaviour ---

  private partition(topic: string, partition: number): FakePartition {
    const p = this.topics.get(topic)?.partitions[partition];
    if (p === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `no ${topic}/${partition}`);
    return p;
  }

  private parse(subject: string, data: Uint8Array, published: boolean): FakeCall {
    const body = decode(data) as Record<string, unknown>;
    const prefix = `${this.subjects.prefix}.`;
    if (!subject.startsWith(prefix)) throw new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`);
    const tokens = subject.slice(prefix.length).split('.');
    if (tokens[0] === 'metadata') return { kind: 'metadata', subject, body, published };
    if (tokens[0] === 'admin' && (tokens[1] === 'create-topic' || tokens[1] === 'delete-topic')) {
      return { kind: tokens[1], subject, body, published };
    }
    if (tokens[0] === 'admin' && (tokens[1] === 'producer-attach' || tokens[1] === 'producer-heartbeat' || tokens[1] === 'producer-detach')) {
      return { kind: tokens[1], subject, body, published };
    }
    if (tokens[0] === 'b') {
      const brokerId = Number(tokens[1]);
      if (tokens[2] === 'offsets') return { kind: 'offsets', subject, brokerId, body, published };
      const fenced = this.subjects.parseFence(subject);
      if (fenced !== undefined) return { kind: 'fence', subject, brokerId, topic: fenced, body, published };
      const where = this.subjects.parsePartition(subject);
      if (where !== undefined && tokens[2] === 'fetch') return { kind: 'fetch', subject, brokerId, topic: where.topic, partition: where.partition, body, published };
    }
    throw new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`);
  }

  private handle(call: FakeCall): Uint8Array | Promise<Uint8Array> {
    const data = encodeMessage(call.body);
    switch (call.kind) {
      case 'metadata': {
        const req = decodeRequest(data, metadataRequest);
        const names = req.topics ?? [...this.topics.keys()];
        const topics: TopicMetadata[] = [];
        for (const name of names) {
          const t = this.topics.get(name);
          if (t !== undefined) topics.push(this.describe(t));
        }
        return encodeMessage({ offset: 0, caughtUp: req.confirm === true && this.metadataCaughtUp, brokers: [...this.brokers].map((id) => ({ id, epoch: 1, rack: '', fenced: false })), topics });
      }
      case 'create-topic': {
        const req = decodeRequest(data, createTopicRequest);
        if (this.topics.has(req.name)) throw new TidemarkError('TOPIC_ALREADY_EXISTS');
        const t = this.addTopic(req.name, req.partitions, 1, req.config);
        return encodeMessage({ topic: this.describe(t), metadataOffset: 0 });
      }
      case 'delete-topic': {
        const req = decodeRequest(data, deleteTopicRequest);
        if (!this.topics.delete(req.name)) throw new TidemarkError('UNKNOWN_TOPIC');
        return encodeMessage({ metadataOffset: 0 });
      }
      // Producer access (issue 12): every producer is granted the topic's epoch 0; fences are not modelled.
      case 'producer-attach': {
        const req = decodeRequest(data, producerAttachRequest);
        if (!this.topics.has(req.topic)) throw new TidemarkError('UNKNOWN_TOPIC', `no topic ${req.topic}`);
        const reply = this.attach(req);
        if (typeof reply === 'string') throw new TidemarkError(reply, `fake controller refuses ${req.accessMode}`);
        return encodeMessage(reply);
      }
      case 'producer-heartbeat': {
        const reply = this.heartbeat(call.body as { epoch: number });
        if (typeof reply === 'string') throw new TidemarkError(reply, 'fake controller refuses the heartbeat');
        return encodeMessage(reply);
      }
      case 'fence': {
        const req = decodeRequest(data, fenceRequest);
        return encodeMessage({
          partitions: req.partitions.map(({ partition }) => {
            const p = this.topics.get(call.topic!)?.partitions[partition];
            if (p === undefined || p.leader !== call.brokerId) return { partition, error: { code: 'NOT_LEADER', message: 'not leader' } };
            if ((p.accessEpoch ?? 0) > req.accessEpoch) return { partition, error: { code: 'PRODUCER_FENCED', message: 'fenced' } };
            p.accessEpoch = req.accessEpoch;
            return { partition, baseOffset: p.logEndOffset, logStartOffset: p.logStartOffset };
          }),
        });
      }
      case 'producer-detach':
        return encodeMessage({ metadataOffset: 0 });
      case 'offsets': {
        const req = decodeRequest(data, offsetsRequest);
        return encodeMessage({
          partitions: req.partitions.map(({ topic, partition }) => {
            const p = this.topics.get(topic)?.partitions[partition];
            if (p === undefined) return { topic, partition, logStartOffset: -1, logEndOffset: -1, highWatermark: -1, error: { code: 'UNKNOWN_TOPIC', message: 'unknown' } };
            if (p.leader !== call.brokerId) return { topic, partition, logStartOffset: -1, logEndOffset: -1, highWatermark: -1, error: { code: 'NOT_LEADER', message: 'not leader' } };
            return { topic, partition, logStartOffset: p.logStartOffset, logEndOffset: p.logEndOffset, highWatermark: p.logEndOffset };
          }),
        });
      }
      case 'produce': {
        const req = call.body as { batch: Uint8Array; accessEpoch: number };
        const p = this.leaderPartition(call);
        if (req.accessEpoch < (p.accessEpoch ?? 0)) throw new TidemarkError('PRODUCER_FENCED', `producer epoch ${req.accessEpoch} < ${p.accessEpoch}`);
        const header = verifyBatch(req.batch);
        const producer =
          header.producerId < 0 ? undefined : { producerId: header.producerId, producerEpoch: header.producerEpoch, baseSequence: header.baseSequence };
        if (producer !== undefined) {
          const check = checkSequence(p.producers ?? new Map(), producer, header.recordCount);
          if (check.kind === 'refuse') throw new TidemarkError(check.code, check.message);
          if (check.kind === 'duplicate') return encodeMessage({ baseOffset: check.baseOffset, logStartOffset: p.logStartOffset });
          p.producers = recordAppend(p.producers ?? new Map(), producer, header.recordCount, p.logEndOffset);
        }
        const batch = req.batch.slice();
        const baseOffset = p.logEndOffset;
        stampBatch(batch, baseOffset, p.leaderEpoch);
        p.batches.push(batch);
        p.logEndOffset += readBatchHeader(batch).recordCount;
        this.wakeFetches(call.topic!, call.partition!);
        return encodeMessage({ baseOffset, logStartOffset: p.logStartOffset });
      }
      case 'fetch': {
        const req = decodeRequest(data, fetchRequest);
        const p = this.leaderPartition(call);
        if (req.offset < p.logStartOffset || req.offset > p.logEndOffset) throw new TidemarkError('OFFSET_OUT_OF_RANGE');
        if (req.offset < p.logEndOffset || req.maxWaitMs === 0) return this.fetchReply(p, req.offset, req.maxBytes);
        return new Promise<Uint8Array>((resolve) => {
          let done = false;
          const finish = () => {
            if (done) return;
            done = true;
            this.fetchWaiters = this.fetchWaiters.filter((w) => w !== waiter);
            resolve(this.fetchReply(p, req.offset, req.maxBytes));
          };
          const waiter: FetchWaiter = { topic: call.topic!, partition: call.partition!, wake: finish };
          this.fetchWaiters.push(waiter);
          this.clock.setTimeout(finish, req.maxWaitMs);
        });
      }
    }
  }

  private leaderPartition(call: FakeCall): FakePartition {
    const p = this.partition(call.topic!, call.partition!);
    if (p.leader !== call.brokerId) throw new TidemarkError('NOT_LEADER');
    return p;
  }

  private fetchReply(p: FakePartition, offset: number, maxBytes: number): Uint8Array {
    const out: Uint8Array[] = [];
    let bytes = 0;
    for (const b of p.batches) {
      const h = readBatchHeader(b);
      if (h.baseOffset + h.recordCount <= offset) continue;
      if (out.length > 0 && bytes + b.length > maxBytes) break;
      out.push(b);
      bytes += b.length;
    }
    const records = new Uint8Array(bytes);
    let at = 0;
    for (const b of out) {
      records.set(b, at);
      at += b.length;
    }
    splitBatches(records); // the fake must only ever send what a reader can split
    return encodeMessage({ highWatermark: p.logEndOffset, logStartOffset: p.logStartOffset, records });
  }

  private wakeFetches(topic: string, partition: number): void {
    for (const w of this.fetchWaiters.filter((x) => x.topic === topic && x.partition === partition)) w.wake();
  }

  private describe(t: FakeTopic): TopicMetadata {
    return {
      name: t.name,
      topicId: t.topicId,
      config: t.config,
      partitions: t.partitions.map((p, partition) => ({
        partition,
        leader: p.leader,
        leaderEpoch: p.leaderEpoch,
        replicas: p.replicas,
        isr: p.replicas,
      })),
    };
  }
}

function errorBytes(error: unknown): Uint8Array {
  if (error instanceof TidemarkError) return encodeError(error.toWire());
  return encodeError({ code: 'INTERNAL', message: String(error) });
}
