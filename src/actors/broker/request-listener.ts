/**
 * The broker's door: subscribes to its subjects, decodes and checks every request where the bytes
 * enter (msgpack shape and bounds, batch header and CRC), answers bad input with a typed error and
 * routes good requests to the partition actor that leads the partition.
 */
import { fromCallback, type AnyActorRef } from 'xstate';
import type { FollowedView } from '../../metadata/followed-view.js';
import { topicByName } from '../../metadata/image.js';
import { verifyBatch } from '../../protocol/batch.js';
import { TidemarkError } from '../../protocol/errors.js';
import {
  decodeRequest,
  encodeError,
  encodeMessage,
  fetchRequest,
  metadataRequest,
  offsetsRequest,
  produceRequest,
  type OffsetsReply,
  type PartitionOffsets,
} from '../../protocol/messages.js';
import { replicaFetchRequest } from '../../protocol/replica-messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { LocalReplies } from '../../runtime/local-replies.js';
import type { Clock, InboundMessage, Logger, Subscription, Transport } from '../../runtime/ports.js';
import { FETCH_REPLY_ENVELOPE_BYTES } from '../partition/log-reader.js';
import type { PartitionContext } from '../partition/machine.js';
import type { PartitionEvent } from '../partition/types.js';
import { leaderActorOf, metadataReply, partitionActorId } from './metadata-view.js';
import { createProduceHandlers } from './produce-handler.js';
import { noMetrics, type NodeMetrics } from '../../metrics/port.js';

/** Metadata requests held at once while this broker catches up. */
const METADATA_WAITERS_MAX = 1024;
/** Bound on the controller round trip a `confirm` metadata request waits for, ms. */
const METADATA_SYNC_MS_MAX = 2_000;

export interface RequestListenerInput {
  brokerId: number;
  clock: Clock;
  subjects: Subjects;
  transport: Transport;
  /** Where the produce handler gathers its partitions' answers (the transport short-circuits them). */
  local: LocalReplies;
  metadata: FollowedView;
  logger: Logger;
  /** @default noMetrics */
  metrics?: NodeMetrics;
}

type Handler = (msg: InboundMessage) => void;

export const requestListener = fromCallback<{ type: 'NONE' }, RequestListenerInput>(({ input, system }) => {
  const { brokerId, subjects, transport, metadata, logger, clock } = input;
  const metrics = input.metrics ?? noMetrics;

  const answerError = (msg: InboundMessage, error: unknown) => {
    const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'internal error', { cause: error });
    if (err.code === 'INTERNAL') logger.error({ err: error, subject: msg.subject }, 'request failed');
    else logger.debug({ code: err.code, reason: err.message, subject: msg.subject }, 'request refused');
    if (msg.reply !== undefined) msg.respond(encodeError(err.toWire()));
  };

  /** Wraps a handler so nothing thrown by bad input escapes into the NATS callback. */
  const guarded =
    (handler: Handler): Handler =>
    (msg) => {
      try {
        handler(msg);
      } catch (error) {
        answerError(msg, error);
      }
    };

  const target = (subject: string) => {
    const parsed = subjects.parsePartition(subject);
    if (parsed === undefined) throw new TidemarkError('INVALID_REQUEST', `malformed subject ${subject}`);
    return parsed;
  };
  const leaderActor = (subject: string): AnyActorRef => {
    const { topic, partition } = target(subject);
    return leaderActorOf(metadata.image(), system, brokerId, topic, partition);
  };

  const produceHandlers = createProduceHandlers({ brokerId, subjects, transport, local: input.local, metadata, system, clock, logger, metrics });

  const onFetch: Handler = (msg) => {
    const { topic, partition } = target(msg.subject);
    const request = decodeRequest(msg.data, fetchRequest);
    if (msg.reply === undefined) throw new TidemarkError('INVALID_REQUEST', 'fetch needs a reply subject');
    const maxWaitMs = Math.min(request.maxWaitMs, request.timeoutMs);
    const event: PartitionEvent = { type: 'FETCH', replyTo: msg.reply, offset: request.offset, maxBytes: request.maxBytes, maxWaitMs };
    // Counted once it reaches a leader, so a topic label is always a topic that exists.
    leaderActorOf(metadata.image(), system, brokerId, topic, partition).send(event);
    metrics.fetchRequested(topic);
  };

  const onReplicaFetch: Handler = (msg) => {
    const request = decodeRequest(msg.data, replicaFetchRequest);
    if (msg.reply === undefined) throw new TidemarkError('INVALID_REQUEST', 'replica fetch needs a reply subject');
    const { timeoutMs, ...rest } = request;
    const event: PartitionEvent = { type: 'REPLICA_FETCH', replyTo: msg.reply, ...rest, maxWaitMs: Math.min(request.maxWaitMs, timeoutMs) };
    leaderActor(msg.subject).send(event);
  };

  const onOffsets: Handler = (msg) => {
    const request = decodeRequest(msg.data, offsetsRequest);
    const image = metadata.image();
    const partitions = request.partitions.map(({ topic, partition }): PartitionOffsets => {
      const info = topicByName(image, topic);
      const actor = info === undefined ? undefined : (system.get(partitionActorId(info.topicId, partition)) as AnyActorRef | undefined);
      if (actor === undefined) {
        const error = new TidemarkError(info === undefined ? 'UNKNOWN_TOPIC' : 'NOT_LEADER').toWire();
        return { topic, partition, error, logStartOffset: -1, logEndOffset: -1, highWatermark: -1 };
      }
      const snapshot = actor.getSnapshot() as { context: PartitionContext; matches(state: string): boolean };
      if (!snapshot.matches('open')) {
        const error = new TidemarkError('LEADER_NOT_AVAILABLE', `${topic}/${partition} is not serving`).toWire();
        return { topic, partition, error, logStartOffset: -1, logEndOffset: -1, highWatermark: -1 };
      }
      const ctx = snapshot.context;
      const now = clock.now();
      const replicas = ctx.replicas.map((id) => {
        if (id === brokerId) return { brokerId: id, logEndOffset: ctx.logEndOffset, lagMs: 0 };
        const f = ctx.followers[id];
        if (f === undefined || f.lastCaughtUpMs < 0) return { brokerId: id, logEndOffset: f?.logEndOffset ?? -1, lagMs: -1 };
        // Caught up with the leader's log end: no lag, however long ago it last fetched (replication.ts, caughtUpUntil).
        return { brokerId: id, logEndOffset: f.logEndOffset, lagMs: f.logEndOffset >= ctx.logEndOffset ? 0 : Math.max(0, now - f.lastCaughtUpMs) };
      });
      return {
        topic,
        partition,
        logStartOffset: ctx.logStartOffset,
        logEndOffset: ctx.logEndOffset,
        highWatermark: ctx.highWatermark,
        leaderEpoch: ctx.leaderEpoch,
        replicas,
      };
    });
    const reply: OffsetsReply = { partitions };
    msg.respond(encodeMessage(reply));
  };

  /** Metadata requests waiting for this broker to catch up with the client's minOffset. */
  const behind = new Set<{ minOffset: number; answer: () => void; timer: unknown }>();
  /** Metadata requests with `confirm` waiting for the view's sync with the controller. */
  let confirming = 0;
  const unsubscribeView = metadata.subscribe((image) => {
    for (const w of behind) {
      if (image.offset < w.minOffset) continue;
      behind.delete(w);
      clock.clearTimeout(w.timer);
      w.answer();
    }
  });
  const onMetadata: Handler = (msg) => {
    const request = decodeRequest(msg.data, metadataRequest);
    const answer = (caughtUp = false) => msg.respond(encodeMessage(metadataReply(metadata.image(), request.topics, caughtUp)));
    if (request.confirm === true) {
      // The view runs at most one sync and queues one; at most METADATA_WAITERS_MAX requests wait on
      // them, beyond which the answer is "not confirmed" (the client asks again).
      if (confirming >= METADATA_WAITERS_MAX) return answer(false);
      confirming++;
      const done = (caughtUp: boolean) => {
        confirming--;
        answer(caughtUp);
      };
      metadata.sync(Math.max(1, Math.min(METADATA_SYNC_MS_MAX, Math.floor(request.timeoutMs / 2)))).then(done, () => done(false));
      return;
    }
    const minOffset = request.minOffset ?? -1;
    if (metadata.image().offset >= minOffset || behind.size >= METADATA_WAITERS_MAX) {
      answer();
      return;
    }
    // Another broker may be up to date and answer first; if not, answer when caught up or at the deadline.
    const waiter = {
      minOffset,
      answer,
      timer: clock.setTimeout(() => {
        behind.delete(waiter);
        answer();
      }, Math.floor(request.timeoutMs / 2)),
    };
    behind.add(waiter);
  };

  const subs: Subscription[] = [
    transport.subscribe(subjects.produceWildcard(brokerId), guarded(produceHandlers.produce)),
    transport.subscribe(subjects.fenceWildcard(brokerId), guarded(produceHandlers.fence)),
    transport.subscribe(subjects.partitionWildcard('fetch', brokerId), guarded(onFetch)),
    transport.subscribe(subjects.partitionWildcard('replica-fetch', brokerId), guarded(onReplicaFetch)),
    transport.subscribe(subjects.offsets(brokerId), guarded(onOffsets)),
    // Every broker answers and the client takes the first reply: a paused or dead broker in a
    // queue group would swallow its share of metadata requests.
    transport.subscribe(subjects.metadata(), guarded(onMetadata)),
  ];
  return () => {
    for (const sub of subs) sub.unsubscribe();
    unsubscribeView();
    for (const w of behind) clock.clearTimeout(w.timer);
    behind.clear();
  };
});
