/**
 * A consumer of a subscription: an async iterator of messages from every partition of a topic,
 * shared with the subscription's other consumers the way its type says (Pulsar's Exclusive,
 * Failover, Shared, Key_Shared), acknowledged one by one (or cumulatively on Exclusive/Failover).
 *
 * Transport (src/protocol/subscription-messages.ts): one session per leader broker. Each session
 * keeps one consume request in flight at a time, listing every partition of the topic that broker
 * leads (from the metadata cache) with its permits; replies carry whole stored batches and the
 * offsets in them meant for this consumer, which is all the consumer keeps. Acks go through the
 * {@link AckBatcher}: one ack request per broker, answered once durable.
 *
 * Flow control (Pulsar's receiver queue): the consumer holds at most `receiverQueueSize` messages
 * it has not yet handed to the application, plus the one reply being decoded. Each partition's
 * permits are its share of the window less what it has buffered or asked for already, and the
 * sum of all permits asked for never exceeds what is free. A session whose partitions have no
 * room waits for the application to take messages (it sends when half its share is free, or
 * when its partitions' buffer is empty), and meanwhile keeps its session alive with an empty
 * poll every `maxWaitMs`.
 *
 * Errors: per partition. A retriable one (NOT_LEADER, FENCED_LEADER_EPOCH, UNKNOWN_SUBSCRIPTION, a
 * timeout, ...) drops the partition from its session for a backoff drawn by the retry helper's
 * {@link RetryBudget} (the one retry layer on this path; single attempts below it), refreshes the
 * metadata and routes the partition to its current leader; a partition that keeps failing past
 * the retry budget, or any non-retriable error (CONSUMER_BUSY, ...), fails the consumer: the
 * iterator throws it and the consumer closes.
 */
import { splitBatches, verifyBatch, type RecordHeaders, type StoredRecord } from '../protocol/batch.js';
import { TidemarkError } from '../protocol/errors.js';
import { FETCH_WAIT_MS_MAX, PAYLOAD_BYTES_MAX, REQUEST_TIMEOUT_MS_MAX, type TopicMetadata } from '../protocol/messages.js';
import {
  forEachDelivery,
  ACK_TIMEOUT_MS_MAX,
  CONSUMER_PERMITS_MAX,
  consumeReply,
  INITIAL_POSITIONS,
  isValidSubscriptionName,
  NACK_DELAY_MS_MAX,
  SESSION_TIMEOUT_MS_MAX,
  SESSION_TIMEOUT_MS_MIN,
  SUBSCRIPTION_TYPES,
  type ConsumePartitionReply,
  type ConsumeReply,
  type ConsumeRequest,
  type InitialPosition,
  type SubscriptionType,
} from '../protocol/subscription-messages.js';
import { isValidTopicName } from '../protocol/subjects.js';
import type { Random } from '../runtime/ports.js';
import { abortable, retry, retryPolicy, RetryBudget, type RetryOptions, type RetryPolicy } from '../runtime/retry.js';
import { BatchCache, type Entry as BatchEntry } from './batch-cache.js';
import { AckBatcher } from './ack-batcher.js';
import type { Codec } from './codecs.js';
import { Fifo } from './fifo.js';
import type { Producer } from './producer.js';
import type { ReaderDeps, ReaderRecord } from './reader.js';
import { DONE, SerialIterator } from './serial-iterator.js';

export type { SubscriptionType, InitialPosition };

/** Where messages that keep failing go (Pulsar's DeadLetterPolicy). Shared and Key_Shared only. */
export type DeadLetterPolicy = {
  /**
   * A message arriving with this redelivery count or more is not given to the application: it is
   * produced to the dead-letter topic, then acknowledged on the subscription. 1 = the first
   * redelivery goes to the DLQ. Required (no default).
   */
  maxRedeliverCount: number;
  /**
   * Created with one partition (and the source topic's replication factor) when missing.
   * @default `<topic>-<subscription>-DLQ`
   */
  deadLetterTopic?: string;
};

export type ConsumerOptions<T> = {
  /** Required (no default). */
  topic: string;
  /** Subscription name: 1-128 of [A-Za-z0-9._-]. Created on first use. Required (no default). */
  subscription: string;
  /** Turns value bytes back into values. Required (no default). */
  codec: Codec<T>;
  /**
   * How the subscription's consumers share it. The first consumer attached to a partition sets it.
   * @default 'Exclusive'
   */
  type?: SubscriptionType;
  /**
   * Where a subscription created by this consumer starts on the topic's current partitions
   * (partitions added later start at their beginning). No effect on an existing subscription.
   * @default 'latest'
   */
  initialPosition?: InitialPosition;
  /**
   * Receive window, in messages: the consumer holds at most this many messages the application
   * has not taken yet (plus one reply being decoded). Shared among the partitions.
   * @default 1000
   */
  receiverQueueSize?: number;
  /**
   * A message delivered and not acknowledged within this is delivered again (by the leader), ms;
   * 0 = never.
   * @default 0
   */
  ackTimeoutMs?: number;
  /**
   * How long the leader waits before delivering a negatively acknowledged message again, ms.
   * @default 1000
   */
  nackRedeliveryDelayMs?: number;
  /**
   * Shared and Key_Shared only.
   * @default none (messages are redelivered for ever)
   */
  deadLetterPolicy?: DeadLetterPolicy;
  /**
   * Failover: consumers are ordered by priority level (lower first), then name.
   * @default 0
   */
  priorityLevel?: number;
  /**
   * Failover orders consumers by it; shown by describeSubscription.
   * @default `consumer-<random hex>`
   */
  consumerName?: string;
  /**
   * The leader drops a consumer it has not heard from for this long and hands its messages on, ms.
   * @default 10000
   */
  sessionTimeoutMs?: number;
  /**
   * How long a leader may hold a consume request when it has nothing to deliver, ms. At most
   * sessionTimeoutMs / 3, so polls keep the session alive.
   * @default min(500, sessionTimeoutMs / 3)
   */
  maxWaitMs?: number;
  /**
   * Size bound of one consume reply, bytes; clamped to the transport's max payload less 1 KiB.
   * The first batch is returned even if larger, so the consumer always progresses.
   * @default 1048576
   */
  fetchBytesMax?: number;
  /**
   * Budget of one consume request beyond maxWaitMs, and of one ack request, ms.
   * @default the client's requestTimeoutMs (10000)
   */
  requestTimeoutMs?: number;
  /**
   * Topic metadata is refreshed this often, so leader moves and partitions added to the topic
   * are picked up, ms.
   * @default 5000
   */
  metadataRefreshMs?: number;
  /**
   * Backoff and bounds of retries: of the startup calls, of each ack flush, and of a partition
   * whose consume requests keep failing (past them the consumer fails).
   * @default the client's retry options
   */
  retry?: RetryOptions;
};

export interface ConsumerMessage<T> extends ReaderRecord<T> {
  /** How many times the subscription delivered this message before (0 the first time). */
  readonly redeliveryCount: number;
  /** Acknowledges this message; resolves once the acknowledgement is durable. */
  ack(): Promise<void>;
  /** Asks for this message again, after nackRedeliveryDelayMs. */
  nack(): void;
}

/**
 * Iterate it (`for await`) or call next(); a `break` out of `for await` closes the consumer (as
 * with a reader). Messages come in the order the leaders deliver them (per partition, offset order
 * apart from redeliveries).
 */
export interface Consumer<T> extends AsyncIterableIterator<ConsumerMessage<T>> {
  readonly topic: string;
  readonly subscription: string;
  readonly type: SubscriptionType;
  readonly consumerName: string;
  /** Unique per consumer instance; the leaders' key for its sessions. */
  readonly consumerId: string;
  /** Messages received and not yet taken by the application. */
  readonly buffered: number;
  /** Resolves once the acknowledgement is durable. */
  ack(message: ConsumerMessage<T>): Promise<void>;
  nack(message: ConsumerMessage<T>): void;
  /**
   * Acknowledges the message and everything before it on its partition; resolves once durable.
   * Exclusive and Failover only: rejects with CUMULATIVE_ACK_NOT_ALLOWED on Shared and Key_Shared.
   */
  ackCumulative(message: ConsumerMessage<T>): Promise<void>;
  /**
   * Records of the topic the subscription has not acknowledged, summed over partitions, as the
   * last consume replies said (Kafka's lag); undefined until every partition has reported.
   */
  backlog(): number | undefined;
  /**
   * True when nothing is buffered or being acknowledged, and every partition reported a backlog of
   * 0 in a reply to a request sent after the last acknowledgement became durable.
   */
  caughtUp(): boolean;
  /** Flushes acknowledgements, tells each leader the consumer leaves (best effort), and stops. A pending next() resolves done. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A reader's call-path parts (rpc, metadata, clock, retry policy, budget, onClosed), plus what a consumer also needs. */
export type ConsumerDeps = ReaderDeps & {
  /** Registers the subscription (idempotent); does its own retries. */
  ensureSubscription: (topic: string, name: string, initialPosition: InitialPosition) => Promise<void>;
  /** Creates a topic with one partition if it does not exist (the dead-letter topic). */
  ensureTopic: (name: string, replicationFactor: number) => Promise<void>;
  /** A producer of raw bytes (the dead-letter topic). */
  producer: (topic: string) => Producer<Uint8Array>;
};

export const CONSUMER_DEFAULTS = {
  type: 'Exclusive',
  initialPosition: 'latest',
  receiverQueueSize: 1000,
  ackTimeoutMs: 0,
  nackRedeliveryDelayMs: 1000,
  priorityLevel: 0,
  sessionTimeoutMs: 10_000,
  maxWaitMs: 500,
  fetchBytesMax: 1 << 20,
  metadataRefreshMs: 5000,
} as const;

/** Shortest interval of the empty polls that keep a full consumer's sessions alive, ms (below SESSION_TIMEOUT_MS_MIN / 3). */
const KEEPALIVE_MS_MIN = 100;

/** Largest receive window, messages. */
export const RECEIVER_QUEUE_SIZE_MAX = 1_000_000;
/** Stored bytes of the batches a consumer keeps decoded for later slices of them (batch-cache.ts). */
export const CONSUMER_BATCH_CACHE_BYTES = 8 * 1024 * 1024;

/** Headers a dead-lettered message carries besides its own: where it came from. */
export const DLQ_HEADERS = { topic: 'tidemark-dlq-origin-topic', partition: 'tidemark-dlq-origin-partition', offset: 'tidemark-dlq-origin-offset' } as const;

const lenientUtf8 = new TextDecoder('utf-8');
const utf8Encoder = new TextEncoder();

/** A delivered record not yet handed to the application. */
interface Delivered {
  partition: number;
  record: StoredRecord;
  redeliveryCount: number;
}

class Message<T> implements ConsumerMessage<T> {
  constructor(
    private readonly consumer: ConsumerImpl<T>,
    readonly topic: string,
    readonly partition: number,
    readonly offset: number,
    readonly timestamp: number,
    readonly key: Uint8Array | null,
    readonly value: T | null,
    readonly headers: Readonly<RecordHeaders>,
    readonly redeliveryCount: number,
  ) {}

  get keyString(): string | null {
    return this.key === null ? null : lenientUtf8.decode(this.key);
  }

  headerString(name: string): string | null | undefined {
    if (!Object.hasOwn(this.headers, name)) return undefined;
    const v = this.headers[name];
    return v === null || v === undefined ? null : lenientUtf8.decode(v);
  }

  ack(): Promise<void> {
    return this.consumer.ack(this);
  }

  nack(): void {
    this.consumer.nack(this);
  }
}

/** One partition of the topic as this consumer sees it. */
interface PartitionState {
  partition: number;
  /** Its leader's session, if it has a leader. */
  brokerId: number | undefined;
  /** Messages received (or being dead-lettered) and not yet taken by the application. */
  buffered: number;
  /** Permits of the consume request in flight for it. */
  inFlight: number;
  backlog: number | undefined;
  /** Sequence number of the request whose reply gave `backlog`. */
  backlogSeq: number;
  /** While it fails: the retry helper's budget, and when it may be asked for again. */
  budget: RetryBudget | undefined;
  retryAtMs: number;
  /** Failover: whether this consumer is the partition's active one. */
  active: boolean | undefined;
}

/** This consumer's session with one leader broker. */
interface Session {
  brokerId: number;
  partitions: Set<number>;
  /** Whether the leader holds a session of ours (we sent it partitions and have not detached). */
  attached: boolean;
  first: boolean;
  lastSentMs: number;
  /** The `seq` of the last consume reply received from this broker; sent back with the next request. */
  received: number;
  /** Wakes the loop out of a wait. */
  wake: () => void;
  /** Waits up to `ms` (Infinity: until woken), or until woken or the consumer closes. */
  park: (ms: number) => Promise<void>;
  loop: Promise<void>;
  /** Resolves when its first request completed (either way). */
  firstDone: Promise<void>;
  markFirstDone: () => void;
}

export class ConsumerImpl<T> extends SerialIterator<ConsumerMessage<T>> implements Consumer<T> {
  readonly topic: string;
  readonly subscription: string;
  readonly type: SubscriptionType;
  readonly consumerName: string;
  readonly consumerId: string;
  private readonly initialPosition: InitialPosition;
  private readonly receiverQueueSize: number;
  private readonly ackTimeoutMs: number;
  private readonly priorityLevel: number;
  private readonly sessionTimeoutMs: number;
  private readonly maxWaitMs: number;
  private readonly maxBytes: number;
  private readonly requestTimeoutMs: number;
  private readonly metadataRefreshMs: number;
  private readonly policy: RetryPolicy;
  private readonly dlq: { maxRedeliverCount: number; topic: string } | undefined;

  private readonly parts = new Map<number, PartitionState>();
  /** The partitions' numbers, ascending. */
  private sortedParts: number[] = [];
  private readonly sessions = new Map<number, Session>();
  private readonly queue = new Fifo<Delivered>();
  private readonly readers: Array<() => void> = [];
  private readonly acks: AckBatcher;
  private readonly abort = new AbortController();
  private readonly dlqTasks = new Set<Promise<void>>();
  private dlqReady: Promise<void> | undefined;
  private dlqProducer: Producer<Uint8Array> | undefined;
  private replicationFactor = 1;

  private failure: unknown;
  private failed!: Promise<never>;
  private rejectFailed!: (error: unknown) => void;
  private closing: Promise<void> | undefined;
  private closed = false;
  private requestSeq = 0;
  private ackDurableSeq = 0;
  private rotation = 0;
  /** Batches received lately, decoded, so a leader handing one batch out in slices sends it once. */
  private readonly batches = new BatchCache(CONSUMER_BATCH_CACHE_BYTES);
  private routeBudget: RetryBudget | undefined;
  private routeTimer: unknown;
  private routeAtMs = Number.POSITIVE_INFINITY;
  private routing: Promise<void> | undefined;
  private refreshTimer: unknown;

  constructor(
    private readonly deps: ConsumerDeps,
    private readonly options: ConsumerOptions<T>,
  ) {
    super();
    if (!isValidTopicName(options.topic)) throw new TidemarkError('INVALID_TOPIC', `invalid topic name "${options.topic}"`);
    if (typeof options.subscription !== 'string' || !isValidSubscriptionName(options.subscription)) {
      throw new TidemarkError('INVALID_REQUEST', `invalid subscription name "${options.subscription}": use 1-128 of [A-Za-z0-9._-]`);
    }
    if (options.codec === undefined) throw new TidemarkError('INVALID_REQUEST', 'consumer option codec is required');
    this.topic = options.topic;
    this.subscription = options.subscription;
    this.type = options.type ?? CONSUMER_DEFAULTS.type;
    if (!(SUBSCRIPTION_TYPES as readonly string[]).includes(this.type)) {
      throw new TidemarkError('INVALID_REQUEST', `consumer option type must be one of ${SUBSCRIPTION_TYPES.join(', ')}, got ${String(this.type)}`);
    }
    this.initialPosition = options.initialPosition ?? CONSUMER_DEFAULTS.initialPosition;
    if (!(INITIAL_POSITIONS as readonly string[]).includes(this.initialPosition)) {
      throw new TidemarkError('INVALID_REQUEST', `consumer option initialPosition must be earliest or latest, got ${String(this.initialPosition)}`);
    }
    this.receiverQueueSize = intOption('receiverQueueSize', options.receiverQueueSize ?? CONSUMER_DEFAULTS.receiverQueueSize, 1, RECEIVER_QUEUE_SIZE_MAX);
    this.ackTimeoutMs = intOption('ackTimeoutMs', options.ackTimeoutMs ?? CONSUMER_DEFAULTS.ackTimeoutMs, 0, ACK_TIMEOUT_MS_MAX);
    const nackDelayMs = intOption('nackRedeliveryDelayMs', options.nackRedeliveryDelayMs ?? CONSUMER_DEFAULTS.nackRedeliveryDelayMs, 0, NACK_DELAY_MS_MAX);
    this.priorityLevel = intOption('priorityLevel', options.priorityLevel ?? CONSUMER_DEFAULTS.priorityLevel, 0, 1_000_000);
    this.sessionTimeoutMs = intOption('sessionTimeoutMs', options.sessionTimeoutMs ?? CONSUMER_DEFAULTS.sessionTimeoutMs, SESSION_TIMEOUT_MS_MIN, SESSION_TIMEOUT_MS_MAX);
    const maxWaitMax = Math.min(FETCH_WAIT_MS_MAX, Math.floor(this.sessionTimeoutMs / 3));
    this.maxWaitMs = intOption('maxWaitMs (at most sessionTimeoutMs / 3)', options.maxWaitMs ?? Math.min(CONSUMER_DEFAULTS.maxWaitMs, maxWaitMax), 0, maxWaitMax);
    this.maxBytes = Math.min(intOption('fetchBytesMax', options.fetchBytesMax ?? CONSUMER_DEFAULTS.fetchBytesMax, 1, PAYLOAD_BYTES_MAX), deps.rpc.payloadBytesMax());
    this.requestTimeoutMs = intOption('requestTimeoutMs', options.requestTimeoutMs ?? deps.requestTimeoutMs, 1, REQUEST_TIMEOUT_MS_MAX);
    this.metadataRefreshMs = intOption('metadataRefreshMs', options.metadataRefreshMs ?? CONSUMER_DEFAULTS.metadataRefreshMs, 100, 3_600_000);
    this.policy = retryPolicy(options.retry, deps.policy);
    this.consumerId = randomHex(deps.random, 16);
    this.consumerName = options.consumerName ?? `consumer-${this.consumerId.slice(0, 8)}`;
    if (typeof this.consumerName !== 'string' || this.consumerName.length < 1 || this.consumerName.length > 128) {
      throw new TidemarkError('INVALID_REQUEST', 'consumer option consumerName must be 1-128 characters');
    }
    if (options.deadLetterPolicy !== undefined) {
      if (this.type !== 'Shared' && this.type !== 'Key_Shared') {
        throw new TidemarkError('INVALID_REQUEST', 'deadLetterPolicy is for Shared and Key_Shared subscriptions (as in Pulsar)');
      }
      const maxRedeliverCount = intOption('deadLetterPolicy.maxRedeliverCount', options.deadLetterPolicy.maxRedeliverCount, 1, 1_000_000);
      const topic = options.deadLetterPolicy.deadLetterTopic ?? `${this.topic}-${this.subscription}-DLQ`;
      if (!isValidTopicName(topic)) throw new TidemarkError('INVALID_TOPIC', `invalid dead-letter topic name "${topic}"`);
      this.dlq = { maxRedeliverCount, topic };
    }
    this.failed = new Promise<never>((_, reject) => (this.rejectFailed = reject));
    this.failed.catch(() => undefined);
    this.acks = new AckBatcher({
      rpc: deps.rpc,
      subjects: deps.subjects,
      metadata: deps.metadata,
      clock: deps.clock,
      random: deps.random,
      policy: this.policy,
      requestTimeoutMs: this.requestTimeoutMs,
      signal: this.abort.signal,
      topic: this.topic,
      subscription: this.subscription,
      consumerId: this.consumerId,
      nackDelayMs,
      onDurable: () => (this.ackDurableSeq = this.requestSeq),
    });
  }

  /**
   * Makes sure the subscription exists, finds the partitions' leaders and completes one consume
   * round trip with each (without waiting for messages): so a consumer the subscription refuses
   * (CONSUMER_BUSY) fails here.
   */
  async start(): Promise<void> {
    const { clock, random, metadata } = this.deps;
    await Promise.race([this.deps.ensureSubscription(this.topic, this.subscription, this.initialPosition), this.failed]);
    const md = await Promise.race([
      retry(() => metadata.topic(this.topic), { policy: this.policy, clock, random, signal: this.abort.signal, onRetry: (e) => metadata.noteError(this.topic, e) }),
      this.failed,
    ]);
    this.apply(md);
    this.scheduleRefresh();
    await Promise.race([Promise.all([...this.sessions.values()].map((s) => s.firstDone)), this.failed]);
    if (this.failure !== undefined) throw this.failure;
    if (this.closed) throw new TidemarkError('CLOSED', 'consumer closed while starting');
  }

  get buffered(): number {
    return this.queue.length;
  }


  ack(message: ConsumerMessage<T>): Promise<void> {
    const check = this.own(message);
    if (check !== undefined) return Promise.reject(check);
    return this.acks.ack(message.partition, message.offset);
  }

  nack(message: ConsumerMessage<T>): void {
    if (this.own(message) !== undefined) return;
    this.acks.nack(message.partition, message.offset);
  }

  ackCumulative(message: ConsumerMessage<T>): Promise<void> {
    if (this.type === 'Shared' || this.type === 'Key_Shared') {
      return Promise.reject(new TidemarkError('CUMULATIVE_ACK_NOT_ALLOWED', `cumulative ack is not allowed on ${this.type} subscription "${this.subscription}"`));
    }
    const check = this.own(message);
    if (check !== undefined) return Promise.reject(check);
    return this.acks.ackCumulative(message.partition, message.offset);
  }

  backlog(): number | undefined {
    let sum = 0;
    for (const p of this.parts.values()) {
      if (p.backlog === undefined) return undefined;
      sum += p.backlog;
    }
    return this.parts.size === 0 ? undefined : sum;
  }

  caughtUp(): boolean {
    if (this.queue.length > 0 || !this.acks.idle || this.dlqTasks.size > 0 || this.parts.size === 0) return false;
    for (const p of this.parts.values()) {
      if (p.backlog !== 0 || p.backlogSeq <= this.ackDurableSeq) return false;
    }
    return true;
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // --- the application side ---

  private own(message: ConsumerMessage<T>): TidemarkError | undefined {
    if (message.topic !== this.topic || !this.parts.has(message.partition)) {
      return new TidemarkError('INVALID_REQUEST', `message ${message.topic}/${message.partition}@${message.offset} is not from this consumer`);
    }
    return undefined;
  }

  protected async pull(): Promise<IteratorResult<ConsumerMessage<T>, undefined>> {
    for (;;) {
      if (this.failure !== undefined) throw this.failure;
      if (this.closed) return DONE;
      const d = this.queue.shift();
      if (d !== undefined) {
        this.taken(d.partition);
        return { done: false, value: this.toMessage(d) };
      }
      await new Promise<void>((resolve) => this.readers.push(resolve));
    }
  }

  private toMessage(d: Delivered): Message<T> {
    const r = d.record;
    let value: T | null = null;
    if (r.value !== null) {
      try {
        value = this.options.codec.decode(r.value);
      } catch (cause) {
        throw new TidemarkError('CORRUPT_MESSAGE', `value at ${this.topic}/${d.partition}@${r.offset} does not decode: ${(cause as Error).message}`, {
          cause,
          context: { topic: this.topic, partition: d.partition, offset: r.offset },
        });
      }
    }
    return new Message(this, this.topic, d.partition, r.offset, r.timestamp, r.key, value, r.headers, d.redeliveryCount);
  }

  /** A message left the buffer: its partition may ask for more. */
  private taken(partition: number): void {
    const p = this.parts.get(partition);
    if (p === undefined) return;
    p.buffered--;
    if (p.brokerId !== undefined) this.sessions.get(p.brokerId)?.wake();
  }

  private wakeReaders(): void {
    for (const wake of this.readers.splice(0)) wake();
  }

  // --- routing: which broker leads which partition ---

  /** Brings partitions and sessions in line with the topic's metadata. */
  private apply(md: TopicMetadata): void {
    if (this.closed) return;
    const now = this.deps.clock.now();
    this.replicationFactor = Math.max(1, md.partitions[0]?.replicas.length ?? 1);
    for (const pm of md.partitions) {
      let p = this.parts.get(pm.partition);
      if (p === undefined) {
        p = { partition: pm.partition, brokerId: undefined, buffered: 0, inFlight: 0, backlog: undefined, backlogSeq: -1, budget: undefined, retryAtMs: 0, active: undefined };
        this.parts.set(pm.partition, p);
        this.sortedParts = [...this.parts.keys()].sort((a, b) => a - b);
        this.batches.partitions = this.sortedParts.length;
      }
      const leader = pm.leader >= 0 ? pm.leader : undefined;
      if (leader === undefined && p.retryAtMs <= now) {
        this.partitionFailed(p, new TidemarkError('LEADER_NOT_AVAILABLE', `${this.topic}/${pm.partition} has no leader right now`));
      }
      if (p.brokerId !== leader) {
        if (p.brokerId !== undefined) {
          const old = this.sessions.get(p.brokerId);
          old?.partitions.delete(p.partition);
          old?.wake();
        }
        p.brokerId = leader;
        if (leader !== undefined) this.session(leader).partitions.add(p.partition);
      }
    }
    for (const s of this.sessions.values()) s.wake();
  }

  private session(brokerId: number): Session {
    let s = this.sessions.get(brokerId);
    if (s !== undefined) return s;
    let markFirstDone!: () => void;
    const firstDone = new Promise<void>((resolve) => (markFirstDone = resolve));
    let wakeUp: (() => void) | undefined;
    const park = (ms: number) =>
      new Promise<void>((resolve) => {
        if (this.abort.signal.aborted || this.closed) return resolve();
        const timer = Number.isFinite(ms) ? this.deps.clock.setTimeout(() => done(), Math.max(0, ms)) : undefined;
        const onAbort = () => done();
        const done = () => {
          if (timer !== undefined) this.deps.clock.clearTimeout(timer);
          this.abort.signal.removeEventListener('abort', onAbort);
          wakeUp = undefined;
          resolve();
        };
        wakeUp = done;
        this.abort.signal.addEventListener('abort', onAbort, { once: true });
      });
    const created: Session = {
      brokerId,
      partitions: new Set(),
      attached: false,
      first: true,
      lastSentMs: Number.NEGATIVE_INFINITY,
      received: 0,
      wake: () => wakeUp?.(),
      park,
      loop: Promise.resolve(),
      firstDone,
      markFirstDone,
    };
    this.sessions.set(brokerId, created);
    // Starts after the caller has given the session its partitions.
    created.loop = Promise.resolve()
      .then(() => this.runSession(created))
      .catch((error: unknown) => this.fail(error));
    s = created;
    return s;
  }

  /** Refreshes routing after `delayMs` (the earliest asked for wins). */
  private scheduleRoute(delayMs: number): void {
    if (this.closed) return;
    const at = this.deps.clock.now() + delayMs;
    if (at >= this.routeAtMs) return;
    if (this.routeTimer !== undefined) this.deps.clock.clearTimeout(this.routeTimer);
    this.routeAtMs = at;
    this.routeTimer = this.deps.clock.setTimeout(() => {
      this.routeTimer = undefined;
      this.routeAtMs = Number.POSITIVE_INFINITY;
      void this.route(false);
    }, delayMs);
  }

  private scheduleRefresh(): void {
    if (this.closed) return;
    this.refreshTimer = this.deps.clock.setTimeout(() => {
      this.refreshTimer = undefined;
      void this.route(true).finally(() => this.scheduleRefresh());
    }, this.metadataRefreshMs);
  }

  /** One routing pass (single flight): from the cache, or `fresh` from the cluster. */
  private route(fresh: boolean): Promise<void> {
    this.routing ??= (async () => {
      const { metadata, clock, random } = this.deps;
      try {
        let md: TopicMetadata;
        if (fresh) {
          const reply = await metadata.fetch([this.topic]);
          const found = reply.topics.find((t) => t.name === this.topic);
          if (found === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `topic "${this.topic}" is unknown to the cluster`);
          md = found;
        } else {
          md = await metadata.topic(this.topic);
        }
        this.routeBudget = undefined;
        this.apply(md);
      } catch (error) {
        if (this.closed) return;
        metadata.noteError(this.topic, error);
        this.routeBudget ??= new RetryBudget(this.policy, clock, random);
        this.routeBudget.started();
        const delay = this.routeBudget.nextDelayMs(error);
        if (delay === undefined) this.fail(error);
        else this.scheduleRoute(delay);
      } finally {
        this.routing = undefined;
      }
    })();
    return this.routing;
  }

  // --- sessions ---

  private async runSession(s: Session): Promise<void> {
    const { park } = s;
    const { clock } = this.deps;
    while (!this.closed) {
      const now = clock.now();
      if (s.partitions.size === 0) {
        if (s.attached) await this.detach(s);
        s.markFirstDone();
        await park(Number.POSITIVE_INFINITY);
        continue;
      }
      const eligible = [...s.partitions].filter((p) => this.parts.get(p)!.retryAtMs <= now).sort((a, b) => a - b);
      if (eligible.length === 0) {
        s.markFirstDone();
        const retryAt = Math.min(...[...s.partitions].map((p) => this.parts.get(p)!.retryAtMs));
        await park(retryAt - now);
        continue;
      }
      const permits = this.permitsFor(eligible);
      const total = permits.reduce((a, b) => a + b, 0);
      // An idle session polls every maxWaitMs (at least every KEEPALIVE_MS_MIN, so maxWaitMs 0 does not spin).
      const keepaliveMs = Math.max(this.maxWaitMs, KEEPALIVE_MS_MIN);
      const keepaliveDue = now - s.lastSentMs >= keepaliveMs;
      if (!s.first && !keepaliveDue && (!this.worthAsking(eligible, total) || this.starves(eligible, permits))) {
        await park(s.lastSentMs + keepaliveMs - now);
        continue;
      }
      // Nothing to ask for: an empty poll only keeps the session alive, so it is not held.
      await this.poll(s, eligible, permits, total === 0 ? 0 : s.first ? 0 : this.maxWaitMs);
    }
  }

  /**
   * A poll now would give no permits to a partition with more to read (its share is still in the
   * buffer) while others, with nothing to read, get theirs: the leader would hold that poll for
   * maxWaitMs and the busy partition would get nothing meanwhile (one poll per session). Better to
   * wait for the application to take a message, which wakes the session (sim seed 1678219992: a
   * window of 7 over two partitions drained 8 messages/s).
   */
  private starves(partitions: number[], permits: number[]): boolean {
    return partitions.some((partition, i) => {
      const p = this.parts.get(partition)!;
      return permits[i] === 0 && p.buffered > 0 && (p.backlog === undefined || p.backlog > 0);
    });
  }

  /** Send when half the partitions' share is free, or when they have nothing buffered (never stall). */
  private worthAsking(partitions: number[], permits: number): boolean {
    if (permits === 0) return false;
    let share = 0;
    let buffered = 0;
    for (const p of partitions) {
      share += this.quota(p);
      buffered += this.parts.get(p)!.buffered;
    }
    return buffered === 0 || permits * 2 >= share;
  }

  /** A partition's share of the receive window; when the window is smaller than the partition count, the shares rotate. */
  private quota(partition: number): number {
    // A window too small to give every partition a couple of messages goes to the partitions that
    // have something to deliver (backlog unknown, or above 0, or messages held), so one busy
    // partition among idle ones is not read a message at a time.
    let parts = this.sortedParts;
    if (this.receiverQueueSize < parts.length * 2) {
      const busy = parts.filter((n) => {
        const p = this.parts.get(n)!;
        return p.backlog === undefined || p.backlog > 0 || p.buffered > 0 || p.inFlight > 0;
      });
      if (!busy.includes(partition)) return 0;
      parts = busy;
    }
    const n = parts.length;
    const base = Math.floor(this.receiverQueueSize / n);
    const extra = this.receiverQueueSize % n;
    const index = parts.indexOf(partition);
    return base + ((index + this.rotation) % n < extra ? 1 : 0);
  }

  /** Each partition's permits: its share less what it holds or has asked for, never more than the window has free. */
  private permitsFor(partitions: number[]): number[] {
    let used = 0;
    for (const p of this.parts.values()) used += p.buffered + p.inFlight;
    let free = Math.max(0, this.receiverQueueSize - used);
    return partitions.map((partition) => {
      const p = this.parts.get(partition)!;
      const want = Math.max(0, this.quota(partition) - p.buffered - p.inFlight);
      const give = Math.min(want, free, CONSUMER_PERMITS_MAX);
      free -= give;
      return give;
    });
  }

  private request(s: Session, partitions: Array<{ partition: number; permits: number }>, maxWaitMs: number, close?: boolean): ConsumeRequest {
    const body: ConsumeRequest = {
      timeoutMs: Math.min(REQUEST_TIMEOUT_MS_MAX, maxWaitMs + this.requestTimeoutMs),
      consumerId: this.consumerId,
      consumerName: this.consumerName,
      priorityLevel: this.priorityLevel,
      type: this.type,
      sessionTimeoutMs: this.sessionTimeoutMs,
      ackTimeoutMs: this.ackTimeoutMs,
      partitions,
      maxBytes: this.maxBytes,
      maxWaitMs,
      received: s.received,
    };
    if (close === true) body.close = true;
    return body;
  }

  private async poll(s: Session, partitions: number[], permits: number[], maxWaitMs: number): Promise<void> {
    const { rpc, subjects, clock } = this.deps;
    const seq = ++this.requestSeq;
    this.rotation++;
    partitions.forEach((partition, i) => (this.parts.get(partition)!.inFlight += permits[i]!));
    s.lastSentMs = clock.now();
    s.attached = true;
    let reply: ConsumeReply | undefined;
    let error: unknown;
    try {
      reply = await abortable(
        rpc.request(
          subjects.consumer('consume', s.brokerId, this.topic, this.subscription),
          this.request(
            s,
            partitions.map((partition, i) => {
              const cached = this.batches.held(partition);
              return cached.length === 0 ? { partition, permits: permits[i]! } : { partition, permits: permits[i]!, cached };
            }),
            maxWaitMs,
          ),
          consumeReply,
        ),
        this.abort.signal,
      );
    } catch (e) {
      error = e;
    }
    partitions.forEach((partition, i) => (this.parts.get(partition)!.inFlight -= permits[i]!));
    s.first = false;
    if (this.closed) return;
    try {
      if (reply === undefined) {
        for (const partition of partitions) this.partitionFailed(this.parts.get(partition)!, error);
      } else {
        this.handleReply(s, seq, partitions, reply);
      }
    } finally {
      s.markFirstDone();
    }
  }

  private handleReply(s: Session, seq: number, asked: number[], reply: ConsumeReply): void {
    // Told to the leader with the next request: this reply arrived, its deliveries are ours.
    s.received = reply.seq;
    for (const pr of reply.partitions) {
      const p = this.parts.get(pr.partition);
      if (p === undefined || !asked.includes(pr.partition)) continue;
      if (pr.error !== undefined) {
        this.partitionFailed(p, TidemarkError.fromWire(pr.error, { topic: this.topic, partition: pr.partition, brokerId: s.brokerId }));
        continue;
      }
      p.budget = undefined;
      p.retryAtMs = 0;
      if (pr.active !== undefined) {
        // Failover: no longer the active consumer. What it holds and has not given the application
        // went back to the leader for the new active one: drop it, so the partition is read in
        // order by one consumer (the new one gets these messages again, count + 1).
        if (!pr.active && p.active === true) this.dropBuffered(p);
        p.active = pr.active;
      }
      if (pr.backlog !== undefined) {
        p.backlog = pr.backlog;
        p.backlogSeq = seq;
      }
      this.deliver(p, pr);
    }
    if (this.queue.length > 0) this.wakeReaders();
  }

  private dropBuffered(p: PartitionState): void {
    p.buffered -= this.queue.removeWhere((d) => d.partition === p.partition);
  }

  /** Keeps the records of the reply's batches whose offsets were delivered to this consumer. */
  private deliver(p: PartitionState, pr: ConsumePartitionReply): void {
    const deliveries = pr.deliveries;
    if (deliveries === undefined || deliveries.length === 0) return;
    const fresh: BatchEntry[] = [];
    if (pr.records !== undefined && pr.records.length > 0) {
      for (const batch of splitBatches(pr.records)) {
        verifyBatch(batch);
        fresh.push(BatchCache.decode(p.partition, batch));
      }
    }
    // Resolved before the reply's batches go into the cache (which may evict older ones of the
    // partition that this reply's deliveries still need).
    const missing: number[] = [];
    forEachDelivery(deliveries, (offset, redeliveryCount) => {
      const record = this.batches.record(p.partition, offset, fresh);
      if (record === undefined) {
        missing.push(offset);
        return;
      }
      const d: Delivered = { partition: p.partition, record, redeliveryCount };
      p.buffered++;
      if (this.dlq !== undefined && redeliveryCount >= this.dlq.maxRedeliverCount) this.deadLetter(d, this.dlq.topic);
      else this.queue.push(d);
    });
    for (const entry of fresh) this.batches.put(entry);
    // Delivered offsets whose records neither the reply nor the held batches have: ask for them again.
    for (const offset of missing) this.acks.nack(p.partition, offset);
  }



  /** Produces the message to the dead-letter topic, then acknowledges it; on failure asks for it again (nack). */
  private deadLetter(d: Delivered, topic: string): void {
    const task = (async () => {
      try {
        this.dlqReady ??= this.deps.ensureTopic(topic, this.replicationFactor);
        try {
          await this.dlqReady;
        } catch (error) {
          this.dlqReady = undefined;
          throw error;
        }
        this.dlqProducer ??= this.deps.producer(topic);
        const r = d.record;
        await this.dlqProducer.send({
          key: r.key,
          value: r.value,
          headers: {
            ...r.headers,
            [DLQ_HEADERS.topic]: utf8Encoder.encode(this.topic),
            [DLQ_HEADERS.partition]: utf8Encoder.encode(String(d.partition)),
            [DLQ_HEADERS.offset]: utf8Encoder.encode(String(r.offset)),
          },
          timestamp: r.timestamp,
        });
        await this.acks.ack(d.partition, r.offset);
      } catch {
        // Not lost: the leader delivers it again (and this consumer tries the DLQ again).
        this.acks.nack(d.partition, d.record.offset);
      } finally {
        this.taken(d.partition);
      }
    })();
    this.dlqTasks.add(task);
    void task.finally(() => this.dlqTasks.delete(task));
  }

  /** A retriable error backs the partition off and reroutes it; anything else fails the consumer. */
  private partitionFailed(p: PartitionState, error: unknown): void {
    if (this.closed) return;
    const { clock, random, metadata } = this.deps;
    if (!(error instanceof TidemarkError) || !error.retriable) {
      this.fail(error);
      return;
    }
    metadata.noteError(this.topic, error);
    p.budget ??= new RetryBudget(this.policy, clock, random);
    p.budget.started();
    const delay = p.budget.nextDelayMs(error);
    if (delay === undefined) {
      this.fail(error);
      return;
    }
    p.retryAtMs = clock.now() + delay;
    this.scheduleRoute(delay);
  }

  /** Tells a leader this consumer reads none of its partitions any more (best effort). */
  private async detach(s: Session): Promise<void> {
    s.attached = false;
    try {
      await this.deps.rpc.request(this.deps.subjects.consumer('consume', s.brokerId, this.topic, this.subscription), this.request(s, [], 0), consumeReply);
    } catch {
      // The leader drops the session after sessionTimeoutMs anyway.
    }
  }

  // --- failure and close ---

  private fail(error: unknown): void {
    if (this.failure !== undefined || this.closed) return;
    this.failure = error;
    this.rejectFailed(error);
    this.wakeReaders();
    void this.close();
  }

  private async shutdown(): Promise<void> {
    const { clock, rpc, subjects } = this.deps;
    this.closed = true;
    this.wakeReaders();
    if (this.routeTimer !== undefined) clock.clearTimeout(this.routeTimer);
    if (this.refreshTimer !== undefined) clock.clearTimeout(this.refreshTimer);
    await Promise.allSettled([...this.dlqTasks]);
    try {
      await this.acks.close();
    } catch {
      // each ack's own promise carries its failure
    }
    this.abort.abort();
    this.acks.fail(new TidemarkError('CLOSED', 'consumer is closed'));
    // Leave: every leader hands what this consumer held to the others at once.
    await Promise.allSettled(
      [...this.sessions.values()]
        .filter((s) => s.attached)
        .map((s) =>
          rpc.request(
            subjects.consumer('consume', s.brokerId, this.topic, this.subscription),
            this.request(s, [...s.partitions].map((partition) => ({ partition, permits: 0 })), 0, true),
            consumeReply,
          ),
        ),
    );
    for (const s of this.sessions.values()) s.wake();
    await Promise.allSettled([...this.sessions.values()].map((s) => s.loop));
    await this.dlqProducer?.close().catch(() => undefined);
    this.deps.onClosed();
  }
}

function randomHex(random: Random, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += Math.floor(random.next() * 16).toString(16);
  return out;
}

function intOption(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new TidemarkError('INVALID_REQUEST', `consumer option ${name} must be an integer within ${min}..${max}, got ${value}`);
  }
  return value;
}
