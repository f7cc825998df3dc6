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

/** Every local subject starts with it. */
export const LOCAL_PREFIX = '_TM_LOCAL.';

export interface LocalReplies {
  /** A reply subject whose next publish calls `deliver` (once; the subject then closes). */
  open(deliver: (data: Uint8Array) => void): string;
  /** Gives a subject up before its reply came: a later publish on it is dropped. */
  close(subject: string): void;
  /**
   * Every publish on a subject under `prefix` (itself under LOCAL_PREFIX) goes to `deliver`, for a
   * caller that encodes its own routing in the subject (the fetch sessions do). Subjects opened with
   * `open` are matched first.
   */
  route(prefix: string, deliver: (subject: string, data: Uint8Array) => void): void;
  /** Subjects open now (bounded by the callers' own bounds). */
  readonly openCount: number;
}

/** The transport the node's actors use (publishes on local subjects short-circuit) and the registry. */
export function withLocalReplies(transport: Transport): { transport: Transport; local: LocalReplies } {
  const waiting = new Map<string, (data: Uint8Array) => void>();
  const routes: Array<{ prefix: string; deliver: (subject: string, data: Uint8Array) => void }> = [];
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
    route(prefix, deliver) {
      if (!prefix.startsWith(LOCAL_PREFIX)) throw new Error(`a local route must start with ${LOCAL_PREFIX}`);
      routes.push({ prefix, deliver });
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
      if (deliver !== undefined) {
        waiting.delete(subject);
        deliver(data);
        return;
      }
      routes.find((r) => subject.startsWith(r.prefix))?.deliver(subject, data);
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
