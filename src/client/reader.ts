/**
 * A reader of one partition: an async iterator of records from a start offset on. It fetches only
 * when its caller pulls and the last reply is used up, so it holds at most one fetch reply
 * (at most fetchBytesMax, plus one batch larger than that) however slow the caller is. Empty
 * replies are long polls paced by the node (maxWaitMs). Each fetch is retried here (the one retry
 * layer on this path) after a metadata refresh when the error says the leader moved.
 */
import { decodeBatch, isControlBatch, splitBatches, verifyBatch, type RecordHeaders, type StoredRecord } from '../protocol/batch.js';
import { TidemarkError } from '../protocol/errors.js';
import { FETCH_WAIT_MS_MAX, fetchReply, offsetsReply, REQUEST_TIMEOUT_MS_MAX, type FetchReply, type FetchRequest, type OffsetsRequest } from '../protocol/messages.js';
import { isValidTopicName, type Subjects } from '../protocol/subjects.js';
import type { Clock, Random } from '../runtime/ports.js';
import type { Codec } from './codecs.js';
import type { MetadataCache } from './metadata.js';
import { retry, retryPolicy, type RetryOptions, type RetryPolicy } from '../runtime/retry.js';
import type { Rpc } from './rpc.js';
import { DONE, SerialIterator } from './serial-iterator.js';

export type StartFrom = 'earliest' | 'latest' | { offset: number };

export type ReaderOptions<T> = {
  /** Required (no default). */
  topic: string;
  /** Required (no default). */
  partition: number;
  /** Turns value bytes back into values. Required (no default). */
  codec: Codec<T>;
  /**
   * Where to start: the log start, the high watermark (only records produced from now on), or an
   * exact offset. An offset outside the log fails the first next() with OFFSET_OUT_OF_RANGE.
   * @default 'earliest'
   */
  from?: StartFrom;
  /**
   * How long the node may hold a fetch open waiting for records, ms.
   * @default 500
   */
  maxWaitMs?: number;
  /**
   * Size bound of one fetch reply, bytes; clamped to the transport's max payload less 1 KiB. The
   * first batch is returned even if larger, so the reader always makes progress.
   * @default 1048576
   */
  fetchBytesMax?: number;
  /**
   * Budget of a fetch beyond maxWaitMs, and of an offsets lookup, ms.
   * @default the client's requestTimeoutMs (10000)
   */
  requestTimeoutMs?: number;
  /**
   * Retries of one fetch; after they run out next() throws the last error.
   * @default the client's retry options
   */
  retry?: RetryOptions;
};

export interface ReaderRecord<T> {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  /** ms since the epoch, as the producer set it. */
  readonly timestamp: number;
  readonly key: Uint8Array | null;
  /** The key as UTF-8 text (invalid sequences become U+FFFD); null when the record has no key. */
  readonly keyString: string | null;
  /** Decoded by the reader's codec; null for a null value (tombstone). */
  readonly value: T | null;
  readonly headers: Readonly<RecordHeaders>;
  /** A header's value as UTF-8 text; null for a null value, undefined when absent. */
  headerString(name: string): string | null | undefined;
}

export interface Reader<T> extends AsyncIterableIterator<ReaderRecord<T>> {
  readonly topic: string;
  readonly partition: number;
  /** Offset of the next record this reader returns; undefined until its start is resolved. */
  readonly position: number | undefined;
  /** High watermark from the last fetch reply (or the start's offsets lookup); -1 before either. */
  readonly highWatermark: number;
  /**
   * True once the reader has returned every record below the high watermark it last saw: the end
   * of the partition as far as it knows (kcat's end of partition). An empty partition is caught up
   * as soon as the start is resolved. Records produced since the last reply do not make it false
   * until a fetch reports them.
   */
  caughtUp(): boolean;
  /** Stops the reader; a pending next() resolves done. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export type ReaderDeps = {
  rpc: Rpc;
  subjects: Subjects;
  metadata: MetadataCache;
  clock: Clock;
  random: Random;
  policy: RetryPolicy;
  requestTimeoutMs: number;
  onClosed: () => void;
};

export const READER_DEFAULTS = { maxWaitMs: 500, fetchBytesMax: 1 << 20, from: 'earliest' } as const;

const lenientUtf8 = new TextDecoder('utf-8');

class DecodedRecord<T> implements ReaderRecord<T> {
  constructor(
    readonly topic: string,
    readonly partition: number,
    readonly offset: number,
    readonly timestamp: number,
    readonly key: Uint8Array | null,
    readonly value: T | null,
    readonly headers: Readonly<RecordHeaders>,
  ) {}

  get keyString(): string | null {
    return this.key === null ? null : lenientUtf8.decode(this.key);
  }

  headerString(name: string): string | null | undefined {
    if (!Object.hasOwn(this.headers, name)) return undefined;
    const v = this.headers[name];
    return v === null || v === undefined ? null : lenientUtf8.decode(v);
  }
}

export class ReaderImpl<T> extends SerialIterator<ReaderRecord<T>> implements Reader<T> {
  readonly topic: string;
  readonly partition: number;
  private offset: number | undefined;
  private lastHighWatermark = -1;
  /** What is left of the last fetch reply: batches not yet decoded, and the current batch's records. */
  private batches: Uint8Array[] = [];
  private records: StoredRecord[] = [];
  private index = 0;
  private readonly maxWaitMs: number;
  private readonly fetchBytesMax: number;
  private readonly requestTimeoutMs: number;
  private readonly policy: RetryPolicy;
  private readonly abort = new AbortController();
  private closed = false;

  constructor(
    private readonly deps: ReaderDeps,
    private readonly options: ReaderOptions<T>,
  ) {
    super();
    if (!isValidTopicName(options.topic)) throw new TidemarkError('INVALID_TOPIC', `invalid topic name "${options.topic}"`);
    this.topic = options.topic;
    this.partition = intOption('partition', options.partition, 0, Number.MAX_SAFE_INTEGER);
    this.maxWaitMs = intOption('maxWaitMs', options.maxWaitMs ?? READER_DEFAULTS.maxWaitMs, 0, FETCH_WAIT_MS_MAX);
    this.fetchBytesMax = Math.min(intOption('fetchBytesMax', options.fetchBytesMax ?? READER_DEFAULTS.fetchBytesMax, 1, 2 ** 31), deps.rpc.payloadBytesMax());
    this.requestTimeoutMs = intOption('requestTimeoutMs', options.requestTimeoutMs ?? deps.requestTimeoutMs, 1, REQUEST_TIMEOUT_MS_MAX);
    this.policy = retryPolicy(options.retry, deps.policy);
    const from = options.from ?? READER_DEFAULTS.from;
    if (typeof from === 'object') this.offset = intOption('from.offset', from.offset, 0, Number.MAX_SAFE_INTEGER);
  }

  get position(): number | undefined {
    return this.offset;
  }

  get highWatermark(): number {
    return this.lastHighWatermark;
  }

  caughtUp(): boolean {
    // Buffered records sit at or past the position, and replies stop at the high watermark, so a
    // position at the watermark means nothing below it is left to return.
    return this.offset !== undefined && this.lastHighWatermark >= 0 && this.offset >= this.lastHighWatermark;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    this.batches = [];
    this.records = [];
    this.deps.onClosed();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  protected async pull(): Promise<IteratorResult<ReaderRecord<T>, undefined>> {
    // Each turn either returns a buffered record or waits on one fetch (a long poll when idle).
    for (;;) {
      if (this.closed) return DONE;
      const record = this.take();
      if (record !== undefined) return { done: false, value: record };
      try {
        await this.fetch();
      } catch (error) {
        if (this.closed) return DONE;
        throw error;
      }
    }
  }

  private take(): ReaderRecord<T> | undefined {
    for (;;) {
      while (this.index < this.records.length) {
        const r = this.records[this.index]!;
        // A read from mid-batch gets the whole batch: skip what precedes the position.
        if (this.offset !== undefined && r.offset < this.offset) {
          this.index++;
          continue;
        }
        const record = new DecodedRecord(this.topic, this.partition, r.offset, r.timestamp, r.key, this.decodeValue(r), r.headers);
        this.index++;
        this.offset = r.offset + 1;
        return record;
      }
      const batch = this.batches.shift();
      this.records = [];
      this.index = 0;
      if (batch === undefined) return undefined;
      const header = verifyBatch(batch);
      if (isControlBatch(batch)) {
        // The broker's own records (subscription cursors): not the reader's, but its offsets are passed.
        this.offset = Math.max(this.offset ?? 0, header.baseOffset + header.recordCount);
        continue;
      }
      this.records = decodeBatch(batch);
    }
  }

  private decodeValue(r: StoredRecord): T | null {
    if (r.value === null) return null;
    try {
      return this.options.codec.decode(r.value);
    } catch (cause) {
      throw new TidemarkError('CORRUPT_MESSAGE', `value at ${this.topic}/${this.partition}@${r.offset} does not decode: ${(cause as Error).message}`, {
        cause,
        context: { topic: this.topic, partition: this.partition, offset: r.offset },
      });
    }
  }

  private async fetch(): Promise<void> {
    const { metadata, rpc, subjects, clock, random } = this.deps;
    const reply: FetchReply = await retry(
      async () => {
        const leader = await metadata.leader(this.topic, this.partition);
        this.offset ??= await this.startOffset(leader.brokerId);
        return rpc.request(
          subjects.partition('fetch', leader.brokerId, this.topic, this.partition),
          { timeoutMs: Math.min(REQUEST_TIMEOUT_MS_MAX, this.maxWaitMs + this.requestTimeoutMs), offset: this.offset, maxBytes: this.fetchBytesMax, maxWaitMs: this.maxWaitMs } satisfies FetchRequest,
          fetchReply,
        );
      },
      { policy: this.policy, clock, random, signal: this.abort.signal, onRetry: (error) => metadata.noteError(this.topic, error) },
    );
    if (this.closed) return;
    this.lastHighWatermark = reply.highWatermark;
    this.batches = splitBatches(reply.records);
  }

  private async startOffset(brokerId: number): Promise<number> {
    const from = this.options.from ?? READER_DEFAULTS.from;
    const reply = await this.deps.rpc.request(
      this.deps.subjects.offsets(brokerId),
      { timeoutMs: this.requestTimeoutMs, partitions: [{ topic: this.topic, partition: this.partition }] } satisfies OffsetsRequest,
      offsetsReply,
    );
    const o = reply.partitions.find((p) => p.topic === this.topic && p.partition === this.partition);
    if (o === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `broker ${brokerId} returned no offsets for ${this.topic}/${this.partition}`);
    if (o.error !== undefined) throw TidemarkError.fromWire(o.error, { topic: this.topic, partition: this.partition, brokerId });
    // Known before the first fetch: an empty partition (or a start at the end) is caught up at once.
    this.lastHighWatermark = Math.max(this.lastHighWatermark, o.highWatermark);
    return from === 'latest' ? o.highWatermark : o.logStartOffset;
  }
}

function intOption(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new TidemarkError('INVALID_REQUEST', `reader option ${name} must be an integer within ${min}..${max}, got ${value}`);
  }
  return value;
}

