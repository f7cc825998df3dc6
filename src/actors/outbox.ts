/**
 * The one way a machine answers over the transport: machines stay pure by sending `REPLY` events
 * here; this invoked actor encodes and publishes. Publishing never blocks (NATS buffers and the
 * client's bounded in-flight window bounds what it can owe), so a reply never stalls a node.
 */
import { fromCallback } from 'xstate';
import type { WireError } from '../protocol/errors.js';
import { encodeError, encodeMessage } from '../protocol/messages.js';
import type { Logger, Transport } from '../runtime/ports.js';

export type OutboxEvent =
  | { type: 'REPLY'; replyTo: string; body: object }
  | { type: 'REPLY_ERROR'; replyTo: string; error: WireError };

export const outbox = fromCallback<OutboxEvent, { transport: Transport; logger: Logger }>(({ input, receive }) => {
  receive((event) => {
    const data = event.type === 'REPLY' ? encodeMessage(event.body) : encodeError(event.error);
    try {
      input.transport.publish(event.replyTo, data);
    } catch (error) {
      input.logger.warn({ err: error, replyTo: event.replyTo }, 'reply dropped');
    }
  });
});
