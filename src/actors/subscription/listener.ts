/**
 * The broker's subscription door: subscribes to the consume, ack and sub-admin subjects of this
 * broker, checks every request against its schema (bad input is answered with a typed error, never
 * thrown into the NATS callback), and runs the node's subscription host (host.ts). Cursor records
 * are appended through the partition leader actors, as a produce with acks=all, answered on an
 * in-process reply subject.
 */
import { fromCallback, type AnyActorRef } from 'xstate';
import { noMetrics, type NodeMetrics } from '../../metrics/port.js';
import { topicByName } from '../../metadata/image.js';
import type { MetadataView } from '../../metadata/metadata-store.js';
import { TidemarkError } from '../../protocol/errors.js';
import { decodeReply, decodeRequest, encodeError, encodeMessage, produceReply } from '../../protocol/messages.js';
import { ackRequest, consumeRequest, subscriptionAdminRequest } from '../../protocol/subscription-messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { LocalReplies } from '../../runtime/local-replies.js';
import type { Clock, InboundMessage, Logger, Transport } from '../../runtime/ports.js';
import type { NodeStorage } from '../../storage/partition-store.js';
import { partitionActorId } from '../broker/metadata-view.js';
import type { PartitionEvent, ReplicaWatch } from '../partition/types.js';
import { DEFAULT_HOST_LIMITS, SubscriptionHost, type HostLimits, type SubscriptionObserver } from './host.js';

/** How often the host looks at session timeouts, ack timeouts and nack delays, ms. */
export const SUBSCRIPTION_TICK_MS = 100;
/** Budget of one cursor record's append (acks=all), ms. */
const CURSOR_APPEND_TIMEOUT_MS = 10_000;

/**
 * What partition leaders hold from their start: they report their high watermark here whether or
 * not the host runs yet; the last report of each is replayed when it starts.
 */
export class SubscriptionHub implements Required<Pick<ReplicaWatch, 'committed' | 'closed'>> {
  /** Set by the simulator's test seam to watch deliveries. */
  observer: SubscriptionObserver | undefined;
  private hostRef: SubscriptionHost | undefined;
  private logger: Logger | undefined;
  private readonly last = new Map<string, [string, number, number, number, number]>();

  /** Called from partition actors' actions: nothing thrown here may reach them (it would crash the partition). */
  committed(topicId: string, partition: number, leaderEpoch: number, highWatermark: number, logStartOffset: number): void {
    this.last.set(`${topicId}/${partition}`, [topicId, partition, leaderEpoch, highWatermark, logStartOffset]);
    this.guard(() => this.hostRef?.committed(topicId, partition, leaderEpoch, highWatermark, logStartOffset));
  }

  closed(topicId: string, partition: number, leaderEpoch: number): void {
    const key = `${topicId}/${partition}`;
    if (this.last.get(key)?.[2] === leaderEpoch) this.last.delete(key);
    this.guard(() => this.hostRef?.leaderClosed(topicId, partition, leaderEpoch));
  }

  private guard(call: () => void): void {
    try {
      call();
    } catch (error) {
      this.logger?.error({ err: error }, 'subscription host failed on a partition report');
    }
  }

  /** The running host, for the simulator's failure reports. */
  get host(): SubscriptionHost | undefined {
    return this.hostRef;
  }

  attach(host: SubscriptionHost | undefined, logger?: Logger): void {
    this.hostRef = host;
    this.logger = logger;
    if (host !== undefined) for (const args of this.last.values()) host.committed(...args);
  }
}

export interface SubscriptionListenerInput {
  brokerId: number;
  hub: SubscriptionHub;
  subjects: Subjects;
  transport: Transport;
  local: LocalReplies;
  metadata: MetadataView;
  storage: NodeStorage;
  clock: Clock;
  logger: Logger;
  limits?: HostLimits;
  /** The follower fetch sessions with this broker (the delivery lease asks them). */
  followers?: { follows(replicaId: number, topicId: string, partition: number, leaderEpoch: number, sinceMs: number): boolean };
  /** @default DEFAULT_LEASE_MS */
  leaseMs?: number;
  /** @default noMetrics */
  metrics?: NodeMetrics;
}

export const subscriptionListener = fromCallback<{ type: 'NONE' }, SubscriptionListenerInput>(({ input, system }) => {
  const { brokerId, subjects, transport, metadata, logger, clock, local } = input;
  const metrics = input.metrics ?? noMetrics;
  const host = new SubscriptionHost(
    {
      clock,
      logger,
      observer: () => input.hub.observer,
      metrics,
      maxPayloadBytes: transport.maxPayloadBytes,
      subscriptionsOf: (topicId) => {
        const topic = metadata.image().topicsById.get(topicId);
        return topic?.subscriptions;
      },
      topicIdOf: (topic) => topicByName(metadata.image(), topic)?.topicId,
      topicNameOf: (topicId) => metadata.image().topicsById.get(topicId)?.name,
      ...(input.leaseMs === undefined ? {} : { leaseMs: input.leaseMs }),
      followersFollow: (topicId, partition, leaderEpoch, sinceMs) => {
        // Every replica the controller may count in the ISR: the leader's ISR, the metadata's, and a
        // change the leader sent and has not heard back about (it may have committed: a member it
        // adds may be elected in its place without this leader hearing of it).
        const actor = system.get(partitionActorId(topicId, partition)) as AnyActorRef | undefined;
        const ctx = actor?.getSnapshot().context as { leaderEpoch: number; isr: readonly number[]; pendingIsr?: readonly number[] } | undefined;
        if (ctx === undefined || ctx.leaderEpoch !== leaderEpoch) return false;
        const members = new Set([...ctx.isr, ...(ctx.pendingIsr ?? []), ...(metadata.image().topicsById.get(topicId)?.partitions[partition]?.isr ?? [])]);
        for (const id of members) if (id !== brokerId && !(input.followers?.follows(id, topicId, partition, leaderEpoch, sinceMs) ?? false)) return false;
        return true;
      },
      openStore: (topicId, partition) => input.storage.openPartition({ topicId, partition }),
      appendControl: (topicId, partition, leaderEpoch, batch, recordCount) =>
        new Promise<number>((resolve, reject) => {
          const actor = system.get(partitionActorId(topicId, partition)) as AnyActorRef | undefined;
          if (actor === undefined) {
            reject(new TidemarkError('NOT_LEADER', `broker ${brokerId} no longer leads ${topicId}/${partition}`));
            return;
          }
          let timer: unknown;
          const replyTo = local.open((data) => {
            clock.clearTimeout(timer);
            try {
              resolve(decodeReply(data, produceReply).baseOffset);
            } catch (error) {
              reject(error);
            }
          });
          timer = clock.setTimeout(() => {
            local.close(replyTo);
            reject(new TidemarkError('TIMEOUT', 'cursor record not answered'));
          }, CURSOR_APPEND_TIMEOUT_MS + 1_000);
          const event: PartitionEvent = {
            type: 'PRODUCE',
            replyTo,
            acks: -1,
            batch,
            recordCount,
            producer: undefined,
            nowMs: clock.now(),
            timeoutMs: CURSOR_APPEND_TIMEOUT_MS,
            leaderEpoch,
          };
          actor.send(event);
        }),
    },
    input.limits ?? DEFAULT_HOST_LIMITS,
  );

  const answerError = (msg: InboundMessage, error: unknown) => {
    const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'internal error', { cause: error });
    if (err.code === 'INTERNAL') logger.error({ err: error, subject: msg.subject }, 'subscription request failed');
    else logger.debug({ code: err.code, reason: err.message, subject: msg.subject }, 'subscription request refused');
    if (msg.reply !== undefined) msg.respond(encodeError(err.toWire()));
  };
  const guarded = (handler: (msg: InboundMessage) => void) => (msg: InboundMessage) => {
    try {
      if (msg.reply === undefined) throw new TidemarkError('INVALID_REQUEST', 'a subscription request needs a reply subject');
      handler(msg);
    } catch (error) {
      answerError(msg, error);
    }
  };
  const target = (subject: string) => {
    const parsed = subjects.parseConsumer(subject);
    if (parsed === undefined) throw new TidemarkError('INVALID_REQUEST', `malformed subject ${subject}`);
    return parsed;
  };

  const subs = [
    transport.subscribe(
      subjects.consumerWildcard('consume', brokerId),
      guarded((msg) => {
        const { topic, subscription } = target(msg.subject);
        const request = decodeRequest(msg.data, consumeRequest);
        metrics.consumerRequest(topic, subscription, 'consume');
        const maxWaitMs = Math.min(request.maxWaitMs, Math.max(0, request.timeoutMs - 100));
        host.consume(topic, subscription, { ...request, maxWaitMs }, (data) => msg.respond(data));
      }),
    ),
    transport.subscribe(
      subjects.consumerWildcard('ack', brokerId),
      guarded((msg) => {
        const { topic, subscription } = target(msg.subject);
        metrics.consumerRequest(topic, subscription, 'ack');
        host.ack(topic, subscription, decodeRequest(msg.data, ackRequest), (data) => msg.respond(data));
      }),
    ),
    transport.subscribe(
      subjects.subscriptionAdminWildcard(brokerId),
      guarded((msg) => {
        const topic = subjects.parseSubscriptionAdmin(msg.subject);
        if (topic === undefined) throw new TidemarkError('INVALID_REQUEST', `malformed subject ${msg.subject}`);
        const request = decodeRequest(msg.data, subscriptionAdminRequest);
        host.admin(topic, request).then(
          (reply) => msg.respond(encodeMessage(reply)),
          (error: unknown) => answerError(msg, error),
        );
      }),
    ),
  ];
  const unsubscribeView = metadata.subscribe(() => host.metadataChanged());
  let timer: unknown;
  const arm = () => {
    timer = clock.setTimeout(() => {
      host.tick();
      arm();
    }, SUBSCRIPTION_TICK_MS);
  };
  arm();
  input.hub.attach(host, logger);
  return () => {
    input.hub.attach(undefined);
    clock.clearTimeout(timer);
    unsubscribeView();
    for (const sub of subs) sub.unsubscribe();
    host.close();
  };
});
