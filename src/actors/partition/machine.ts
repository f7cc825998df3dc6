/**
 * One partition replica. Today every partition has one replica, its leader: it assigns offsets,
 * hands batches to the log writer, and answers produce once the batch is below the high watermark,
 * and fetch with records below it. Replication (followers, ISR) slots in by changing how the high
 * watermark is computed (`highWatermarkOf`) and adding the follower states.
 */
import { and, assign, enqueueActions, fromPromise, raise, sendParent, sendTo, setup } from 'xstate';
import { TidemarkError, type ErrorCode } from '../../protocol/errors.js';
import type { ProduceReply } from '../../protocol/messages.js';
import type { PartitionStore } from '../../storage/partition-store.js';
import { outbox } from '../outbox.js';
import { logReader } from './log-reader.js';
import { logWriter } from './log-writer.js';
import { checkSequence, recordAppend, recordRefusal, type ProducerStates, type SequenceCheck } from './producer-state.js';
import type { PartitionEvent, PartitionInput } from './types.js';

interface PendingProduce {
  baseOffset: number;
  endOffset: number;
  bytes: number;
  replyTo: string | undefined;
}

interface FetchWaiter {
  id: number;
  replyTo: string;
  offset: number;
  maxBytes: number;
}

export interface PartitionContext extends PartitionInput {
  store: PartitionStore | undefined;
  logStartOffset: number;
  /** Next offset to assign (includes batches still being written). */
  nextOffset: number;
  /** End of what is on disk. */
  logEndOffset: number;
  highWatermark: number;
  pending: PendingProduce[];
  producers: ProducerStates;
  pendingBytes: number;
  waiters: FetchWaiter[];
  nextWaiterId: number;
  /** What to do once pending writes are done. */
  closing: 'stop' | 'delete' | undefined;
}

/** Single replica: everything on disk is committed. Replication replaces this with min LEO over the ISR. */
function highWatermarkOf(context: PartitionContext): number {
  return context.logEndOffset;
}

function sequenceCheck(context: PartitionContext, event: PartitionEvent): SequenceCheck {
  if (event.type !== 'PRODUCE' || event.producer === undefined) return { kind: 'append' };
  return checkSequence(context.producers, event.producer, event.recordCount);
}

/** Id of a parked fetch's expiry timer, so answering the fetch can cancel it. */
function waiterTimerId(id: number): string {
  return `fetch-expiry-${id}`;
}

function wireError(code: ErrorCode, message?: string) {
  return new TidemarkError(code, message).toWire();
}

export const partitionMachine = setup({
  types: {
    input: {} as PartitionInput,
    context: {} as PartitionContext,
    events: {} as PartitionEvent,
  },
  actors: {
    openLog: fromPromise<PartitionStore, PartitionInput>(({ input }) =>
      input.storage.openPartition({ topicId: input.topicId, partition: input.partition }),
    ),
    deleteLog: fromPromise<void, PartitionInput>(({ input }) =>
      input.storage.deletePartition({ topicId: input.topicId, partition: input.partition }),
    ),
    logWriter,
    logReader,
    outbox,
  },
  guards: {
    tooLarge: ({ context, event }) => event.type === 'PRODUCE' && event.batch.length > context.config.maxMessageBytes,
    queueFull: ({ context, event }) =>
      event.type === 'PRODUCE' &&
      (context.pending.length >= context.limits.pendingAppendsMax ||
        context.pendingBytes + event.batch.length > context.limits.pendingAppendBytesMax),
    sequenceRefused: ({ context, event }) => sequenceCheck(context, event).kind === 'refuse',
    duplicate: ({ context, event }) => sequenceCheck(context, event).kind === 'duplicate',
    offsetOutOfRange: ({ context, event }) =>
      event.type === 'FETCH' && (event.offset < context.logStartOffset || event.offset > context.logEndOffset),
    hasData: ({ context, event }) => event.type === 'FETCH' && event.offset < context.highWatermark,
    mustAnswerNow: ({ context, event }) =>
      event.type === 'FETCH' && (event.maxWaitMs === 0 || context.waiters.length >= context.limits.fetchWaitersMax),
    drained: ({ context }) => context.pending.length === 0,
    deleting: ({ context }) => context.closing === 'delete',
  },
  actions: {
    /** acks=0 produce has no reply subject: nothing to answer. */
    replyError: enqueueActions(({ enqueue }, params: { replyTo: string | undefined; code: ErrorCode; message?: string }) => {
      if (params.replyTo === undefined) return;
      enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: params.replyTo, error: wireError(params.code, params.message) });
    }),
    accept: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'PRODUCE') return;
      const baseOffset = context.nextOffset;
      const endOffset = baseOffset + event.recordCount;
      enqueue.sendTo('writer', { type: 'APPEND', batch: event.batch, baseOffset, leaderEpoch: context.leaderEpoch });
      enqueue.assign({
        nextOffset: endOffset,
        pending: [...context.pending, { baseOffset, endOffset, bytes: event.batch.length, replyTo: event.acks === 0 ? undefined : event.replyTo }],
        pendingBytes: context.pendingBytes + event.batch.length,
        producers: event.producer === undefined ? context.producers : recordAppend(context.producers, event.producer, event.recordCount, baseOffset),
      });
    }),
    /** A retry of a batch already accepted: answer with its offset once it is committed, write nothing. */
    answerDuplicate: enqueueActions(({ context, event, enqueue }) => {
      const check = sequenceCheck(context, event);
      if (event.type !== 'PRODUCE' || check.kind !== 'duplicate' || event.replyTo === undefined) return;
      const endOffset = check.baseOffset + event.recordCount;
      if (endOffset <= context.highWatermark) {
        const body: ProduceReply = { baseOffset: check.baseOffset, logStartOffset: context.logStartOffset };
        enqueue.sendTo('outbox', { type: 'REPLY', replyTo: event.replyTo, body });
      } else {
        enqueue.assign({ pending: [...context.pending, { baseOffset: check.baseOffset, endOffset, bytes: 0, replyTo: event.replyTo }] });
      }
    }),
    refuseSequence: enqueueActions(({ context, event, enqueue }) => {
      const check = sequenceCheck(context, event);
      if (event.type !== 'PRODUCE' || check.kind !== 'refuse' || event.replyTo === undefined) return;
      enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: event.replyTo, error: wireError(check.code, check.message) });
    }),
    /** A batch refused for good still uses up its sequences, so the producer's next batch is in order. */
    consumeSequence: assign({
      producers: ({ context, event }) =>
        event.type === 'PRODUCE' && event.producer !== undefined ? recordRefusal(context.producers, event.producer, event.recordCount) : context.producers,
    }),
    /** After an append: move LEO and HW, answer produce and parked fetches now below the HW. */
    advance: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'APPENDED') return;
      const next = { ...context, logEndOffset: event.logEndOffset };
      const hw = Math.max(context.highWatermark, highWatermarkOf(next));
      const done = context.pending.filter((p) => p.endOffset <= hw);
      const still = context.pending.filter((p) => p.endOffset > hw);
      for (const p of done) {
        if (p.replyTo === undefined) continue;
        const body: ProduceReply = { baseOffset: p.baseOffset, logStartOffset: context.logStartOffset };
        enqueue.sendTo('outbox', { type: 'REPLY', replyTo: p.replyTo, body });
      }
      const ready = context.waiters.filter((w) => w.offset < hw);
      for (const w of ready) {
        enqueue.cancel(waiterTimerId(w.id));
        enqueue.sendTo('reader', {
          type: 'READ',
          replyTo: w.replyTo,
          offset: w.offset,
          maxBytes: w.maxBytes,
          endOffset: hw,
          highWatermark: hw,
          logStartOffset: context.logStartOffset,
        });
      }
      enqueue.assign({
        logEndOffset: event.logEndOffset,
        highWatermark: hw,
        pending: still,
        pendingBytes: still.reduce((n, p) => n + p.bytes, 0),
        waiters: context.waiters.filter((w) => w.offset >= hw),
      });
    }),
    failPending: enqueueActions(({ context, enqueue }) => {
      for (const p of context.pending) {
        if (p.replyTo !== undefined) enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: p.replyTo, error: wireError('INTERNAL', 'append failed') });
      }
      enqueue.assign({ pending: [], pendingBytes: 0 });
    }),
    read: sendTo('reader', ({ context, event }) => {
      if (event.type !== 'FETCH') throw new Error('read on a non-fetch event');
      return {
        type: 'READ' as const,
        replyTo: event.replyTo,
        offset: event.offset,
        maxBytes: event.maxBytes,
        endOffset: context.highWatermark,
        highWatermark: context.highWatermark,
        logStartOffset: context.logStartOffset,
      };
    }),
    answerEmpty: sendTo('outbox', ({ context, event }) => ({
      type: 'REPLY' as const,
      replyTo: event.type === 'FETCH' ? event.replyTo : '',
      body: { highWatermark: context.highWatermark, logStartOffset: context.logStartOffset, records: new Uint8Array(0) },
    })),
    park: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'FETCH') return;
      const id = context.nextWaiterId;
      enqueue.assign({
        nextWaiterId: id + 1,
        waiters: [...context.waiters, { id, replyTo: event.replyTo, offset: event.offset, maxBytes: event.maxBytes }],
      });
      enqueue.raise({ type: 'FETCH_EXPIRED', id }, { delay: event.maxWaitMs, id: waiterTimerId(id) });
    }),
    expireWaiter: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'FETCH_EXPIRED') return;
      const waiter = context.waiters.find((w) => w.id === event.id);
      if (waiter === undefined) return;
      enqueue.sendTo('outbox', {
        type: 'REPLY',
        replyTo: waiter.replyTo,
        body: { highWatermark: context.highWatermark, logStartOffset: context.logStartOffset, records: new Uint8Array(0) },
      });
      enqueue.assign({ waiters: context.waiters.filter((w) => w.id !== event.id) });
    }),
    releaseWaiters: enqueueActions(({ context, enqueue }) => {
      for (const w of context.waiters) {
        enqueue.cancel(waiterTimerId(w.id));
        enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: w.replyTo, error: wireError('SHUTTING_DOWN', 'partition is closing') });
      }
      enqueue.assign({ waiters: [] });
    }),
    retain: sendTo('writer', ({ context }) => ({
      type: 'RETAIN' as const,
      retentionMs: context.config.retentionMs,
      retentionBytes: context.config.retentionBytes,
    })),
  },
  delays: {
    retentionCheck: ({ context }) => context.limits.retentionCheckIntervalMs,
  },
}).createMachine({
  id: 'partition',
  // The broker learns a partition closed from its done event (xstate.done.actor.<id>).
  output: ({ context }) => ({ topicId: context.topicId, partition: context.partition }),
  context: ({ input }) => ({
    ...input,
    store: undefined,
    logStartOffset: 0,
    nextOffset: 0,
    logEndOffset: 0,
    highWatermark: 0,
    pending: [],
    pendingBytes: 0,
    producers: new Map(),
    waiters: [],
    nextWaiterId: 0,
    closing: undefined,
  }),
  initial: 'loading',
  // The outbox lives as long as the machine, so every state can answer (loading, failed, draining).
  invoke: { id: 'outbox', src: 'outbox', input: ({ context }) => ({ transport: context.transport, logger: context.logger }) },
  on: {
    CONFIG: { actions: assign({ config: ({ event }) => event.config }) },
  },
  states: {
    loading: {
      invoke: {
        src: 'openLog',
        input: ({ context }) => context,
        onDone: {
          target: 'open',
          actions: assign(({ event }) => {
            const store = event.output;
            const end = store.logEndOffset();
            return { store, logStartOffset: store.logStartOffset(), nextOffset: end, logEndOffset: end, highWatermark: end };
          }),
        },
        onError: { target: 'failed', actions: ({ context, event }) => context.logger.error({ err: event.error }, 'cannot open partition log') },
      },
      on: {
        PRODUCE: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'LEADER_NOT_AVAILABLE' }) } },
        FETCH: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'LEADER_NOT_AVAILABLE' }) } },
        STOP: 'closed',
        DELETE: 'deleting',
      },
    },
    open: {
      invoke: [
        {
          id: 'writer',
          src: 'logWriter',
          input: ({ context }) => ({ store: context.store!, clock: context.clock, groupCommitBatchesMax: context.limits.groupCommitBatchesMax }),
        },
        {
          id: 'reader',
          src: 'logReader',
          input: ({ context }) => ({
            store: context.store!,
            transport: context.transport,
            logger: context.logger,
            readsInFlightMax: context.limits.readsInFlightMax,
            readQueueMax: context.limits.readQueueMax,
          }),
        },
      ],
      on: {
        APPENDED: { actions: 'advance' },
        APPEND_FAILED: {
          target: '.failed',
          actions: ['failPending', ({ context, event }) => context.logger.error({ reason: event.message }, 'append failed; partition offline')],
        },
        RETAINED: { actions: assign({ logStartOffset: ({ event }) => event.logStartOffset }) },
        FETCH_EXPIRED: { actions: 'expireWaiter' },
      },
      initial: 'serving',
      states: {
        serving: {
          after: { retentionCheck: { target: 'serving', reenter: true, actions: 'retain' } },
          on: {
            PRODUCE: [
              { guard: 'sequenceRefused', actions: 'refuseSequence' },
              { guard: 'queueFull', actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'BUSY' }) } },
              { guard: 'duplicate', actions: 'answerDuplicate' },
              {
                guard: 'tooLarge',
                actions: [
                  'consumeSequence',
                  {
                  type: 'replyError',
                  params: ({ context, event }) => ({
                    replyTo: event.replyTo,
                    code: 'RECORD_TOO_LARGE',
                    message: `batch of ${event.batch.length} bytes is over max.message.bytes=${context.config.maxMessageBytes}`,
                  }),
                  },
                ],
              },
              { actions: 'accept' },
            ],
            FETCH: [
              {
                guard: 'offsetOutOfRange',
                actions: {
                  type: 'replyError',
                  params: ({ context, event }) => ({
                    replyTo: event.replyTo,
                    code: 'OFFSET_OUT_OF_RANGE',
                    message: `offset ${event.offset} is outside ${context.logStartOffset}..${context.logEndOffset}`,
                  }),
                },
              },
              { guard: 'hasData', actions: 'read' },
              { guard: 'mustAnswerNow', actions: 'answerEmpty' },
              { actions: 'park' },
            ],
            STOP: { target: 'draining', actions: [assign({ closing: 'stop' }), 'releaseWaiters'] },
            DELETE: { target: 'draining', actions: [assign({ closing: 'delete' }), 'releaseWaiters'] },
          },
        },
        draining: {
          always: [
            { guard: and(['drained', 'deleting']), target: '#partition.deleting' },
            { guard: 'drained', target: '#partition.closed' },
          ],
          on: {
            PRODUCE: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'SHUTTING_DOWN' }) } },
            FETCH: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'SHUTTING_DOWN' }) } },
          },
        },
        failed: {
          // A write that failed while draining must not swallow the STOP or DELETE already asked for.
          always: [
            { guard: 'deleting', target: '#partition.deleting' },
            { guard: ({ context }) => context.closing === 'stop', target: '#partition.closed' },
          ],
          on: {
            PRODUCE: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'INTERNAL', message: 'partition log is offline' }) } },
            FETCH: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'INTERNAL', message: 'partition log is offline' }) } },
            STOP: '#partition.closed',
            DELETE: '#partition.deleting',
          },
        },
      },
    },
    deleting: {
      invoke: {
        src: 'deleteLog',
        input: ({ context }) => context,
        onDone: 'closed',
        onError: { target: 'closed', actions: ({ context, event }) => context.logger.error({ err: event.error }, 'cannot delete partition log') },
      },
    },
    failed: {
      on: {
        PRODUCE: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'INTERNAL', message: 'partition log cannot be opened' }) } },
        FETCH: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'INTERNAL', message: 'partition log cannot be opened' }) } },
        STOP: 'closed',
        DELETE: 'deleting',
      },
    },
    closed: { type: 'final' },
  },
});
