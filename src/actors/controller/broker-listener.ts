/** Receives broker registrations, heartbeats, ISR changes and controlled shutdowns on the active controller's subjects and checks them. */
import { fromCallback } from 'xstate';
import { alterPartitionRequest, controlledShutdownRequest, heartbeatRequest, registerBrokerRequest } from '../../protocol/controller-messages.js';
import { TidemarkError } from '../../protocol/errors.js';
import { decodeRequest, encodeError } from '../../protocol/messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, InboundMessage, Logger, Transport } from '../../runtime/ports.js';
import type { ControllerEvent } from './types.js';

export interface BrokerListenerInput {
  subjects: Subjects;
  transport: Transport;
  clock: Clock;
  logger: Logger;
}

export const brokerListener = fromCallback<{ type: 'NONE' }, BrokerListenerInput>(({ input, sendBack }) => {
  const { subjects, transport, clock, logger } = input;
  const guarded = (handle: (msg: InboundMessage, replyTo: string) => ControllerEvent) => (msg: InboundMessage) => {
    try {
      if (msg.reply === undefined) throw new TidemarkError('INVALID_REQUEST', 'controller requests need a reply subject');
      sendBack(handle(msg, msg.reply));
    } catch (error) {
      const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', undefined, { cause: error });
      logger.debug({ code: err.code, reason: err.message, subject: msg.subject }, 'controller request refused');
      if (msg.reply !== undefined) msg.respond(encodeError(err.toWire()));
    }
  };
  const subs = [
    transport.subscribe(
      subjects.controller('register'),
      guarded((msg, replyTo) => {
        const request = decodeRequest(msg.data, registerBrokerRequest);
        return { type: 'ADMIN', job: { op: 'register', request, replyTo, deadlineMs: clock.now() + request.timeoutMs } };
      }),
    ),
    transport.subscribe(
      subjects.controller('heartbeat'),
      guarded((msg, replyTo) => {
        const r = decodeRequest(msg.data, heartbeatRequest);
        return { type: 'HEARTBEAT', replyTo, brokerId: r.brokerId, brokerEpoch: r.brokerEpoch, metadataOffset: r.metadataOffset, logEnds: r.logEnds ?? [], nowMs: clock.now() };
      }),
    ),
    transport.subscribe(
      subjects.controller('alter-partition'),
      guarded((msg, replyTo) => {
        const request = decodeRequest(msg.data, alterPartitionRequest);
        return { type: 'ADMIN', job: { op: 'alter-partition', request, replyTo, deadlineMs: clock.now() + request.timeoutMs } };
      }),
    ),
    transport.subscribe(
      subjects.controller('shutdown'),
      guarded((msg, replyTo) => {
        const request = decodeRequest(msg.data, controlledShutdownRequest);
        return { type: 'ADMIN', job: { op: 'shutdown', request, replyTo, deadlineMs: clock.now() + request.timeoutMs } };
      }),
    ),
  ];
  return () => {
    for (const sub of subs) sub.unsubscribe();
  };
});
