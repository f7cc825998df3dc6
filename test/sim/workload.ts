/**
 * The workload, one action per step, drawn from the seed: topic creation (replication factor 1 to
 * min(3, brokers); sometimes min.insync.replicas=2, flush.mode=replicated, and rarely unclean
 * leader election; now and then more partitions, a config change or a deletion), keyed producers
 * with acks 0, 1 and all sending through the SDK (`Tidemark.fromTransport` on simulated
 * connections), readers following partitions from the start (readers.ts), and the faults of
 * faults.ts. Every acknowledgement goes to the record ledger.
 */
import { Tidemark } from '../../src/client/client.js';
import { codecs } from '../../src/client/codecs.js';
import type { Producer } from '../../src/client/producer.js';
import { TidemarkError } from '../../src/protocol/errors.js';
import type { LostAppend } from '../../src/storage/memory-storage.js';
import type { SimTime } from './clock.js';
import { CLUSTER_NAME, type SimCluster } from './cluster.js';
import type { SafetyChecker, Violations } from './checkers.js';
import { FaultInjector, type FaultKind, type FaultProfile } from './faults.js';
import type { SimNats } from './network.js';
import type { Rng } from './random.js';
import { ReaderPool } from './readers.js';
import { SubscriberPool } from './subscriptions.js';
import { ProducerEpochChecker } from './producer-epochs.js';
import type { RecordLedger } from './records.js';
import type { Trace } from './trace.js';

export const CLIENTS = 2;
export const TOPICS_MAX = 6;
export const PARTITIONS_MAX = 6;
export const PRODUCERS_PER_TOPIC_MAX = 3;
export const READERS_MAX = 4;
/** Sends a producer may have unsettled; the workload sends no more to it beyond this. */
export const PENDING_PER_PRODUCER_MAX = 400;
export const RECORDS_PER_SEND_MAX = 20;
/** Admin calls the workload has unsettled at once (each retries for up to 30 s). */
export const ADMIN_CALLS_MAX = 3;
const KEYS = 16;
/** Largest replication factor the workload asks for (and never more than there are brokers). */
export const REPLICATION_FACTOR_MAX = 3;

type TopicPhase = 'creating' | 'live' | 'unknown' | 'deleted';

interface TopicState {
  name: string;
  partitions: number;
  replicationFactor: number;
  config: Record<string, string>;
  phase: TopicPhase;
  busy: boolean;
  /** Written by ExclusiveWithFencing producers only, each takeover fencing the one before (issue 12). */
  exclusive: boolean;
  /** A takeover is under way (its createProducer has not settled). */
  takingOver: boolean;
}

interface ProducerState {
  tag: string;
  topic: TopicState;
  acks: 0 | 1 | 'all';
  producer: Producer<string>;
  seq: number;
  pending: number;
  closed: boolean;
  /** An exclusive producer's topic producer epoch (checked by ProducerEpochChecker). */
  epoch?: number;
}


const uncleanTopic = (t: TopicState) => t.config['unclean.leader.election.enable'] === 'true';

type DataAction = 'produce' | 'takeover' | 'read' | 'stop-read' | 'subscribe' | 'join' | 'leave' | 'create' | 'grow' | 'alter' | 'delete' | 'idle';

export class Workload {
  readonly faults: FaultInjector;
  readonly stats = { sent: 0, acked: 0, failed: 0, probes: 0 };
  readonly failures = new Map<string, number>();
  private readonly clients: Tidemark[];
  private readonly topics: TopicState[] = [];
  private readonly producers: ProducerState[] = [];
  private readonly readers: ReaderPool;
  readonly subscribers: SubscriberPool;
  readonly epochs: ProducerEpochChecker;
  /** Topic shapes (replication factor, config) come from their own stream. */
  private readonly shapes: Rng;
  private nextTopic = 1;
  private nextTag = 1;
  private adminCalls = 0;

  constructor(
    private readonly cluster: SimCluster,
    net: SimNats,
    private readonly time: SimTime,
    private readonly rng: Rng,
    private readonly trace: Trace,
    private readonly ledger: RecordLedger,
    private readonly checker: SafetyChecker,
    private readonly violations: Violations,
    profile: FaultProfile,
  ) {
    const endpoints = Array.from({ length: CLIENTS }, (_, i) => `c${i + 1}`);
    this.clients = endpoints.map((endpoint, i) =>
      Tidemark.fromTransport(net.connect(endpoint, time), {
        cluster: CLUSTER_NAME,
        clock: time,
        random: rng.fork(`client-${i}`),
        requestTimeoutMs: 2000,
        metadataMaxAgeMs: 5000,
      }),
    );
    this.faults = new FaultInjector(cluster, net, time, rng.fork('faults'), trace, profile, endpoints);
    this.readers = new ReaderPool(ledger, checker, violations, trace);
    this.epochs = new ProducerEpochChecker(violations);
    let nextEndpoint = 1;
    this.subscribers = new SubscriberPool(
      {
        client: () => {
          const conn = net.connect(`s${nextEndpoint++}`, time);
          const client = Tidemark.fromTransport(conn, { cluster: CLUSTER_NAME, clock: time, random: rng.fork(`sub-client-${nextEndpoint}`), requestTimeoutMs: 2000, metadataMaxAgeMs: 5000 });
          return {
            client,
            crash: () => {
              conn.close();
              void client.close().catch(() => undefined);
            },
          };
        },
      },
      rng.fork('subscriptions'),
      ledger,
      violations,
      trace,
      () => time.elapsed(),
    );
    this.shapes = rng.fork('topic-shapes');
  }

  /** One action: mostly data, sometimes a fault. */
  step(): void {
    const data = this.dataWeights();
    const faults = this.faults.weights();
    const i = this.rng.weighted([...data.map(([, w]) => w), ...faults.map(([, w]) => w)]);
    if (i < 0) return;
    if (i < data.length) this.apply(data[i]![0]);
    else this.faults.apply(faults[i - data.length]![0] as FaultKind);
  }

  private dataWeights(): Array<[DataAction, number]> {
    const live = this.topics.filter((t) => t.phase === 'live');
    const open = this.topics.filter((t) => t.phase !== 'deleted').length;
    const wantsTopic = live.length === 0 || this.topics.some((t) => t.phase === 'unknown' && !t.busy);
    const admin = this.adminCalls < ADMIN_CALLS_MAX ? 1 : 0;
    return [
      ['produce', live.length > 0 ? 30 : 0],
      ['takeover', live.some((t) => t.exclusive && !t.takingOver) ? 0.5 : 0],
      ['read', live.length > 0 && this.readers.running().length < READERS_MAX ? 4 : 0],
      ['stop-read', this.readers.running().length > 0 ? 1 : 0],
      ['subscribe', live.some((t) => SubscriberPool.fits(t.config)) ? 1 : 0],
      ['join', this.subscribers.subscriptions.length > 0 ? 1 : 0],
      ['leave', this.subscribers.subscriptions.length > 0 ? 0.7 : 0],
      ['create', admin * (wantsTopic ? 10 : open < TOPICS_MAX ? 2 : 0)],
      ['grow', admin * (live.length > 0 ? 0.7 : 0)],
      ['alter', admin * (live.length > 0 ? 0.7 : 0)],
      ['delete', admin * (live.length > 1 ? 0.4 : 0)],
      ['idle', 10],
    ];
  }

  /** Runs one admin call on a random client, counted against ADMIN_CALLS_MAX. */
  private admin<T>(call: (admin: ReturnType<Tidemark['admin']>) => Promise<T>): Promise<T> {
    this.adminCalls++;
    return call(this.rng.pick(this.clients)!.admin()).finally(() => this.adminCalls--);
  }

  private apply(action: DataAction): void {
    switch (action) {
      case 'produce':
        return this.produce();
      case 'takeover': {
        const topic = this.rng.pick(this.topics.filter((t) => t.phase === 'live' && t.exclusive && !t.takingOver));
        if (topic !== undefined) this.takeover(topic);
        return;
      }
      case 'read':
        return this.startReader();
      case 'subscribe': {
        const topic = this.rng.pick(this.topics.filter((t) => t.phase === 'live' && SubscriberPool.fits(t.config)));
        if (topic !== undefined) this.subscribers.subscribe(topic.name);
        return;
      }
      case 'join':
        return this.subscribers.join((name) => this.topics.some((t) => t.name === name && t.phase === 'live'));
      case 'leave':
        return this.subscribers.leave();
      case 'stop-read': {
        const r = this.rng.pick(this.readers.running());
        if (r !== undefined) this.readers.stop(r, 'stopped by the workload');
        return;
      }
      case 'create':
        return this.createTopic();
      case 'grow':
        return this.grow();
      case 'alter':
        return this.alter();
      case 'delete':
        return this.deleteTopic();
      case 'idle':
        return;
    }
  }

  private createTopic(): void {
    const retry = this.topics.find((t) => t.phase === 'unknown' && !t.busy);
    const topic = retry ?? this.newTopic();
    if (retry === undefined) this.topics.push(topic);
    topic.busy = true;
    const config = Object.entries(topic.config).map(([k, v]) => ` ${k}=${v}`).join('');
    this.trace.event('admin', `create ${topic.name} (${topic.partitions} partitions, RF ${topic.replicationFactor}${config})${retry === undefined ? '' : ' again'}`);
    this.admin((a) => a.createTopic({ name: topic.name, partitions: topic.partitions, replicationFactor: topic.replicationFactor, config: topic.config }))
      .then(
        (md) => {
          this.ledger.topicCreated(topic.name, md.topicId);
          this.topicLive(topic, md.partitions.length);
        },
        (error: unknown) => {
          if (code(error) === 'TOPIC_ALREADY_EXISTS') this.topicLive(topic, topic.partitions);
          else if (topic.phase !== 'live') topic.phase = 'unknown';
          this.trace.event('admin', `create ${topic.name}: ${code(error)}`);
        },
      )
      .finally(() => (topic.busy = false));
  }

  private newTopic(): TopicState {
    const partitions = this.rng.int(1, 4);
    const rf = this.shapes.int(1, Math.min(REPLICATION_FACTOR_MAX, this.cluster.config.brokers.length));
    const config: Record<string, string> = {};
    if (rf >= 2 && this.shapes.chance(0.3)) config['min.insync.replicas'] = '2';
    if (this.shapes.chance(0.25)) config['flush.mode'] = 'replicated';
    if (this.shapes.chance(0.1)) config['unclean.leader.election.enable'] = 'true';
    const exclusive = this.shapes.chance(0.3);
    return { name: `t${this.nextTopic++}`, partitions, replicationFactor: rf, config, phase: 'creating', busy: false, exclusive, takingOver: false };
  }

  private topicLive(topic: TopicState, partitions: number): void {
    if (topic.phase === 'live' || topic.phase === 'deleted') return;
    topic.phase = 'live';
    topic.partitions = Math.max(topic.partitions, partitions);
    this.trace.event('admin', `${topic.name} is live`);
    if (topic.exclusive) return this.takeover(topic);
    const count = this.rng.int(1, PRODUCERS_PER_TOPIC_MAX);
    for (let i = 0; i < count; i++) {
      const acks = this.rng.pick([0, 1, 'all', 'all'] as const)!;
      const tag = `p${this.nextTag++}`;
      const producer = this.rng.pick(this.clients)!.producer({
        topic: topic.name,
        codec: codecs.string(),
        acks,
        lingerMs: this.rng.int(0, 10),
        inFlightBatchesPerPartitionMax: this.rng.int(1, 5),
        deliveryTimeoutMs: 20_000,
        requestTimeoutMs: 2000,
      });
      this.producers.push({ tag, topic, acks, producer, seq: 0, pending: 0, closed: false });
    }
  }

  /** A new ExclusiveWithFencing producer (acks=all) takes the topic; the one before it is fenced. */
  private takeover(topic: TopicState): void {
    const tag = `x${this.nextTag++}`;
    topic.takingOver = true;
    this.trace.event('producer', `${tag} takes ${topic.name} over (ExclusiveWithFencing)`);
    this.rng
      .pick(this.clients)!
      .createProducer({
        topic: topic.name,
        codec: codecs.string(),
        acks: 'all',
        accessMode: 'ExclusiveWithFencing',
        producerName: tag,
        lingerMs: this.rng.int(0, 10),
        inFlightBatchesPerPartitionMax: this.rng.int(1, 5),
        deliveryTimeoutMs: 20_000,
        requestTimeoutMs: 2000,
        timeoutMs: 20_000,
      })
      .then(
        (producer) => {
          const epoch = producer.epoch!;
          // Unclean elections lose acknowledged records (fences too) and reuse their offsets: the
          // checker, like the loss checks, leaves those topics out.
          if (!uncleanTopic(topic)) this.epochs.producerReady(topic.name, epoch, this.time.elapsed());
          this.trace.event('producer', `${tag} holds ${topic.name} at epoch ${epoch}`);
          if (topic.phase === 'deleted') return void producer.close();
          this.producers.push({ tag, topic, acks: 'all', producer, seq: 0, pending: 0, closed: false, epoch });
        },
        (error: unknown) => this.trace.event('producer', `${tag} takeover of ${topic.name}: ${code(error)}`),
      )
      .finally(() => (topic.takingOver = false));
  }

  private produce(): void {
    const p = this.rng.pick(this.producers.filter((x) => !x.closed && x.topic.phase === 'live'));
    if (p === undefined) return;
    const n = this.rng.int(1, RECORDS_PER_SEND_MAX);
    for (let i = 0; i < n && p.pending < PENDING_PER_PRODUCER_MAX; i++) this.send(p, false);
  }

  private send(p: ProducerState, probe: boolean): Promise<boolean> {
    const seq = p.seq++;
    const value = `${p.tag}#${seq}`;
    const sentAtMs = this.time.elapsed();
    p.pending++;
    this.stats.sent++;
    return p.producer.send({ key: `k${this.rng.int(0, KEYS - 1)}`, value }).then(
      (md) => {
        p.pending--;
        this.stats.acked++;
        if (p.acks !== 0) this.ledger.acked({ topic: p.topic.name, partition: md.partition, offset: md.offset, value, producer: p.tag, seq, acks: p.acks });
        if (p.epoch !== undefined && !uncleanTopic(p.topic)) this.epochs.acked(p.topic.name, p.epoch, md.partition, md.offset, sentAtMs);
        return true;
      },
      (error: unknown) => {
        p.pending--;
        this.stats.failed++;
        this.failures.set(code(error), (this.failures.get(code(error)) ?? 0) + 1);
        // Fenced by a newer exclusive producer (or refused beside one): it may never write again.
        if (!p.closed && (code(error) === 'PRODUCER_FENCED' || code(error) === 'PRODUCER_BUSY')) {
          p.closed = true;
          this.trace.event('producer', `${p.tag} on ${p.topic.name}: ${code(error)}, closed`);
          void p.producer.close();
        }
        // Fast failures (issue 13): "does not exist" is final only when it is true. The topic is
        // live (created, not being deleted) and the producer routes by key: never final here.
        if (code(error) === 'UNKNOWN_TOPIC' && error instanceof TidemarkError && !error.retriable && p.topic.phase === 'live') {
          this.violations.add(`fast failures: ${value} to live topic ${p.topic.name} failed with a final UNKNOWN_TOPIC: ${error.message}`);
        }
        if (probe) this.trace.event('probe', `${value} failed: ${code(error)}`);
        return false;
      },
    );
  }

  private grow(): void {
    const topic = this.rng.pick(this.topics.filter((t) => t.phase === 'live' && !t.busy && t.partitions < PARTITIONS_MAX));
    if (topic === undefined) return;
    const total = topic.partitions + 1;
    topic.busy = true;
    this.trace.event('admin', `grow ${topic.name} to ${total} partitions`);
    this.admin((a) => a.createPartitions(topic.name, total))
      .then(
        (md) => (topic.partitions = Math.max(topic.partitions, md.partitions.length)),
        (error: unknown) => this.trace.event('admin', `grow ${topic.name}: ${code(error)}`),
      )
      .finally(() => (topic.busy = false));
  }

  private alter(): void {
    const topic = this.rng.pick(this.topics.filter((t) => t.phase === 'live' && !t.busy));
    if (topic === undefined) return;
    // Values that never refuse the workload's batches nor delete its records.
    const set: Record<string, string> = this.rng.chance(0.5) ? { 'max.message.bytes': String(this.rng.int(100_000, 1_048_588)) } : { 'retention.ms': String(this.rng.int(86_400_000, 30 * 86_400_000)) };
    topic.busy = true;
    this.trace.event('admin', `alter ${topic.name} ${JSON.stringify(set)}`);
    this.admin((a) => a.alterTopicConfig(topic.name, { set }))
      .catch((error: unknown) => this.trace.event('admin', `alter ${topic.name}: ${code(error)}`))
      .finally(() => (topic.busy = false));
  }

  private deleteTopic(): void {
    const topic = this.rng.pick(this.topics.filter((t) => t.phase === 'live' && !t.busy));
    if (topic === undefined) return;
    topic.phase = 'deleted';
    this.ledger.topicDeleted(topic.name);
    this.epochs.topicDeleted(topic.name);
    for (const p of this.producers.filter((x) => x.topic === topic)) {
      p.closed = true;
      void p.producer.close();
    }
    for (const r of this.readers.running().filter((x) => x.topic === topic.name)) this.readers.stop(r, 'topic deleted');
    this.subscribers.topicDeleted(topic.name);
    this.trace.event('admin', `delete ${topic.name}`);
    this.admin((a) => a.deleteTopic(topic.name))
      .catch((error: unknown) => this.trace.event('admin', `delete ${topic.name}: ${code(error)}`));
  }

  /** Sends not yet acknowledged nor failed, over the producers of topics not deleted. */
  pending(): number {
    return this.producers.reduce((n, p) => n + (p.topic.phase === 'deleted' ? 0 : p.pending), 0);
  }

  /** Topics the workload believes exist (liveness expects each of their partitions online). */
  liveTopics(): string[] {
    return this.topics.filter((t) => t.phase === 'live').map((t) => t.name);
  }

  /** Topics that may exist: live ones, and those whose creation is under way or its outcome unknown. */
  undeletedTopics(): Array<{ name: string; live: boolean }> {
    return this.topics.filter((t) => t.phase !== 'deleted').map((t) => ({ name: t.name, live: t.phase === 'live' }));
  }

  /** Liveness: one record from every open producer; resolves with those that failed. */
  probe(): Promise<string[]> {
    const open = this.producers.filter((p) => !p.closed && p.topic.phase === 'live');
    this.stats.probes += open.length;
    this.trace.event('probe', `${open.length} producer(s) send one record each`);
    // A producer fenced by a newer exclusive one (closed by its failure) is not a liveness failure.
    return Promise.all(open.map((p) => this.send(p, true).then((ok) => (ok || p.closed ? undefined : p.tag)))).then((failed) => failed.filter((t): t is string => t !== undefined));
  }

  /** flush.mode=replicated: a power loss took committed records from `fromOffset` on off every replica. */
  lostEverywhere(topic: string, partition: number, fromOffset: number): void {
    this.epochs.lost(topic, partition, fromOffset);
    this.readers.lost(topic, partition, fromOffset);
  }

  get readerStats(): Readonly<Record<string, number>> {
    return this.readers.stats;
  }

  /** A power loss took records back (see ReaderPool.powerLost). */
  powerLost(lost: readonly LostAppend[]): void {
    this.readers.powerLost(lost);
  }

  private startReader(): void {
    const topic = this.rng.pick(this.topics.filter((t) => t.phase === 'live'));
    if (topic === undefined) return;
    const partition = this.rng.int(0, topic.partitions - 1);
    const reader = this.rng.pick(this.clients)!.reader({ topic: topic.name, partition, codec: codecs.string(), from: 'earliest', maxWaitMs: this.rng.int(50, 500) });
    this.readers.start(topic.name, partition, reader);
  }

  /** Stops readers and producers without waiting for them. */
  stop(): void {
    for (const r of this.readers.running()) this.readers.stop(r, 'end of run');
    for (const p of this.producers) p.closed = true;
    this.subscribers.stop();
  }

  /** Partitions the workload knows a topic has. */
  partitionsOf(topic: string): number {
    return this.topics.find((t) => t.name === topic)?.partitions ?? 0;
  }
}

function code(error: unknown): string {
  return error instanceof TidemarkError ? error.code : error instanceof Error ? error.message : String(error);
}

