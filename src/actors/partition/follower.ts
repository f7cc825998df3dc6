/**
 * A partition's follower replica (Kafka's ReplicaFetcher, one per partition): it fetches from the
 * leader of its leader epoch in a loop (follower-fetch.ts), which both copies the leader's log and
 * tells the leader how far this replica has come. A follower whose log ends below the leader's log
 * start restarts its log there (follower-fetch.ts). A failed step (timeout, leader gone, stale
 * epoch) is retried after a backoff; the broker replaces this actor when metadata names a new
 * leader or epoch. Stop and delete behave as the leader's do.
 */
import { assign, fromCallback, fromPromise, setup, type EventObject } from 'xstate';
import type { TopicConfig } from '../../metadata/topic-config.js';
import { TidemarkError } from '../../protocol/errors.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Random, Transport } from '../../runtime/ports.js';
import { backoffMs } from '../../runtime/retry.js';
import type { NodeStorage, PartitionStore, RetentionPolicy } from '../../storage/partition-store.js';
import type { ReplicaFetchers } from '../replica-fetcher/fetcher.js';
import { followerApply, followerRequest, type FollowerFetched, type FollowerStep } from './follower-fetch.js';
import type { NodeTick, PartitionLimits } from './types.js';

export interface FollowerInput {
  topic: string;
  topicId: string;
  partition: number;
  leaderId: number;
  leaderEpoch: number;
  brokerId: number;
  config: TopicConfig;
  storage: NodeStorage;
  transport: Transport;
  subjects: Subjects;
  clock: Clock;
  /** For the jitter of the backoff. */
  random: Random;
  logger: Logger;
  limits: PartitionLimits;
  /**
   * The node's replica fetchers (one session per leader broker). Absent: the follower sends its own
   * request per fetch (the protocol before sessions; unit tests script it).
   */
  fetchers?: ReplicaFetchers;
}

/** Largest ceiling of the pause after failed fetches, ms. */
export const REPLICA_FETCH_BACKOFF_MS_MAX = 2_000;

export interface FollowerContext extends FollowerInput {
  store: PartitionStore | undefined;
  logEndOffset: number;
  leaderHighWatermark: number;
  /** Consecutive failed steps (for the log: the first one of a run is logged). */
  failures: number;
  /** The reply (or log restart) being applied, and the retention to apply with it when due. */
  fetched: (FollowerFetched & { retention: RetentionPolicy | undefined }) | undefined;
  /** A STOP or DELETE that came while a write ran: done once it finishes. */
  closing: 'stop' | 'delete' | undefined;
  /** When retention last ran on this copy, ms (it runs with a write, every retentionCheckIntervalMs). */
  retainedAtMs: number;
}

function retentionDue(context: FollowerContext): RetentionPolicy | undefined {
  const nowMs = context.clock.now();
  if (nowMs - context.retainedAtMs < context.limits.retentionCheckIntervalMs) return undefined;
  return { retentionMs: context.config.retentionMs, retentionBytes: context.config.retentionBytes, nowMs };
}

export type FollowerEvent = { type: 'CONFIG'; config: TopicConfig } | { type: 'STOP' } | { type: 'DELETE' } | NodeTick;

export const followerMachine = setup({
  types: { input: {} as FollowerInput, context: {} as FollowerContext, events: {} as FollowerEvent },
  actors: {
    openLog: fromPromise<PartitionStore, FollowerInput>(({ input }) => input.storage.openPartition({ topicId: input.topicId, partition: input.partition })),
    deleteLog: fromPromise<void, FollowerInput>(({ input }) => input.storage.deletePartition({ topicId: input.topicId, partition: input.partition })),
    followerRequest,
    followerApply,
    /** Retention on this copy while no reply is being applied (an idle follower writes nothing, so the node tick asks). */
    retain: fromPromise<void, { store: PartitionStore; policy: RetentionPolicy }>(async ({ input }) => {
      await input.store.applyRetention(input.policy);
    }),
    /** Holds nothing: its cleanup takes the partition out of its fetcher when the actor stops, however it stops. */
    fetcherRegistration: fromCallback<EventObject, { fetchers: ReplicaFetchers | undefined; leaderId: number; topicId: string; partition: number }>(
      ({ input }) =>
        () =>
          input.fetchers?.for(input.leaderId).close(input.topicId, input.partition),
    ),
  },
  actions: {
    progress: assign(({ context, event }) => {
      const step = (event as unknown as { output: FollowerStep }).output;
      return { logEndOffset: step.logEndOffset, leaderHighWatermark: step.leaderHighWatermark ?? context.leaderHighWatermark, failures: 0 };
    }),
    /** A failed write: the fetcher must not hold the session's next request for this partition. */
    releaseFetch: ({ context }) => context.fetchers?.for(context.leaderId).release(context.topicId, context.partition),
    noteFailure: assign(({ context, event }) => {
      const error = (event as unknown as { error: unknown }).error;
      if (context.failures === 0) {
        const code = error instanceof TidemarkError ? error.code : undefined;
        const log = code === undefined || code === 'INTERNAL' || code === 'CORRUPT_MESSAGE' ? 'warn' : 'debug';
        context.logger[log]({ err: error, leader: context.leaderId, leaderEpoch: context.leaderEpoch }, 'replica fetch failed; retrying');
      }
      return { failures: context.failures + 1 };
    }),
  },
  delays: {
    // `failures` counts this run of failed steps, the one that led here included (>= 1).
    backoff: ({ context }) =>
      backoffMs(context.failures, { backoffMsInitial: context.limits.replicaFetchBackoffMs, backoffMsMax: REPLICA_FETCH_BACKOFF_MS_MAX }, context.random),
  },
}).createMachine({
  id: 'follower',
  output: ({ context }) => ({ topicId: context.topicId, partition: context.partition }),
  context: ({ input }) => ({ ...input, store: undefined, logEndOffset: 0, leaderHighWatermark: 0, failures: 0, fetched: undefined, closing: undefined, retainedAtMs: input.clock.now() }),
  initial: 'loading',
  invoke: {
    src: 'fetcherRegistration',
    input: ({ context }) => ({ fetchers: context.fetchers, leaderId: context.leaderId, topicId: context.topicId, partition: context.partition }),
  },
  on: { CONFIG: { actions: assign({ config: ({ event }) => event.config }) } },
  states: {
    loading: {
      invoke: {
        src: 'openLog',
        input: ({ context }) => context,
        onDone: { target: 'fetching', actions: assign(({ event }) => ({ store: event.output, logEndOffset: event.output.logEndOffset() })) },
        onError: { target: 'failed', actions: ({ context, event }) => context.logger.error({ err: event.error }, 'cannot open partition log') },
      },
      on: { STOP: 'closed', DELETE: 'deleting' },
    },
    // The request may be abandoned at any time: its reply is dropped unread.
    fetching: {
      invoke: {
        src: 'followerRequest',
        input: ({ context }) => ({
          store: context.store!,
          transport: context.transport,
          subjects: context.subjects,
          logger: context.logger,
          topic: context.topic,
          partition: context.partition,
          brokerId: context.brokerId,
          leaderId: context.leaderId,
          leaderEpoch: context.leaderEpoch,
          sync: context.config.flushMode === 'fsync',
          fetchMaxBytes: context.limits.replicaFetchMaxBytes,
          fetchMaxWaitMs: context.limits.replicaFetchWaitMs,
          topicId: context.topicId,
          fetchers: context.fetchers,
        }),
        onDone: { target: 'writing', actions: assign({ fetched: ({ context, event }) => ({ ...event.output, retention: retentionDue(context) }) }) },
        onError: { target: 'backoff', actions: 'noteFailure' },
      },
      on: {
        STOP: 'closed',
        DELETE: 'deleting',
        // Leaving the wait is safe: the fetcher keeps the partition and hands it nothing until it asks again.
        TICK: { guard: ({ event }) => event.retain, target: 'retaining', actions: assign({ retainedAtMs: ({ event }) => event.nowMs }) },
      },
    },
    // Like a write: never abandoned, so nothing lands under the actor that opens this log next.
    retaining: {
      invoke: {
        src: 'retain',
        input: ({ context }) => ({
          store: context.store!,
          policy: { retentionMs: context.config.retentionMs, retentionBytes: context.config.retentionBytes, nowMs: context.retainedAtMs },
        }),
        onDone: [
          { guard: ({ context }) => context.closing === 'stop', target: 'closed' },
          { guard: ({ context }) => context.closing === 'delete', target: 'deleting' },
          { target: 'fetching' },
        ],
        onError: [
          { guard: ({ context }) => context.closing === 'stop', target: 'closed' },
          { guard: ({ context }) => context.closing === 'delete', target: 'deleting' },
          { target: 'backoff', actions: ['noteFailure', 'releaseFetch'] },
        ],
      },
      on: { STOP: { actions: assign({ closing: 'stop' }) }, DELETE: { actions: assign({ closing: 'delete' }) } },
    },
    // A write is never abandoned: stopping waits for it, so a late append cannot land under the
    // leader actor that opens this log next.
    writing: {
      invoke: {
        src: 'followerApply',
        input: ({ context }) => ({
          store: context.store!,
          logger: context.logger,
          sync: context.config.flushMode === 'fsync',
          fetched: context.fetched!,
          retention: context.fetched!.retention,
        }),
        onDone: [
          { guard: ({ context }) => context.closing === 'stop', target: 'closed' },
          { guard: ({ context }) => context.closing === 'delete', target: 'deleting' },
          {
            target: 'fetching',
            actions: ['progress', assign({ fetched: undefined, retainedAtMs: ({ context }) => context.fetched!.retention?.nowMs ?? context.retainedAtMs })],
          },
        ],
        onError: [
          { guard: ({ context }) => context.closing === 'stop', target: 'closed' },
          { guard: ({ context }) => context.closing === 'delete', target: 'deleting' },
          { target: 'backoff', actions: ['noteFailure', assign({ fetched: undefined }), 'releaseFetch'] },
        ],
      },
      on: { STOP: { actions: assign({ closing: 'stop' }) }, DELETE: { actions: assign({ closing: 'delete' }) } },
    },
    backoff: {
      after: { backoff: 'fetching' },
      on: { STOP: 'closed', DELETE: 'deleting' },
    },
    deleting: {
      invoke: {
        src: 'deleteLog',
        input: ({ context }) => context,
        onDone: 'closed',
        onError: { target: 'closed', actions: ({ context, event }) => context.logger.error({ err: event.error }, 'cannot delete partition log') },
      },
    },
    failed: { on: { STOP: 'closed', DELETE: 'deleting' } },
    closed: { type: 'final' },
  },
});
