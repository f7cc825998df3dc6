/**
 * The Transport port over a real NATS connection (nats.js v3). Maps NATS request failures onto the
 * error table so callers only ever see TidemarkError codes.
 */
import { connect, NoRespondersError, RequestError, TimeoutError, type NatsConnection } from '@nats-io/transport-node';
import { TidemarkError } from '../protocol/errors.js';
import type { InboundMessage, SubscribeOptions, Subscription, Transport } from './ports.js';

export interface NatsTransport extends Transport {
  readonly connection: NatsConnection;
  /** Flushes pending publishes, then closes. */
  close(): Promise<void>;
}

export interface NatsConnectOptions {
  /** @default "nats://127.0.0.1:4222" */
  servers: string | string[];
  /** Connection name shown by the NATS server's monitoring. */
  name?: string;
  /** @default 2000 */
  connectTimeoutMs?: number;
}

export async function connectNats(options: NatsConnectOptions): Promise<NatsTransport> {
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: options.servers,
      name: options.name ?? 'tidemark',
      timeout: options.connectTimeoutMs ?? 2000,
      maxReconnectAttempts: -1,
    });
  } catch (cause) {
    throw new TidemarkError('CONNECTION_FAILED', `cannot reach NATS at ${String(options.servers)}: ${(cause as Error).message}`, { cause });
  }
  return wrap(nc);
}

export function wrap(nc: NatsConnection): NatsTransport {
  return {
    connection: nc,
    get maxPayloadBytes() {
      return nc.info?.max_payload ?? 1024 * 1024;
    },
    publish(subject, data) {
      nc.publish(subject, data);
    },
    subscribe(subject: string, handler: (msg: InboundMessage) => void, options?: SubscribeOptions): Subscription {
      const sub = nc.subscribe(subject, {
        ...(options?.queue === undefined ? {} : { queue: options.queue }),
        callback: (err, msg) => {
          if (err) return;
          handler({
            subject: msg.subject,
            data: msg.data,
            reply: msg.reply,
            respond: (data) => msg.respond(data),
          });
        },
      });
      return { unsubscribe: () => sub.unsubscribe() };
    },
    async request(subject, data, timeoutMs) {
      try {
        const reply = await nc.request(subject, data, { timeout: timeoutMs });
        return reply.data;
      } catch (cause) {
        throw mapRequestError(cause, subject, timeoutMs);
      }
    },
    async requestMany(subject, data, options) {
      const replies: Uint8Array[] = [];
      try {
        const iterator = await nc.requestMany(subject, data, { strategy: 'timer', maxWait: options.maxWaitMs, maxMessages: options.maxReplies });
        for await (const msg of iterator) {
          replies.push(msg.data);
          if (replies.length >= options.maxReplies) break;
        }
      } catch (cause) {
        // Nobody subscribed is an answer here (no node is up): an empty list.
        const mapped = mapRequestError(cause, subject, options.maxWaitMs);
        if (mapped.code !== 'NO_RESPONDERS') throw mapped;
      }
      return replies;
    },
    async close() {
      if (nc.isClosed()) return;
      await nc.drain().catch(() => nc.close());
    },
  };
}

function mapRequestError(cause: unknown, subject: string, timeoutMs: number): TidemarkError {
  const noResponders =
    cause instanceof NoRespondersError ||
    (cause instanceof RequestError && cause.isNoResponders()) ||
    (cause instanceof Error && cause.cause instanceof NoRespondersError);
  if (noResponders) return new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`, { cause });
  if (cause instanceof TimeoutError || (cause instanceof Error && cause.cause instanceof TimeoutError)) {
    return new TidemarkError('TIMEOUT', `no reply on ${subject} within ${timeoutMs} ms`, { cause });
  }
  return new TidemarkError('NO_RESPONDERS', `request on ${subject} failed: ${(cause as Error).message}`, { cause });
}
