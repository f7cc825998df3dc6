/**
 * A partition's leader replica: it assigns offsets, hands batches to the log writer, serves its
 * followers' fetches (replica-fetch) and tracks how far each has come, keeps the high watermark
 * (min log end over the ISR, replication.ts) and the ISR itself (shrinks a follower lagging more
 * than replica.lag.time.max.ms, adds one that caught up, through the controller's AlterPartition),
 * answers produce with acks=1 once the leader has the batch and acks=all once the high watermark
 * passes it, and serves consumers' fetches below the high watermark. One actor lives for one
 * leader epoch: a new epoch is a new actor. Followers are follower.ts.
 */
import { and, assign, enqueueActions, fromCallback, fromPromise, sendTo, setup, type EventObject } from 'xstate';
import { alterPartitionReply, type AlterPartitionReply, type AlterPartitionRequest } from '../../protocol/controller-messages.js';
import { type ErrorCode } from '../../protocol/errors.js';
import { decodeReply, encodeMessage, type ProduceReply } from '../../protocol/messages.js';
import { backoffMs } from '../../runtime/retry.js';
import type { PartitionStore } from '../../storage/partition-store.js';
import { outbox } from '../outbox.js';
import {
  accessEpochAfter,
  accessRefusal,
  alterRefusal,
  awaitingWrite,
  bytesOf,
  earliestDeadline,
  hwOf,
  leavers,
  leaderEpochRefusal,
  nextIsr,
  PRODUCE_DEADLINE_TIMER_ID,
  replicaDivergence,
  replicaFetchRefusal,
  sequenceCheck,
  waiterTimerId,
  wireError,
  type FetchWaiter,
  type PartitionContext,
  type PendingProduce,
} from './leader-state.js';
import { logReader } from './log-reader.js';
import { logWriter } from './log-writer.js';
import { noMetrics } from '../../metrics/port.js';
import type { PendingBytesLease } from './pending-budget.js';
import { rebuildProducerStates, recordAppend, recordRefusal, type ProducerRebuild } from './producer-state.js';
import { caughtUpUntil, joinsIsr, recordFetch } from './replication.js';
import type { PartitionEvent, PartitionInput } from './types.js';

export type { PartitionContext } from './leader-state.js';

export const partitionMachine = setup({
  types: {
    input: {} as PartitionInput,
    context: {} as PartitionContext,
    events: {} as PartitionEvent,
  },
  actors: {
    /** Opens the log and rebuilds the producers' sequence state and the highest fence epoch from its tail. */
    openLog: fromPromise<{ store: PartitionStore } & ProducerRebuild, PartitionInput>(async ({ input }) => {
      const store = await input.storage.openPartition({ topicId: input.topicId, partition: input.partition });
      return { store, ...(await rebuildProducerStates(store)) };
    }),
    deleteLog: fromPromise<void, PartitionInput>(({ input }) =>
      input.storage.deletePartition({ topicId: input.topicId, partition: input.partition }),
    ),
    logWriter,
    logReader,
    outbox,
    /** Holds nothing itself: its cleanup gives the actor's budget share back when the actor stops, however it stops. */
    pendingLease: fromCallback<EventObject, { lease: PendingBytesLease }>(({ input }) => () => input.lease.close()),
    /** AlterPartition to the active controller (the only I/O of ISR management). */
    alterPartition: fromPromise<AlterPartitionReply, { context: PartitionContext }>(async ({ input }) => {
      const c = input.context;
      // Under flush.mode=replicated a shrink first makes this leader's log durable: the members it
      // drops may hold the only other copies of committed records (planner.replicatedFlush).
      const shrinks = c.isr.some((id) => !c.pendingIsr!.includes(id));
      if (shrinks && c.config.flushMode === 'replicated') await c.store!.append([], { sync: true });
      const request: AlterPartitionRequest = {
        timeoutMs: c.limits.alterPartitionTimeoutMs,
        brokerId: c.brokerId,
        brokerEpoch: Math.max(0, c.brokerEpoch),
        topicId: c.topicId,
        partition: c.partition,
        leaderEpoch: c.leaderEpoch,
        partitionEpoch: c.pendingIsrBase,
        isr: [...c.pendingIsr!],
      };
      const reply = await c.transport.request(c.subjects.controller('alter-partition'), encodeMessage(request), c.limits.alterPartitionTimeoutMs);
      return decodeReply(reply, alterPartitionReply);
    }),
  },
  guards: {
    tooLarge: ({ context, event }) => event.type === 'PRODUCE' && event.batch.length > context.config.maxMessageBytes,
    leaderEpochRefused: ({ context, event }) => leaderEpochRefusal(context, event) !== undefined,
    accessRefused: ({ context, event }) => accessRefusal(context, event) !== undefined,
    queueFull: ({ context, event }) =>
      event.type === 'PRODUCE' &&
      (context.pending.length >= context.limits.pendingAppendsMax ||
        context.pendingBytes + event.batch.length > context.limits.pendingAppendBytesMax),
    nodeBudgetFull: ({ context, event }) => event.type === 'PRODUCE' && !context.pendingBudget.fits(event.batch.length),
    sequenceRefused: ({ context, event }) => sequenceCheck(context, event).kind === 'refuse',
    duplicate: ({ context, event }) => sequenceCheck(context, event).kind === 'duplicate',
    offsetOutOfRange: ({ context, event }) =>
      event.type === 'FETCH' && (event.offset < context.logStartOffset || event.offset > context.logEndOffset),
    hasData: ({ context, event }) => event.type === 'FETCH' && event.offset < context.highWatermark,
    mustAnswerNow: ({ context, event }) =>
      event.type === 'FETCH' && (event.maxWaitMs === 0 || context.waiters.length >= context.limits.fetchWaitersMax),
    notEnoughReplicas: ({ context, event }) =>
      event.type === 'PRODUCE' && event.acks === -1 && context.isr.length < context.config.minInsyncReplicas,
    replicaFetchRefused: ({ context, event }) => replicaFetchRefusal(context, event) !== undefined,
    diverging: ({ context, event }) => replicaDivergence(context, event) !== undefined,
    // maxBytes 0: a fetch session asks only to record the follower's progress (it reads later).
    hasReplicaData: ({ context, event }) => event.type === 'REPLICA_FETCH' && event.maxBytes > 0 && event.fetchOffset < context.writtenEnd,
    replicaMustAnswerNow: ({ context, event }) =>
      event.type === 'REPLICA_FETCH' && (event.maxWaitMs === 0 || context.waiters.length >= context.limits.fetchWaitersMax),
    wantsIsrChange: ({ context }) => context.wantedIsr !== undefined && context.pendingIsr === undefined && nextIsr(context) !== undefined,
    staleIsrHint: ({ context }) => context.wantedIsr !== undefined && context.pendingIsr === undefined,
    isrChangeUnsettled: ({ context }) => context.pendingIsr !== undefined,
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
      const sync = context.config.flushMode === 'fsync';
      enqueue.sendTo('writer', { type: 'APPEND', batch: event.batch, baseOffset, leaderEpoch: context.leaderEpoch, sync });
      const entry: PendingProduce = { baseOffset, endOffset, bytes: event.batch.length, replyTo: event.acks === 0 ? undefined : event.replyTo, acks: event.acks };
      if (event.acks === -1) entry.deadlineMs = event.nowMs + event.timeoutMs;
      enqueue.assign({
        nextOffset: endOffset,
        pending: [...context.pending, entry],
        pendingBytes: context.pendingBytes + event.batch.length,
        producers: event.producer === undefined ? context.producers : recordAppend(context.producers, event.producer, event.recordCount, baseOffset),
        accessEpoch: accessEpochAfter(context, event),
      });
    }),
    /**
     * Takes the accepted batch's bytes from the node's budget (a separate action so that any
     * `accept`, even one swapped in by provide(), is accounted). Run as an effect, not while the
     * transition is computed; the guard that checked the room ran in the same synchronous step.
     */
    reservePending: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'PRODUCE') return;
      const lease = context.pendingLease;
      const bytes = event.batch.length;
      enqueue(() => lease.reserve(bytes));
    }),
    /**
     * One timer per partition, armed for the earliest deadline of a waiting acks=all batch (Kafka's
     * delayed produce). Re-armed only when a new deadline is earlier than the armed one; a timer
     * whose batch was answered meanwhile fires, expires nothing, and re-arms for the next.
     */
    armDeadline: enqueueActions(({ context, event, enqueue }) => {
      const nowMs = event.type === 'PRODUCE' ? event.nowMs : event.type === 'PRODUCE_DEADLINE' ? event.atMs : undefined;
      const earliest = earliestDeadline(context.pending);
      if (nowMs === undefined || earliest === undefined) return;
      if (context.deadlineTimerAtMs !== undefined && context.deadlineTimerAtMs <= earliest) return;
      if (context.deadlineTimerAtMs !== undefined) enqueue.cancel(PRODUCE_DEADLINE_TIMER_ID);
      enqueue.raise({ type: 'PRODUCE_DEADLINE', atMs: earliest }, { delay: Math.max(0, earliest - nowMs), id: PRODUCE_DEADLINE_TIMER_ID });
      enqueue.assign({ deadlineTimerAtMs: earliest });
    }),
    /**
     * The timer fired: acks=all batches due by now are answered REQUEST_TIMED_OUT (retriable; the
     * batch may still be committed, and the idempotent producer's retry is answered from the
     * producer state). One already on disk leaves the pending list, freeing its slot and bytes; one
     * still being written keeps them, unanswerable, until the writer is done with it, so the writer's
     * queue stays within pendingAppendsMax / pendingAppendBytesMax.
     */
    expireProduce: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'PRODUCE_DEADLINE') return;
      const still: PendingProduce[] = [];
      const message = `not committed by the in-sync replicas ${context.isr.join(',')} before the request's deadline; it may still be committed`;
      for (const p of context.pending) {
        if (p.deadlineMs === undefined || p.deadlineMs > event.atMs) {
          still.push(p);
          continue;
        }
        if (p.replyTo !== undefined) enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: p.replyTo, error: wireError('REQUEST_TIMED_OUT', message) });
        const unwritten = awaitingWrite(p, context.logEndOffset);
        if (unwritten !== undefined) still.push(unwritten);
      }
      const released = context.pendingBytes - bytesOf(still);
      const lease = context.pendingLease;
      if (released > 0) enqueue(() => lease.release(released));
      enqueue.assign({ pending: still, pendingBytes: bytesOf(still), deadlineTimerAtMs: undefined });
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
        const deadlineMs = event.nowMs + event.timeoutMs;
        enqueue.assign({ pending: [...context.pending, { baseOffset: check.baseOffset, endOffset, bytes: 0, replyTo: event.replyTo, acks: -1, deadlineMs }] });
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
    /** After an append: the leader's log end moved. */
    appended: assign(({ event, context }) => {
      if (event.type !== 'APPENDED' || event.logEndOffset <= context.logEndOffset) return {};
      // A follower that had the whole log was caught up until this moment (it fetches nothing while
      // the log does not move: its fetch session asks nothing of this actor; replication.ts).
      return { logEndOffset: event.logEndOffset, followers: caughtUpUntil(context.followers, context.logEndOffset, context.clock.now()) };
    }),
    written: assign({ writtenEnd: ({ event, context }) => (event.type === 'WRITTEN' ? Math.max(context.writtenEnd, event.logEndOffset) : context.writtenEnd) }),
    /** Fetch sessions parked on this partition wake when its written end passes their fetch offset. */
    notifyWritten: enqueueActions(({ context, enqueue }) => {
      const watch = context.replicaWatch;
      if (watch === undefined) return;
      const { topicId, partition, writtenEnd } = context;
      enqueue(() => watch.written(topicId, partition, writtenEnd));
    }),
    /** The node's subscriptions read up to the high watermark: tell them where it and the log start are. */
    notifyCommitted: enqueueActions(({ context, enqueue }) => {
      const watch = context.replicaWatch;
      if (watch?.committed === undefined) return;
      const { topicId, partition, leaderEpoch, highWatermark, logStartOffset } = context;
      enqueue(() => watch.committed!(topicId, partition, leaderEpoch, highWatermark, logStartOffset));
    }),
    notifyClosed: enqueueActions(({ context, enqueue }) => {
      const watch = context.replicaWatch;
      if (watch?.closed === undefined) return;
      const { topicId, partition, leaderEpoch } = context;
      enqueue(() => watch.closed!(topicId, partition, leaderEpoch));
    }),
    /**
     * After anything that may move the high watermark (an append, a follower's fetch, an ISR
     * change): answer produce (acks=1 at the leader's log end, acks=all at the HW), consumers'
     * fetches now below the HW and followers' fetches now below the log end.
     */
    settle: enqueueActions(({ context, enqueue }) => {
      const hw = hwOf(context);
      const leo = context.logEndOffset;
      const isDone = (p: PendingProduce) => p.endOffset <= (p.acks === -1 ? hw : leo);
      const tooFewInSync = context.isr.length < context.config.minInsyncReplicas;
      for (const p of context.pending) {
        if (!isDone(p) || p.replyTo === undefined) continue;
        if (p.acks === -1 && tooFewInSync) {
          const message = `ISR ${context.isr.join(',')} is below min.insync.replicas=${context.config.minInsyncReplicas}`;
          enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: p.replyTo, error: wireError('NOT_ENOUGH_REPLICAS_AFTER_APPEND', message) });
          continue;
        }
        const body: ProduceReply = { baseOffset: p.baseOffset, logStartOffset: context.logStartOffset };
        enqueue.sendTo('outbox', { type: 'REPLY', replyTo: p.replyTo, body });
      }
      const ready = (w: FetchWaiter) => w.offset < (w.replica ? context.writtenEnd : hw);
      for (const w of context.waiters.filter(ready)) {
        enqueue.cancel(waiterTimerId(w.id));
        enqueue.sendTo('reader', {
          type: 'READ',
          replyTo: w.replyTo,
          offset: w.offset,
          maxBytes: w.maxBytes,
          endOffset: w.replica ? context.writtenEnd : hw,
          highWatermark: hw,
          logStartOffset: context.logStartOffset,
          logEndOffset: context.writtenEnd,
        });
      }
      const still = context.pending.filter((p) => !isDone(p));
      const released = context.pendingBytes - bytesOf(still);
      const lease = context.pendingLease;
      if (released > 0) enqueue(() => lease.release(released));
      const timerIdle = context.deadlineTimerAtMs !== undefined && earliestDeadline(still) === undefined;
      if (timerIdle) enqueue.cancel(PRODUCE_DEADLINE_TIMER_ID);
      const watch = context.replicaWatch;
      if (hw !== context.highWatermark && watch?.committed !== undefined) {
        const { topicId, partition, leaderEpoch, logStartOffset } = context;
        enqueue(() => watch.committed!(topicId, partition, leaderEpoch, hw, logStartOffset));
      }
      enqueue.assign({
        highWatermark: hw,
        pending: still,
        pendingBytes: bytesOf(still),
        waiters: context.waiters.filter((w) => !ready(w)),
        ...(timerIdle ? { deadlineTimerAtMs: undefined } : {}),
      });
    }),
    /** A follower fetched from its log end: note its progress and whether it may join the ISR. */
    noteFollower: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'REPLICA_FETCH') return;
      const followers = {
        ...context.followers,
        [event.replicaId]: recordFetch(context.followers[event.replicaId], event.fetchOffset, context.logEndOffset, context.clock.now()),
      };
      const next = { ...context, followers };
      enqueue.assign({ followers });
      const refusedUntil = context.joinRefusedUntil[event.replicaId] ?? 0;
      if (context.wantedIsr === undefined && context.clock.now() >= refusedUntil && joinsIsr(next, event.replicaId, hwOf(next), context.epochStartOffset)) {
        enqueue.assign({ wantedIsr: [...context.isr, event.replicaId] });
      }
    }),
    refuseReplicaFetch: enqueueActions(({ context, event, enqueue }) => {
      const refusal = replicaFetchRefusal(context, event);
      if (event.type !== 'REPLICA_FETCH' || refusal === undefined) return;
      enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: event.replyTo, error: wireError(refusal.code, refusal.message, refusal.logRange) });
    }),
    answerDivergence: enqueueActions(({ context, event, enqueue }) => {
      const diverging = replicaDivergence(context, event);
      if (event.type !== 'REPLICA_FETCH' || diverging === undefined) return;
      enqueue.sendTo('outbox', {
        type: 'REPLY',
        replyTo: event.replyTo,
        body: {
          highWatermark: context.highWatermark,
          logStartOffset: context.logStartOffset,
          logEndOffset: context.writtenEnd,
          records: new Uint8Array(0),
          divergingEpoch: diverging,
        },
      });
    }),
    readForReplica: sendTo('reader', ({ context, event }) => {
      if (event.type !== 'REPLICA_FETCH') throw new Error('replica read on another event');
      return {
        type: 'READ' as const,
        replyTo: event.replyTo,
        replica: true,
        offset: event.fetchOffset,
        maxBytes: event.maxBytes,
        endOffset: context.writtenEnd,
        highWatermark: context.highWatermark,
        logStartOffset: context.logStartOffset,
        logEndOffset: context.writtenEnd,
      };
    }),
    /** Metadata changed the partition (ISR, replicas) within this leader epoch. */
    assignment: assign(({ context, event }) => {
      if (event.type !== 'ASSIGNMENT' || event.partitionEpoch <= context.partitionEpoch) return {};
      // A newer partition epoch settles the change in flight, whichever way it went.
      const settled = context.pendingIsr !== undefined && event.partitionEpoch > context.pendingIsrBase;
      const suspects = event.suspects ?? [];
      // Suspect members are to leave the ISR: the change is worked out when it is sent (nextIsr).
      const evict = suspects.some((id) => id !== context.brokerId && event.isr.includes(id));
      return {
        replicas: event.replicas,
        isr: event.isr,
        // Members the controller took out (fenced, shutting down), not this leader's own shrink: their
        // last report is stale, so only a fetch from then on may propose them again.
        leftIsrAtMs: leavers(context.leftIsrAtMs, context.isr.filter((id) => context.pendingIsr === undefined || context.pendingIsr.includes(id)), event.isr, context.clock.now()),
        partitionEpoch: event.partitionEpoch,
        suspects,
        ...(settled ? { pendingIsr: undefined } : {}),
        ...(evict && context.wantedIsr === undefined ? { wantedIsr: event.isr.filter((id) => !suspects.includes(id)) } : {}),
      };
    }),
    /** Periodic check: ISR members lagging too long are to be removed. */
    /** The node tick: members lagging too long are to leave the ISR, caught-up replicas to join it. */
    checkLag: assign(({ context, event }) => {
      if (event.type !== 'TICK') return {};
      const replicaSeenMs = event.replicaSeenMs ?? context.replicaSeenMs;
      if (context.wantedIsr !== undefined || context.pendingIsr !== undefined) return { replicaSeenMs };
      return { replicaSeenMs, wantedIsr: nextIsr({ ...context, replicaSeenMs }) };
    }),
    /**
     * An ISR change just settled: a follower that caught up meanwhile joins now (its fetch session
     * will not report it again while the partition is idle).
     */
    reconsiderIsr: assign(({ context }) => {
      if (context.wantedIsr !== undefined || context.pendingIsr !== undefined) return {};
      return { wantedIsr: nextIsr(context) };
    }),
    /** The controller refused the change for good (a joiner it will not take): back to the committed ISR. */
    dropIsrChange: assign(({ context, event }) => {
      const error = (event as unknown as { error: unknown }).error;
      const joiners = (context.pendingIsr ?? []).filter((id) => !context.isr.includes(id));
      const until = context.clock.now() + context.limits.replicaLagTimeMaxMs;
      context.logger.info({ err: error, isr: context.isr, refused: context.pendingIsr }, 'ISR change refused');
      return {
        pendingIsr: undefined,
        joinRefusedUntil: { ...context.joinRefusedUntil, ...Object.fromEntries(joiners.map((id) => [id, until])) },
      };
    }),
    sendIsrChange: assign(({ context }) => {
      const isr = nextIsr(context);
      if (isr !== undefined && isr.length < context.isr.length) context.logger.warn({ isr: context.isr, shrunk: isr }, 'followers lag; shrinking the ISR');
      return { pendingIsr: isr, pendingIsrBase: context.partitionEpoch, wantedIsr: undefined };
    }),
    isrChanged: assign(({ context, event }) => {
      const reply = (event as unknown as { output: AlterPartitionReply }).output;
      if (reply.partitionEpoch <= context.partitionEpoch) return {};
      context.logger.info({ isr: reply.isr, partitionEpoch: reply.partitionEpoch }, 'ISR changed');
      return { isr: reply.isr, partitionEpoch: reply.partitionEpoch, pendingIsr: undefined };
    }),
    /**
     * Closing (a new leader epoch, a stop): acks=all batches not yet committed are answered
     * NOT_LEADER (retriable; the producer resends them to the new leader), as followers no longer
     * fetch from here; acks=1 ones are answered once on disk.
     */
    abandonPending: enqueueActions(({ context, enqueue }) => {
      const abandoned = context.pending.filter((p) => p.acks === -1);
      for (const p of abandoned) {
        if (p.replyTo !== undefined) enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: p.replyTo, error: wireError('NOT_LEADER', 'leadership ended before the batch was committed') });
      }
      // A batch still on its way to disk keeps its place until it is written: the actor must not end
      // while its writer still appends, or a late append of this epoch would land under the actor
      // that opens this log next (and make its first append fail).
      const still = context.pending.flatMap((p) => (p.acks !== -1 ? [p] : (awaitingWrite(p, context.logEndOffset) ?? [])));
      const released = context.pendingBytes - bytesOf(still);
      const lease = context.pendingLease;
      if (released > 0) enqueue(() => lease.release(released));
      enqueue.cancel(PRODUCE_DEADLINE_TIMER_ID);
      enqueue.assign({ pending: still, pendingBytes: bytesOf(still), deadlineTimerAtMs: undefined });
    }),
    failPending: enqueueActions(({ context, enqueue }) => {
      for (const p of context.pending) {
        if (p.replyTo !== undefined) enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: p.replyTo, error: wireError('INTERNAL', 'append failed') });
      }
      const lease = context.pendingLease;
      const released = context.pendingBytes;
      if (released > 0) enqueue(() => lease.release(released));
      enqueue.cancel(PRODUCE_DEADLINE_TIMER_ID);
      enqueue.assign({ pending: [], pendingBytes: 0, deadlineTimerAtMs: undefined });
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
        logEndOffset: context.logEndOffset,
      };
    }),
    answerEmpty: sendTo('outbox', ({ context, event }) => ({
      type: 'REPLY' as const,
      replyTo: event.type === 'FETCH' || event.type === 'REPLICA_FETCH' ? event.replyTo : '',
      body: { highWatermark: context.highWatermark, logStartOffset: context.logStartOffset, logEndOffset: context.logEndOffset, records: new Uint8Array(0) },
    })),
    park: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'FETCH') return;
      const id = context.nextWaiterId;
      enqueue.assign({
        nextWaiterId: id + 1,
        waiters: [...context.waiters, { id, replyTo: event.replyTo, offset: event.offset, maxBytes: event.maxBytes, replica: false }],
      });
      enqueue.raise({ type: 'FETCH_EXPIRED', id }, { delay: event.maxWaitMs, id: waiterTimerId(id) });
    }),
    parkReplica: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'REPLICA_FETCH') return;
      const id = context.nextWaiterId;
      enqueue.assign({
        nextWaiterId: id + 1,
        waiters: [...context.waiters, { id, replyTo: event.replyTo, offset: event.fetchOffset, maxBytes: event.maxBytes, replica: true }],
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
        body: { highWatermark: context.highWatermark, logStartOffset: context.logStartOffset, logEndOffset: context.logEndOffset, records: new Uint8Array(0) },
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
      offsetEnd: context.highWatermark,
    })),
  },
  delays: {
    alterRetry: ({ context }) => backoffMs(1, { backoffMsInitial: Math.max(1, Math.floor(context.limits.alterPartitionTimeoutMs / 4)), backoffMsMax: Math.max(1, Math.floor(context.limits.alterPartitionTimeoutMs / 4)) }, context.random),
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
    writtenEnd: 0,
    highWatermark: 0,
    pending: [],
    pendingBytes: 0,
    pendingLease: input.pendingBudget.lease(),
    deadlineTimerAtMs: undefined,
    producers: new Map(),
    waiters: [],
    nextWaiterId: 0,
    closing: undefined,
    epochStartOffset: 0,
    followers: {},
    pendingIsr: undefined,
    pendingIsrBase: -1,
    wantedIsr: undefined,
    joinRefusedUntil: {},
    leftIsrAtMs: {},
    replicaSeenMs: {},
    accessEpoch: 0,
  }),
  initial: 'loading',
  // The outbox lives as long as the machine, so every state can answer (loading, failed, draining).
  invoke: [
    { id: 'outbox', src: 'outbox', input: ({ context }) => ({ transport: context.transport, logger: context.logger }) },
    { id: 'pendingLease', src: 'pendingLease', input: ({ context }) => ({ lease: context.pendingLease }) },
  ],
  on: {
    CONFIG: { actions: assign({ config: ({ event }) => event.config }) },
    ASSIGNMENT: { actions: 'assignment' },
  },
  states: {
    loading: {
      invoke: {
        src: 'openLog',
        input: ({ context }) => context,
        onDone: {
          target: 'open',
          actions: assign(({ context, event }) => {
            const { store, producers, accessEpoch } = event.output;
            const end = store.logEndOffset();
            // The high watermark starts at 0 and moves as followers report (HW never goes back):
            // records past the old HW become visible only once the ISR confirms them.
            // Followers in the ISR get a full replica.lag.time.max.ms to show up before they are dropped.
            const now = context.clock.now();
            const followers = Object.fromEntries(
              context.isr.filter((id) => id !== context.brokerId).map((id) => [id, { logEndOffset: -1, lastCaughtUpMs: now, lastFetchMs: now, lastFetchLeaderEnd: end }]),
            );
            return { store, producers, accessEpoch, logStartOffset: store.logStartOffset(), nextOffset: end, logEndOffset: end, writtenEnd: end, highWatermark: 0, epochStartOffset: end, followers };
          }),
        },
        onError: { target: 'failed', actions: ({ context, event }) => context.logger.error({ err: event.error }, 'cannot open partition log') },
      },
      on: {
        PRODUCE: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'LEADER_NOT_AVAILABLE' }) } },
        FETCH: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'LEADER_NOT_AVAILABLE' }) } },
        REPLICA_FETCH: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'LEADER_NOT_AVAILABLE' }) } },
        STOP: 'closed',
        DELETE: 'deleting',
      },
    },
    open: {
      invoke: [
        {
          id: 'writer',
          src: 'logWriter',
          input: ({ context }) => ({
            store: context.store!,
            clock: context.clock,
            groupCommitBatchesMax: context.limits.groupCommitBatchesMax,
            topic: context.topic,
            metrics: context.metrics ?? noMetrics,
          }),
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
            topic: context.topic,
            metrics: context.metrics ?? noMetrics,
          }),
        },
      ],
      entry: ['settle', 'notifyWritten', 'notifyCommitted'],
      exit: 'notifyClosed',
      on: {
        WRITTEN: { actions: ['written', 'settle', 'notifyWritten'] },
        APPENDED: { actions: ['appended', 'settle'] },
        APPEND_FAILED: {
          target: '.log.failed',
          actions: ['failPending', ({ context, event }) => context.logger.error({ reason: event.message }, 'append failed; partition offline')],
        },
        RETAINED: { actions: [assign({ logStartOffset: ({ event }) => event.logStartOffset }), 'notifyCommitted'] },
        FETCH_EXPIRED: { actions: 'expireWaiter' },
        PRODUCE_DEADLINE: { actions: ['expireProduce', 'armDeadline'] },
        ASSIGNMENT: { actions: ['assignment', 'settle', 'reconsiderIsr'] },
      },
      type: 'parallel',
      states: {
        isr: {
          initial: 'idle',
          states: {
            idle: {
              always: [
                { guard: 'wantsIsrChange', target: 'altering', actions: 'sendIsrChange' },
                // The suggested change no longer applies (the ISR moved meanwhile): forget it.
                { guard: 'staleIsrHint', actions: assign({ wantedIsr: undefined }) },
              ],
              on: { TICK: { target: 'idle', reenter: true, actions: 'checkLag' } },
            },
            altering: {
              invoke: {
                src: 'alterPartition',
                input: ({ context }) => ({ context }),
                onDone: { target: 'idle', actions: ['isrChanged', 'settle', 'reconsiderIsr'] },
                onError: [
                  { guard: ({ event }) => alterRefusal(event.error) === 'refused', target: 'idle', actions: ['dropIsrChange', 'settle', 'reconsiderIsr'] },
                  { guard: ({ event }) => alterRefusal(event.error) === 'stale', target: 'settling' },
                  {
                    target: 'backoff',
                    actions: ({ context, event }) => context.logger.warn({ err: event.error, isr: context.pendingIsr }, 'ISR change not confirmed; will retry'),
                  },
                ],
              },
            },
            // Waiting for metadata to say how the change ended (ASSIGNMENT clears pendingIsr).
            settling: {
              always: { guard: ({ context }) => context.pendingIsr === undefined, target: 'idle' },
            },
            // The change may have been committed anyway: it stays pending until metadata settles it.
            backoff: {
              always: { guard: ({ context }) => context.pendingIsr === undefined, target: 'idle' },
              after: { alterRetry: 'altering' },
            },
          },
        },
        log: {
          initial: 'serving',
          states: {
            serving: {
              on: {
                TICK: { guard: ({ event }) => event.retain, actions: 'retain' },
                PRODUCE: [
                  // First: a client on stale metadata must learn it before anything else is checked.
                  {
                    guard: 'leaderEpochRefused',
                    actions: { type: 'replyError', params: ({ context, event }) => ({ replyTo: event.replyTo, ...leaderEpochRefusal(context, event)! }) },
                  },
                  // Before the sequence checks: a fenced producer's batch must not touch its idempotent state.
                  {
                    guard: 'accessRefused',
                    actions: { type: 'replyError', params: ({ context, event }) => ({ replyTo: event.replyTo, ...accessRefusal(context, event)! }) },
                  },
                  { guard: 'sequenceRefused', actions: 'refuseSequence' },
                  { guard: 'queueFull', actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'BUSY' }) } },
                  {
                    guard: 'nodeBudgetFull',
                    actions: {
                      type: 'replyError',
                      params: ({ context, event }) => ({
                        replyTo: event.replyTo,
                        code: 'BUSY',
                        message: `the node's leaders hold ${context.pendingBudget.usedBytes} of ${context.pendingBudget.limitBytes} pending append bytes (nodePendingAppendBytesMax)`,
                      }),
                    },
                  },
                  {
                    // Before the duplicate check, as Kafka does: a retry must not be acknowledged while
                    // the ISR is below min.insync.replicas.
                    guard: 'notEnoughReplicas',
                    actions: {
                      type: 'replyError',
                      params: ({ context, event }) => ({
                        replyTo: event.replyTo,
                        code: 'NOT_ENOUGH_REPLICAS',
                        message: `ISR ${context.isr.join(',')} is below min.insync.replicas=${context.config.minInsyncReplicas}`,
                      }),
                    },
                  },
                  { guard: 'duplicate', actions: ['answerDuplicate', 'armDeadline'] },
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
                  { actions: ['accept', 'reservePending', 'armDeadline'] },
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
                REPLICA_FETCH: [
                  { guard: 'replicaFetchRefused', actions: 'refuseReplicaFetch' },
                  { guard: 'diverging', actions: 'answerDivergence' },
                  { guard: 'hasReplicaData', actions: ['noteFollower', 'settle', 'readForReplica'] },
                  { guard: 'replicaMustAnswerNow', actions: ['noteFollower', 'settle', 'answerEmpty'] },
                  { actions: ['noteFollower', 'settle', 'parkReplica'] },
                ],
                STOP: { target: 'draining', actions: [assign({ closing: 'stop' }), 'releaseWaiters', 'abandonPending'] },
                DELETE: { target: 'draining', actions: [assign({ closing: 'delete' }), 'releaseWaiters', 'abandonPending'] },
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
                REPLICA_FETCH: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'SHUTTING_DOWN' }) } },
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
                REPLICA_FETCH: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'INTERNAL', message: 'partition log is offline' }) } },
                STOP: '#partition.closed',
                DELETE: '#partition.deleting',
              },
            },
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
        REPLICA_FETCH: { actions: { type: 'replyError', params: ({ event }) => ({ replyTo: event.replyTo, code: 'INTERNAL', message: 'partition log cannot be opened' }) } },
        STOP: 'closed',
        DELETE: 'deleting',
      },
    },
    closed: { type: 'final' },
  },
});
