/**
 * The composition root: the only place that builds real ports (NATS transport, RocksDB storage,
 * system clock and random, pino logger) and hands them to the actors.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createActor, toPromise, type Actor } from 'xstate';
import { brokerMachine } from './actors/broker/machine.js';
import { controllerMachine } from './actors/controller/machine.js';
import { DEFAULT_PARTITION_LIMITS, type PartitionLimits } from './actors/partition/types.js';
import { openLocalMetadataStore } from './metadata/metadata-store.js';
import { Subjects } from './protocol/subjects.js';
import { connectNats, type NatsTransport } from './runtime/nats-transport.js';
import { createLogger } from './runtime/logger.js';
import { systemClock, systemRandom, type Logger } from './runtime/ports.js';
import { openRocksNodeStorage } from './storage/rocksdb-storage.js';

export interface NodeOptions {
  /** Broker id, unique in the cluster. */
  id: number;
  /** Where this node keeps its RocksDB. */
  dataDir: string;
  /** @default "nats://127.0.0.1:4222" */
  natsUrl?: string;
  /** Subject prefix; several clusters can share one NATS. @default "tidemark" */
  cluster?: string;
  /** @default a JSON pino logger on stderr */
  logger?: Logger;
  /** Per-partition bounds. @default DEFAULT_PARTITION_LIMITS */
  partitionLimits?: Partial<PartitionLimits>;
  /** Bound on a clean shutdown, ms. @default 10000 */
  shutdownTimeoutMs?: number;
}

export interface TidemarkNode {
  readonly id: number;
  readonly cluster: string;
  /** Stops taking requests, finishes pending writes, closes storage and NATS. Idempotent. */
  close(): Promise<void>;
}

export async function startNode(options: NodeOptions): Promise<TidemarkNode> {
  const cluster = options.cluster ?? 'tidemark';
  const subjects = new Subjects(cluster);
  const logger = (options.logger ?? createLogger()).child({ node: options.id });
  await mkdir(options.dataDir, { recursive: true });
  const storage = await openRocksNodeStorage(join(options.dataDir, 'rocksdb'));
  let transport: NatsTransport;
  try {
    transport = await connectNats({ servers: options.natsUrl ?? 'nats://127.0.0.1:4222', name: `tidemark-node-${options.id}` });
  } catch (error) {
    await storage.close();
    throw error;
  }
  const metadata = await openLocalMetadataStore(storage.metadataLog);
  if (!metadata.image().brokers.has(options.id)) {
    await metadata.propose([{ type: 'RegisterBroker', brokerId: options.id, brokerEpoch: 0, rack: '', fenced: false }]);
  }

  const controller = createActor(controllerMachine, {
    systemId: 'controller',
    clock: systemClock,
    input: { subjects, transport, metadata, clock: systemClock, random: systemRandom, logger: logger.child({ actor: 'controller' }), adminQueueMax: 256 },
  });
  const broker: Actor<typeof brokerMachine> = createActor(brokerMachine, {
    systemId: `broker:${options.id}`,
    clock: systemClock,
    input: {
      brokerId: options.id,
      subjects,
      transport,
      metadata,
      storage,
      clock: systemClock,
      logger: logger.child({ actor: 'broker' }),
      partitionLimits: { ...DEFAULT_PARTITION_LIMITS, ...options.partitionLimits },
      shutdownTimeoutMs: options.shutdownTimeoutMs ?? 10_000,
    },
  });
  controller.start();
  broker.start();
  await transport.connection.flush();
  logger.info({ cluster, nats: options.natsUrl, dataDir: options.dataDir }, 'node started');

  let closing: Promise<void> | undefined;
  return {
    id: options.id,
    cluster,
    close() {
      closing ??= (async () => {
        controller.send({ type: 'STOP' });
        const stopped = toPromise(broker);
        broker.send({ type: 'STOP' });
        await stopped;
        await transport.close();
        await storage.close();
        logger.info('node stopped');
      })();
      return closing;
    },
  };
}
