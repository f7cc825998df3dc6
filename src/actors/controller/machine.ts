/**
 * The controller: the one writer of metadata. Applies topic administration one request at a time
 * (plan with the pure planner, then commit through the MetadataStore). Today it runs on every
 * node over a node-local metadata log; with the quorum it runs on the elected voter only.
 */
import { assign, enqueueActions, fromPromise, setup } from 'xstate';
import { topicByName } from '../../metadata/image.js';
import type { MetadataStore } from '../../metadata/metadata-store.js';
import { planCreateTopic, planDeleteTopic } from '../../metadata/planner.js';
import { TidemarkError } from '../../protocol/errors.js';
import type { CreateTopicReply } from '../../protocol/messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Random, Transport } from '../../runtime/ports.js';
import { topicMetadata } from '../broker/metadata-view.js';
import { outbox } from '../outbox.js';
import { adminListener } from './admin-listener.js';
import type { AdminJob, ControllerEvent } from './types.js';

export interface ControllerInput {
  subjects: Subjects;
  transport: Transport;
  metadata: MetadataStore;
  clock: Clock;
  random: Random;
  logger: Logger;
  /** Admin requests waiting behind the one being applied. Beyond it: BUSY. @default 256 */
  adminQueueMax: number;
}

interface ControllerContext extends ControllerInput {
  queue: AdminJob[];
}

function randomTopicId(random: Random): string {
  let id = '';
  for (let i = 0; i < 16; i++) id += Math.floor(random.next() * 256).toString(16).padStart(2, '0');
  return id;
}

/** Plans and commits one job; resolves with the reply body. Throws TidemarkError for refusals. */
async function applyJob(job: AdminJob, metadata: MetadataStore, random: Random): Promise<object> {
  switch (job.op) {
    case 'create-topic': {
      const image = metadata.image();
      const records = planCreateTopic(image, job.request, randomTopicId(random), Math.floor(random.next() * Math.max(1, image.brokers.size)));
      const next = await metadata.propose(records);
      const reply: CreateTopicReply = { topic: topicMetadata(topicByName(next, job.request.name)!) };
      return reply;
    }
    case 'delete-topic':
      await metadata.propose(planDeleteTopic(metadata.image(), job.request));
      return {};
  }
}

export const controllerMachine = setup({
  types: {
    input: {} as ControllerInput,
    context: {} as ControllerContext,
    events: {} as ControllerEvent,
  },
  actors: {
    adminListener,
    outbox,
    apply: fromPromise<object, { job: AdminJob; metadata: MetadataStore; random: Random; nowMs: number }>(({ input }) => {
      if (input.nowMs > input.job.deadlineMs) return Promise.reject(new TidemarkError('TIMEOUT', 'request expired in the controller queue'));
      return applyJob(input.job, input.metadata, input.random);
    }),
  },
  actions: {
    enqueue: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'ADMIN') return;
      if (context.queue.length >= context.adminQueueMax) {
        enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: event.job.replyTo, error: new TidemarkError('BUSY', 'controller queue is full').toWire() });
        return;
      }
      enqueue.assign({ queue: [...context.queue, event.job] });
    }),
  },
  guards: {
    hasWork: ({ context }) => context.queue.length > 0,
  },
}).createMachine({
  id: 'controller',
  context: ({ input }) => ({ ...input, queue: [] }),
  initial: 'active',
  states: {
    active: {
      invoke: [
        {
          src: 'adminListener',
          input: ({ context }) => ({ subjects: context.subjects, transport: context.transport, clock: context.clock, logger: context.logger }),
        },
        { id: 'outbox', src: 'outbox', input: ({ context }) => ({ transport: context.transport, logger: context.logger }) },
      ],
      on: {
        ADMIN: { actions: 'enqueue' },
        STOP: 'stopped',
      },
      initial: 'idle',
      states: {
        idle: {
          always: { guard: 'hasWork', target: 'applying' },
        },
        applying: {
          invoke: {
            src: 'apply',
            input: ({ context }) => ({ job: context.queue[0]!, metadata: context.metadata, random: context.random, nowMs: context.clock.now() }),
            onDone: {
              target: 'idle',
              actions: enqueueActions(({ context, event, enqueue }) => {
                enqueue.sendTo('outbox', { type: 'REPLY', replyTo: context.queue[0]!.replyTo, body: event.output });
                enqueue.assign({ queue: context.queue.slice(1) });
              }),
            },
            onError: {
              target: 'idle',
              actions: enqueueActions(({ context, event, enqueue }) => {
                const err = event.error instanceof TidemarkError ? event.error : new TidemarkError('INTERNAL', 'metadata commit failed', { cause: event.error });
                if (err.code === 'INTERNAL') context.logger.error({ err: event.error }, 'admin request failed');
                enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: context.queue[0]!.replyTo, error: err.toWire() });
                enqueue.assign({ queue: context.queue.slice(1) });
              }),
            },
          },
        },
      },
    },
    stopped: { type: 'final' },
  },
});
