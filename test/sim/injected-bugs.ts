/**
 * Deliberately wrong product machines, built with xstate's `machine.provide()` (no switch in the
 * product code), to show that the simulator's checkers catch real classes of bugs:
 * - `eagerAck`: the partition answers a produce as soon as it accepts the batch, before the append
 *   completes (so before the high watermark covers it);
 * - `staleVote`: the Raft election grants (pre-)votes without comparing logs (Raft's election
 *   restriction, §5.4.1), so a voter missing committed entries can win and overwrite them;
 * - `doubleVote`: the Raft election grants a vote without looking at `votedFor`, so a voter can
 *   vote twice in one term. Pre-vote and the pre-candidate tie-break make the simultaneous
 *   candidacies this needs rare in whole-cluster runs; the quorum tests force them instead.
 */
import { enqueueActions } from 'xstate';
import { brokerMachine } from '../../src/actors/broker/machine.js';
import { partitionMachine } from '../../src/actors/partition/machine.js';
import { recordAppend } from '../../src/actors/partition/producer-state.js';
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

export const INJECTED_BUGS = {
  eagerAck: { broker: brokerMachine.provide({ actors: { partition: eagerPartition } }) },
  staleVote: { election: staleVoteElection },
  doubleVote: { election: doubleVoteElection },
} satisfies Record<string, NonNullable<NodeTestSeam['machines']>>;

export type InjectedBug = keyof typeof INJECTED_BUGS;
