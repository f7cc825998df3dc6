/**
 * The producer: send() -> admission (FIFO: encode, pick the partition, take bytes from the
 * in-flight budget) -> accumulator (batches per partition: at once when nothing is in flight,
 * else by size, linger and the requests in flight completing) -> one pipeline per
 * partition (pipeline.ts: many batches in flight, order kept, the one retry layer for batches).
 *
 * Memory: every record the producer holds (open batch, queued, in flight, waiting to retry)
 * counts against `inFlightBytesMax` until it is acknowledged or rejected. When the budget is full,
 * admission stops and later send() calls wait, holding only the caller's own value (encoding
 * happens at admission). Waiting is bounded too, as Kafka's `max.block.ms` bounds a blocked
 * send(): at most `sendsWaitingMax` sends wait (beyond: BUSY at once), each for at most
 * `maxBlockMs`, or its `deliveryTimeoutMs` if shorter (then TIMEOUT). One clock timer, armed for
 * the oldest waiting send, enforces it.
 *
 * Cost per send is what bounds a client's records/s (issue 10: ~20 µs per send, a quarter of it
 * GC): a send is one object (it becomes its batch's record) and one promise; it skips the
 * admission queue when nothing waits, the metadata is cached and the budget has room; flush()
 * counts sends by generation instead of holding a promise per send.
 */
import { Fifo } from './fifo.js';
import { BATCH_HEADER_BYTES, recordBytes, type RecordHeaders } from '../protocol/batch.js';
import { assert, TidemarkError } from '../protocol/errors.js';
import { PAYLOAD_BYTES_MAX, REQUEST_TIMEOUT_MS_MAX } from '../protocol/messages.js';
import { isValidTopicName, type Subjects } from '../protocol/subjects.js';
import type { Clock, Random } from '../runtime/ports.js';
import { Accumulator, type PendingSend, type ReadyBatch, type RecordMetadata } from './accumulator.js';
import { ByteBudget, type BudgetWait } from './byte-budget.js';
import { utf8, type Codec } from './codecs.js';
import type { MetadataCache } from './metadata.js';
import { Partitioner } from './partitioner.js';
import { PartitionPipeline } from './pipeline.js';
import { SettleTracker } from './settle-tracker.js';
import { retry, retryPolicy, type RetryOptions, type RetryPolicy } from '../runtime/retry.js';
import type { ProduceChannel } from './produce-channel.js';
import type { Rpc } from './rpc.js';
import { defaultProducerName, ProducerAccess, type AccessMode } from './producer-access.js';

export type { RecordMetadata };

/** 0: don't wait for anything; 1: the leader has appended; 'all': every in-sync replica has. */
export type Acks = 0 | 1 | 'all';

export type ProducerOptions<T> = {
  /** Topic every record of this producer goes to. Required (no default). */
  topic: string;
  /** Turns values into bytes. Required (no default). */
  codec: Codec<T>;
  /**
   * @default 'all'
   */
  acks?: Acks;
  /**
   * Longest a batch waits for more records while its partition has requests in flight, ms.
   * Adaptive, so one setting is quick at low load and fast at high load: a batch opened while the
   * partition has nothing in flight is sent at once (at the end of the current synchronous run,
   * so records sent together still share it); while requests are in flight the open batch keeps
   * filling and goes when it is full (`batchBytesMax`), when lingerMs has passed, or when the
   * requests in flight have all completed, whichever comes first. A batch past its linger while
   * `inFlightBatchesPerPartitionMax` requests are outstanding keeps filling until a slot frees.
   * With acks 0 there are no replies to tell when a request is done, so every batch waits up to
   * lingerMs (or until full).
   * @default 5
   */
  lingerMs?: number;
  /**
   * Largest batch, bytes (header included); clamped to the transport's max payload less 1 KiB of
   * envelope. A record that alone does not fit is rejected with RECORD_TOO_LARGE.
   * @default 1048576
   */
  batchBytesMax?: number;
  /**
   * Record bytes the producer holds at once (batching, in flight, retrying); send() waits when full.
   * @default 33554432
   */
  inFlightBytesMax?: number;
  /**
   * Longest a send() waits to be admitted, ms: for metadata to pick its partition, for room in
   * inFlightBytesMax, or behind earlier sends that wait. Then it rejects with TIMEOUT (retriable:
   * nothing of it was sent). 0: never wait. Kafka's `max.block.ms`; unlike Kafka's, this wait is
   * part of deliveryTimeoutMs (both count from send()), so the shorter of the two applies.
   * @default 60000
   */
  maxBlockMs?: number;
  /**
   * Sends waiting to be admitted at once (each holds only the caller's value, not yet encoded);
   * a send() beyond it rejects at once with BUSY.
   * @default 10000
   */
  sendsWaitingMax?: number;
  /**
   * Batches in flight at once per partition. 1 keeps order even when one request is lost.
   * @default 5
   */
  inFlightBatchesPerPartitionMax?: number;
  /**
   * Time from send() until the record is acknowledged or rejected with its last error, ms.
   * @default 30000
   */
  deliveryTimeoutMs?: number;
  /**
   * Budget of one produce request (its `timeoutMs`), ms; never more than what is left of the
   * delivery timeout.
   * @default the client's requestTimeoutMs (10000)
   */
  requestTimeoutMs?: number;
  /**
   * Backoff between attempts; the total time is deliveryTimeoutMs.
   * @default the client's retry options
   */
  retry?: RetryOptions;
  /**
   * Who else may write to the topic (Pulsar's producer access modes; docs/producers.md):
   * 'Shared' any number of producers; 'Exclusive' this one alone, refused if another is attached;
   * 'ExclusiveWithFencing' this one alone, fencing every other; 'WaitForExclusive' this one alone,
   * once the producers ahead of it are gone. Anything but 'Shared' needs `client.createProducer()`.
   * @default 'Shared'
   */
  accessMode?: AccessMode;
  /**
   * The producer's name, shown by `tidemark topic describe` while it holds the topic exclusively.
   * @default 'producer-' and 8 random hex digits
   */
  producerName?: string;
};

export type ProducerRecord<T> = {
  /**
   * Decides the partition (murmur2, as Kafka does); strings are UTF-8 encoded.
   * @default null (round robin, sticky per batch)
   */
  key?: string | Uint8Array | null;
  /** null is a tombstone: no bytes, not passed to the codec. Required. */
  value: T | null;
  /**
   * Header values: strings are UTF-8 encoded.
   * @default {}
   */
  headers?: Record<string, string | Uint8Array | null>;
  /**
   * ms since the epoch.
   * @default the client clock's now() at send()
   */
  timestamp?: number;
  /**
   * Sends to this partition, bypassing the partitioner.
   * @default chosen by key
   */
  partition?: number;
};

export interface Producer<T> {
  readonly topic: string;
  /** Resolves when the record is acknowledged (per `acks`), with where it landed. */
  send(record: ProducerRecord<T>): Promise<RecordMetadata>;
  /** Sends what is batched now and resolves when every send() made before it has settled. */
  flush(): Promise<void>;
  /** Its access mode and name (see ProducerOptions). */
  readonly accessMode: AccessMode;
  readonly producerName: string;
  /** The topic producer epoch it writes with, once attached (0 until the topic's first exclusive producer). */
  readonly epoch: number | undefined;
  /** Refuses new sends, flushes, then stops. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export type ProducerDeps = {
  rpc: Rpc;
  channel: ProduceChannel;
  subjects: Subjects;
  metadata: MetadataCache;
  clock: Clock;
  random: Random;
  policy: RetryPolicy;
  requestTimeoutMs: number;
  onClosed: () => void;
};

export const PRODUCER_DEFAULTS = {
  lingerMs: 5,
  batchBytesMax: 1 << 20,
  inFlightBytesMax: 32 << 20,
  inFlightBatchesPerPartitionMax: 5,
  deliveryTimeoutMs: 30_000,
  maxBlockMs: 60_000,
  sendsWaitingMax: 10_000,
} as const;

const LINGER_MS_MAX = 60_000;
const IN_FLIGHT_BATCHES_MAX = 100;
const SENDS_WAITING_MAX = 1_000_000;
const DAY_MS = 24 * 3_600_000;
const HEADERS_MAX = 0xffff;
const HEADER_KEY_BYTES_MAX = 0xffff;

/** What the head of the admission queue waits for (the sends behind it wait for the head). */
type WaitingFor = 'access' | 'metadata' | 'budget';

/** Headers of a record sent without any: one shared, frozen object instead of one per record. */
const NO_HEADERS: RecordHeaders = Object.freeze({});
/** What a record without headers costs beyond its key and value bytes. */
const RECORD_FIXED_BYTES = recordBytes({ key: null, value: null, headers: NO_HEADERS, timestamp: 0 });

/**
 * One send() from the call until it settles: the caller's record while it waits for admission,
 * then, encoded, the record its batch carries (one object per send: see the file comment).
 */
class Send<T> implements PendingSend {
  key: Uint8Array | null = null;
  value: Uint8Array | null = null;
  headers: RecordHeaders = NO_HEADERS;
  timestamp = 0;
  /** recordBytes of the encoded record; 0 until encoded. */
  bytes = 0;
  waitingFor: WaitingFor | undefined = undefined;
  /** The last failed metadata attempt while this send was the head (the cause of its TIMEOUT). */
  lastError: unknown = undefined;
  /** This send's wait for budget bytes (set only while it waits for them). */
  budgetWait: BudgetWait | undefined = undefined;
  private settled = false;
  private resolvePromise!: (metadata: RecordMetadata) => void;
  private rejectPromise!: (error: unknown) => void;

  constructor(
    /** The caller's record; dropped once it is in a batch (its encoded fields are what is sent). */
    public input: ProducerRecord<T> | undefined,
    readonly sentAtMs: number,
    private readonly tracker: SettleTracker,
    private readonly generation: number,
  ) {}

  get encoded(): boolean {
    return this.bytes > 0;
  }

  promise(): Promise<RecordMetadata> {
    return new Promise<RecordMetadata>((resolve, reject) => {
      this.resolvePromise = resolve;
      this.rejectPromise = reject;
    });
  }

  resolve(metadata: RecordMetadata): void {
    if (this.settled) return;
    this.settled = true;
    this.resolvePromise(metadata);
    this.tracker.settled(this.generation);
  }

  reject(error: unknown): void {
    if (this.settled) return;
    this.settled = true;
    this.rejectPromise(error);
    this.tracker.settled(this.generation);
  }
}

export class ProducerImpl<T> implements Producer<T> {
  readonly topic: string;
  private readonly codec: Codec<T>;
  private readonly acks: 0 | 1 | -1;
  private readonly batchBytesMax: number;
  private readonly deliveryTimeoutMs: number;
  private readonly maxBlockMs: number;
  /** How long a send may wait for admission: maxBlockMs, never past its delivery deadline. */
  private readonly admissionMsMax: number;
  private readonly sendsWaitingMax: number;
  private readonly policy: RetryPolicy;
  private readonly budget: ByteBudget;
  private readonly accumulator: Accumulator;
  private readonly partitioner: Partitioner;
  private readonly pipelines = new Map<number, PartitionPipeline>();
  private readonly admissions = new Fifo<Send<T>>();
  private readonly tracker = new SettleTracker();
  private admitting = false;
  /** Fires at (or before) the oldest waiting send's deadline; unset while nobody waits. */
  private expiryTimer: unknown = undefined;
  private flushing = 0;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly access: ProducerAccess;
  readonly accessMode: AccessMode;
  readonly producerName: string;

  constructor(
    private readonly deps: ProducerDeps,
    private readonly options: ProducerOptions<T>,
  ) {
    if (!isValidTopicName(options.topic)) throw new TidemarkError('INVALID_TOPIC', `invalid topic name "${options.topic}"`);
    this.topic = options.topic;
    this.codec = options.codec;
    this.acks = options.acks === 'all' || options.acks === undefined ? -1 : options.acks;
    if (this.acks !== -1 && this.acks !== 0 && this.acks !== 1) throw invalidOption('acks', 'must be 0, 1 or "all"');
    const lingerMs = intOption('lingerMs', options.lingerMs ?? PRODUCER_DEFAULTS.lingerMs, 0, LINGER_MS_MAX);
    this.batchBytesMax = Math.min(
      intOption('batchBytesMax', options.batchBytesMax ?? PRODUCER_DEFAULTS.batchBytesMax, BATCH_HEADER_BYTES + 1, PAYLOAD_BYTES_MAX),
      deps.rpc.payloadBytesMax(),
    );
    const inFlightBytesMax = intOption('inFlightBytesMax', options.inFlightBytesMax ?? PRODUCER_DEFAULTS.inFlightBytesMax, 1, 2 ** 40);
    this.deliveryTimeoutMs = intOption('deliveryTimeoutMs', options.deliveryTimeoutMs ?? PRODUCER_DEFAULTS.deliveryTimeoutMs, 1, DAY_MS);
    this.maxBlockMs = intOption('maxBlockMs', options.maxBlockMs ?? PRODUCER_DEFAULTS.maxBlockMs, 0, DAY_MS);
    this.admissionMsMax = Math.min(this.maxBlockMs, this.deliveryTimeoutMs);
    this.sendsWaitingMax = intOption('sendsWaitingMax', options.sendsWaitingMax ?? PRODUCER_DEFAULTS.sendsWaitingMax, 1, SENDS_WAITING_MAX);
    intOption('requestTimeoutMs', options.requestTimeoutMs ?? deps.requestTimeoutMs, 1, REQUEST_TIMEOUT_MS_MAX);
    intOption('inFlightBatchesPerPartitionMax', options.inFlightBatchesPerPartitionMax ?? PRODUCER_DEFAULTS.inFlightBatchesPerPartitionMax, 1, IN_FLIGHT_BATCHES_MAX);
    this.policy = retryPolicy(options.retry, deps.policy);
    this.accessMode = options.accessMode ?? 'Shared';
    this.producerName = options.producerName ?? defaultProducerName(deps.random);
    this.access = new ProducerAccess(
      { rpc: deps.rpc, subjects: deps.subjects, metadata: deps.metadata, clock: deps.clock, random: deps.random, policy: this.policy, requestTimeoutMs: deps.requestTimeoutMs },
      { topic: this.topic, accessMode: this.accessMode, producerName: this.producerName },
    );
    this.access.onFailed = (error) => this.refuseAll(error);
    this.budget = new ByteBudget(inFlightBytesMax);
    this.partitioner = new Partitioner(deps.random);
    this.accumulator = new Accumulator({
      batchBytesMax: this.batchBytesMax,
      lingerMs,
      clock: deps.clock,
      onReady: (batch) => this.batchReady(batch),
      pipelineState: (partition) => {
        const state = this.pipelines.get(partition)?.state ?? 'idle';
        // acks 0 has no replies, so nothing says when a request is done: its batches wait lingerMs.
        return state === 'idle' && this.acks === 0 ? 'busy' : state;
      },
    });
  }

  get epoch(): number | undefined {
    return this.access.epoch;
  }

  /**
   * Attaches in the producer's access mode (an exclusive grant also fences every partition);
   * rejects with the refusal (PRODUCER_BUSY, PRODUCER_FENCED) or TIMEOUT. client.createProducer()
   * awaits it; client.producer() (Shared) lets the first send do it.
   */
  ready(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    return this.access.attach({ ...(options.signal === undefined ? {} : { signal: options.signal }), ...(options.timeoutMs === undefined ? {} : { totalMs: options.timeoutMs }) });
  }

  send(record: ProducerRecord<T>): Promise<RecordMetadata> {
    if (this.closed) return Promise.reject(new TidemarkError('CLOSED', 'producer is closed'));
    const failure = this.access.failure;
    if (failure !== undefined) return Promise.reject(failure);
    if (this.admissions.length >= this.sendsWaitingMax) {
      // BUSY is retriable: the caller backs off (awaits earlier sends) and sends again.
      return Promise.reject(
        new TidemarkError('BUSY', `producer has ${this.admissions.length} sends waiting to be admitted (sendsWaitingMax)`, {
          context: { topic: this.topic, sendsWaitingMax: this.sendsWaitingMax, waitingFor: this.admissions.peek()?.waitingFor },
        }),
      );
    }
    const send = new Send<T>(record, this.deps.clock.now(), this.tracker, this.tracker.begin());
    const promise = send.promise();
    if (this.admissions.length === 0 && !this.admitting && this.admitNow(send)) return promise;
    this.admissions.push(send);
    if (!this.admitting) void this.admit();
    // Usually admitted already (admission is synchronous while metadata and budget allow).
    this.armExpiry();
    return promise;
  }

  async flush(): Promise<void> {
    const settled = this.tracker.allSettled();
    this.flushing++;
    try {
      this.accumulator.closeAll();
      await settled;
    } finally {
      this.flushing--;
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      await this.flush();
      for (const p of this.pipelines.values()) p.stop();
      await this.access.close();
      this.deps.onClosed();
    })();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Admission without the queue, when nothing waits ahead of this send: encoded, its partition
   * known from cached metadata and its bytes taken from the budget, all now. Returns false when it
   * has to wait: it then heads the queue (nothing waits ahead), where a send waits encoded anyway.
   */
  private admitNow(send: Send<T>): boolean {
    if (this.access.epoch === undefined) return false;
    const partitionCount = this.partitionCountCached(send.input!.partition);
    if (partitionCount === undefined) return false;
    try {
      this.encode(send);
    } catch (error) {
      send.reject(error);
      return true;
    }
    if (!this.budget.tryTake(send.bytes)) return false;
    this.append(send, partitionCount);
    return true;
  }

  private append(send: Send<T>, partitionCount: number): void {
    const partition = send.input!.partition ?? this.partitioner.partition(send.key, partitionCount);
    send.input = undefined;
    this.accumulator.append(partition, send);
  }

  /**
   * Admission, one record at a time in send() order, so each partition sees records in that order.
   * After each wait the head may have been expired (rejected and removed by {@link expire}); then
   * it gives back any bytes it was granted and the loop goes on with the next send.
   */
  private async admit(): Promise<void> {
    if (this.admitting) return;
    this.admitting = true;
    try {
      while (this.admissions.length > 0) {
        const head = this.admissions.peek()!;
        try {
          if (!head.encoded) this.encode(head);
        } catch (error) {
          // This record's own fault: it alone is rejected; the sends behind it go on.
          this.shiftAdmission();
          head.reject(error);
          continue;
        }
        if (this.access.epoch === undefined) {
          head.waitingFor = 'access';
          try {
            await this.access.attach({ totalMs: Math.max(1, this.deadlineMs(head) - this.deps.clock.now()) });
          } catch (error) {
            if (this.admissions.peek() !== head) continue;
            this.shiftAdmission();
            head.reject(error);
            this.expireAdmissions(error);
            continue;
          }
          if (this.admissions.peek() !== head) continue;
        }
        let partitionCount = this.partitionCountCached(head.input!.partition);
        if (partitionCount === undefined) {
          head.waitingFor = 'metadata';
          try {
            partitionCount = await this.loadPartitionCount(head);
          } catch (error) {
            if (this.admissions.peek() !== head) continue;
            this.shiftAdmission();
            head.reject(error);
            this.expireAdmissions(error);
            continue;
          }
          if (this.admissions.peek() !== head) continue;
        }
        if (!this.budget.tryTake(head.bytes)) {
          // Memory is full: batches waiting out their linger only delay the acks that free it.
          this.accumulator.closeAll();
          head.waitingFor = 'budget';
          head.budgetWait = this.budget.take(head.bytes);
          const taken = await head.budgetWait.taken;
          head.budgetWait = undefined;
          if (this.admissions.peek() !== head) {
            if (taken) this.budget.release(head.bytes);
            continue;
          }
          assert(taken, 'a budget wait is cancelled only by expire(), which removes the send first');
        }
        this.shiftAdmission();
        this.append(head, partitionCount);
      }
      if (this.flushing > 0) this.accumulator.closeAll();
    } finally {
      this.admitting = false;
    }
  }

  private shiftAdmission(): Send<T> | undefined {
    const admission = this.admissions.shift();
    if (this.admissions.length === 0 && this.expiryTimer !== undefined) {
      // Nobody waits: no timer may keep the process alive (or fire for nothing).
      this.deps.clock.clearTimeout(this.expiryTimer);
      this.expiryTimer = undefined;
    }
    return admission;
  }

  /**
   * Arms the expiry timer for the oldest waiting send. It is not moved when that send is
   * admitted: it then fires early, finds nothing due and re-arms (cheaper than a clear and a set
   * per admission while sends wait).
   */
  private armExpiry(): void {
    const oldest = this.admissions.peek();
    if (oldest === undefined || this.expiryTimer !== undefined) return;
    const delayMs = Math.max(0, this.deadlineMs(oldest) - this.deps.clock.now());
    this.expiryTimer = this.deps.clock.setTimeout(() => {
      this.expiryTimer = undefined;
      this.expire();
    }, delayMs);
  }

  /**
   * Rejects every waiting send whose admission deadline has passed. One bound for all and FIFO
   * order make the deadlines ascend along the queue, so the expired sends are a prefix of it.
   * A send waiting for budget bytes leaves the budget's queue having taken nothing.
   */
  private expire(): void {
    const now = this.deps.clock.now();
    const head = this.admissions.peek();
    const waitingFor = head?.waitingFor;
    const cause = head?.lastError;
    while (this.admissions.length > 0 && this.deadlineMs(this.admissions.peek()!) <= now) {
      const admission = this.shiftAdmission()!;
      admission.budgetWait?.cancel();
      admission.reject(this.blockedTooLong(admission, now, waitingFor, cause));
    }
    this.armExpiry();
  }

  /** Past it a waiting send is rejected with TIMEOUT. */
  private deadlineMs(send: Send<T>): number {
    return send.sentAtMs + this.admissionMsMax;
  }

  /**
   * TIMEOUT is retriable, as in Kafka, where a send() blocked past max.block.ms throws a
   * TimeoutException (BufferExhaustedException when waiting for memory), a RetriableException:
   * nothing of the record left the client, so sending it again cannot write it twice. The
   * producer does not resend it itself; the caller decides (one retry layer per call path).
   */
  private blockedTooLong(admission: Send<T>, now: number, waitingFor: WaitingFor | undefined, cause: unknown): TidemarkError {
    const why =
      waitingFor === 'budget'
        ? `for room in inFlightBytesMax (${this.budget.bytesMax} bytes, ${this.budget.usedBytes} held)`
        : waitingFor === 'metadata'
          ? `for metadata of topic "${this.topic}"`
          : waitingFor === 'access'
            ? `to attach to topic "${this.topic}" as a ${this.accessMode} producer`
          : 'to be admitted';
    const bound = this.maxBlockMs <= this.deliveryTimeoutMs ? `maxBlockMs ${this.maxBlockMs}` : `deliveryTimeoutMs ${this.deliveryTimeoutMs}`;
    return new TidemarkError('TIMEOUT', `send() waited ${now - admission.sentAtMs} ms ${why} (${bound})`, {
      cause,
      context: { topic: this.topic, waitingFor, maxBlockMs: this.maxBlockMs, deliveryTimeoutMs: this.deliveryTimeoutMs },
    });
  }

  /** Fills in the send's record fields from the caller's record, or throws what is wrong with it. */
  private encode(send: Send<T>): void {
    const input = send.input!;
    const timestamp = input.timestamp ?? send.sentAtMs;
    if (!Number.isSafeInteger(timestamp) || timestamp < 0) throw invalidRecord('timestamp must be a non-negative integer (ms)');
    if (input.partition !== undefined && (!Number.isSafeInteger(input.partition) || input.partition < 0)) {
      throw invalidRecord('partition must be a non-negative integer');
    }
    send.timestamp = timestamp;
    send.key = toBytes('key', input.key ?? null);
    send.value = input.value === null ? null : this.encodeValue(input.value);
    send.headers = input.headers === undefined ? NO_HEADERS : encodeHeaders(input.headers);
    const bytes =
      send.headers === NO_HEADERS ? RECORD_FIXED_BYTES + (send.key?.length ?? 0) + (send.value?.length ?? 0) : recordBytes(send);
    if (BATCH_HEADER_BYTES + bytes > this.batchBytesMax) {
      throw new TidemarkError('RECORD_TOO_LARGE', `record of ${bytes} bytes does not fit a batch of at most ${this.batchBytesMax} bytes`, {
        context: { topic: this.topic, recordBytes: bytes, batchBytesMax: this.batchBytesMax },
      });
    }
    send.bytes = bytes;
  }

  /** The codec is the caller's code: whatever it throws or returns wrongly fails this record alone, typed. */
  private encodeValue(value: T): Uint8Array {
    let bytes: unknown;
    try {
      bytes = this.codec.encode(value);
    } catch (error) {
      throw new TidemarkError('INVALID_RECORD', `invalid record: the codec threw: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
        context: { topic: this.topic },
      });
    }
    if (!(bytes instanceof Uint8Array)) throw invalidRecord(`the codec returned ${describeType(bytes)}, not a Uint8Array`);
    return bytes;
  }

  private partitionCountCached(partition: number | undefined): number | undefined {
    const count = this.deps.metadata.cached(this.topic)?.partitions.length;
    return count !== undefined && (partition === undefined || partition < count) ? count : undefined;
  }

  /** The one retry layer for partition choice: until the head record's admission deadline. */
  private async loadPartitionCount(head: Send<T>): Promise<number> {
    if (this.flushing > 0) this.accumulator.closeAll();
    const { metadata, clock, random } = this.deps;
    return retry(
      async () => {
        const md = await metadata.topic(this.topic);
        const wanted = head.input!.partition;
        if (wanted !== undefined) metadata.partition(md, wanted);
        return md.partitions.length;
      },
      {
        policy: this.policy,
        clock,
        random,
        startedAtMs: head.sentAtMs,
        totalMs: this.admissionMsMax,
        onRetry: (error) => {
          head.lastError = error;
          metadata.noteError(this.topic, error);
        },
      },
    );
  }

  /**
   * Fenced or refused for good: every waiting send fails with that error now, and later ones at
   * send(); batches already handed to pipelines fail as their leaders refuse them.
   */
  private refuseAll(error: TidemarkError): void {
    while (this.admissions.length > 0) {
      const admission = this.shiftAdmission()!;
      admission.budgetWait?.cancel();
      admission.reject(error);
    }
  }

  /** After the head failed to find metadata: also fail queued sends whose deadline has passed, with its error. */
  private expireAdmissions(error: unknown): void {
    const now = this.deps.clock.now();
    while (this.admissions.length > 0 && this.deadlineMs(this.admissions.peek()!) <= now) {
      this.shiftAdmission()!.reject(error);
    }
  }

  private batchReady(batch: ReadyBatch): void {
    this.partitioner.batchClosed(batch.partition);
    let pipeline = this.pipelines.get(batch.partition);
    if (pipeline === undefined) {
      pipeline = new PartitionPipeline({
        topic: this.topic,
        partition: batch.partition,
        channel: this.deps.channel,
        metadata: this.deps.metadata,
        clock: this.deps.clock,
        random: this.deps.random,
        policy: this.policy,
        acks: this.acks,
        inFlightBatchesMax: this.options.inFlightBatchesPerPartitionMax ?? PRODUCER_DEFAULTS.inFlightBatchesPerPartitionMax,
        deliveryTimeoutMs: this.deliveryTimeoutMs,
        requestTimeoutMs: this.options.requestTimeoutMs ?? this.deps.requestTimeoutMs,
        onSettled: (settled) => this.budget.release(settled.recordBytes),
        onRoom: () => this.accumulator.room(batch.partition),
        accessEpoch: () => this.access.epoch ?? 0,
        onFenced: (error) => this.access.fenced(error),
      });
      this.pipelines.set(batch.partition, pipeline);
    }
    pipeline.enqueue(batch);
  }
}

/** Keys and header values: a wrong type (from untyped callers) fails the record, not its batch. */
function toBytes(what: string, value: string | Uint8Array | null): Uint8Array | null {
  if (value === null) return null;
  if (typeof value === 'string') return utf8(value);
  if (!(value instanceof Uint8Array)) throw invalidRecord(`${what} must be a string, a Uint8Array or null, got ${describeType(value)}`);
  return value;
}

function describeType(value: unknown): string {
  return value === null ? 'null' : typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value;
}

function encodeHeaders(headers: Record<string, string | Uint8Array | null>): RecordHeaders {
  const out: RecordHeaders = {};
  let count = 0;
  for (const [k, v] of Object.entries(headers)) {
    if (++count > HEADERS_MAX) throw invalidRecord(`more than ${HEADERS_MAX} headers`);
    if (utf8(k).length > HEADER_KEY_BYTES_MAX) throw invalidRecord(`header key over ${HEADER_KEY_BYTES_MAX} bytes`);
    out[k] = toBytes(`header "${k}"`, v);
  }
  return out;
}

function invalidRecord(why: string): TidemarkError {
  return new TidemarkError('INVALID_RECORD', `invalid record: ${why}`);
}

function invalidOption(name: string, why: string): TidemarkError {
  return new TidemarkError('INVALID_REQUEST', `producer option ${name} ${why}`);
}

function intOption(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw invalidOption(name, `must be an integer within ${min}..${max}, got ${value}`);
  return value;
}
