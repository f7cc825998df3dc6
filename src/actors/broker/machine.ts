/**
 * The broker: follows committed metadata and runs one partition actor per partition it leads;
 * its request listener routes produce and fetch to them. On STOP it stops listening, lets every
 * partition finish its pending writes, and ends.
 */
import { assign, enqueueActions, fromCallback, setup } from 'xstate';
import type { MetadataImage } from '../../metadata/image.js';
import type { MetadataStore } from '../../metadata/metadata-store.js';
import { parseTopicConfig } from '../../metadata/topic-config.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Transport } from '../../runtime/ports.js';
import type { NodeStorage } from '../../storage/partition-store.js';
import { partitionMachine } from '../partition/machine.js';
import type { PartitionLimits } from '../partition/types.js';
import { partitionActorId } from './metadata-view.js';
import { requestListener } from './request-listener.js';

export interface BrokerInput {
  brokerId: number;
  subjects: Subjects;
  transport: Transport;
  metadata: MetadataStore;
  storage: NodeStorage;
  clock: Clock;
  logger: Logger;
  partitionLimits: PartitionLimits;
  /** Bound on a clean shutdown: partitions still writing after this are abandoned, ms. @default 10000 */
  shutdownTimeoutMs: number;
}

interface RunningPartition {
  topicId: string;
  partition: number;
  /** The config the actor was last given, to notice changes. */
  configKey: string;
  closing: boolean;
}

export interface BrokerContext extends BrokerInput {
  partitions: Record<string, RunningPartition>;
}

export type BrokerEvent =
  | { type: 'METADATA_UPDATED'; image: MetadataImage }
  /** A partition actor reached its final state (stopped or deleted). */
  | { type: `xstate.done.actor.${string}`; output: { topicId: string; partition: number } }
  /** A partition actor crashed (a bug): it is logged and forgotten; the next metadata change restarts it. */
  | { type: `xstate.error.actor.${string}`; error: unknown }
  | { type: 'STOP' };

const metadataFollower = fromCallback<{ type: 'NONE' }, { metadata: MetadataStore }>(({ input, sendBack }) => {
  sendBack({ type: 'METADATA_UPDATED', image: input.metadata.image() });
  return input.metadata.subscribe((image) => sendBack({ type: 'METADATA_UPDATED', image }));
});

export const brokerMachine = setup({
  types: {
    input: {} as BrokerInput,
    context: {} as BrokerContext,
    events: {} as BrokerEvent,
  },
  actors: { partition: partitionMachine, requestListener, metadataFollower },
  actions: {
    /** Start actors for partitions this broker leads; delete those whose topic is gone. */
    reconcile: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'METADATA_UPDATED') return;
      const image = event.image;
      const partitions = { ...context.partitions };
      const wanted = new Set<string>();
      for (const topic of image.topicsById.values()) {
        const configKey = JSON.stringify(topic.config);
        for (const p of topic.partitions) {
          if (p.leader !== context.brokerId) continue;
          const id = partitionActorId(topic.topicId, p.partition);
          wanted.add(id);
          const running = partitions[id];
          if (running === undefined) {
            enqueue.spawnChild('partition', {
              id,
              systemId: id,
              input: {
                topic: topic.name,
                topicId: topic.topicId,
                partition: p.partition,
                leaderEpoch: p.leaderEpoch,
                config: parseTopicConfig(topic.config),
                storage: context.storage,
                transport: context.transport,
                clock: context.clock,
                logger: context.logger.child({ actor: 'partition', topic: topic.name, partition: p.partition }),
                limits: context.partitionLimits,
              },
            });
            partitions[id] = { topicId: topic.topicId, partition: p.partition, configKey, closing: false };
          } else if (running.configKey !== configKey && !running.closing) {
            enqueue.sendTo(id, { type: 'CONFIG', config: parseTopicConfig(topic.config) });
            partitions[id] = { ...running, configKey };
          }
        }
      }
      for (const [id, running] of Object.entries(partitions)) {
        if (wanted.has(id) || running.closing) continue;
        enqueue.sendTo(id, { type: image.topicsById.has(running.topicId) ? 'STOP' : 'DELETE' });
        partitions[id] = { ...running, closing: true };
      }
      enqueue.assign({ partitions });
    }),
    /** Drops a finished partition actor: from the context and from the children (xstate keeps done children). */
    forget: enqueueActions(({ context, event, enqueue }) => {
      const id = event.type.startsWith('xstate.') ? event.type.replace(/^xstate\.(done|error)\.actor\./, '') : undefined;
      if (id === undefined || context.partitions[id] === undefined) return;
      if ('error' in event) context.logger.error({ err: event.error, partition: id }, 'partition actor crashed');
      const { [id]: _closed, ...rest } = context.partitions;
      enqueue.stopChild(id);
      enqueue.assign({ partitions: rest });
    }),
    stopPartitions: enqueueActions(({ context, enqueue }) => {
      for (const [id, running] of Object.entries(context.partitions)) {
        if (!running.closing) enqueue.sendTo(id, { type: 'STOP' });
      }
      enqueue.assign({
        partitions: Object.fromEntries(Object.entries(context.partitions).map(([id, r]) => [id, { ...r, closing: true }])),
      });
    }),
  },
  guards: {
    allClosed: ({ context }) => Object.keys(context.partitions).length === 0,
  },
  delays: {
    shutdownTimeout: ({ context }) => context.shutdownTimeoutMs,
  },
}).createMachine({
  id: 'broker',
  context: ({ input }) => ({ ...input, partitions: {} }),
  initial: 'running',
  on: {
    'xstate.done.actor.*': { actions: 'forget' },
    'xstate.error.actor.*': { actions: 'forget' },
  },
  states: {
    running: {
      invoke: [
        {
          src: 'requestListener',
          input: ({ context }) => ({
            brokerId: context.brokerId,
            subjects: context.subjects,
            transport: context.transport,
            metadata: context.metadata,
            logger: context.logger,
          }),
        },
        { src: 'metadataFollower', input: ({ context }) => ({ metadata: context.metadata }) },
      ],
      on: {
        METADATA_UPDATED: { actions: 'reconcile' },
        STOP: 'stopping',
      },
    },
    stopping: {
      entry: 'stopPartitions',
      always: { guard: 'allClosed', target: 'stopped' },
      after: {
        shutdownTimeout: {
          target: 'stopped',
          actions: ({ context }) => context.logger.warn({ partitions: Object.keys(context.partitions) }, 'shutdown timed out'),
        },
      },
    },
    stopped: { type: 'final' },
  },
});
