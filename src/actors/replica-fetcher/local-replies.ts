/**
 * The transport partition leaders answer through: replies to an in-process address (a fetch
 * session asking its partitions, sessions.ts) are handed to the session registry instead of going
 * over NATS; everything else goes to the node's transport unchanged. So the partition machine
 * answers a session's question exactly as it answers a follower's request, and no partition
 * answer costs a NATS message.
 */
import type { Transport } from '../../runtime/ports.js';
import { LOCAL_REPLY_PREFIX } from './sessions.js';

export function withLocalReplies(transport: Transport, local: (subject: string, data: Uint8Array) => void): Transport {
  const prefix = `${LOCAL_REPLY_PREFIX}.`;
  return {
    get maxPayloadBytes() {
      return transport.maxPayloadBytes;
    },
    publish(subject, data) {
      if (subject.startsWith(prefix)) local(subject, data);
      else transport.publish(subject, data);
    },
    subscribe: (subject, handler, options) => transport.subscribe(subject, handler, options),
    request: (subject, data, timeoutMs) => transport.request(subject, data, timeoutMs),
    requestMany: (subject, data, options) => transport.requestMany(subject, data, options),
  };
}
