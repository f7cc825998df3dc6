/**
 * The composition root: the only place that builds real ports (NATS transport, RocksDB storage,
 * system clock and random, pino logger) and hands them to the actors. A node runs the controller
 * role (a Raft voter of the metadata quorum, and the active controller when elected), the broker
 * role, or both (combined, the default), like Kafka KRaft.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createActor, toPromise, waitFor, type Actor } from 'xstate';
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
}

/** Everything a node needs from the world. `startNode` builds the real ones; the simulator its own. */
export interface NodePorts {
  /** Closed by the node's close() (the transport's own close, if it has one, is the caller's). */
  transport: Transport;
  storage: NodeStorage;
  clock: Clock;
  random: Random;
  logger: Logger;
}

export type ComposeOptions = Omit<NodeOptions, 'dataDir' | 'natsUrl' | 'natsSecurity' | 'logger'>;

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
  await mkdir(options.dataDir, { recursive: true });
  const storage = await openRocksNodeStorage(join(options.dataDir, 'rocksdb'), options.tailCacheBytesMax === undefined ? {} : { tailCacheBytesMax: options.tailCacheBytesMax });
  let transport: NatsTransport;
  try {
    transport = await connectNats({ ...options.natsSecurity, servers: options.natsUrl ?? 'nats://127.0.0.1:4222', name: `tidemark-node-${options.id}` });
  } catch (error) {
    await storage.close();
    throw error;
  }
  logConnectionEvents(transport, logger.child({ node: options.id, actor: 'nats' }));
  const node = await composeNode({ transport, storage, clock: systemClock, random: systemRandom, logger }, options);
  await transport.connection.flush();
  logger.info({ node: options.id, nats: redactServers(options.natsUrl ?? 'nats://127.0.0.1:4222'), dataDir: options.dataDir }, 'node started');
  return {
    ...node,
    ready: (timeoutMs) => node.ready(timeoutMs),
    async close() {
      await node.close();
      await transport.close();
      await storage.close();
    },
  };
}

/**
 * Wires one node's actors on the given ports: the Raft voter, metadata store and controller (with
 * the controller role), the broker (with the broker role), and the status responder. Nothing here
 * touches the real clock, randomness, network or disk, so the simulator runs many nodes in one process.
 */
export async function composeNode(ports: NodePorts, options: ComposeOptions, seam: NodeTestSeam = {}): Promise<TidemarkNode> {
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
        metadata: createFollowedView(),
        storage,
        clock,
        random,
        logger: logger.child({ actor: 'broker' }),
        partitionLimits: { ...DEFAULT_PARTITION_LIMITS, ...options.partitionLimits },
        // One per node, shared by all its leaders (two nodes in one process each get their own).
        pendingBudget: createPendingBytesBudget(nodePendingAppendBytesMax),
        timeouts: { ...DEFAULT_BROKER_TIMEOUTS, ...options.brokerTimeouts },
      },
    });
  }

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

  let closing: Promise<void> | undefined;
  return {
    id: options.id,
    cluster,
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
