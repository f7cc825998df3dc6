/**
 * The one error table. Wire replies carry `code`; the SDK maps it back to a {@link TidemarkError}
 * with the same `retriable` flag, so server and client can never disagree about what may be retried.
 */
export const ErrorCodes = {
  /** The topic (or partition) does not exist, or not yet on this node. Metadata may be stale. */
  UNKNOWN_TOPIC: { retriable: true, message: 'unknown topic or partition' },
  /** This node is not the leader for the partition. Refresh metadata and retry. */
  NOT_LEADER: { retriable: true, message: 'not the leader for this partition' },
  /** This voter is not the active controller (its reply names the leader when it knows one). */
  NOT_CONTROLLER: { retriable: true, message: 'not the active controller' },
  /** The broker epoch in the request is not the broker's current registration: register again. */
  STALE_BROKER_EPOCH: { retriable: false, message: 'broker epoch is stale' },
  /** The partition's leader is being elected or is still loading its log. Retry shortly. */
  LEADER_NOT_AVAILABLE: { retriable: true, message: 'leader not available' },
  /** The request carried a leader epoch older than the partition's. Refresh metadata. */
  FENCED_LEADER_EPOCH: { retriable: true, message: 'leader epoch is stale' },
  /** The request carried a leader epoch newer than this replica knows. Retry after it catches up. */
  UNKNOWN_LEADER_EPOCH: { retriable: true, message: 'leader epoch is not yet known here' },
  /**
   * acks=all and the partition's in-sync replicas are fewer than the topic's
   * `min.insync.replicas`: nothing was written. Retry once followers catch up.
   */
  NOT_ENOUGH_REPLICAS: { retriable: true, message: 'fewer in-sync replicas than min.insync.replicas' },
  /**
   * acks=all: the batch was written on the leader but the in-sync replicas fell below
   * `min.insync.replicas` before it was committed. A retry is answered from the producer state.
   */
  NOT_ENOUGH_REPLICAS_AFTER_APPEND: { retriable: true, message: 'in-sync replicas fell below min.insync.replicas after the append' },
  /** An ISR change named a partition epoch that is no longer current (Kafka's INVALID_UPDATE_VERSION). */
  INVALID_UPDATE_VERSION: { retriable: false, message: 'partition epoch is stale' },
  /** elect-leaders: the partition already has the leader asked for. */
  ELECTION_NOT_NEEDED: { retriable: false, message: 'leader election not needed' },
  /** elect-leaders: no replica may lead (the preferred one is not in sync or not alive; nobody alive). */
  ELIGIBLE_LEADERS_NOT_AVAILABLE: { retriable: true, message: 'no eligible leader available' },
  /** The fetch offset is below the log start or above the log end. */
  OFFSET_OUT_OF_RANGE: { retriable: false, message: 'offset out of range' },
  /** A record batch is larger than the topic's `max.message.bytes`. */
  RECORD_TOO_LARGE: { retriable: false, message: 'record batch too large' },
  /** The batch failed its header or CRC32C check. */
  CORRUPT_MESSAGE: { retriable: false, message: 'record batch is corrupt' },
  /** The request is malformed: bad msgpack, wrong field types, values out of bounds. */
  INVALID_REQUEST: { retriable: false, message: 'invalid request' },
  /**
   * The SDK cannot send this record as given: the codec threw or returned no bytes, or a field
   * is out of bounds (timestamp, partition, headers). Refused before anything is sent, for that
   * record alone; sending it again cannot help (Kafka's INVALID_RECORD, SerializationException).
   */
  INVALID_RECORD: { retriable: false, message: 'invalid record' },
  /** Topic names: 1-249 of [a-zA-Z0-9._-], not "." or "..". */
  INVALID_TOPIC: { retriable: false, message: 'invalid topic name' },
  INVALID_PARTITIONS: { retriable: false, message: 'invalid number of partitions' },
  INVALID_REPLICATION_FACTOR: { retriable: false, message: 'invalid replication factor' },
  INVALID_CONFIG: { retriable: false, message: 'invalid topic config' },
  TOPIC_ALREADY_EXISTS: { retriable: false, message: 'topic already exists' },
  /**
   * The batch's producer sequence is ahead of what the partition has from that producer: an
   * earlier batch is missing (lost or refused). Resend the earlier batches first, in order.
   */
  OUT_OF_ORDER_SEQUENCE: { retriable: true, message: 'producer sequence out of order' },
  /** The batch repeats a sequence older than the partition remembers; it was written before. */
  DUPLICATE_SEQUENCE: { retriable: false, message: 'producer sequence already written' },
  /** The producer epoch is older than one already seen for this producer id: it was fenced. */
  INVALID_PRODUCER_EPOCH: { retriable: false, message: 'producer epoch is stale' },
  /** The request's deadline passed before it could be answered. */
  TIMEOUT: { retriable: true, message: 'request timed out' },
  /**
   * acks=all: the leader wrote the batch but the in-sync replicas did not all have it by the
   * request's deadline (its `timeoutMs` from arrival), Kafka's delayed-produce expiry. The batch may
   * still be committed later; a retry by the idempotent producer is answered from the producer
   * state, so it is not written twice. Unlike `TIMEOUT`, the leader itself answered.
   */
  REQUEST_TIMED_OUT: { retriable: true, message: 'not replicated to the in-sync replicas before the request deadline' },
  /** Nobody answers on the subject: the node is down or the partition has no leader right now. */
  NO_RESPONDERS: { retriable: true, message: 'no node answers for this subject' },
  /** The NATS server cannot be reached (connect refused or timed out). */
  CONNECTION_FAILED: { retriable: true, message: 'cannot reach the NATS server' },
  /** A bounded queue is full (on the node, or the producer's waiting sends); back off and retry. */
  BUSY: { retriable: true, message: 'node is busy, retry later' },
  /**
   * Replica fetch session (KIP-227): the session id is not (or no longer) known to the leader, which
   * restarted or replaced it. The follower starts a new full session.
   */
  FETCH_SESSION_ID_NOT_FOUND: { retriable: true, message: 'fetch session not found' },
  /**
   * Replica fetch session: the request's session epoch is not the one the leader expects (a request
   * or reply was lost, late or duplicated). The follower starts a new full session.
   */
  INVALID_FETCH_SESSION_EPOCH: { retriable: true, message: 'fetch session epoch is not the expected one' },
  /**
   * NATS refused the request: this connection's user may not publish on the subject (or subscribe
   * to its reply inbox). Only the operator's permissions can change that (docs/security.md).
   */
  NOT_AUTHORIZED: { retriable: false, message: 'not authorized by the NATS permissions of this connection' },
  /** The node is shutting down. */
  SHUTTING_DOWN: { retriable: true, message: 'node is shutting down' },
  /** A storage or internal failure on the node. */
  /** An Exclusive subscription has a consumer already, or the subscription is of another type. */
  CONSUMER_BUSY: { retriable: false, message: 'subscription has a consumer that excludes this one' },
  /** The subscription is not (yet) known where it was asked for: the metadata may still be on its way. */
  UNKNOWN_SUBSCRIPTION: { retriable: true, message: 'unknown subscription' },
  /** Cumulative acks are for Exclusive and Failover subscriptions only (Pulsar's rule). */
  CUMULATIVE_ACK_NOT_ALLOWED: { retriable: false, message: 'cumulative ack is not allowed on Shared and Key_Shared subscriptions' },
  /** The topic's producer epoch moved past this producer's: another took the topic exclusively (issue 12). */
  PRODUCER_FENCED: { retriable: false, message: 'producer was fenced by a newer exclusive producer' },
  /** The topic has a producer this access mode cannot share it with (an exclusive one, or any, for Exclusive). */
  PRODUCER_BUSY: { retriable: false, message: 'topic has a producer that excludes this one' },
  INTERNAL: { retriable: false, message: 'internal error' },
  /** The client was closed while a call was pending. */
  CLOSED: { retriable: false, message: 'client closed' },
} as const satisfies Record<string, { retriable: boolean; message: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ErrorCodes, value);
}

/** Where a partition's log starts and ends at the replica that answered. */
export interface LogRange {
  logStartOffset: number;
  logEndOffset: number;
}

/** What an error looks like on the wire. */
export interface WireError {
  code: ErrorCode;
  message: string;
  /**
   * OFFSET_OUT_OF_RANGE only: the answering replica's log range, so the asker knows where the log
   * starts now (a follower below it restarts its log there). In the error's context on arrival.
   */
  logRange?: LogRange;
}

/**
 * Base class of every error Tidemark raises on purpose (server or SDK). `retriable` is the code's
 * entry in the table, except for an error made `final`: the SDK confirmed the condition from a
 * source that is current (UNKNOWN_TOPIC from a caught-up broker, NO_RESPONDERS when no node of the
 * cluster ever answered), so waiting cannot change the answer. `final` never goes on the wire.
 */
export class TidemarkError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly context: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown; context?: Record<string, unknown>; final?: boolean }) {
    super(message ?? ErrorCodes[code].message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TidemarkError';
    this.code = code;
    this.retriable = ErrorCodes[code].retriable && options?.final !== true;
    this.context = options?.context ?? {};
  }

  toWire(): WireError {
    const logRange = logRangeOf(this);
    return logRange === undefined ? { code: this.code, message: this.message } : { code: this.code, message: this.message, logRange };
  }

  static fromWire(wire: WireError, context?: Record<string, unknown>): TidemarkError {
    const all = wire.logRange === undefined ? context : { ...context, ...wire.logRange };
    return new TidemarkError(wire.code, wire.message, all === undefined ? undefined : { context: all });
  }
}

/** The log range an OFFSET_OUT_OF_RANGE error carries (in its context), or undefined. */
export function logRangeOf(error: unknown): LogRange | undefined {
  if (!(error instanceof TidemarkError) || error.code !== 'OFFSET_OUT_OF_RANGE') return undefined;
  const { logStartOffset, logEndOffset } = error.context;
  if (!Number.isSafeInteger(logStartOffset) || !Number.isSafeInteger(logEndOffset)) return undefined;
  return { logStartOffset: logStartOffset as number, logEndOffset: logEndOffset as number };
}

export function tidemarkError(code: ErrorCode, message?: string, context?: Record<string, unknown>): TidemarkError {
  return new TidemarkError(code, message, context === undefined ? undefined : { context });
}

/** An invariant broken inside Tidemark is a bug: crash loudly, never reply with it as if normal. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
