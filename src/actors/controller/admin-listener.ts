/**
 * Receives topic-administration requests on the active controller and checks them. No queue
 * group: a deposed controller that is paused or has not noticed yet must not swallow a share of
 * the requests; it gets them too, and its proposals fail (NOT_CONTROLLER), while the client takes
 * the first reply.
 */
import { fromCallback } from 'xstate';
import { TidemarkError } from '../../protocol/errors.js';
import { alterConfigRequest, createPartitionsRequest, createTopicRequest, decodeRequest, deleteTopicRequest, electLeadersRequest, encodeError } from '../../protocol/messages.js';
import type { Subjects } from '../../protocol/subjects.js';
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
    transport.subscribe(subjects.admin('producer-attach'), (msg) =>
      producer(msg, (data, replyTo, nowMs) => ({ type: 'PRODUCER_ATTACH', replyTo, request: decodeRequest(data, producerAttachRequest), nowMs })),
    ),
    transport.subscribe(subjects.admin('producer-heartbeat'), (msg) =>
      producer(msg, (data, replyTo, nowMs) => ({ type: 'PRODUCER_HEARTBEAT', replyTo, request: decodeRequest(data, producerHeartbeatRequest), nowMs })),
    ),
    transport.subscribe(subjects.admin('producer-detach'), (msg) =>
      producer(msg, (data, replyTo, nowMs) => ({ type: 'PRODUCER_DETACH', replyTo, request: decodeRequest(data, producerDetachRequest), nowMs })),
    ),
    transport.subscribe(
      subjects.admin('create-topic'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, createTopicRequest);
          return { op: 'create-topic', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.admin('delete-topic'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, deleteTopicRequest);
          return { op: 'delete-topic', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.admin('create-partitions'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, createPartitionsRequest);
          return { op: 'create-partitions', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.admin('alter-config'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, alterConfigRequest);
          return { op: 'alter-config', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.admin('elect-leaders'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, electLeadersRequest);
          return { op: 'elect-leaders', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.admin('create-subscription'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, createSubscriptionRequest);
          return { op: 'create-subscription', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
    transport.subscribe(
      subjects.admin('delete-subscription'),
      (msg) =>
        handle(msg, (data) => {
          const r = decodeRequest(data, deleteSubscriptionRequest);
          return { op: 'delete-subscription', timeoutMs: r.timeoutMs, request: r };
        }),
    ),
  ];
  return () => {
    for (const sub of subs) sub.unsubscribe();
  };
});
