/**
 * The composition root: the only place that builds real ports (NATS transport, RocksDB storage,
 * system clock and random, pino logger) and hands them to the actors. A node runs the controller
 * role (a Raft voter of the metadata quorum, and the active controller when elected), the broker
 * role, or both (combined, the default), like Kafka KRaft.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createActor, toPromise, waitFor, type Actor, type AnyActorRef } from 'xstate';
import { brokerMachine, DEFAULT_BROKER_TIMEOUTS, type BrokerTimeouts } from './actors/broker/machine.js';
import { controllerMachine } from './actors/controller/machine.js';
import { createPendingBytesBudget, NODE_PENDING_APPEND_BYTES_MAX_DEFAULT } from './actors/partition/pending-budget.js';
import { DEFAULT_PARTITION_LIMITS, type PartitionLimits } from './actors/partition/types.js';
import { createFollowedView } from './metadata/followed-view.js';
import { createQuorumMetadataStore, type QuorumMetadataStore } from './metadata/metadata-store.js';
import { statusRequest, type NodeStatus } from './protocol/controller-messages.js';
import { TidemarkError } from './protocol/errors.js';
import { decodeRequest, encodeError, encodeMessage } from './protocol/messages.js';
import { Subjects } from './protocol/subjects.js';
import type { ElectionMachine } from './quorum/election-machine.js';
import { entryBytesMaxOf, startRaftNode, type RaftNode } from './quorum/raft-node.js';
import type { RaftLimits, RaftTimeouts } from './quorum/types.js';
import { connectNats, logConnectionEvents, type NatsTransport } from './runtime/nats-transport.js';
import { redactServers, type NatsSecurity } from './runtime/nats-security.js';
import { createLogger } from './runtime/logger.js';
import { systemClock, systemRandom, type Clock, type Logger, type Random, type Transport } from './runtime/ports.js';
import type { NodeStorage } from './storage/partition-store.js';
import { openRocksNodeStorage } from './storage/rocksdb-storage.js';
import { partitionActorId } from './actors/broker/metadata-view.js';
import type { PartitionContext } from './actors/partition/machine.js';
import { healthHandler } from './http/health.js';
import { createApiHandler, type ApiHandler } from './http/api.js';
import { Tidemark } from './client/client.js';
import { startHttpServer, type HttpHandler, type HttpServer } from './http/server.js';
import { metricsHandler } from './metrics/http.js';
import { noMetrics, type NodeMetrics } from './metrics/port.js';
import { createPromMetrics, type ScrapeView, type SessionSeen } from './metrics/prom-metrics.js';
import { readiness, type Readiness } from './metrics/readiness.js';
import { watchPartitionChanges } from './metrics/metadata-changes.js';

export type NodeRole = 'broker' | 'controller';

export interface NodeOptions {
  /** Node id: the broker id and, with the controller role, the voter id. Unique in the cluster. */
  id: number;
  /** Where this node keeps its RocksDB. */
  dataDir: string;
  /** @default ['broker', 'controller'] */
  roles?: readonly NodeRole[];
  /** The controller voters' ids (static, like KRaft's controller.quorum.voters). @default [id] */
  controllers?: readonly number[];
  /** Rack of this broker, for replica placement. @default '' */
  rack?: string;
  /** @default "nats://127.0.0.1:4222" */
  natsUrl?: string;
  /** The node's NATS credentials, TLS and inbox prefix (docs/security.md). @default none */
  natsSecurity?: NatsSecurity;
  /** Subject prefix; several clusters can share one NATS. @default "tidemark" */
  cluster?: string;
  /** @default a JSON pino logger on stderr */
  logger?: Logger;
  /** Per-partition bounds. @default DEFAULT_PARTITION_LIMITS */
  partitionLimits?: Partial<PartitionLimits>;
  /**
   * Bytes of recent batches all partitions of this node keep in memory together, for reads right
   * behind the writers (each partition keeps at most 8 MiB of it); 0 caches nothing.
   * @default 67108864 (64 MiB)
   */
  tailCacheBytesMax?: number;
  /**
   * Bytes of produce batches all the partitions this node leads may hold accepted and not yet
   * answered together (each partition also stays within `partitionLimits.pendingAppendBytesMax`);
   * beyond it, produce gets BUSY. @default 268435456 (256 MiB)
   */
  nodePendingAppendBytesMax?: number;
  /** Broker heartbeat, metadata fetch and shutdown timing. @default DEFAULT_BROKER_TIMEOUTS */
  brokerTimeouts?: Partial<BrokerTimeouts>;
  /** Raft timing. @default heartbeat 100 ms, election timeout 300-600 ms */
  raftTimeouts?: Partial<RaftTimeouts>;
  /** Raft bounds, e.g. `snapshotEveryEntries`. @default DEFAULT_RAFT_LIMITS */
  raftLimits?: Partial<RaftLimits>;
  /** A broker silent this long is fenced by the controller, ms. @default 2000 */
  sessionTimeoutMs?: number;
  /** Automatic preferred-leader election period and cooldown, ms; 0 disables. @default 10000 */
  preferredElectionIntervalMs?: number;
  /**
   * As the active controller: a producer silent this long loses its session, an exclusive one its
   * claim; a new controller waits this long before an Exclusive grant (issue 12), ms. @default 10000
   */
  producerSessionTimeoutMs?: number;
  /**
   * Port of the node's HTTP server: `GET /metrics` (Prometheus), `/healthz`, `/readyz`; 0 picks a
   * free one (see `http`). Absent: no server, and no metrics are kept. @default undefined (off)
   */
  metricsPort?: number;
  /** Address the HTTP server listens on; 0.0.0.0 lets a scraper on another host in. @default "127.0.0.1" */
  metricsHost?: string;
  /**
   * Per-partition series (ISR size, replicas, high watermark, log end) for the partitions this node
   * leads, at most PARTITION_SERIES_MAX of them. @default false
   */
  metricsPartitionSeries?: boolean;
  /**
   * Serve the /v1 JSON API (docs/http-api.md) on the same HTTP server, acting with this node's NATS
   * connection (so with its permissions: bind the server to a private address). Needs `metricsPort`.
   * @default true
   */
  httpApi?: boolean;
  /** Topics with their own series in the per-topic metrics; later ones count as "_other". @default 100 */
  metricsTopicSeriesMax?: number;
}

export interface TidemarkNode {
  readonly id: number;
  readonly cluster: string;
  /**
   * Resolves once the node serves: a broker is registered and unfenced (so the quorum has a
   * controller); a controller-only node knows the quorum's leader. Rejects after `timeoutMs`.
   */
  ready(timeoutMs?: number): Promise<void>;
  /** Stops taking requests, finishes pending writes, closes storage and NATS. Idempotent. */
  close(): Promise<void>;
  /** Where the node's HTTP server (metrics, health) listens; absent when it runs none. */
  readonly http?: { host: string; port: number };
}

/** Everything a node needs from the world. `startNode` builds the real ones; the simulator its own. */
export interface NodePorts {
  /** Closed by the node's close() (the transport's own close, if it has one, is the caller's). */
  transport: Transport;
  storage: NodeStorage;
  clock: Clock;
  random: Random;
  logger: Logger;
  /** Where the I/O edges report (metrics/port.ts). @default noMetrics */
  metrics?: NodeMetrics;
}

export type ComposeOptions = Omit<NodeOptions, 'dataDir' | 'natsUrl' | 'natsSecurity' | 'logger' | 'metricsPort' | 'metricsHost' | 'metricsPartitionSeries' | 'metricsTopicSeriesMax' | 'httpApi'>;

/** What composeNode returns: the node, and what its metrics and health read at scrape time. */
export interface ComposedNode extends TidemarkNode {
  /** The actors' state as the scrape-time gauges and /readyz read it. */
  scrapeView(): ScrapeView;
}

/** A node's parts, as the test seam shows them. */
export interface NodeParts {
  raft?: RaftNode;
  metadata?: QuorumMetadataStore;
  controller?: Actor<typeof controllerMachine>;
  broker?: Actor<typeof brokerMachine>;
}

/**
 * Test seam (the simulator's): machines to run instead of the product's, e.g. with a wrong guard
 * swapped in by `machine.provide()`, and a look at the node's parts. Production passes none.
 */
export interface NodeTestSeam {
  machines?: { election?: ElectionMachine; controller?: typeof controllerMachine; broker?: typeof brokerMachine };
  /** Called once with the node's parts, after they are built and before the actors start. */
  observe?: (parts: NodeParts) => void;
}

export async function startNode(options: NodeOptions): Promise<TidemarkNode> {
  const logger = options.logger ?? createLogger();
  // Metrics only when they can be scraped: without a port the node keeps none.
  const metrics =
    options.metricsPort === undefined
      ? undefined
      : createPromMetrics({
          nodeId: options.id,
          clock: systemClock,
          partitionSeries: options.metricsPartitionSeries ?? false,
          ...(options.metricsTopicSeriesMax === undefined ? {} : { topicSeriesMax: options.metricsTopicSeriesMax }),
        });
  await mkdir(options.dataDir, { recursive: true });
  const storage = await openRocksNodeStorage(join(options.dataDir, 'rocksdb'), {
    ...(options.tailCacheBytesMax === undefined ? {} : { tailCacheBytesMax: options.tailCacheBytesMax }),
    ...(metrics === undefined ? {} : { observeSync: (groupSize: number) => metrics.port.fsyncStarted(groupSize) }),
  });
  let transport: NatsTransport;
  try {
    transport = await connectNats({ ...options.natsSecurity, servers: options.natsUrl ?? 'nats://127.0.0.1:4222', name: `tidemark-node-${options.id}` });
  } catch (error) {
    await storage.close();
    throw error;
  }
  logConnectionEvents(transport, logger.child({ node: options.id, actor: 'nats' }));
  const node = await composeNode({ transport, storage, clock: systemClock, random: systemRandom, logger, ...(metrics === undefined ? {} : { metrics: metrics.port }) }, options);
  const close = async () => {
    await node.close();
    await transport.close();
    await storage.close();
  };
  let http: HttpServer | undefined;
  let api: ApiHandler | undefined;
  let apiClient: Tidemark | undefined;
  if (metrics !== undefined) {
    metrics.setView(() => node.scrapeView(), { broker: (options.roles ?? ['broker', 'controller']).includes('broker'), controller: (options.roles ?? ['broker', 'controller']).includes('controller') });
    const readyNow = () => nodeReadiness(node.scrapeView(), metrics.session(), systemClock.now());
    // The node's one HTTP server; the JSON API mounts here too, as one more handler.
    const handlers: HttpHandler[] = [metricsHandler(metrics), healthHandler(options.id, readyNow)];
    if (options.httpApi ?? true) {
      // An SDK client over the node's own NATS connection: the API adds no connection of its own.
      apiClient = Tidemark.fromTransport(transport, { cluster: node.cluster });
      api = createApiHandler(apiClient, { logger: logger.child({ node: options.id, actor: 'http-api' }) });
      handlers.push(api);
    }
    try {
      http = await startHttpServer({ host: options.metricsHost ?? '127.0.0.1', port: options.metricsPort!, handlers, logger: logger.child({ node: options.id, actor: 'http' }) });
    } catch (error) {
      await api?.close();
      await apiClient?.close();
      await close();
      throw new TidemarkError('INVALID_REQUEST', `cannot listen on ${options.metricsHost ?? '127.0.0.1'}:${options.metricsPort}: ${(error as Error).message}`, { cause: error });
    }
  }
  await transport.connection.flush();
  logger.info({ node: options.id, nats: redactServers(options.natsUrl ?? 'nats://127.0.0.1:4222'), dataDir: options.dataDir, ...(http === undefined ? {} : { http: http.address() }) }, 'node started');
  return {
    id: node.id,
    cluster: node.cluster,
    ...(http === undefined ? {} : { http: http.address() }),
    ready: (timeoutMs) => node.ready(timeoutMs),
    async close() {
      await api?.close();
      await http?.close();
      await apiClient?.close();
      await close();
    },
  };
}

/** /readyz from the actors' state and the last heartbeat answer. */
function nodeReadiness(view: ScrapeView, session: SessionSeen, nowMs: number): Readiness {
  return readiness({
    ...(view.broker === undefined
      ? {}
      : {
          broker: {
            brokerEpoch: view.broker.brokerEpoch,
            fenced: view.broker.fenced,
            metadataOffset: view.broker.image.offset,
            controllerOffset: session.previousControllerOffset,
            heartbeatAgeMs: session.heartbeatOkAtMs === undefined ? undefined : Math.max(0, nowMs - session.heartbeatOkAtMs),
          },
        }),
    ...(view.controller === undefined ? {} : { voter: { leaderId: view.controller.leaderId } }),
  });
}

/**
 * Wires one node's actors on the given ports: the Raft voter, metadata store and controller (with
 * the controller role), the broker (with the broker role), and the status responder. Nothing here
 * touches the real clock, randomness, network or disk, so the simulator runs many nodes in one process.
 */
export async function composeNode(ports: NodePorts, options: ComposeOptions, seam: NodeTestSeam = {}): Promise<ComposedNode> {
  const { transport, storage, clock, random } = ports;
  const cluster = options.cluster ?? 'tidemark';
  const roles = options.roles ?? ['broker', 'controller'];
  const controllers = options.controllers ?? [options.id];
  if (roles.includes('controller') && !controllers.includes(options.id)) {
    throw new TidemarkError('INVALID_REQUEST', `node ${options.id} has the controller role but is not in the voters ${controllers.join(',')}`);
  }
  const nodePendingAppendBytesMax = options.nodePendingAppendBytesMax ?? NODE_PENDING_APPEND_BYTES_MAX_DEFAULT;
  if (!Number.isSafeInteger(nodePendingAppendBytesMax) || nodePendingAppendBytesMax < 1) {
    throw new TidemarkError('INVALID_REQUEST', `nodePendingAppendBytesMax must be a positive integer (bytes), got ${nodePendingAppendBytesMax}`);
  }
  const subjects = new Subjects(cluster);
  const logger = ports.logger.child({ node: options.id });

  let raft: RaftNode | undefined;
  let metadata: QuorumMetadataStore | undefined;
  let controller: Actor<typeof controllerMachine> | undefined;
  if (roles.includes('controller')) {
    const proposeVia: { raft?: RaftNode } = {};
    const store = createQuorumMetadataStore((payloads) => proposeVia.raft!.propose(payloads), entryBytesMaxOf(options.raftLimits, transport.maxPayloadBytes));
    metadata = store;
    raft = startRaftNode({
      voterId: options.id,
      voters: controllers,
      subjectPrefix: subjects.prefix,
      transport,
      store: storage.raftLog,
      clock,
      random,
      logger: logger.child({ actor: 'raft' }),
      ...(options.raftTimeouts === undefined ? {} : { timeouts: options.raftTimeouts }),
      ...(options.raftLimits === undefined ? {} : { limits: options.raftLimits }),
      ...(seam.machines?.election === undefined ? {} : { machine: seam.machines.election }),
      onCommit: (entries) => store.apply(entries),
      // Snapshots of the image bound the Raft log; a restart installs the latest, then replays the rest.
      stateMachine: store,
    });
    proposeVia.raft = raft;
    controller = createActor(seam.machines?.controller ?? controllerMachine, {
      systemId: 'controller',
      clock,
      input: {
        subjects,
        transport,
        metadata: store,
        raft,
        clock,
        random,
        logger: logger.child({ actor: 'controller' }),
        adminQueueMax: 256,
        sessionTimeoutMs: options.sessionTimeoutMs ?? 2000,
        tickMs: 50,
        preferredElectionIntervalMs: options.preferredElectionIntervalMs ?? 10_000,
        producerSessionTimeoutMs: options.producerSessionTimeoutMs ?? 10_000,
      },
    });
  }

  let broker: Actor<typeof brokerMachine> | undefined;
  const followed = createFollowedView();
  if (roles.includes('broker')) {
    broker = createActor(seam.machines?.broker ?? brokerMachine, {
      systemId: `broker:${options.id}`,
      clock,
      input: {
        brokerId: options.id,
        rack: options.rack ?? '',
        incarnation: Array.from({ length: 4 }, () => Math.floor(random.next() * 0x1_0000).toString(16).padStart(4, '0')).join(''),
        subjects,
        transport,
        metadata: followed,
        storage,
        clock,
        random,
        logger: logger.child({ actor: 'broker' }),
        partitionLimits: { ...DEFAULT_PARTITION_LIMITS, ...options.partitionLimits },
        // One per node, shared by all its leaders (two nodes in one process each get their own).
        pendingBudget: createPendingBytesBudget(nodePendingAppendBytesMax),
        timeouts: { ...DEFAULT_BROKER_TIMEOUTS, ...options.brokerTimeouts },
        metrics: ports.metrics ?? noMetrics,
      },
    });
  }
  const unwatchChanges = ports.metrics === undefined || broker === undefined ? undefined : watchPartitionChanges(followed, options.id, ports.metrics);

  const status = (): NodeStatus => {
    const out: NodeStatus = { nodeId: options.id, roles: [...roles] };
    if (raft !== undefined) {
      const s = raft.status();
      out.voter = { role: s.role, term: s.term, leaderId: s.leaderId ?? -1, commitIndex: s.commitIndex, lastIndex: s.lastIndex, voters: [...s.voters] };
      if (s.followers !== undefined) out.voter.followers = s.followers;
    }
    if (broker !== undefined) {
      const ctx = broker.getSnapshot().context;
      out.broker = { brokerEpoch: ctx.brokerEpoch, fenced: ctx.fenced, metadataOffset: ctx.image.offset, partitionsLed: Object.values(ctx.partitions).filter((p) => p.role === 'leader' && !p.closing).length };
    }
    return out;
  };
  const statusSub = transport.subscribe(subjects.status(), (msg) => {
    try {
      decodeRequest(msg.data, statusRequest);
      msg.respond(encodeMessage(status()));
    } catch (error) {
      const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', undefined, { cause: error });
      msg.respond(encodeError(err.toWire()));
    }
  });

  seam.observe?.({ raft, metadata, controller, broker });
  controller?.start();
  broker?.start();
  logger.debug({ cluster, roles, controllers }, 'actors started');

  const scrapeView = (): ScrapeView => {
    const view: ScrapeView = {};
    if (broker !== undefined) {
      const ctx = broker.getSnapshot().context;
      view.broker = {
        brokerId: options.id,
        brokerEpoch: ctx.brokerEpoch,
        fenced: ctx.fenced,
        image: ctx.image,
        subscriptions: () => ctx.subscriptionHub.host?.stats() ?? [],
        leaderOffsets: (topicId, partition) => {
          const leader = broker!.system.get(partitionActorId(topicId, partition)) as AnyActorRef | undefined;
          const c = (leader?.getSnapshot() as { context?: PartitionContext } | undefined)?.context;
          return c === undefined ? undefined : { highWatermark: c.highWatermark, logEndOffset: c.logEndOffset };
        },
      };
    }
    if (raft !== undefined && controller !== undefined && metadata !== undefined) {
      const s = raft.status();
      view.controller = {
        active: controller.getSnapshot().matches({ running: 'active' }),
        term: s.term,
        leaderId: s.leaderId ?? undefined,
        commitIndex: s.commitIndex,
        image: metadata.image(),
      };
    }
    return view;
  };

  let closing: Promise<void> | undefined;
  return {
    id: options.id,
    cluster,
    scrapeView,
    async ready(timeoutMs = 30_000) {
      if (broker !== undefined) {
        await waitFor(broker, (s) => !s.context.fenced && s.context.brokerEpoch >= 0, { timeout: timeoutMs });
      } else {
        let timer: unknown;
        const expired = new Promise<never>((_, reject) => {
          timer = clock.setTimeout(() => reject(new TidemarkError('TIMEOUT', `no controller elected within ${timeoutMs} ms`)), timeoutMs);
        });
        await Promise.race([raft!.waitForLeader(), expired]).finally(() => clock.clearTimeout(timer));
      }
    },
    close() {
      closing ??= (async () => {
        statusSub.unsubscribe();
        unwatchChanges?.();
        if (broker !== undefined) {
          const stopped = toPromise(broker);
          broker.send({ type: 'STOP' });
          await stopped;
        }
        controller?.send({ type: 'STOP' });
        await raft?.stop();
        logger.info('node stopped');
      })();
      return closing;
    },
  };
}
