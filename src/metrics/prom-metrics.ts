/**
 * The node's Prometheus metrics: one prom-client Registry per node (never the global one: tests and
 * the simulator run several nodes in one process), the {@link NodeMetrics} port that bumps its
 * counters and histograms, and gauges read from the actors when Prometheus scrapes.
 *
 * Cardinality is bounded by rule (docs/operations.md, "Metrics"):
 * - per-topic series: the first `topicSeriesMax` topics this process sees get their own label value,
 *   later ones share `topic="_other"` (topic-labels.ts);
 * - per-subscription series: at most SUBSCRIPTION_SERIES_MAX (topic, subscription) pairs, in name
 *   order, the rest summed into `subscription="_other"`;
 * - per-partition series only with `partitionSeries` (--metrics-partition-series), and then for at
 *   most PARTITION_SERIES_MAX partitions this broker leads, in name order.
 * prom-client's default process and Node.js metrics go into the same registry, prefixed `tidemark_`
 * like everything else, so one prefix selects a node's series.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { MetadataImage } from '../metadata/image.js';
import { parseTopicConfig } from '../metadata/topic-config.js';
import type { Clock } from '../runtime/ports.js';
import type { NodeMetrics, ProduceAcks } from './port.js';
import { BoundedLabels, capEntries, OTHER_LABEL, TOPIC_SERIES_MAX_DEFAULT } from './topic-labels.js';

/** (topic, subscription) pairs with their own backlog and unacked series, per node. */
export const SUBSCRIPTION_SERIES_MAX = 200;
/** Partitions with their own series under --metrics-partition-series, per node. */
export const PARTITION_SERIES_MAX = 1000;
/** Replication factors with their own `tidemark_partitions_by_isr_size` series; larger ISRs count under the last. */
const ISR_SIZE_BUCKETS_MAX = 8;

/** Seconds; produce latency runs from a cached append (sub-ms) to acks=all over a slow follower. */
const LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Seconds; a WAL fdatasync on SSD is ~0.1-5 ms, on a busy disk far more. */
const FSYNC_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/** Callers one fsync covered (every partition append waiting on it); bounded by the writers' groups. */
const FSYNC_GROUP_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/** One subscription's state on one partition this broker leads. */
export interface SubscriptionStat {
  topic: string;
  partition: number;
  subscription: string;
  /** Records up to the high watermark not acknowledged. */
  backlog: number;
  /** Records delivered and not yet acknowledged. */
  unacked: number;
}

/** A partition leader's offsets, from its actor. */
export interface LeaderOffsets {
  highWatermark: number;
  logEndOffset: number;
}

/** What a scrape reads from the node's actors (node.ts builds it from their snapshots). */
export interface ScrapeView {
  broker?: {
    brokerId: number;
    /** -1 until registered. */
    brokerEpoch: number;
    fenced: boolean;
    image: MetadataImage;
    subscriptions: () => SubscriptionStat[];
    /** Offsets of a partition led here, when its actor runs. */
    leaderOffsets: (topicId: string, partition: number) => LeaderOffsets | undefined;
  };
  controller?: {
    /** This voter is the active controller. */
    active: boolean;
    term: number;
    /** The quorum leader this voter knows; undefined: none. */
    leaderId: number | undefined;
    /** Index of the last committed metadata entry this voter knows. */
    commitIndex: number;
    /** The committed image, as this voter has applied it. */
    image: MetadataImage;
  };
}

export interface PromMetricsOptions {
  nodeId: number;
  /** For the age of the last answered heartbeat (readiness). */
  clock: Clock;
  /** @default TOPIC_SERIES_MAX_DEFAULT (100) */
  topicSeriesMax?: number;
  /** Per-partition series (bounded by PARTITION_SERIES_MAX). @default false */
  partitionSeries?: boolean;
}

/** The last heartbeat answer, for readiness and the metadata lag. */
export interface SessionSeen {
  /** When a heartbeat was last answered, on the node's clock, ms; undefined: never. */
  heartbeatOkAtMs: number | undefined;
  /** The controller's committed metadata offset in that answer. */
  controllerOffset: number | undefined;
  /** The one in the answer before it: what a healthy broker holds by now (readiness). */
  previousControllerOffset: number | undefined;
}

export interface PromMetrics {
  readonly registry: Registry;
  /** The port the node's I/O edges report to. */
  readonly port: NodeMetrics;
  /** Where scrape-time gauges read the node's state, and which roles it has; called once, when the actors exist. */
  setView(view: () => ScrapeView, roles: { broker: boolean; controller: boolean }): void;
  session(): SessionSeen;
  /** The Prometheus text exposition of every metric of the node. */
  text(): Promise<string>;
  readonly contentType: string;
}

export function createPromMetrics(options: PromMetricsOptions): PromMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ node: String(options.nodeId) });
  collectDefaultMetrics({ register: registry, prefix: 'tidemark_' });
  const topics = new BoundedLabels(options.topicSeriesMax ?? TOPIC_SERIES_MAX_DEFAULT);
  const registers = [registry];

  // ---- counters and histograms, bumped through the port ----
  const produceRequests = new Counter({ name: 'tidemark_produce_requests_total', help: 'Produce requests received, per topic (acks=0 included).', labelNames: ['topic'], registers });
  const produceBytes = new Counter({ name: 'tidemark_produce_bytes_total', help: 'Bytes of record batches in produce requests received, per topic.', labelNames: ['topic'], registers });
  const produceLatency = new Histogram({
    name: 'tidemark_produce_latency_seconds',
    help: 'From a produce request arriving to its answer, by acks (0: until handed to the partitions).',
    labelNames: ['acks'],
    buckets: LATENCY_BUCKETS_S,
    registers,
  });
  const fetchRequests = new Counter({ name: 'tidemark_fetch_requests_total', help: 'Client fetch requests received, per topic (replica fetches not counted).', labelNames: ['topic'], registers });
  const fetchBytes = new Counter({ name: 'tidemark_fetch_bytes_total', help: 'Bytes of record batches sent in answer to client fetches, per topic.', labelNames: ['topic'], registers });
  const recordsAppended = new Counter({ name: 'tidemark_records_appended_total', help: 'Records written to the logs of partitions this broker leads, per topic (control records included).', labelNames: ['topic'], registers });
  const fsyncGroup = new Histogram({ name: 'tidemark_fsync_group_size', help: 'Appends waiting on one shared WAL fsync (group commit).', buckets: FSYNC_GROUP_BUCKETS, registers });
  const fsyncSeconds = new Histogram({ name: 'tidemark_fsync_duration_seconds', help: 'Duration of one shared WAL fsync.', buckets: FSYNC_BUCKETS_S, registers });
  const heartbeats = new Counter({ name: 'tidemark_broker_heartbeats_total', help: 'Heartbeats this broker sent that a controller answered.', registers });
  const heartbeatsMissed = new Counter({ name: 'tidemark_broker_heartbeats_missed_total', help: 'Heartbeats (or registrations) this broker sent that no controller answered in time.', registers });
  const isrShrinks = new Counter({ name: 'tidemark_isr_shrinks_total', help: 'Committed ISR shrinks of partitions this broker leads, per topic.', labelNames: ['topic'], registers });
  const isrExpands = new Counter({ name: 'tidemark_isr_expands_total', help: 'Committed ISR expansions of partitions this broker leads, per topic.', labelNames: ['topic'], registers });
  const elections = new Counter({
    name: 'tidemark_leader_elections_total',
    help: 'Partitions whose leadership committed metadata gave to this broker, per topic; kind="unclean": it was not in the ISR.',
    labelNames: ['topic', 'kind'],
    registers,
  });

  const consumerRequests = new Counter({
    name: 'tidemark_consumer_requests_total',
    help: 'Consumer session polls (op="consume") and ack / nack requests (op="ack") received, per subscription.',
    labelNames: ['topic', 'subscription', 'op'],
    registers,
  });
  const deliveredMessages = new Counter({
    name: 'tidemark_subscription_delivered_total',
    help: 'Messages handed to consumers, per subscription (redeliveries included).',
    labelNames: ['topic', 'subscription'],
    registers,
  });
  /** (topic, subscription) pairs with their own consumer counters; later ones count as _other/_other. */
  const pairs = new BoundedLabels(SUBSCRIPTION_SERIES_MAX);
  const pairLabels = (topic: string, subscription: string) =>
    pairs.of(`${topic}\u0000${subscription}`) === OTHER_LABEL ? { topic: OTHER_LABEL, subscription: OTHER_LABEL } : { topic, subscription };

  const seen: SessionSeen = { heartbeatOkAtMs: undefined, controllerOffset: undefined, previousControllerOffset: undefined };
  const port: NodeMetrics = {
    produceStarted(topic, acks: ProduceAcks, bytes) {
      const label = topics.of(topic);
      produceRequests.inc({ topic: label });
      if (bytes > 0) produceBytes.inc({ topic: label }, bytes);
      return produceLatency.startTimer({ acks: String(acks) });
    },
    fetchRequested: (topic) => fetchRequests.inc({ topic: topics.of(topic) }),
    fetchAnswered: (topic, bytes) => {
      if (bytes > 0) fetchBytes.inc({ topic: topics.of(topic) }, bytes);
    },
    appended: (topic, records) => {
      if (records > 0) recordsAppended.inc({ topic: topics.of(topic) }, records);
    },
    fsyncStarted(groupSize) {
      fsyncGroup.observe(groupSize);
      return fsyncSeconds.startTimer();
    },
    heartbeat(outcome, controllerOffset) {
      if (outcome === 'missed') {
        heartbeatsMissed.inc();
        return;
      }
      heartbeats.inc();
      seen.heartbeatOkAtMs = options.clock.now();
      if (controllerOffset !== undefined) {
        seen.previousControllerOffset = seen.controllerOffset;
        seen.controllerOffset = controllerOffset;
      }
    },
    consumerRequest: (topic, subscription, op) => consumerRequests.inc({ ...pairLabels(topic, subscription), op }),
    delivered: (topic, subscription, messages) => {
      if (messages > 0) deliveredMessages.inc(pairLabels(topic, subscription), messages);
    },
    isrChanged: (topic, change) => (change === 'shrink' ? isrShrinks : isrExpands).inc({ topic: topics.of(topic) }),
    leaderElected: (topic, clean) => elections.inc({ topic: topics.of(topic), kind: clean ? 'clean' : 'unclean' }),
  };

  // ---- gauges, computed when scraped ----
  let viewOf: (() => ScrapeView) | undefined;
  /** One view per scrape, shared by every gauge's collect(). */
  let scrape: { id: number; view: ScrapeView } | undefined;
  let scrapeId = 0;
  const view = (): ScrapeView => {
    if (scrape?.id !== scrapeId) scrape = { id: scrapeId, view: viewOf?.() ?? {} };
    return scrape.view;
  };
  const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge, v: ScrapeView) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers,
      collect() {
        this.reset();
        fill(this, view());
      },
    });

  type Led = { topic: string; topicId: string; partition: number; replicas: number; isr: number; minIsr: number };
  let ledScrape: { id: number; list: readonly Led[] } | undefined;
  /** Partitions this broker leads, with their topic's name and config; computed once per scrape. */
  const led = (v: ScrapeView): readonly Led[] => {
    if (ledScrape?.id !== scrapeId) ledScrape = { id: scrapeId, list: ledBy(v) };
    return ledScrape.list;
  };
  const ledBy = (v: ScrapeView): Led[] => {
    const b = v.broker;
    const out: Led[] = [];
    if (b === undefined) return out;
    for (const t of b.image.topicsById.values()) {
      let minIsr: number | undefined;
      for (const p of t.partitions) {
        if (p === undefined || p.leader !== b.brokerId) continue;
        minIsr ??= parseTopicConfig(t.config).minInsyncReplicas;
        out.push({ topic: t.name, topicId: t.topicId, partition: p.partition, replicas: p.replicas.length, isr: p.isr.length, minIsr });
      }
    }
    return out;
  };

  /** Gauges of the broker role: registered once a node with it is wired (an absent role has no series, not zeros). */
  const brokerGauges = () => {
    gauge('tidemark_broker_registered', 'Whether this broker holds a registration (broker epoch) from the controller.', [], (g, v) => {
      if (v.broker !== undefined) g.set(v.broker.brokerEpoch >= 0 ? 1 : 0);
    });
    gauge('tidemark_broker_fenced', 'Whether the controller has this broker fenced (it leads nothing).', [], (g, v) => {
      if (v.broker !== undefined) g.set(v.broker.fenced ? 1 : 0);
    });
    gauge('tidemark_broker_metadata_offset', 'Offset of the committed metadata this broker has applied.', [], (g, v) => {
      if (v.broker !== undefined) g.set(v.broker.image.offset);
    });
    gauge('tidemark_broker_metadata_offset_lag', "Committed metadata entries this broker lacks, against the controller's offset in its last heartbeat answer.", [], (g, v) => {
      if (v.broker !== undefined && seen.controllerOffset !== undefined) g.set(Math.max(0, seen.controllerOffset - v.broker.image.offset));
    });
    gauge('tidemark_partitions_led', 'Partitions this broker leads.', [], (g, v) => {
      if (v.broker !== undefined) g.set(led(v).length);
    });
    gauge('tidemark_partition_replicas_hosted', 'Partition replicas (leaders and followers) metadata places on this broker.', [], (g, v) => {
      const b = v.broker;
      if (b === undefined) return;
      let n = 0;
      for (const t of b.image.topicsById.values()) for (const p of t.partitions) if (p?.replicas.includes(b.brokerId)) n++;
      g.set(n);
    });
    gauge('tidemark_under_replicated_partitions', 'Partitions this broker leads whose ISR is smaller than their replica set.', [], (g, v) => {
      if (v.broker !== undefined) g.set(led(v).filter((p) => p.isr < p.replicas).length);
    });
    gauge('tidemark_under_min_isr_partitions', "Partitions this broker leads whose ISR is below the topic's min.insync.replicas (acks=all produce fails).", [], (g, v) => {
      if (v.broker !== undefined) g.set(led(v).filter((p) => p.isr < p.minIsr).length);
    });
    gauge('tidemark_partitions_by_isr_size', `Partitions this broker leads, by the size of their ISR (${ISR_SIZE_BUCKETS_MAX} stands for ${ISR_SIZE_BUCKETS_MAX} or more).`, ['isr_size'], (g, v) => {
      if (v.broker === undefined) return;
      const counts = new Map<number, number>();
      for (const p of led(v)) {
        const size = Math.min(p.isr, ISR_SIZE_BUCKETS_MAX);
        counts.set(size, (counts.get(size) ?? 0) + 1);
      }
      for (const [size, n] of counts) g.set({ isr_size: String(size) }, n);
    });
    // Subscriptions: one read of the host per scrape, shared by both gauges.
    let subsScrape: { id: number; kept: Array<[string, { backlog: number; unacked: number }]>; other: { backlog: number; unacked: number } | undefined } | undefined;
    const subscriptionSeries = (v: ScrapeView) => {
      if (subsScrape?.id === scrapeId) return subsScrape;
      const sums = new Map<string, { backlog: number; unacked: number }>();
      for (const s of v.broker?.subscriptions() ?? []) {
        const key = JSON.stringify([s.topic, s.subscription]);
        const sum = sums.get(key) ?? { backlog: 0, unacked: 0 };
        sum.backlog += s.backlog;
        sum.unacked += s.unacked;
        sums.set(key, sum);
      }
      const capped = capEntries(sums, SUBSCRIPTION_SERIES_MAX, (a, b) => ({ backlog: a.backlog + b.backlog, unacked: a.unacked + b.unacked }));
      subsScrape = { id: scrapeId, ...capped };
      return subsScrape;
    };
    for (const [name, field, help] of [
      ['tidemark_subscription_backlog', 'backlog', 'Records up to the high watermark not acknowledged, per subscription, over the partitions this broker leads.'],
      ['tidemark_subscription_unacked', 'unacked', 'Records delivered to consumers and not yet acknowledged, per subscription, over the partitions this broker leads.'],
    ] as const) {
      gauge(name, help, ['topic', 'subscription'], (g, v) => {
        const { kept, other } = subscriptionSeries(v);
        for (const [key, sum] of kept) {
          const [topic, subscription] = JSON.parse(key) as [string, string];
          g.set({ topic, subscription }, sum[field]);
        }
        if (other !== undefined) g.set({ topic: OTHER_LABEL, subscription: OTHER_LABEL }, other[field]);
      });
    }

    if (options.partitionSeries === true) {
      const partitionsOf = (v: ScrapeView) => [...led(v)].sort((a, b) => (a.topic === b.topic ? a.partition - b.partition : a.topic < b.topic ? -1 : 1)).slice(0, PARTITION_SERIES_MAX);
      const labels = (p: { topic: string; partition: number }) => ({ topic: p.topic, partition: String(p.partition) });
      gauge('tidemark_partition_isr_size', `ISR size of each partition this broker leads (the first ${PARTITION_SERIES_MAX} by name).`, ['topic', 'partition'], (g, v) => {
        for (const p of partitionsOf(v)) g.set(labels(p), p.isr);
      });
      gauge('tidemark_partition_replicas', `Replica count of each partition this broker leads (the first ${PARTITION_SERIES_MAX} by name).`, ['topic', 'partition'], (g, v) => {
        for (const p of partitionsOf(v)) g.set(labels(p), p.replicas);
      });
      gauge('tidemark_partition_high_watermark', `High watermark of each partition this broker leads (the first ${PARTITION_SERIES_MAX} by name).`, ['topic', 'partition'], (g, v) => {
        for (const p of partitionsOf(v)) {
          const offsets = v.broker?.leaderOffsets(p.topicId, p.partition);
          if (offsets !== undefined) g.set(labels(p), offsets.highWatermark);
        }
      });
      gauge('tidemark_partition_log_end_offset', `Log end offset of each partition this broker leads (the first ${PARTITION_SERIES_MAX} by name).`, ['topic', 'partition'], (g, v) => {
        for (const p of partitionsOf(v)) {
          const offsets = v.broker?.leaderOffsets(p.topicId, p.partition);
          if (offsets !== undefined) g.set(labels(p), offsets.logEndOffset);
        }
      });
    }
  };

  /** Gauges of the controller role. */
  const controllerGauges = () => {
    gauge('tidemark_offline_partitions', 'Partitions without a leader (reported by the active controller only; 0 elsewhere).', [], (g, v) => {
      const c = v.controller;
      if (c === undefined) return;
      let n = 0;
      if (c.active) for (const t of c.image.topicsById.values()) for (const p of t.partitions) if (p !== undefined && p.leader < 0) n++;
      g.set(n);
    });
    gauge('tidemark_controller_active', 'Whether this node is the active controller (the Raft leader of the controller quorum).', [], (g, v) => {
      if (v.controller !== undefined) g.set(v.controller.active ? 1 : 0);
    });
    gauge('tidemark_controller_raft_term', 'The Raft term this controller voter is in.', [], (g, v) => {
      if (v.controller !== undefined) g.set(v.controller.term);
    });
    gauge('tidemark_controller_metadata_offset', 'Index of the last metadata entry this controller voter knows committed.', [], (g, v) => {
      if (v.controller !== undefined) g.set(v.controller.commitIndex);
    });
    gauge('tidemark_controller_brokers', 'Registered brokers by state (active controller only).', ['state'], (g, v) => {
      const c = v.controller;
      if (c === undefined || !c.active) return;
      let fenced = 0;
      for (const b of c.image.brokers.values()) if (b.fenced) fenced++;
      g.set({ state: 'fenced' }, fenced);
      g.set({ state: 'unfenced' }, c.image.brokers.size - fenced);
    });
  };

  return {
    registry,
    port,
    contentType: registry.contentType,
    setView(next, roles) {
      if (viewOf !== undefined) throw new Error('setView is called once');
      viewOf = next;
      if (roles.broker) brokerGauges();
      if (roles.controller) controllerGauges();
    },
    session: () => ({ ...seen }),
    text() {
      scrapeId++;
      return registry.metrics();
    },
  };
}
