/**
 * The broker: registers with the active controller and heartbeats (controller-session), follows
 * committed metadata (metadata-fetcher into its view), and runs, while unfenced, one actor per
 * partition it holds a replica of: the leader machine where metadata names it leader, a follower
 * where another broker leads; its request listener routes produce, fetch and replica-fetch to the
 * leaders. A new leader epoch (or role) stops the actor and starts a new one once the old one is
 * done; an ISR change within an epoch is passed to the running leader. On STOP it first asks the
 * controller to move its leaderships away (controlled shutdown), then stops listening, lets every
 * partition finish its pending writes, and ends.
 */
import { assign, enqueueActions, fromCallback, setup, type AnyActorRef } from 'xstate';
import type { FollowedView } from '../../metadata/followed-view.js';
import { emptyImage, type MetadataImage } from '../../metadata/image.js';
import type { MetadataView } from '../../metadata/metadata-store.js';
import { parseTopicConfig } from '../../metadata/topic-config.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Random, Transport } from '../../runtime/ports.js';
import type { NodeStorage } from '../../storage/partition-store.js';
import { withLocalReplies, type LocalReplies } from '../../runtime/local-replies.js';
import { followerMachine } from '../partition/follower.js';
import { ReplicaFetchers } from '../replica-fetcher/fetcher.js';
import { SessionHub, sessionListener } from '../replica-fetcher/session-listener.js';
import { DEFAULT_SESSION_LIMITS, LOCAL_REPLY_PREFIX } from '../replica-fetcher/sessions.js';
import { REPLICA_FETCH_BACKOFF_MS_MAX } from '../partition/follower.js';
import { lagCheckIntervalMs, wantsLagCheck } from '../partition/leader-state.js';
import { partitionMachine, type PartitionContext } from '../partition/machine.js';
import type { PendingBytesBudget } from '../partition/pending-budget.js';
import type { PartitionLimits, ReplicaWatch } from '../partition/types.js';
import { controlledShutdown } from './controlled-shutdown.js';
import { controllerSession, type SessionEvent } from './controller-session.js';
import { metadataFetcher } from './metadata-fetcher.js';
import { partitionActorId } from './metadata-view.js';
import { requestListener } from './request-listener.js';
import { SubscriptionHub, subscriptionListener } from '../subscription/listener.js';
import { noMetrics, type NodeMetrics } from '../../metrics/port.js';

export interface BrokerTimeouts {
  /** Between heartbeats to the controller, ms. @default 250 */
  heartbeatIntervalMs: number;
  /** Metadata fetch long poll, ms. @default 1000 */
  metadataFetchWaitMs: number;
  /** Bound on a clean shutdown: partitions still writing after this are abandoned, ms. @default 10000 */
  shutdownTimeoutMs: number;
}

export const DEFAULT_BROKER_TIMEOUTS: BrokerTimeouts = { heartbeatIntervalMs: 250, metadataFetchWaitMs: 1000, shutdownTimeoutMs: 10_000 };

export interface BrokerInput {
  brokerId: number;
  rack: string;
  /** Random per process start; see the controller session. */
  incarnation: string;
  subjects: Subjects;
  transport: Transport;
  /** This broker's copy of the metadata, kept current by the metadata fetcher. */
  metadata: FollowedView;
  storage: NodeStorage;
  clock: Clock;
  /** For the jitter of retry waits, here and in the partition actors. */
  random: Random;
  logger: Logger;
  partitionLimits: PartitionLimits;
  /** The node-wide pending-append bytes bound, shared by every leader this broker runs. */
  pendingBudget: PendingBytesBudget;
  timeouts: BrokerTimeouts;
  /** Where the request listener, the controller session and the partition leaders report. @default noMetrics */
  metrics?: NodeMetrics;
}

interface RunningPartition {
  /** The child actor's id: the leader's is also its system id (the request listener finds it by it). */
  actorId: string;
  role: 'leader' | 'follower';
  topicId: string;
  partition: number;
  leaderEpoch: number;
  partitionEpoch: number;
  /** The config the actor was last given, to notice changes. */
  configKey: string;
  closing: boolean;
}

export interface BrokerContext extends BrokerInput {
  metrics: NodeMetrics;
  /**
   * Reply subjects answered in-process (the produce handler gathers its partitions' answers on
   * them; the fetch sessions route theirs by prefix); `transport` is the input's, wrapped so that
   * publishes on those subjects stay local.
   */
  local: LocalReplies;
  partitions: Record<string, RunningPartition>;
  image: MetadataImage;
  /** -1 until registered. */
  brokerEpoch: number;
  /** Fenced brokers lead nothing; a broker starts fenced until the controller says otherwise. */
  fenced: boolean;
  /**
   * The controller's metadata offset when it last said unfenced: no partition actor starts before
   * this broker's image reaches it. A broker fenced for a while (or told so by a deposed
   * controller) has stale metadata; a leader restarted from it at the same leader epoch counted
   * its high watermark over an ISR older than the committed one (sim seed 40501044).
   */
  unfencedAtOffset: number;
  /** In controlled shutdown: no new partition actors (a new follower would only ask to rejoin ISRs). */
  leaving: boolean;
  /** The fetch sessions of follower brokers with this one, as its partition leaders see them. */
  sessionHub: SessionHub;
  /** One fetch session per leader broker, for this broker's followers. */
  fetchers: ReplicaFetchers;
  /** The subscriptions of the partitions this broker leads, as its partition leaders report them. */
  subscriptionHub: SubscriptionHub;
  /** What every partition leader reports to: the fetch sessions and the subscriptions. */
  leaderWatch: ReplicaWatch;
  /** When the node tick last asked for retention / lag checks, ms. */
  retainedAtMs: number;
  lagCheckedAtMs: number;
}

export type BrokerEvent =
  | { type: 'METADATA_UPDATED'; image: MetadataImage }
  | SessionEvent
  /** A partition actor reached its final state (stopped or deleted). */
  | { type: `xstate.done.actor.${string}`; output: { topicId: string; partition: number } }
  /** A partition actor crashed (a bug): it is logged and forgotten; the next reconcile restarts it. */
  | { type: `xstate.error.actor.${string}`; error: unknown }
  | { type: 'STOP' }
  /** The node tick (nodeTicker). */
  | { type: 'NODE_TICK'; nowMs: number };

/**
 * The node's one periodic timer for its partitions (instead of one per partition): every
 * `intervalMs` it tells the broker the time, which the broker fans out to the partitions that need
 * it (fanOutTick).
 */
const nodeTicker = fromCallback<{ type: 'NONE' }, { clock: Clock; intervalMs: number }>(({ input, sendBack }) => {
  let timer: unknown;
  const arm = () => {
    timer = input.clock.setTimeout(() => {
      sendBack({ type: 'NODE_TICK', nowMs: input.clock.now() });
      arm();
    }, input.intervalMs);
  };
  arm();
  return () => input.clock.clearTimeout(timer);
});

const metadataFollower = fromCallback<{ type: 'NONE' }, { metadata: MetadataView }>(({ input, sendBack }) => {
  sendBack({ type: 'METADATA_UPDATED', image: input.metadata.image() });
  return input.metadata.subscribe((image) => sendBack({ type: 'METADATA_UPDATED', image }));
});

export const brokerMachine = setup({
  types: {
    input: {} as BrokerInput,
    context: {} as BrokerContext,
    events: {} as BrokerEvent,
  },
  actors: { partition: partitionMachine, follower: followerMachine, requestListener, sessionListener, subscriptionListener, nodeTicker, metadataFollower, metadataFetcher, controllerSession, controlledShutdown },
  actions: {
    /** Start actors for replicas this broker holds (unfenced); stop the others; delete those whose topic is gone. */
    reconcile: enqueueActions(({ context, enqueue }) => {
      const image = context.image;
      const partitions = { ...context.partitions };
      const wanted = new Set<string>();
      const serving = !context.fenced && image.offset >= context.unfencedAtOffset;
      for (const topic of serving ? image.topicsById.values() : []) {
        const configKey = JSON.stringify(topic.config);
        // Parsed once per topic, and only when an actor needs it (this runs on every metadata change).
        let parsed: ReturnType<typeof parseTopicConfig> | undefined;
        const topicConfig = () => (parsed ??= parseTopicConfig(topic.config));
        for (const p of topic.partitions) {
          if (!p.replicas.includes(context.brokerId) || p.leader < 0) continue;
          const role = p.leader === context.brokerId ? 'leader' : 'follower';
          const key = partitionActorId(topic.topicId, p.partition);
          const running = partitions[key];
          // A new leader epoch or role is a new actor: the old one closes first, then the new one starts.
          if (running !== undefined && (running.closing || running.leaderEpoch !== p.leaderEpoch || running.role !== role)) continue;
          if (running === undefined && context.leaving) continue;
          wanted.add(key);
          if (running === undefined) {
            const config = topicConfig();
            const logger = context.logger.child({ actor: role, topic: topic.name, partition: p.partition });
            const common = {
              topic: topic.name,
              topicId: topic.topicId,
              partition: p.partition,
              leaderEpoch: p.leaderEpoch,
              brokerId: context.brokerId,
              config,
              storage: context.storage,
              subjects: context.subjects,
              random: context.random,
              logger,
              limits: context.partitionLimits,
            };
            const actorId = role === 'leader' ? key : `follower:${topic.topicId}/${p.partition}`;
            if (role === 'leader') {
              enqueue.spawnChild('partition', {
                id: actorId,
                systemId: actorId,
                input: {
                  ...common,
                  brokerEpoch: context.brokerEpoch,
                  clock: context.clock,
                  replicas: p.replicas,
                  isr: p.isr,
                  partitionEpoch: p.partitionEpoch,
                  suspects: p.suspects,
                  pendingBudget: context.pendingBudget,
                  transport: context.transport,
                  replicaWatch: context.leaderWatch,
                  metrics: context.metrics,
                },
              });
            } else {
              enqueue.spawnChild('follower', {
                id: actorId,
                input: { ...common, transport: context.transport, clock: context.clock, leaderId: p.leader, fetchers: context.fetchers },
              });
            }
            partitions[key] = { actorId, role, topicId: topic.topicId, partition: p.partition, leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch, configKey, closing: false };
            continue;
          }
          if (running.configKey !== configKey) enqueue.sendTo(running.actorId, { type: 'CONFIG', config: topicConfig() });
          if (role === 'leader' && running.partitionEpoch !== p.partitionEpoch) {
            enqueue.sendTo(running.actorId, { type: 'ASSIGNMENT', replicas: p.replicas, isr: p.isr, partitionEpoch: p.partitionEpoch, suspects: p.suspects });
          }
          partitions[key] = { ...running, configKey, partitionEpoch: p.partitionEpoch };
        }
      }
      for (const [key, running] of Object.entries(partitions)) {
        if (wanted.has(key) || running.closing) continue;
        enqueue.sendTo(running.actorId, { type: image.topicsById.has(running.topicId) ? 'STOP' : 'DELETE' });
        partitions[key] = { ...running, closing: true };
      }
      enqueue.assign({ partitions });
    }),
    /**
     * The node tick: leaders with an ISR follower behind check its lag (every replicaLagTimeMaxMs/2,
     * as their own timers did); every retentionCheckIntervalMs every replica applies retention. An
     * idle, caught-up partition gets nothing.
     */
    fanOutTick: enqueueActions(({ context, event, enqueue, system }) => {
      if (event.type !== 'NODE_TICK') return;
      const nowMs = event.nowMs;
      const retain = nowMs - context.retainedAtMs >= context.partitionLimits.retentionCheckIntervalMs;
      const lagCheck = nowMs - context.lagCheckedAtMs >= lagCheckIntervalMs(context.partitionLimits.replicaLagTimeMaxMs);
      if (!retain && !lagCheck) return;
      const tick = { type: 'TICK' as const, nowMs, retain, replicaSeenMs: context.sessionHub.sessions?.seenMs() ?? {} };
      for (const running of Object.values(context.partitions)) {
        if (running.closing) continue;
        if (retain) {
          enqueue.sendTo(running.actorId, tick);
          continue;
        }
        if (running.role !== 'leader') continue;
        const snapshot = (system.get(running.actorId) as AnyActorRef | undefined)?.getSnapshot() as { context?: PartitionContext } | undefined;
        if (snapshot?.context !== undefined && wantsLagCheck(snapshot.context)) enqueue.sendTo(running.actorId, tick);
      }
      enqueue.assign({ ...(retain ? { retainedAtMs: nowMs } : {}), ...(lagCheck ? { lagCheckedAtMs: nowMs } : {}) });
    }),
    /** Drops a finished partition actor: from the context and from the children (xstate keeps done children). */
    forget: enqueueActions(({ context, event, enqueue }) => {
      const id = event.type.startsWith('xstate.') ? event.type.replace(/^xstate\.(done|error)\.actor\./, '') : undefined;
      const key = Object.keys(context.partitions).find((k) => context.partitions[k]!.actorId === id);
      if (id === undefined || key === undefined) return;
      if ('error' in event) context.logger.error({ err: event.error, partition: id }, 'partition actor crashed');
      const { [key]: _closed, ...rest } = context.partitions;
      enqueue.stopChild(id);
      enqueue.assign({ partitions: rest });
    }),
    stopPartitions: enqueueActions(({ context, enqueue }) => {
      for (const running of Object.values(context.partitions)) {
        if (!running.closing) enqueue.sendTo(running.actorId, { type: 'STOP' });
      }
      enqueue.assign({
        partitions: Object.fromEntries(Object.entries(context.partitions).map(([id, r]) => [id, { ...r, closing: true }])),
      });
    }),
  },
  guards: {
    allClosed: ({ context }) => Object.keys(context.partitions).length === 0,
    /** Only a registered, unfenced broker can lead anything worth moving. */
    mayHandOff: ({ context }) => !context.fenced && context.brokerEpoch >= 0,
  },
  delays: {
    shutdownTimeout: ({ context }) => context.timeouts.shutdownTimeoutMs,
  },
}).createMachine({
  id: 'broker',
  context: ({ input }) => {
    // One wrapped transport for the whole broker: publishes on local subjects (the produce
    // handler's gathered answers, the fetch sessions' partition answers) never reach NATS.
    const { transport, local } = withLocalReplies(input.transport);
    const sessionHub = new SessionHub();
    local.route(`${LOCAL_REPLY_PREFIX}.`, sessionHub.local);
    const subscriptionHub = new SubscriptionHub();
    const leaderWatch: ReplicaWatch = {
      written: (topicId, partition, writtenEnd) => sessionHub.written(topicId, partition, writtenEnd),
      committed: (...args) => subscriptionHub.committed(...args),
      closed: (...args) => subscriptionHub.closed(...args),
    };
    const fetchers = new ReplicaFetchers(
      { brokerId: input.brokerId, transport, subjects: input.subjects, clock: input.clock, random: input.random, logger: input.logger },
      {
        maxWaitMs: input.partitionLimits.replicaFetchWaitMs,
        maxBytes: input.partitionLimits.replicaFetchMaxBytes,
        backoffMsInitial: input.partitionLimits.replicaFetchBackoffMs,
        backoffMsMax: REPLICA_FETCH_BACKOFF_MS_MAX,
      },
    );
    return {
      ...input,
      metrics: input.metrics ?? noMetrics,
      transport,
      local,
      partitions: {},
      image: emptyImage,
      brokerEpoch: -1,
      fenced: true,
      unfencedAtOffset: -1,
      leaving: false,
      sessionHub,
      fetchers,
      subscriptionHub,
      leaderWatch,
      retainedAtMs: input.clock.now(),
      lagCheckedAtMs: input.clock.now(),
    };
  },
  initial: 'running',
  on: {
    'xstate.done.actor.*': { actions: 'forget' },
    'xstate.error.actor.*': { actions: 'forget' },
  },
  states: {
    running: {
      invoke: [
        {
          id: 'requestListener',
          src: 'requestListener',
          input: ({ context }) => ({
            brokerId: context.brokerId,
            clock: context.clock,
            subjects: context.subjects,
            transport: context.transport,
            local: context.local,
            metadata: context.metadata,
            logger: context.logger,
            metrics: context.metrics,
          }),
        },
        {
          src: 'sessionListener',
          input: ({ context }) => ({
            brokerId: context.brokerId,
            hub: context.sessionHub,
            subjects: context.subjects,
            transport: context.transport,
            clock: context.clock,
            random: context.random,
            logger: context.logger.child({ actor: 'replica-sessions' }),
            limits: { ...DEFAULT_SESSION_LIMITS, partitionBytesMax: context.partitionLimits.replicaFetchMaxBytes },
          }),
        },
        {
          src: 'subscriptionListener',
          input: ({ context }) => ({
            brokerId: context.brokerId,
            hub: context.subscriptionHub,
            subjects: context.subjects,
            transport: context.transport,
            local: context.local,
            metadata: context.metadata,
            storage: context.storage,
            clock: context.clock,
            logger: context.logger.child({ actor: 'subscriptions' }),
            followers: context.sessionHub,
            metrics: context.metrics,
            // Followers ask at least every replicaFetchWaitMs; three of those without one and the lease is gone.
            leaseMs: Math.max(1_000, 3 * context.partitionLimits.replicaFetchWaitMs),
          }),
        },
        { src: 'metadataFollower', input: ({ context }) => ({ metadata: context.metadata }) },
        {
          src: 'nodeTicker',
          input: ({ context }) => ({
            clock: context.clock,
            intervalMs: Math.min(lagCheckIntervalMs(context.partitionLimits.replicaLagTimeMaxMs), context.partitionLimits.retentionCheckIntervalMs),
          }),
        },
        {
          src: 'metadataFetcher',
          input: ({ context }) => ({
            brokerId: context.brokerId,
            subjects: context.subjects,
            transport: context.transport,
            view: context.metadata,
            clock: context.clock,
            random: context.random,
            logger: context.logger,
            fetchWaitMs: context.timeouts.metadataFetchWaitMs,
            // From the heartbeat interval up to 4 times it: a new controller is found within a few beats.
            backoff: { backoffMsInitial: context.timeouts.heartbeatIntervalMs, backoffMsMax: 4 * context.timeouts.heartbeatIntervalMs },
          }),
        },
        {
          src: 'controllerSession',
          input: ({ context }) => ({
            brokerId: context.brokerId,
            rack: context.rack,
            incarnation: context.incarnation,
            storage: context.storage,
            subjects: context.subjects,
            transport: context.transport,
            view: context.metadata,
            clock: context.clock,
            logger: context.logger,
            metrics: context.metrics,
            heartbeatIntervalMs: context.timeouts.heartbeatIntervalMs,
          }),
        },
      ],
      on: {
        METADATA_UPDATED: { actions: [assign({ image: ({ event }) => event.image }), 'reconcile'] },
        NODE_TICK: { actions: 'fanOutTick' },
        // Every heartbeat reports the session; only a change of it changes what this broker runs.
        SESSION: {
          guard: ({ context, event }) => event.brokerEpoch !== context.brokerEpoch || event.fenced !== context.fenced,
          actions: [
            assign({ brokerEpoch: ({ event }) => event.brokerEpoch, fenced: ({ event }) => event.fenced, unfencedAtOffset: ({ event }) => event.metadataOffset ?? -1 }),
            'reconcile',
          ],
        },
        'xstate.done.actor.*': { actions: ['forget', 'reconcile'] },
        'xstate.error.actor.*': { actions: ['forget', 'reconcile'] },
      },
      initial: 'serving',
      states: {
        serving: {
          on: { STOP: [{ guard: 'mayHandOff', target: 'handingOff' }, { target: '#broker.stopping' }] },
        },
        // Still serving and following metadata while the controller moves leaderships away.
        handingOff: {
          entry: assign({ leaving: true }),
          invoke: {
            src: 'controlledShutdown',
            input: ({ context }) => ({
              brokerId: context.brokerId,
              brokerEpoch: context.brokerEpoch,
              subjects: context.subjects,
              transport: context.transport,
              view: context.metadata,
              clock: context.clock,
              random: context.random,
              logger: context.logger,
              budgetMs: Math.floor(context.timeouts.shutdownTimeoutMs / 2),
              backoff: { backoffMsInitial: context.timeouts.heartbeatIntervalMs, backoffMsMax: 4 * context.timeouts.heartbeatIntervalMs },
            }),
            onDone: '#broker.stopping',
            onError: '#broker.stopping',
          },
        },
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
    stopped: { type: 'final', entry: ({ context }) => context.fetchers.shutdown() },
  },
});
