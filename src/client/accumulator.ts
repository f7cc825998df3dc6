/**
 * Groups records into one open batch per partition. Adaptive, as Kafka's accumulator is: a batch
 * opened while its partition has nothing in flight closes at the end of the current synchronous
 * run (records sent together still share it), so a lone send pays no linger. A batch opened while
 * requests are in flight keeps filling and closes when it is full (batchBytesMax), when lingerMs
 * has passed since it opened, or when the partition's requests have all completed. It also closes
 * when told to (flush, or the producer's byte budget is full). Closed batches go to `onReady` in
 * the order they close.
 */
import { BATCH_HEADER_BYTES, BATCH_RECORDS_MAX, type BatchRecord } from '../protocol/batch.js';
import type { Clock } from '../runtime/ports.js';

/** Records in one batch carry a signed 32-bit timestamp delta from the batch's first. */
const TIMESTAMP_SPAN_MS_MAX = 0x7fff_ffff;

export interface RecordMetadata {
  topic: string;
  partition: number;
  /** The record's offset in the partition; -1 with acks 0 (nobody tells us). */
  offset: number;
}

/**
 * A record the producer holds until it is acknowledged or rejected. It is the batch's record
 * itself (no second object per record, no array of records per batch).
 */
export interface PendingSend extends BatchRecord {
  /** recordBytes(this): what it costs in a batch and in the producer's byte budget. */
  readonly bytes: number;
  /** When send() was called, ms on the producer's clock; the delivery deadline counts from it. */
  readonly sentAtMs: number;
  resolve(metadata: RecordMetadata): void;
  reject(error: unknown): void;
}

export interface ReadyBatch {
  readonly partition: number;
  readonly sends: readonly PendingSend[];
  /** Sum of the records' bytes (the batch is BATCH_HEADER_BYTES more). */
  readonly recordBytes: number;
  /** Earliest sentAtMs in the batch. */
  readonly sentAtMs: number;
}

/**
 * What the partition's pipeline would do with a batch closed now. 'idle': nothing in flight,
 * queued or waiting to retry, so it would go at once and alone. 'busy': requests are in flight
 * but a window slot is free. 'full': it would only wait in the queue.
 */
export type PipelineState = 'idle' | 'busy' | 'full';

export type AccumulatorOptions = {
  /** Largest encoded batch, bytes, header included. */
  batchBytesMax: number;
  /** How long an open batch waits for more records while its partition has requests in flight, ms. */
  lingerMs: number;
  clock: Clock;
  onReady: (batch: ReadyBatch) => void;
  /**
   * The partition's pipeline now. A batch whose linger is over stays open (and keeps filling)
   * while the pipeline is 'full', as in Kafka's accumulator, and closes when `room(partition)` says
   * a slot freed.
   */
  pipelineState: (partition: number) => PipelineState;
};

interface OpenBatch {
  partition: number;
  sends: PendingSend[];
  recordBytes: number;
  sentAtMs: number;
  timestampMin: number;
  timestampMax: number;
  /** The linger timer; unset for a batch that closes at the end of the synchronous run. */
  timer: unknown;
  /** Linger is over (or was never owed): close as soon as the pipeline has room. */
  due: boolean;
}

export class Accumulator {
  private readonly open = new Map<number, OpenBatch>();
  private openBytes = 0;

  constructor(private readonly options: AccumulatorOptions) {}

  /** Record bytes sitting in open batches. */
  get bytesOpen(): number {
    return this.openBytes;
  }

  append(partition: number, send: PendingSend): void {
    const current = this.open.get(partition);
    if (current !== undefined && !this.fits(current, send)) this.close(partition);
    const batch = this.open.get(partition) ?? this.start(partition, send);
    batch.sends.push(send);
    batch.recordBytes += send.bytes;
    if (send.timestamp < batch.timestampMin) batch.timestampMin = send.timestamp;
    if (send.timestamp > batch.timestampMax) batch.timestampMax = send.timestamp;
    this.openBytes += send.bytes;
    if (BATCH_HEADER_BYTES + batch.recordBytes >= this.options.batchBytesMax || batch.sends.length >= BATCH_RECORDS_MAX) {
      this.close(partition);
    } else if (batch.due && this.options.pipelineState(partition) !== 'full') {
      this.close(partition);
    }
  }

  /**
   * The partition's pipeline can send again: a batch past its linger goes now, and so does any
   * batch once nothing is in flight (waiting longer could only add latency).
   */
  room(partition: number): void {
    const batch = this.open.get(partition);
    if (batch === undefined) return;
    if (batch.due || this.options.pipelineState(partition) === 'idle') this.close(partition);
  }

  /** Closes every open batch now (flush, or memory is full so waiting is pointless). */
  closeAll(): void {
    for (const partition of [...this.open.keys()]) this.close(partition);
  }

  private fits(batch: OpenBatch, send: PendingSend): boolean {
    const ts = send.timestamp;
    return (
      BATCH_HEADER_BYTES + batch.recordBytes + send.bytes <= this.options.batchBytesMax &&
      batch.sends.length < BATCH_RECORDS_MAX &&
      Math.max(batch.timestampMax, ts) - Math.min(batch.timestampMin, ts) <= TIMESTAMP_SPAN_MS_MAX
    );
  }

  private start(partition: number, send: PendingSend): OpenBatch {
    const batch: OpenBatch = {
      partition,
      sends: [],
      recordBytes: 0,
      sentAtMs: send.sentAtMs,
      timestampMin: send.timestamp,
      timestampMax: send.timestamp,
      timer: undefined,
      due: false,
    };
    const expire = () => {
      if (this.open.get(partition) !== batch) return;
      batch.due = true;
      if (this.options.pipelineState(partition) !== 'full') this.close(partition);
    };
    // Nothing in flight (or lingerMs 0): close at the end of this synchronous run, so records sent
    // together still share a batch, without the millisecond a 0 ms timer costs in Node.
    if (this.options.lingerMs === 0 || this.options.pipelineState(partition) === 'idle') queueMicrotask(expire);
    else batch.timer = this.options.clock.setTimeout(expire, this.options.lingerMs);
    this.open.set(partition, batch);
    return batch;
  }

  private close(partition: number): void {
    const batch = this.open.get(partition);
    if (batch === undefined) return;
    this.open.delete(partition);
    if (batch.timer !== undefined) this.options.clock.clearTimeout(batch.timer);
    this.openBytes -= batch.recordBytes;
    this.options.onReady({
      partition,
      sends: batch.sends,
      recordBytes: batch.recordBytes,
      sentAtMs: batch.sentAtMs,
    });
  }
}
