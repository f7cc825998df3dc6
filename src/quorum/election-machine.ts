/**
 * One controller voter: Raft roles as states (follower / preCandidate / candidate / leader), log
 * replication and the commit index. Actions only compute (replication.ts, election-rules.ts) and
 * send; the invoked `net` actor talks to the fabric and the `disk` actor to the store, strictly in
 * order. Timers are xstate delays, so they run on the clock given to createActor.
 *
 * Persistence order (KRaft's durableTransitionTo): a candidate's term and self-vote are durable
 * before its vote requests leave (candidate.persisting -> requesting on `disk.persisted`); a granted
 * vote's reply leaves only once the vote is durable (PERSIST carries it); a follower acknowledges
 * entries only after a SYNC barrier queued behind their write (and behind any term change).
 */
import { and, enqueueActions, not, or, setup, stateIn } from 'xstate';
import { diskActor } from './disk.js';
import { adoptTerm, askForVotes, drawElectionTimeout, grantVote, preVoteGranted, quorumLost, voteGranted, yieldsToMe } from './election-rules.js';
import { netActor } from './net.js';
import { acceptProposal, becomeLeader, draft, followerStep, onAppendReply, onEntriesRead, onSynced, replicate, type Draft } from './replication.js';
import { followerSnapshot, onCompacted, onSnapshotReply } from './snapshot.js';
import type { DiskCommand, NetCommand, Outbound, RaftContext, RaftEmitted, RaftEvent, RaftInput } from './types.js';

interface Enqueue {
  assign(patch: Partial<RaftContext>): void;
  sendTo(to: 'net', event: NetCommand): void;
  sendTo(to: 'disk', event: DiskCommand): void;
  emit(event: RaftEmitted): void;
}

const net = (out: Outbound): NetCommand => ({ type: 'SEND', ...out });

function flush(enqueue: Enqueue, d: Draft): void {
  enqueue.assign(d.c);
  for (const out of d.send) enqueue.sendTo('net', net(out));
  for (const command of d.disk) enqueue.sendTo('disk', command);
  for (const e of d.emit) enqueue.emit(e);
}

/** The context a voter starts with; exported for unit tests of the pure rules. */
export function initialContext(input: RaftInput): RaftContext {
  const peers = input.voters.filter((v) => v !== input.voterId);
  return {
    ...input,
    peers,
    majority: Math.floor(input.voters.length / 2) + 1,
    term: input.state.term,
    votedFor: input.state.votedFor,
    durable: input.state,
    leaderId: null,
    cache: { start: input.log.lastIndex + 1, entries: [], bytes: 0 },
    // The snapshot covers committed entries only, and the owner installed it before starting.
    commitIndex: input.log.snapshotIndex,
    applyRequested: input.log.snapshotIndex,
    syncsPending: 0,
    electionTimeoutMs: input.timeouts.electionTimeoutMsMax,
    grants: [],
    progress: {},
    selfMatch: 0,
    ticks: 0,
    leaderStartIndex: 0,
    incoming: undefined,
  };
}

const msgOf = (event: RaftEvent) => ('msg' in event ? event.msg : undefined);

export const electionMachine = setup({
  types: { input: {} as RaftInput, context: {} as RaftContext, events: {} as RaftEvent, emitted: {} as RaftEmitted },
  actors: { net: netActor, disk: diskActor },
  delays: {
    electionTimeout: ({ context }) => context.electionTimeoutMs,
    leaderLease: ({ context }) => context.timeouts.electionTimeoutMsMin,
    heartbeat: ({ context }) => context.timeouts.heartbeatIntervalMs,
  },
  guards: {
    /** Leader stickiness: a leader, or a follower that heard from one within the minimum election timeout. */
    sticky: or([stateIn('#raft.leader'), stateIn('#raft.follower.led')]),
    isLeader: stateIn('#raft.leader'),
    inFollower: stateIn('#raft.follower'),
    knowsLeader: ({ context }) => context.leaderId !== null,
    staleTerm: ({ context, event }) => (msgOf(event)?.term ?? context.term) < context.term,
    higherTerm: ({ context, event }) => (msgOf(event)?.term ?? context.term) > context.term,
    currentTerm: ({ context, event }) => msgOf(event)?.term === context.term,
    refusal: ({ event }) => (event.type === 'raft.preVoteReply' || event.type === 'raft.voteReply') && !event.msg.granted,
    preVoteGrantable: ({ context, event }) => event.type === 'raft.preVote' && preVoteGranted(context, event.msg),
    preCandidateTie: ({ context, event }) => event.type === 'raft.preVote' && yieldsToMe(context, event.msg),
    voteGrantable: ({ context, event }) => event.type === 'raft.vote' && voteGranted(context, event.msg),
    preVoteGrantedNow: ({ context, event }) => event.type === 'raft.preVoteReply' && event.msg.granted && event.msg.term === context.term + 1,
    voteGrantedNow: ({ context, event }) => event.type === 'raft.voteReply' && event.msg.granted && event.msg.term === context.term,
    wonRound: ({ context }) => context.grants.length >= context.majority,
    campaignDurable: ({ context, event }) =>
      event.type === 'disk.persisted' && event.state.term === context.term && event.state.votedFor === context.voterId,
    quorumLost: ({ context }) => quorumLost(context),
    proposalInvalid: ({ context, event }) =>
      event.type === 'propose' &&
      (event.payloads.length === 0 ||
        event.payloads.length > context.limits.proposalPayloadsMax ||
        event.payloads.some((p) => p.length === 0 || p.length > context.limits.appendBytesMax)),
    busy: ({ context }) => context.syncsPending >= context.limits.syncsPendingMax,
  },
  actions: {
    drawTimeout: enqueueActions(({ context, enqueue }) => enqueue.assign({ electionTimeoutMs: drawElectionTimeout(context) })),
    adoptTerm: enqueueActions(({ context, event, enqueue }) => {
      const d = draft(context);
      adoptTerm(d, msgOf(event)?.term ?? context.term);
      flush(enqueue, d);
    }),
    adoptLeader: enqueueActions(({ event, enqueue }) => {
      if (event.type === 'raft.append' || event.type === 'raft.installSnapshot') enqueue.assign({ leaderId: event.msg.from });
    }),
    answerPreVote: enqueueActions(({ context, event, enqueue }, params: { granted: boolean }) => {
      if (event.type !== 'raft.preVote') return;
      const term = params.granted ? event.msg.term : context.term;
      enqueue.sendTo('net', net({ to: event.msg.from, msg: { type: 'preVoteReply', from: context.voterId, term, granted: params.granted } }));
    }),
    grantVote: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'raft.vote') return;
      const d = draft(context);
      grantVote(d, event.msg);
      flush(enqueue, d);
    }),
    rejectVote: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'raft.vote') return;
      enqueue.sendTo('net', net({ to: event.msg.from, msg: { type: 'voteReply', from: context.voterId, term: context.term, granted: false } }));
    }),
    addGrant: enqueueActions(({ context, event, enqueue }) => {
      const from = msgOf(event)?.from;
      if (from !== undefined && !context.grants.includes(from)) enqueue.assign({ grants: [...context.grants, from] });
    }),
    startPreVote: enqueueActions(({ context, enqueue }) => {
      const d = draft({ ...context, grants: [context.voterId], leaderId: null });
      askForVotes(d, 'preVote');
      flush(enqueue, d);
    }),
    askPreVotes: enqueueActions(({ context, enqueue }) => {
      const d = draft(context);
      askForVotes(d, 'preVote');
      flush(enqueue, d);
    }),
    startCampaign: enqueueActions(({ context, enqueue }) => {
      const term = context.term + 1;
      context.logger.info({ term }, 'raft: standing for election');
      enqueue.assign({ term, votedFor: context.voterId, leaderId: null, grants: [context.voterId] });
      enqueue.sendTo('disk', { type: 'PERSIST', state: { term, votedFor: context.voterId }, then: undefined });
    }),
    askVotes: enqueueActions(({ context, enqueue }) => {
      const d = draft(context);
      askForVotes(d, 'vote');
      flush(enqueue, d);
    }),
    recordDurable: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'disk.persisted') return;
      enqueue.assign({ durable: event.state });
      if (event.then !== undefined && event.then.msg.term === context.term) enqueue.sendTo('net', net(event.then));
    }),
    rejectStaleAppend: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'raft.append' && event.type !== 'raft.installSnapshot') return;
      const msg = { type: 'appendReply', from: context.voterId, term: context.term, success: false, matchIndex: 0, hintIndex: 0 } as const;
      enqueue.sendTo('net', net({ to: event.msg.from, msg }));
    }),
    reportRivalLeader: ({ context, event }) => context.logger.error({ from: msgOf(event)?.from, term: context.term }, 'raft: two leaders in one term'),
    handleAppend: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'raft.append') return;
      const d = draft(context);
      followerStep(d, event.msg);
      flush(enqueue, d);
    }),
    handleSnapshot: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'raft.installSnapshot') return;
      const d = draft(context);
      followerSnapshot(d, event.msg);
      flush(enqueue, d);
    }),
    onCompacted: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'disk.compacted') return;
      const d = draft(context);
      onCompacted(d, event.snapshot);
      flush(enqueue, d);
    }),
    onSnapshotReply: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'raft.snapshotReply') return;
      const d = draft(context);
      onSnapshotReply(d, event.msg);
      flush(enqueue, d);
    }),
    onSynced: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'disk.synced') return;
      const d = draft(context);
      onSynced(d, event.token);
      flush(enqueue, d);
    }),
    becomeLeader: enqueueActions(({ context, enqueue }) => {
      context.logger.info({ term: context.term, lastIndex: context.log.lastIndex }, 'raft: elected leader');
      const d = draft(context);
      becomeLeader(d);
      flush(enqueue, d);
    }),
    loseLeadership: enqueueActions(({ context, enqueue }) => {
      context.logger.info({ term: context.term }, 'raft: no longer leader');
      enqueue.assign({ leaderId: context.leaderId === context.voterId ? null : context.leaderId, progress: {} });
      enqueue.emit({ type: 'leadership.lost', term: context.term });
    }),
    heartbeat: enqueueActions(({ context, enqueue }) => {
      const d = draft({ ...context, ticks: context.ticks + 1 });
      for (const peer of context.peers) replicate(d, peer, true);
      flush(enqueue, d);
    }),
    onAppendReply: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'raft.appendReply') return;
      const d = draft(context);
      onAppendReply(d, event.msg);
      flush(enqueue, d);
    }),
    onRead: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'disk.read' || event.term !== context.term) return;
      const d = draft(context);
      onEntriesRead(d, event.peer, event.from, event.entries);
      flush(enqueue, d);
    }),
    acceptProposal: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'propose') return;
      const d = draft(context);
      acceptProposal(d, event.id, event.payloads);
      flush(enqueue, d);
    }),
    refuse: enqueueActions(({ context, event, enqueue }, params: { code: 'NOT_CONTROLLER' | 'BUSY' | 'INVALID_REQUEST' | 'INTERNAL'; message: string }) => {
      if (event.type !== 'propose') return;
      enqueue.emit({ type: 'proposal.refused', id: event.id, code: params.code, message: params.message, leaderId: context.leaderId });
    }),
    logQuorumLost: ({ context }) => context.logger.warn({ term: context.term }, 'raft: leader lost contact with a majority; stepping down'),
    logFailed: ({ context }) => context.logger.error({ term: context.term }, 'raft: voter stopped after a store failure'),
  },
}).createMachine({
  id: 'raft',
  context: ({ input }) => initialContext(input),
  invoke: [
    {
      id: 'net',
      src: 'net',
      input: ({ context }) => ({
        transport: context.transport,
        subjectPrefix: context.subjectPrefix,
        voterId: context.voterId,
        voters: context.voters,
        logger: context.logger,
      }),
    },
    { id: 'disk', src: 'disk', input: ({ context }) => ({ worker: context.worker }) },
  ],
  initial: 'follower',
  on: {
    'raft.append': [
      { guard: 'staleTerm', actions: 'rejectStaleAppend' },
      { guard: and(['isLeader', 'currentTerm']), actions: 'reportRivalLeader' },
      { target: '.follower', actions: ['adoptTerm', 'adoptLeader', 'handleAppend'] },
    ],
    'raft.installSnapshot': [
      { guard: 'staleTerm', actions: 'rejectStaleAppend' },
      { guard: and(['isLeader', 'currentTerm']), actions: 'reportRivalLeader' },
      { target: '.follower', actions: ['adoptTerm', 'adoptLeader', 'handleSnapshot'] },
    ],
    'raft.preVote': [
      { guard: 'sticky', actions: { type: 'answerPreVote', params: { granted: false } } },
      { guard: 'preVoteGrantable', actions: { type: 'answerPreVote', params: { granted: true } } },
      { actions: { type: 'answerPreVote', params: { granted: false } } },
    ],
    'raft.vote': [
      { guard: 'sticky', actions: 'rejectVote' },
      { guard: 'voteGrantable', target: '.follower', actions: ['adoptTerm', 'grantVote'] },
      { guard: and(['higherTerm', 'inFollower']), actions: ['adoptTerm', 'rejectVote'] },
      { guard: 'higherTerm', target: '.follower', actions: ['adoptTerm', 'rejectVote'] },
      { actions: 'rejectVote' },
    ],
    // A granted pre-vote carries the proposed term, not the voter's: only a refusal tells of a higher term.
    'raft.preVoteReply': [
      { guard: and(['higherTerm', 'refusal', 'inFollower']), actions: 'adoptTerm' },
      { guard: and(['higherTerm', 'refusal']), target: '.follower', actions: 'adoptTerm' },
    ],
    'raft.voteReply': [
      { guard: and(['higherTerm', 'inFollower']), actions: 'adoptTerm' },
      { guard: 'higherTerm', target: '.follower', actions: 'adoptTerm' },
    ],
    'raft.appendReply': [
      { guard: and(['higherTerm', 'inFollower']), actions: 'adoptTerm' },
      { guard: 'higherTerm', target: '.follower', actions: 'adoptTerm' },
    ],
    'raft.snapshotReply': [
      { guard: and(['higherTerm', 'inFollower']), actions: 'adoptTerm' },
      { guard: 'higherTerm', target: '.follower', actions: 'adoptTerm' },
    ],
    'disk.persisted': { actions: 'recordDurable' },
    'disk.compacted': { actions: 'onCompacted' },
    'disk.synced': { actions: 'onSynced' },
    'disk.failed': { target: '.failed' },
    propose: { actions: { type: 'refuse', params: { code: 'NOT_CONTROLLER', message: 'not the active controller' } } },
  },
  states: {
    follower: {
      entry: 'drawTimeout',
      after: { electionTimeout: 'preCandidate' },
      initial: 'deciding',
      states: {
        deciding: { always: [{ guard: 'knowsLeader', target: 'led' }, { target: 'unled' }] },
        led: { after: { leaderLease: 'unled' } },
        unled: {},
      },
    },
    preCandidate: {
      entry: ['drawTimeout', 'startPreVote'],
      always: { guard: 'wonRound', target: 'candidate' },
      after: { electionTimeout: { target: 'preCandidate', reenter: true } },
      on: {
        'raft.preVoteReply': { guard: 'preVoteGrantedNow', actions: 'addGrant' },
        'raft.preVote': { guard: 'preCandidateTie', actions: { type: 'answerPreVote', params: { granted: false } } },
      },
      initial: 'asking',
      states: { asking: { after: { heartbeat: { target: 'asking', reenter: true, actions: 'askPreVotes' } } } },
    },
    candidate: {
      entry: ['drawTimeout', 'startCampaign'],
      after: { electionTimeout: 'preCandidate' },
      initial: 'persisting',
      states: {
        persisting: {
          on: { 'disk.persisted': [{ guard: 'campaignDurable', target: 'requesting', actions: 'recordDurable' }, { actions: 'recordDurable' }] },
        },
        requesting: {
          entry: 'askVotes',
          always: { guard: 'wonRound', target: '#raft.leader' },
          after: { heartbeat: { target: 'requesting', reenter: true } },
          on: { 'raft.voteReply': { guard: 'voteGrantedNow', actions: 'addGrant' } },
        },
      },
    },
    leader: {
      entry: 'becomeLeader',
      exit: 'loseLeadership',
      initial: 'active',
      states: {
        active: {
          after: {
            heartbeat: [
              { guard: 'quorumLost', target: '#raft.follower', actions: 'logQuorumLost' },
              { target: 'active', reenter: true, actions: 'heartbeat' },
            ],
          },
        },
      },
      on: {
        'raft.appendReply': { guard: 'currentTerm', actions: 'onAppendReply' },
        'raft.snapshotReply': { guard: 'currentTerm', actions: 'onSnapshotReply' },
        'disk.read': { actions: 'onRead' },
        propose: [
          { guard: 'proposalInvalid', actions: { type: 'refuse', params: { code: 'INVALID_REQUEST', message: 'proposal payloads must be 1..limit, each non-empty and within appendBytesMax' } } },
          { guard: 'busy', actions: { type: 'refuse', params: { code: 'BUSY', message: 'raft log writes are backed up' } } },
          { actions: 'acceptProposal' },
        ],
      },
    },
    failed: {
      entry: 'logFailed',
      on: {
        propose: { actions: { type: 'refuse', params: { code: 'INTERNAL', message: 'this voter stopped after a store failure' } } },
        '*': {},
      },
    },
  },
});

export type ElectionMachine = typeof electionMachine;
