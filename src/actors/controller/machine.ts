/**
 * The controller: on the controller voter that Raft elected (and only while it leads), the one
 * writer of metadata. Topic administration, broker registrations and the fencing and unfencing of
 * brokers are jobs in one queue, each planned by the pure planner and committed through the quorum;
 * heartbeats are answered from memory and feed the broker sessions (KRaft keeps them out of the log
 * too). A broker not heard from for `sessionTimeoutMs` is fenced and its partitions get new leaders.
 * Producer sessions (issue 12) are kept the same way (producer-sessions.ts): answered from memory,
 * except exclusive grants and releases, which are jobs in the same queue.
 */
import { assign, enqueueActions, fromPromise, setup } from 'xstate';
import { applyRecords, subscriptionOf, topicByName, type MetadataImage } from '../../metadata/image.js';
import type { QuorumMetadataStore } from '../../metadata/metadata-store.js';
import { planAlterPartition, planControlledShutdown, planElectLeaders, planPreferredElections } from '../../metadata/partition-planner.js';
import {
  planAlterConfig,
  planCreatePartitions,
  planCreateSubscription,
  planCreateTopic,
  planDeleteSubscription,
  planDeleteTopic,
  planFenceBroker,
  planRecoveryElections,
  planUncleanRestart,
  planUnfenceBroker,
  uncleanEnabled,
  unfencedIn,
} from '../../metadata/planner.js';
import { planProducerGrant, planProducerRelease } from '../../metadata/producer-planner.js';
import type { MetadataRecord } from '../../metadata/records.js';
import type { AlterPartitionReply, ControlledShutdownReply, RegisterBrokerReply } from '../../protocol/controller-messages.js';
import { TidemarkError } from '../../protocol/errors.js';
import type { CreateTopicReply, DeleteTopicReply, ElectLeadersReply } from '../../protocol/messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { ProducerAttachReply, ProducerDetachReply } from '../../protocol/producer-messages.js';
import type { CreateSubscriptionReply } from '../../protocol/subscription-messages.js';
import type { Clock, Logger, Random, Transport } from '../../runtime/ports.js';
import { topicMetadata } from '../broker/metadata-view.js';
import { outbox } from '../outbox.js';
import { adminListener } from './admin-listener.js';
import { brokerListener } from './broker-listener.js';
import { leadershipWatch, type LeadershipSource } from './leadership-watch.js';
import { metadataServer } from './metadata-server.js';
import * as producers from './producer-sessions.js';
import type { ControllerEvent, ControllerJob, LogEndReports } from './types.js';

export interface ControllerInput {
  subjects: Subjects;
  transport: Transport;
  metadata: QuorumMetadataStore;
  raft: LeadershipSource;
  clock: Clock;
  random: Random;
  logger: Logger;
  /** Jobs waiting behind the one being applied. Beyond it: BUSY. @default 256 */
  adminQueueMax: number;
  /** A broker silent this long is fenced, ms. @default 2000 */
  sessionTimeoutMs: number;
  /** Leadership poll and session check period, ms. @default 50 */
  tickMs: number;
  /**
   * How often leadership moves back to preferred replicas that are in sync (Kafka's
   * auto.leader.rebalance), ms; also the cooldown after a broker returns. 0 disables. @default 10000
   */
  preferredElectionIntervalMs: number;
  /**
   * A producer silent this long loses its session, and an exclusive one its claim (issue 12); a new
   * controller also waits this long before granting an Exclusive claim, ms. @default 10000
   */
  producerSessionTimeoutMs: number;
}

interface ControllerContext extends ControllerInput {
  queue: ControllerJob[];
  /** Last heartbeat per broker, on this controller's clock (reset when it becomes active). */
  lastSeenMs: Record<number, number>;
  /** Metadata offset a fenced broker must reach before it is unfenced. */
  caughtUpAt: Record<number, number>;
  /** When the last session check ran, to notice that this process itself was paused. */
  lastTickMs: number;
  /** Brokers in controlled shutdown: they may not lead or join an ISR (in memory, as in KRaft). */
  shuttingDown: number[];
  /** When automatic preferred-leader election last ran. */
  lastPreferredMs: number;
  /** Brokers' copies of partitions awaiting a recovery election, from their heartbeats (in memory). */
  logEnds: LogEndReports;
  /** Producer sessions, waiters and owners' liveness (in memory; the epoch and owner are the image's). */
  producers: producers.ProducerSessions;
}

type JobResult = { body: object | undefined; brokerId?: number; caughtUpAt?: number; shuttingDown?: number };

function randomTopicId(random: Random): string {
  let id = '';
  for (let i = 0; i < 16; i++) id += Math.floor(random.next() * 256).toString(16).padStart(2, '0');
  return id;
}

/**
 * Plans and commits one job; resolves with the reply body. Throws TidemarkError for refusals.
 *
 * Every answer is linearizable, refusals and no-change answers included: they were decided from
 * this controller's committed image, which is stale if a newer controller exists (this process was
 * paused, or cut off, and has not noticed yet). Such an answer goes out only after a barrier entry
 * commits in this controller's term, which no deposed controller can do (Kafka answers a write
 * that produced no records once its last write offset commits). A partition leader trusts a
 * refusal to mean its ISR change will never commit; a stale refusal let it drop a change that a
 * newer controller then committed, and count the high watermark over too small an ISR.
 */
async function applyJob(job: ControllerJob, metadata: QuorumMetadataStore, random: Random, shuttingDown: readonly number[]): Promise<JobResult> {
  let proposed = false;
  try {
    return await planAndCommit(job, metadata, random, shuttingDown, (records) => {
      proposed = true;
      return records.length === 0 && job.replyTo === undefined ? Promise.resolve(metadata.image()) : metadata.propose(records);
    });
  } catch (err) {
    if (proposed || job.replyTo === undefined) throw err;
    await metadata.propose([]);
    throw err;
  }
}

async function planAndCommit(
  job: ControllerJob,
  metadata: QuorumMetadataStore,
  random: Random,
  shuttingDown: readonly number[],
  commit: (records: MetadataRecord[]) => Promise<MetadataImage>,
): Promise<JobResult> {
  const image = metadata.image();
  const eligible = unfencedIn(image, new Set(shuttingDown));
  switch (job.op) {
    case 'alter-partition': {
      const r = job.request;
      const next = await commit(planAlterPartition(image, r, eligible));
      const p = next.topicsById.get(r.topicId)!.partitions[r.partition]!;
      const reply: AlterPartitionReply = { leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch, isr: [...p.isr], metadataOffset: next.offset };
      return { body: reply };
    }
    case 'shutdown': {
      const { brokerId, brokerEpoch } = job.request;
      if (image.brokers.get(brokerId)?.epoch !== brokerEpoch) throw new TidemarkError('STALE_BROKER_EPOCH', `broker ${brokerId} epoch ${brokerEpoch} is not its registration`);
      const plan = planControlledShutdown(image, brokerId, unfencedIn(image, new Set([...shuttingDown, brokerId])));
      const next = await commit(plan.records);
      const reply: ControlledShutdownReply = { remainingLeaders: plan.remaining, metadataOffset: next.offset };
      return { body: reply, shuttingDown: brokerId };
    }
    case 'elect-leaders': {
      const plan = planElectLeaders(image, job.request, eligible);
      const next = await commit(plan.records);
      const reply: ElectLeadersReply = { results: plan.results, metadataOffset: next.offset };
      return { body: reply };
    }
    case 'elect-preferred':
      await commit(planPreferredElections(image, eligible));
      return { body: undefined };
    case 'create-topic': {
      const start = Math.floor(random.next() * Math.max(1, image.brokers.size));
      const next = await commit(planCreateTopic(image, job.request, randomTopicId(random), start));
      const reply: CreateTopicReply = { topic: topicMetadata(topicByName(next, job.request.name)!), metadataOffset: next.offset };
      return { body: reply };
    }
    case 'delete-topic': {
      const next = await commit(planDeleteTopic(image, job.request));
      const reply: DeleteTopicReply = { metadataOffset: next.offset };
      return { body: reply };
    }
    case 'alter-config': {
      const next = await commit(planAlterConfig(image, job.request.name, job.request.set, job.request.delete, eligible));
      const reply: CreateTopicReply = { topic: topicMetadata(topicByName(next, job.request.name)!), metadataOffset: next.offset };
      return { body: reply };
    }
    case 'create-partitions': {
      const start = Math.floor(random.next() * Math.max(1, image.brokers.size));
      const next = await commit(planCreatePartitions(image, job.request.name, job.request.totalCount, start));
      const reply: CreateTopicReply = { topic: topicMetadata(topicByName(next, job.request.name)!), metadataOffset: next.offset };
      return { body: reply };
    }
    case 'create-subscription': {
      const r = job.request;
      const plan = planCreateSubscription(image, r);
      // An existing one: the empty commit is the barrier that makes the answer linearizable.
      const next = await commit(plan.records);
      const topic = topicByName(next, r.topic);
      const subscription = plan.existing ?? (topic === undefined ? undefined : subscriptionOf(topic, r.name));
      if (subscription === undefined) throw new TidemarkError('INTERNAL', `subscription ${r.topic}/${r.name} missing after its commit`);
      const reply: CreateSubscriptionReply = { subscription: { ...subscription }, created: plan.existing === undefined, metadataOffset: next.offset };
      return { body: reply };
    }
    case 'delete-subscription': {
      const next = await commit(planDeleteSubscription(image, job.request));
      const reply: DeleteTopicReply = { metadataOffset: next.offset };
      return { body: reply };
    }
    case 'register': {
      const { brokerId, rack, incarnation } = job.request;
      const known = image.brokers.get(brokerId);
      // A retried registration of the same process: same epoch, nothing to commit.
      if (known !== undefined && known.incarnation === incarnation) {
        await commit([]);
        return { body: { brokerEpoch: known.epoch } satisfies RegisterBrokerReply };
      }
      // A new process with this id replaces the old registration: fence that one first.
      const fence = planFenceBroker(image, brokerId, uncleanEnabled, eligible);
      const records = [
        ...fence,
        ...(job.request.uncleanShutdown === true ? planUncleanRestart(applyRecords(image, fence, image.offset), brokerId) : []),
        { type: 'RegisterBroker' as const, brokerId, brokerEpoch: (known?.epoch ?? 0) + 1, rack, fenced: true, incarnation },
      ];
      const next = await commit(records);
      return { body: { brokerEpoch: next.brokers.get(brokerId)!.epoch } satisfies RegisterBrokerReply, brokerId, caughtUpAt: next.offset };
    }
    case 'fence': {
      // Unfenced again only once its metadata reaches this fence (KRaft waits for the committed
      // offset): a broker with an older image would restart leaders of epochs that are gone.
      const next = await commit(planFenceBroker(image, job.brokerId, uncleanEnabled, eligible));
      return { body: undefined, brokerId: job.brokerId, caughtUpAt: next.offset };
    }
    case 'unfence':
      await commit(planUnfenceBroker(image, job.brokerId));
      return { body: undefined };
    case 'producer-grant': {
      const next = await commit(planProducerGrant(image, job.grant));
      const access = next.topicsById.get(job.grant.topicId)?.producerAccess;
      if (access?.owner?.sessionId !== job.grant.owner.sessionId) throw new TidemarkError('BUSY', 'the producer grant was overtaken; retry');
      const reply: ProducerAttachReply = { status: 'granted', epoch: access.epoch, fence: true, heartbeatIntervalMs: job.heartbeatIntervalMs };
      return { body: reply };
    }
    case 'producer-release': {
      const next = await commit(planProducerRelease(image, job.topicId, job.sessionId));
      const reply: ProducerDetachReply = { metadataOffset: next.offset };
      return { body: reply };
    }
    case 'recover': {
      const reports = job.reports;
      const report = (brokerId: number, topicId: string, partition: number) => {
        const r = reports[brokerId];
        const end = r?.ends[`${topicId}/${partition}`];
        return r === undefined || end === undefined ? undefined : { brokerEpoch: r.brokerEpoch, ...end };
      };
      await commit(planRecoveryElections(image, report, eligible));
      return { body: undefined };
    }
  }
}

const producerConfig = (context: ControllerInput): producers.ProducerSessionConfig => ({ timeoutMs: context.producerSessionTimeoutMs });

/** The jobs a producer-session step asks for: its grants and releases, committed in queue order. */
function producerJobs(context: ControllerInput, step: producers.Step): ControllerJob[] {
  const heartbeatIntervalMs = producers.heartbeatIntervalMs(context.producerSessionTimeoutMs);
  return [
    ...step.grants.map((g): ControllerJob => ({ op: 'producer-grant', grant: g.grant, heartbeatIntervalMs, replyTo: g.replyTo, deadlineMs: g.deadlineMs })),
    ...step.releases.map((r): ControllerJob => ({ op: 'producer-release', topicId: r.topicId, sessionId: r.sessionId, replyTo: r.replyTo, deadlineMs: r.deadlineMs })),
  ];
}

const queued = (queue: readonly ControllerJob[], op: 'fence' | 'unfence', brokerId: number) =>
  queue.some((j) => j.op === op && j.brokerId === brokerId);

export const controllerMachine = setup({
  types: {
    input: {} as ControllerInput,
    context: {} as ControllerContext,
    events: {} as ControllerEvent,
  },
  actors: {
    leadershipWatch,
    adminListener,
    brokerListener,
    metadataServer,
    outbox,
    apply: fromPromise<JobResult, { job: ControllerJob; metadata: QuorumMetadataStore; random: Random; nowMs: number; shuttingDown: readonly number[] }>(({ input }) => {
      if (input.nowMs > input.job.deadlineMs) return Promise.reject(new TidemarkError('TIMEOUT', 'request expired in the controller queue'));
      return applyJob(input.job, input.metadata, input.random, input.shuttingDown);
    }),
  },
  actions: {
    enqueue: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'ADMIN') return;
      if (context.queue.length >= context.adminQueueMax) {
        if (event.job.replyTo !== undefined) {
          enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: event.job.replyTo, error: new TidemarkError('BUSY', 'controller queue is full').toWire() });
        }
        return;
      }
      enqueue.assign({ queue: [...context.queue, event.job] });
    }),
    heartbeat: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'HEARTBEAT') return;
      const broker = context.metadata.image().brokers.get(event.brokerId);
      if (broker === undefined || broker.epoch !== event.brokerEpoch) {
        const error = new TidemarkError('STALE_BROKER_EPOCH', `broker ${event.brokerId} epoch ${event.brokerEpoch} is not its registration (${broker?.epoch ?? 'none'})`);
        enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: event.replyTo, error: error.toWire() });
        return;
      }
      enqueue.assign({ lastSeenMs: { ...context.lastSeenMs, [event.brokerId]: event.nowMs } });
      if (event.logEnds.length > 0) {
        const ends = Object.fromEntries(event.logEnds.map((e) => [`${e.topicId}/${e.partition}`, { lastEpoch: e.lastEpoch, logEndOffset: e.logEndOffset }]));
        const logEnds = { ...context.logEnds, [event.brokerId]: { brokerEpoch: event.brokerEpoch, ends } };
        enqueue.assign({ logEnds });
        if (!context.queue.some((j) => j.op === 'recover')) {
          enqueue.assign({ queue: [...context.queue, { op: 'recover', reports: logEnds, replyTo: undefined, deadlineMs: event.nowMs + context.sessionTimeoutMs }] });
        }
      }
      const caughtUpAt = context.caughtUpAt[event.brokerId] ?? context.metadata.image().offset;
      if (broker.fenced && event.metadataOffset >= caughtUpAt && !queued(context.queue, 'unfence', event.brokerId)) {
        enqueue.assign({ queue: [...context.queue, { op: 'unfence', brokerId: event.brokerId, replyTo: undefined, deadlineMs: event.nowMs + context.sessionTimeoutMs }] });
      }
      enqueue.sendTo('outbox', { type: 'REPLY', replyTo: event.replyTo, body: { fenced: broker.fenced, metadataOffset: context.metadata.image().offset } });
    }),
    producerRequest: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'PRODUCER_ATTACH' && event.type !== 'PRODUCER_HEARTBEAT' && event.type !== 'PRODUCER_DETACH') return;
      const image = context.metadata.image();
      const topic = topicByName(image, event.request.topic);
      // Attaches and detaches may queue a commit: bounded by the queue, as admin jobs are.
      if (event.type !== 'PRODUCER_HEARTBEAT' && context.queue.length >= context.adminQueueMax) {
        enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: event.replyTo, error: new TidemarkError('BUSY', 'controller queue is full').toWire() });
        return;
      }
      const cfg = producerConfig(context);
      const step =
        event.type === 'PRODUCER_ATTACH'
          ? producers.attach(context.producers, topic, event.request, event.replyTo, event.nowMs, cfg)
          : event.type === 'PRODUCER_HEARTBEAT'
            ? producers.heartbeat(context.producers, topic, event.request, event.replyTo, event.nowMs, cfg)
            : producers.detach(context.producers, topic, event.request, event.replyTo, event.nowMs, image.offset);
      const jobs = producerJobs(context, step);
      enqueue.assign({ producers: step.state, ...(jobs.length > 0 ? { queue: [...context.queue, ...jobs] } : {}) });
      for (const answer of step.answers) enqueue.sendTo('outbox', answer);
    }),
    checkProducerSessions: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'TICK') return;
      // The same pause rule as broker sessions' (checkSessions, which runs after this and records the tick).
      const gapMs = event.nowMs - context.lastTickMs;
      const paused = context.lastTickMs > 0 && gapMs > Math.min(context.sessionTimeoutMs, context.producerSessionTimeoutMs) / 2;
      const step = producers.tick(context.producers, context.metadata.image(), event.nowMs, paused, producerConfig(context));
      for (const r of step.releases) {
        context.logger.warn({ topicId: r.topicId, sessionId: r.sessionId, timeoutMs: context.producerSessionTimeoutMs }, 'exclusive producer session expired; releasing the topic');
      }
      const jobs = producerJobs(context, step);
      enqueue.assign({ producers: step.state, ...(jobs.length > 0 ? { queue: [...context.queue, ...jobs] } : {}) });
      for (const answer of step.answers) enqueue.sendTo('outbox', answer);
    }),
    checkSessions: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'TICK') return;
      enqueue.assign({ lastTickMs: event.nowMs });
      // A long gap between ticks means this process was paused (SIGSTOP, GC, swap): the silence it
      // sees is its own. Give every broker a fresh session instead of fencing them all.
      if (context.lastTickMs > 0 && event.nowMs - context.lastTickMs > context.sessionTimeoutMs / 2) {
        context.logger.warn({ gapMs: event.nowMs - context.lastTickMs }, 'controller was paused; restarting broker sessions');
        enqueue.assign({ lastSeenMs: Object.fromEntries([...context.metadata.image().brokers.keys()].map((id) => [id, event.nowMs])) });
        return;
      }
      const expired: ControllerJob[] = [];
      for (const broker of context.metadata.image().brokers.values()) {
        const seen = context.lastSeenMs[broker.id] ?? event.nowMs;
        if (broker.fenced || event.nowMs - seen <= context.sessionTimeoutMs || queued(context.queue, 'fence', broker.id)) continue;
        context.logger.warn({ brokerId: broker.id, silentMs: event.nowMs - seen }, 'broker session expired; fencing it');
        expired.push({ op: 'fence', brokerId: broker.id, replyTo: undefined, deadlineMs: event.nowMs + context.sessionTimeoutMs });
      }
      const preferredDue =
        context.preferredElectionIntervalMs > 0 &&
        event.nowMs - context.lastPreferredMs >= context.preferredElectionIntervalMs &&
        !context.queue.some((j) => j.op === 'elect-preferred');
      if (preferredDue) {
        expired.push({ op: 'elect-preferred', replyTo: undefined, deadlineMs: event.nowMs + context.sessionTimeoutMs });
        enqueue.assign({ lastPreferredMs: event.nowMs });
      }
      if (expired.length > 0) enqueue.assign({ queue: [...context.queue, ...expired] });
    }),
    /** A new active controller gives every broker a full session before fencing it (KRaft does too). */
    becomeActive: assign(({ context, event }) => {
      const nowMs = event.type === 'ACTIVE' ? event.nowMs : 0;
      context.logger.info({ offset: context.metadata.image().offset }, 'active controller');
      return {
        lastSeenMs: Object.fromEntries([...context.metadata.image().brokers.keys()].map((id) => [id, nowMs])),
        caughtUpAt: {},
        lastTickMs: nowMs,
        shuttingDown: [],
        lastPreferredMs: nowMs,
        logEnds: {},
        producers: producers.activeSessions(nowMs, context.producerSessionTimeoutMs),
      };
    }),
    finishJob: enqueueActions(({ context, event, enqueue }) => {
      const job = context.queue[0]!;
      if ('output' in event) {
        const result = event.output as JobResult;
        if (job.replyTo !== undefined && result.body !== undefined) enqueue.sendTo('outbox', { type: 'REPLY', replyTo: job.replyTo, body: result.body });
        if (result.brokerId !== undefined && result.caughtUpAt !== undefined) {
          enqueue.assign({ caughtUpAt: { ...context.caughtUpAt, [result.brokerId]: result.caughtUpAt } });
        }
        // A broker registering again or fenced is no longer shutting down; one that asked now is.
        const stillShutting = context.shuttingDown.filter((id) => id !== result.brokerId);
        enqueue.assign({ shuttingDown: result.shuttingDown === undefined ? stillShutting : [...new Set([...stillShutting, result.shuttingDown])] });
      } else if ('error' in event) {
        const err = event.error instanceof TidemarkError ? event.error : new TidemarkError('INTERNAL', 'metadata commit failed', { cause: event.error });
        if (err.code === 'INTERNAL') context.logger.error({ err: event.error, op: job.op }, 'controller job failed');
        if (job.replyTo !== undefined) enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: job.replyTo, error: err.toWire() });
      }
      if (job.op === 'producer-grant') {
        const step = producers.grantDone(context.producers, context.metadata.image(), job.grant, 'output' in event, producerConfig(context));
        enqueue.assign({ producers: step.state });
        for (const answer of step.answers) enqueue.sendTo('outbox', answer);
      } else if (job.op === 'producer-release') {
        enqueue.assign({ producers: producers.releaseDone(context.producers, context.metadata.image(), job.topicId) });
      }
      enqueue.assign({ queue: context.queue.slice(1) });
    }),
    /** Jobs waiting when leadership is lost are refused: the new controller takes the retries. */
    refuseQueued: enqueueActions(({ context, enqueue }) => {
      for (const answer of producers.standby(context.producers)) enqueue.sendTo('outbox', answer);
      for (const job of context.queue) {
        if (job.replyTo === undefined) continue;
        enqueue.sendTo('outbox', { type: 'REPLY_ERROR', replyTo: job.replyTo, error: new TidemarkError('NOT_CONTROLLER', 'controller changed').toWire() });
      }
      enqueue.assign({ queue: [], producers: producers.activeSessions(0, 0) });
    }),
  },
  guards: {
    hasWork: ({ context }) => context.queue.length > 0,
  },
}).createMachine({
  id: 'controller',
  context: ({ input }) => ({ ...input, queue: [], lastSeenMs: {}, caughtUpAt: {}, lastTickMs: 0, shuttingDown: [], lastPreferredMs: 0, logEnds: {}, producers: producers.activeSessions(0, input.producerSessionTimeoutMs) }),
  initial: 'running',
  states: {
    running: {
      invoke: [
        { src: 'leadershipWatch', input: ({ context }) => ({ raft: context.raft, clock: context.clock, tickMs: context.tickMs }) },
        { id: 'outbox', src: 'outbox', input: ({ context }) => ({ transport: context.transport, logger: context.logger }) },
      ],
      on: { STOP: 'stopped' },
      initial: 'standby',
      states: {
        standby: {
          on: { ACTIVE: { target: 'active', actions: 'becomeActive' } },
        },
        active: {
          invoke: [
            { src: 'adminListener', input: ({ context }) => ({ subjects: context.subjects, transport: context.transport, clock: context.clock, logger: context.logger }) },
            { src: 'brokerListener', input: ({ context }) => ({ subjects: context.subjects, transport: context.transport, clock: context.clock, logger: context.logger }) },
            {
              src: 'metadataServer',
              input: ({ context }) => ({ subjects: context.subjects, transport: context.transport, metadata: context.metadata, clock: context.clock, logger: context.logger, waitersMax: 1024 }),
            },
          ],
          on: {
            ADMIN: { actions: 'enqueue' },
            HEARTBEAT: { actions: 'heartbeat' },
            PRODUCER_ATTACH: { actions: 'producerRequest' },
            PRODUCER_HEARTBEAT: { actions: 'producerRequest' },
            PRODUCER_DETACH: { actions: 'producerRequest' },
            TICK: { actions: ['checkProducerSessions', 'checkSessions'] },
            STANDBY: { target: 'standby', actions: 'refuseQueued' },
          },
          initial: 'idle',
          states: {
            idle: { always: { guard: 'hasWork', target: 'applying' } },
            applying: {
              invoke: {
                src: 'apply',
                input: ({ context }) => ({
                  job: context.queue[0]!,
                  metadata: context.metadata,
                  random: context.random,
                  nowMs: context.clock.now(),
                  shuttingDown: context.shuttingDown,
                }),
                onDone: { target: 'idle', actions: 'finishJob' },
                onError: { target: 'idle', actions: 'finishJob' },
              },
            },
          },
        },
      },
    },
    stopped: { type: 'final' },
  },
});
