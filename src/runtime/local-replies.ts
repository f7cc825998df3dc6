/**
 * Replies that stay inside the node. An actor answers a request by publishing to its reply subject
 * (the partition's outbox does); when the request came from another actor of the same node, not
 * from NATS, that subject is a local one opened here, and the publish is handed to the opener
 * in-process instead of going out on the wire. So the node's produce handler can split one request
 * carrying many partitions' batches into one PRODUCE per partition actor, unchanged, and gather
 * their answers into one reply.
 *
 * Local subjects start with `_TM_LOCAL.`, a prefix no Tidemark subject and no NATS inbox uses; a
 * publish on a local subject nobody holds (its opener gave up) is dropped, never sent to NATS.
 */
import type { Transport } from './ports.js';

const LOCAL_PREFIX = '_TM_LOCAL.';

export interface LocalReplies {
  /** A reply subject whose next publish calls `deliver` (once; the subject then closes). */
  open(deliver: (data: Uint8Array) => void): string;
  /** Gives a subject up before its reply came: a later publish on it is dropped. */
  close(subject: string): void;
  /** Subjects open now (bounded by the callers' own bounds). */
  readonly openCount: number;
}

/** The transport the node's actors use (publishes on local subjects short-circuit) and the registry. */
export function withLocalReplies(transport: Transport): { transport: Transport; local: LocalReplies } {
  const waiting = new Map<string, (data: Uint8Array) => void>();
  let next = 0;
  const local: LocalReplies = {
    open(deliver) {
      const subject = `${LOCAL_PREFIX}${(next++).toString(36)}`;
      waiting.set(subject, deliver);
      return subject;
    },
    close(subject) {
      waiting.delete(subject);
    },
    get openCount() {
      return waiting.size;
    },
  };
  const wrapped: Transport = {
    publish(subject, data) {
      if (!subject.startsWith(LOCAL_PREFIX)) {
        transport.publish(subject, data);
        return;
      }
      const deliver = waiting.get(subject);
      if (deliver === undefined) return;
      waiting.delete(subject);
      deliver(data);
    },
    subscribe: (subject, handler, options) => transport.subscribe(subject, handler, options),
    request: (subject, data, timeoutMs) => transport.request(subject, data, timeoutMs),
    requestMany: (subject, data, options) => transport.requestMany(subject, data, options),
    get maxPayloadBytes() {
      return transport.maxPayloadBytes;
    },
  };
  return { transport: wrapped, local };
}
