/**
 * Receives topic-administration requests on the active controller and checks them. No queue
 * group: a deposed controller that is paused or has not noticed yet must not swallow a share of
 * the requests; it gets them too, and its proposals fail (NOT_CONTROLLER), while the client takes
 * the first reply.
 *
 * A per-topic op arrives on `admin.<op>.<topic>[.<sub>]` (subjects.ts), which is what NATS
 * permissions allow or deny; the body names the topic too. The two must agree, or a client allowed
 * on topic A could act on topic B by naming B in the body: a mismatch is INVALID_REQUEST and
 * nothing is done.
 */
import { fromCallback } from 'xstate';
import { TidemarkError } from '../../protocol/errors.js';
import { alterConfigRequest, createPartitionsRequest, createTopicRequest, decodeRequest, deleteTopicRequest, electLeadersRequest, encodeError } from '../../protocol/messages.js';
import { isValidSubscriptionName, isValidTopicName, type AdminOp, type Subjects } from '../../protocol/subjects.js';
import { createSubscriptionRequest, deleteSubscriptionRequest } from '../../protocol/subscription-messages.js';
import { producerAttachRequest, producerDetachRequest, producerHeartbeatRequest } from '../../protocol/producer-messages.js';
import type { Clock, InboundMessage, Logger, Transport } from '../../runtime/ports.js';
import type { AdminJob, ControllerEvent, ControllerJob } from './types.js';

export interface AdminListenerInput {
  subjects: Subjects;
  transport: Transport;
  clock: Clock;
  logger: Logger;
}

export const adminListener = fromCallback<{ type: 'NONE' }, AdminListenerInput>(({ input, sendBack }) => {
  const { subjects, transport, clock, logger } = input;

  /** Throws INVALID_REQUEST unless the subject names the topic (and subscription) the body names. */
  const checkSubject = (msg: InboundMessage, op: AdminOp, topic: string, subscription?: string) => {
    // A name no topic (subscription) can have acts on nothing: the controller refuses it with its own code (INVALID_TOPIC).
    if (!isValidTopicName(topic) || (subscription !== undefined && !isValidSubscriptionName(subscription))) return;
    const named = subjects.parseAdmin(msg.subject);
    if (named === undefined || named.op !== op) throw new TidemarkError('INVALID_REQUEST', `malformed admin subject ${msg.subject}`);
    if (named.topic !== topic || named.subscription !== subscription) {
      throw new TidemarkError('INVALID_REQUEST', `the subject names ${named.subscription === undefined ? `topic "${named.topic}"` : `subscription "${named.topic}:${named.subscription}"`}, the request ${subscription === undefined ? `topic "${topic}"` : `"${topic}:${subscription}"`}`);
    }
  };

  const handle = (msg: InboundMessage, parse: (data: Uint8Array) => Omit<AdminJob, 'replyTo' | 'deadlineMs'> & { timeoutMs: number }) => {
    try {
      if (msg.reply === undefined) throw new TidemarkError('INVALID_REQUEST', 'admin requests need a reply subject');
      const { timeoutMs, ...job } = parse(msg.data);
      const event: ControllerEvent = { type: 'ADMIN', job: { ...job, replyTo: msg.reply, deadlineMs: clock.now() + timeoutMs } as ControllerJob };
      sendBack(event);
    } catch (error) {
      const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', undefined, { cause: error });
      logger.debug({ code: err.code, reason: err.message }, 'admin request refused');
      if (msg.reply !== undefined) msg.respond(encodeError(err.toWire()));
    }
  };

  /** Producer sessions are answered from the controller's memory (or queue a grant): events, not jobs. */
  const producer = (msg: InboundMessage, toEvent: (data: Uint8Array, replyTo: string, nowMs: number) => ControllerEvent) => {
    try {
      if (msg.reply === undefined) throw new TidemarkError('INVALID_REQUEST', 'admin requests need a reply subject');
      sendBack(toEvent(msg.data, msg.reply, clock.now()));
    } catch (error) {
      const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', undefined, { cause: error });
      logger.debug({ code: err.code, reason: err.message }, 'producer request refused');
      if (msg.reply !== undefined) msg.respond(encodeError(err.toWire()));
    }
  };

  const subs = [
    transport.subscribe(subjects.adminWildcard('producer-attach'), (msg) =>
      producer(msg, (data, replyTo, nowMs) => {
        const request = decodeRequest(data, producerAttachRequest);
        checkSubject(msg, 'producer-attach', request.topic);
        return { type: 'PRODUCER_ATTACH', replyTo, request, nowMs };
      }),
    ),
    transport.subscribe(subjects.adminWildcard('producer-heartbeat'), (msg) =>
      producer(msg, (data, replyTo, nowMs) => {
        const request = decodeRequest(data, producerHeartbeatRequest);
        checkSubject(msg, 'producer-heartbeat', request.topic);
        return { type: 'PRODUCER_HEARTBEAT', replyTo, request, nowMs };
      }),
    ),
    transport.subscribe(subjects.adminWildcard('producer-detach'), (msg) =>
      producer(msg, (data, replyTo, nowMs) => {
        const request = decodeRequest(data, producerDetachRequest);
        checkSubject(msg, 'producer-detach', request.topic);
        return { type: 'PRODUCER_DETACH', replyTo, request, nowMs };
      }),
    ),
    transport.subscribe(
      subjects.adminWildcard('create-topic'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, createTopicRequest);
          checkSubject(msg, 'create-topic', r.name);
          return { op: 'create-topic', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.adminWildcard('delete-topic'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, deleteTopicRequest);
          checkSubject(msg, 'delete-topic', r.name);
          return { op: 'delete-topic', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.adminWildcard('create-partitions'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, createPartitionsRequest);
          checkSubject(msg, 'create-partitions', r.name);
          return { op: 'create-partitions', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.adminWildcard('alter-config'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, alterConfigRequest);
          checkSubject(msg, 'alter-config', r.name);
          return { op: 'alter-config', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.adminWildcard('elect-leaders'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, electLeadersRequest);
          return { op: 'elect-leaders', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.adminWildcard('create-subscription'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, createSubscriptionRequest);
          checkSubject(msg, 'create-subscription', r.topic, r.name);
          return { op: 'create-subscription', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.adminWildcard('delete-subscription'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, deleteSubscriptionRequest);
          checkSubject(msg, 'delete-subscription', r.topic, r.name);
          return { op: 'delete-subscription', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
  ];
  return () => {
    for (const sub of subs) sub.unsubscribe();
  };
});
