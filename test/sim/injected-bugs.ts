/**
 * Deliberately wrong product machines, built with xstate's `machine.provide()` (no switch in the
 * product code), to show that the simulator's checkers catch real classes of bugs:
 * - `eagerAck`: the partition answers a produce as soon as it accepts the batch, before the append
 *   completes (so before the high watermark covers it);
 * - `staleVote`: the Raft election grants (pre-)votes without comparing logs (Raft's election
 *   restriction, §5.4.1), so a voter missing committed entries can win and overwrite them;
 * - `doubleVote`: the Raft election grants a vote without looking at `votedFor`, so a voter can
 *   vote twice in one term. Pre-vote and the pre-candidate tie-break make the simultaneous
 *   candidacies this needs rare in whole-cluster runs; the quorum tests force them instead;
 * - `eagerFollowers`: the leader takes a follower's fetch as proof that the follower has its whole
 *   log (not just up to the fetch offset), so the high watermark runs ahead of the ISR;
 * - `epochBlindFollower`: followers never send the epoch of their last batch (replication before
 *   KIP-101/KIP-320), so a suffix a deposed leader wrote is never found diverging and stays;
 * - `fenceBlind`: partition leaders ignore producer epochs (issue 12), so a producer fenced by an
 *   ExclusiveWithFencing successor keeps writing;
 * - `confirmBlind`: a broker confirms that a topic is missing without syncing with the controller
 *   (issue 13), so a topic created a moment ago is reported as not existing, finally.
 */
import { enqueueActions, fromCallback, fromPromise } from 'xstate';
import { brokerMachine } from '../../src/actors/broker/machine.js';
import { followMetadata } from '../../src/actors/broker/metadata-fetcher.js';
import { followerMachine, type FollowerInput } from '../../src/actors/partition/follower.js';
import { partitionMachine } from '../../src/actors/partition/machine.js';
import { recordAppend } from '../../src/actors/partition/producer-state.js';
import { highWatermarkOf, joinsIsr, recordFetch } from '../../src/actors/partition/replication.js';
import type { PartitionStore } from '../../src/storage/partition-store.js';
import type { NodeTestSeam } from '../../src/node.js';
import type { ProduceReply } from '../../src/protocol/messages.js';
import { electionMachine } from '../../src/quorum/election-machine.js';
import { isUpToDate } from '../../src/quorum/log-view.js';
import type { RaftContext } from '../../src/quorum/types.js';

const eagerPartition = partitionMachine.provide({
  actions: {
    accept: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'PRODUCE') return;
      const baseOffset = context.nextOffset;
      enqueue.sendTo('writer', { type: 'APPEND', batch: event.batch, baseOffset, leaderEpoch: context.leaderEpoch, sync: false });
      // The bug: the acknowledgement leaves now, not once the append is done.
      if (event.acks !== 0 && event.replyTo !== undefined) {
        const body: ProduceReply = { baseOffset, logStartOffset: context.logStartOffset };
        enqueue.sendTo('outbox', { type: 'REPLY', replyTo: event.replyTo, body });
      }
      enqueue.assign({
        nextOffset: baseOffset + event.recordCount,
        pending: [...context.pending, { baseOffset, endOffset: baseOffset + event.recordCount, bytes: event.batch.length, replyTo: undefined, acks: 0 }],
        pendingBytes: context.pendingBytes + event.batch.length,
        producers: event.producer === undefined ? context.producers : recordAppend(context.producers, event.producer, event.recordCount, baseOffset),
      });
    }),
  },
});

const eagerFollowerPartition = partitionMachine.provide({
  actions: {
    noteFollower: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'REPLICA_FETCH') return;
      // The bug: the follower is taken to have reached the leader's log end, not its fetch offset.
      const reached = context.logEndOffset;
      const followers = { ...context.followers, [event.replicaId]: recordFetch(context.followers[event.replicaId], reached, context.logEndOffset, context.clock.now()) };
      const next = { ...context, followers };
      enqueue.assign({ followers });
      const hw = Math.max(context.highWatermark, highWatermarkOf(next));
      if (context.wantedIsr === undefined && joinsIsr(next, event.replicaId, hw, context.epochStartOffset)) {
        enqueue.assign({ wantedIsr: [...context.isr, event.replicaId] });
      }
    }),
  },
});

/** The follower's log without its epoch cache: it fetches with lastFetchedEpoch -1, always. */
const epochBlindFollower = followerMachine.provide({
  actors: {
    openLog: fromPromise<PartitionStore, FollowerInput>(async ({ input }) => {
      const store = await input.storage.openPartition({ topicId: input.topicId, partition: input.partition });
      return new Proxy(store, { get: (target, key) => (key === 'epochs' ? () => [] : Reflect.get(target, key)) });
    }),
  },
});

const doubleVoteElection = electionMachine.provide({
  guards: {
    voteGrantable: ({ context, event }) =>
      event.type === 'raft.vote' && event.msg.term >= context.term && isUpToDate(context.log, event.msg.lastLogIndex, event.msg.lastLogTerm),
  },
});

/** preVoteGranted and voteGranted (election-rules.ts) without their isUpToDate check. */
const staleVoteElection = electionMachine.provide({
  guards: {
    preVoteGrantable: ({ context, event }) => {
      if (event.type !== 'raft.preVote') return false;
      const c: RaftContext = context;
      const m = event.msg;
      return m.term > c.term || (m.term === c.term && (c.votedFor === m.from || (c.votedFor === null && c.leaderId === null)));
    },
    voteGrantable: ({ context, event }) => {
      if (event.type !== 'raft.vote' || event.msg.term < context.term) return false;
      const votedFor = event.msg.term > context.term ? null : context.votedFor;
      return votedFor === null || votedFor === event.msg.from;
    },
  },
});

/** The partition leader without its producer-epoch check. */
const fenceBlindPartition = partitionMachine.provide({ guards: { accessRefused: () => false } });

// The bug: the sync a confirm waits for answers "caught up" without asking the controller.
const confirmBlindFetcher = fromCallback<{ type: 'NONE' }, Parameters<typeof followMetadata>[0]>(({ input }) =>
  followMetadata({ ...input, view: { ...input.view, setSyncer: (syncer) => input.view.setSyncer(syncer && (async () => true)) } }),
);

export const INJECTED_BUGS = {
  eagerAck: { broker: brokerMachine.provide({ actors: { partition: eagerPartition } }) },
  staleVote: { election: staleVoteElection },
  doubleVote: { election: doubleVoteElection },
  eagerFollowers: { broker: brokerMachine.provide({ actors: { partition: eagerFollowerPartition } }) },
  epochBlindFollower: { broker: brokerMachine.provide({ actors: { follower: epochBlindFollower } }) },
  fenceBlind: { broker: brokerMachine.provide({ actors: { partition: fenceBlindPartition } }) },
  confirmBlind: { broker: brokerMachine.provide({ actors: { metadataFetcher: confirmBlindFetcher } }) },
} satisfies Record<string, NonNullable<NodeTestSeam['machines']>>;

export type InjectedBug = keyof typeof INJECTED_BUGS;
