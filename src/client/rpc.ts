/**
 * One request, one attempt: encode, send, decode the reply or throw the TidemarkError it carries.
 * Never retries (see retry.ts for the layer that does).
 */
import { decodeReply, encodeMessage } from '../protocol/messages.js';
import type { Schema } from '../protocol/validate.js';
import type { Transport } from '../runtime/ports.js';

/** Room a message needs beyond its batch (msgpack envelope, subject, headers), bytes. */
export const ENVELOPE_MARGIN_BYTES = 1024;

/**
 * How long to wait for a reply to a request whose budget is `timeoutMs`: slightly longer, so the
 * node's own deadline answer (TIMEOUT, or a partial fetch) normally arrives before ours fires.
 */
export function replyWaitMs(timeoutMs: number): number {
  return timeoutMs + Math.min(1000, Math.max(50, Math.ceil(timeoutMs / 10)));
}

export class Rpc {
  constructor(readonly transport: Transport) {}

  async request<B extends { timeoutMs: number }, T>(subject: string, body: B, schema: Schema<T>): Promise<T> {
    const data = await this.transport.request(subject, encodeMessage(body), replyWaitMs(body.timeoutMs));
    return decodeReply(data, schema);
  }

  /** Every subscriber's reply within `maxWaitMs`, each checked against `schema`; error replies are skipped. */
  async requestMany<B extends { timeoutMs: number }, T>(subject: string, body: B, schema: Schema<T>, maxReplies: number): Promise<T[]> {
    const replies = await this.transport.requestMany(subject, encodeMessage(body), { maxWaitMs: body.timeoutMs, maxReplies });
    const out: T[] = [];
    for (const data of replies) {
      try {
        out.push(decodeReply(data, schema));
      } catch {
        // one node's bad or error reply does not hide the others'
      }
    }
    return out;
  }

  /** Fire and forget (acks = 0). */
  publish(subject: string, body: object): void {
    this.transport.publish(subject, encodeMessage(body));
  }

  /** Largest payload one message may carry, bytes, after the envelope margin. */
  payloadBytesMax(): number {
    return Math.max(1, this.transport.maxPayloadBytes - ENVELOPE_MARGIN_BYTES);
  }
}
