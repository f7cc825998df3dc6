/**
 * The Transport port over a real NATS connection (nats.js v3). Maps NATS request failures onto the
 * error table so callers only ever see TidemarkError codes: a publish or reply inbox the server's
 * permissions deny is NOT_AUTHORIZED at once (nats.js fails the pending request when the server's
 * `-ERR Permissions Violation` arrives), never a timeout after retries.
 *
 * Inbound requests keep their reply subject only when it is an inbox (`_INBOX…`) or a service
 * import's response subject (`_R_.…`: the server's rewrite of a reply when the client lives in
 * another account than the nodes, docs/security.md): a node answers
 * by publishing to the reply subject with its own permissions, so a client that set the reply of
 * its request to a node-to-node subject (`tm.<c>.raft.1`), a JetStream API subject or a node's
 * in-process reply address (`_TM_LOCAL.…`) would otherwise make the node publish there for it.
 * Such a message is handled as a plain publish (no answer).
 */
import {
  AuthorizationError,
  connect,
  NoRespondersError,
  PermissionViolationError,
  RequestError,
  TimeoutError,
  UserAuthenticationExpiredError,
  type NatsConnection,
} from '@nats-io/transport-node';
import { TidemarkError } from '../protocol/errors.js';
import { describeIdentity, INBOX_PREFIX, natsSecurityOptions, redactServers, type NatsSecurity } from './nats-security.js';
import type { InboundMessage, Logger, SubscribeOptions, Subscription, Transport } from './ports.js';

export interface NatsTransport extends Transport {
  readonly connection: NatsConnection;
  /** Flushes pending publishes, then closes. */
  close(): Promise<void>;
}

export interface NatsConnectOptions extends NatsSecurity {
  /** @default "nats://127.0.0.1:4222" */
  servers: string | string[];
  /** Connection name shown by the NATS server's monitoring. */
  name?: string;
  /** @default 2000 */
  connectTimeoutMs?: number;
}

/**
 * Connects with the given credentials. Rejects with NOT_AUTHORIZED when the server refuses them,
 * INVALID_REQUEST when they are inconsistent or a file is unreadable, CONNECTION_FAILED otherwise.
 */
export async function connectNats(options: NatsConnectOptions): Promise<NatsTransport> {
  const { servers, name, connectTimeoutMs, ...security } = options;
  const secured = await natsSecurityOptions(security);
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
      name: name ?? 'tidemark',
      timeout: connectTimeoutMs ?? 2000,
      maxReconnectAttempts: -1,
      ...secured,
    });
  } catch (cause) {
    if (isAuthError(cause)) {
      throw new TidemarkError('NOT_AUTHORIZED', `NATS at ${redactServers(servers)} refused the connection of ${describeIdentity(security)}: ${(cause as Error).message}`, { cause });
    }
    throw new TidemarkError('CONNECTION_FAILED', `cannot reach NATS at ${redactServers(servers)}: ${(cause as Error).message}`, { cause });
  }
  return wrap(nc);
}

/**
 * Logs what the server says about this connection: permission violations (a subscription or
 * publish the node's NATS user may not make: a misconfigured node permission shows here),
 * disconnects and reconnects. Never a credential. Ends when the connection closes.
 */
export function logConnectionEvents(transport: NatsTransport, logger: Logger): void {
  void (async () => {
    for await (const status of transport.connection.status()) {
      if (status.type === 'error') {
        const error = status.error;
        if (error instanceof PermissionViolationError) logger.error({ operation: error.operation, subject: error.subject }, 'NATS permission violation: this node may not do that (docs/security.md)');
        else logger.warn({ err: error.message }, 'NATS error');
      } else if (status.type === 'disconnect' || status.type === 'reconnect') {
        logger.warn({ server: redactServers(status.server) }, `NATS ${status.type}`);
      }
    }
  })().catch(() => undefined);
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
          const reply = isInbox(msg.reply) ? msg.reply : undefined;
          handler({
            subject: msg.subject,
            data: msg.data,
            reply,
            respond: (data) => reply !== undefined && msg.respond(data),
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

/** nats-server's prefix for the replies of a request that crossed a service import into this account. */
const SERVICE_REPLY_PREFIX = '_R_.';

function isInbox(reply: string | undefined): reply is string {
  return reply !== undefined && (reply.startsWith(INBOX_PREFIX) || reply.startsWith(SERVICE_REPLY_PREFIX));
}

function isAuthError(cause: unknown): boolean {
  const auth = (e: unknown) => e instanceof AuthorizationError || e instanceof UserAuthenticationExpiredError;
  return auth(cause) || (cause instanceof Error && auth(cause.cause));
}

function permissionViolation(cause: unknown): PermissionViolationError | undefined {
  if (cause instanceof PermissionViolationError) return cause;
  if (cause instanceof Error && cause.cause instanceof PermissionViolationError) return cause.cause;
  return undefined;
}

function mapRequestError(cause: unknown, subject: string, timeoutMs: number): TidemarkError {
  const denied = permissionViolation(cause);
  if (denied !== undefined) {
    const what =
      denied.operation === 'publish'
        ? `may not publish on ${denied.subject}`
        : `may not subscribe to its reply inbox ${denied.subject} (connect with the inbox prefix the permissions allow: inboxPrefix, --nats-inbox-prefix)`;
    return new TidemarkError('NOT_AUTHORIZED', `request on ${subject}: this NATS connection ${what}`, { cause, context: { subject: denied.subject, operation: denied.operation } });
  }
  if (isAuthError(cause)) return new TidemarkError('NOT_AUTHORIZED', `request on ${subject}: ${(cause as Error).message}`, { cause });
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
