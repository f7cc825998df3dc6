/**
 * One partition's send pipeline: closed batches leave in the order they closed, up to
 * `inFlightBatchesMax` at once, through the client's produce channel (produce-channel.ts: one
 * request per leader broker and topic carries many partitions' batches; a partition's batches are
 * listed in order within a request, and its requests leave in order on one NATS connection and
 * subject, where the leader appends them in arrival order).
 *
 * Order under failure ("pause and resend in order"): when a batch fails with a retriable error
 * the pipeline stops sending, waits until every batch in flight has settled, then puts the failed
 * ones back at the head of the queue in their original order, waits one backoff (retry.ts, full
 * jitter, growing per consecutive failed round), refreshes the leader if the error said it was
 * stale, and carries on. So a retried batch is always resent before any batch that follows it
 * and had not yet been sent. Leader changes (NOT_LEADER, FENCED_LEADER_EPOCH, UNKNOWN_TOPIC,
 * SHUTTING_DOWN, NO_RESPONDERS) fail every later in-flight batch too. A failure of one batch only
 * (a lost request, TIMEOUT or BUSY) cannot let a later one through either: batches carry an
 * idempotent-producer id and per-partition sequence, and the leader refuses a batch whose
 * sequence skips one (OUT_OF_ORDER_SEQUENCE, retriable) and answers a retry of a batch it already
 * wrote with that batch's offset (so a timed-out batch that did land is not written twice).
 * If the oldest unacknowledged batch is refused as out of order, the batches before it were given
 * up and the gap can never fill: the pipeline takes a fresh producer id and renumbers what it
 * still holds (nothing is in flight at that point).
 *
 * This is the only retry layer on the produce path: rpc and metadata below make one attempt each.
 * A batch is given up with its last error when it is not retriable (at once), when its
 * deliveryTimeoutMs (from its first record's send()) has passed, or after attemptsMax attempts.
 */
import { encodeBatch, NO_PRODUCER_SEQUENCE, SEQUENCE_MODULO } from '../protocol/batch.js';
import { TidemarkError } from '../protocol/errors.js';
import { REQUEST_TIMEOUT_MS_MAX } from '../protocol/messages.js';
import type { Clock, Random } from '../runtime/ports.js';
import type { PipelineState, ReadyBatch } from './accumulator.js';
import type { Leader, MetadataCache } from './metadata.js';
import { backoffMs, isRetriable, type RetryPolicy } from '../runtime/retry.js';
import type { ProduceChannel, ProduceEntry } from './produce-channel.js';

export type PipelineDeps = {
  topic: string;
  partition: number;
  /** Where batches leave: one request per leader broker for many partitions. */
  channel: ProduceChannel;
  metadata: MetadataCache;
  clock: Clock;
  random: Random;
  policy: RetryPolicy;
  /** Wire acks: 0 none, 1 leader, -1 all in-sync replicas. */
  acks: 0 | 1 | -1;
  inFlightBatchesMax: number;
  deliveryTimeoutMs: number;
  requestTimeoutMs: number;
  /** Called once per batch when it is acknowledged or given up (to release its bytes). */
  onSettled: (batch: ReadyBatch) => void;
  /** Called when a request settles or a backoff ends and the pipeline has room: the accumulator may close a waiting batch. */
  onRoom: () => void;
  /** The topic producer epoch to send with (producer-access.ts). */
  accessEpoch: () => number;
  /** A leader refused a batch PRODUCER_FENCED: the producer may not write again. */
  onFenced: (error: TidemarkError) => void;
};

interface Outgoing {
  readonly seq: number;
  readonly batch: ReadyBatch;
  /** Encoded once and resent as is; re-encoded only when the producer id is renewed. */
  bytes: Uint8Array;
  readonly deadlineMs: number;
  attempts: number;
  lastError: unknown;
}

export class PartitionPipeline {
  private readonly queue: Outgoing[] = [];
  private failed: Outgoing[] = [];
  private inFlight = 0;
  private nextSeq = 0;
  /** A batch failed: send nothing until the in-flight ones settle. */
  private paused = false;
  private backoffTimer: unknown = undefined;
  private failedRounds = 0;
  private pumping = false;
  private stopped = false;

  /** Idempotent-producer id of this partition's batches; -1 (none) with acks 0, which has no replies to learn from. */
  private producerId: number;
  private nextSequence = 0;

  constructor(private readonly deps: PipelineDeps) {
    this.producerId = this.newProducerId();
  }

  private newProducerId(): number {
    return this.deps.acks === 0 ? -1 : 1 + Math.floor(this.deps.random.next() * (2 ** 52 - 1));
  }

  /** Encodes a batch with the next sequence numbers of this partition. */
  private encode(batch: ReadyBatch): Uint8Array {
    const records = batch.sends;
    if (this.producerId < 0) return encodeBatch(records, NO_PRODUCER_SEQUENCE);
    const bytes = encodeBatch(records, { producerId: this.producerId, producerEpoch: 0, baseSequence: this.nextSequence });
    this.nextSequence = (this.nextSequence + records.length) % SEQUENCE_MODULO;
    return bytes;
  }

  /** A batch enqueued now would be sent at once (nothing queued ahead of it, a window slot free). */
  get hasRoom(): boolean {
    return !this.stopped && !this.paused && this.backoffTimer === undefined && this.queue.length === 0 && this.inFlight < this.deps.inFlightBatchesMax;
  }

  /** What a batch closed now would meet (the accumulator's adaptive linger). */
  get state(): PipelineState {
    if (!this.hasRoom) return 'full';
    return this.inFlight === 0 ? 'idle' : 'busy';
  }

  /** True when nothing is queued, in flight, or waiting to be retried. */
  get idle(): boolean {
    return this.queue.length === 0 && this.failed.length === 0 && this.inFlight === 0;
  }

  enqueue(batch: ReadyBatch): void {
    let bytes: Uint8Array;
    try {
      bytes = this.encode(batch);
    } catch (error) {
      this.giveUp({ seq: -1, batch, bytes: new Uint8Array(0), deadlineMs: 0, attempts: 0, lastError: error }, error);
      return;
    }
    if (this.stopped) {
      this.giveUp({ seq: -1, batch, bytes, deadlineMs: 0, attempts: 0, lastError: undefined }, closedError());
      return;
    }
    this.queue.push({
      seq: this.nextSeq++,
      batch,
      bytes,
      deadlineMs: batch.sentAtMs + this.deps.deliveryTimeoutMs,
      attempts: 0,
      lastError: undefined,
    });
    void this.pump();
  }

  /** Fails everything not yet in flight with CLOSED; in-flight batches settle on their own. */
  stop(): void {
    this.stopped = true;
    if (this.backoffTimer !== undefined) this.deps.clock.clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
    for (const o of [...this.failed, ...this.queue]) this.giveUp(o, closedError());
    this.failed = [];
    this.queue.length = 0;
  }

  private canSend(): boolean {
    return (
      !this.stopped &&
      !this.paused &&
      this.backoffTimer === undefined &&
      this.queue.length > 0 &&
      this.inFlight < this.deps.inFlightBatchesMax
    );
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.canSend()) {
        let leader: Leader;
        try {
          leader = await this.deps.metadata.leader(this.deps.topic, this.deps.partition);
        } catch (error) {
          if (!this.canSend()) continue;
          const head = this.queue.shift()!;
          head.attempts++;
          this.failedAttempt(head, error);
          continue;
        }
        // Issue every request the window allows in one synchronous run, so they leave in order.
        while (this.canSend()) this.send(this.queue.shift()!, leader);
      }
    } finally {
      this.pumping = false;
    }
    this.notifyRoom();
  }

  /** Lets the accumulator close a batch that waited for room (called wherever room may appear). */
  private notifyRoom(): void {
    if (this.hasRoom) this.deps.onRoom();
  }

  private send(o: Outgoing, leader: Leader): void {
    const { channel, clock, topic, partition, acks } = this.deps;
    const remainingMs = o.deadlineMs - clock.now();
    if (remainingMs <= 0) {
      this.giveUp(o, o.lastError ?? new TidemarkError('TIMEOUT', 'delivery timeout passed before the batch could be sent', { context: { topic, partition } }));
      return;
    }
    o.attempts++;
    const timeoutMs = Math.max(1, Math.min(this.deps.requestTimeoutMs, remainingMs, REQUEST_TIMEOUT_MS_MAX));
    // The leader refuses an epoch not its own; FENCED_LEADER_EPOCH drops our stale metadata (noteError).
    const entry: ProduceEntry = { brokerId: leader.brokerId, topic, acks, timeoutMs, partition, batch: o.bytes, leaderEpoch: leader.leaderEpoch, accessEpoch: this.deps.accessEpoch() };
    if (acks !== 0) this.inFlight++;
    channel.produce(entry).then(
      (outcome) => {
        if (acks !== 0) this.inFlight--;
        this.succeeded(o, outcome.baseOffset);
      },
      (error: unknown) => {
        if (acks !== 0) this.inFlight--;
        this.failedAttempt(o, error);
      },
    );
  }

  private succeeded(o: Outgoing, baseOffset: number): void {
    this.failedRounds = 0;
    const { topic, partition } = this.deps;
    const { sends } = o.batch;
    for (let i = 0; i < sends.length; i++) sends[i]!.resolve({ topic, partition, offset: baseOffset < 0 ? -1 : baseOffset + i });
    this.deps.onSettled(o.batch);
    this.next();
  }

  private failedAttempt(o: Outgoing, error: unknown): void {
    o.lastError = error;
    if (error instanceof TidemarkError && error.code === 'PRODUCER_FENCED') this.deps.onFenced(error);
    if (this.stopped || !isRetriable(error)) {
      this.giveUp(o, error);
      this.next();
      return;
    }
    this.deps.metadata.noteError(this.deps.topic, error);
    this.failed.push(o);
    this.paused = true;
    this.next();
  }

  private next(): void {
    if (this.paused) this.resumeWhenSettled();
    else void this.pump();
    this.notifyRoom();
  }

  /** Once nothing is in flight: requeue failed batches in order, back off, go on. */
  private resumeWhenSettled(): void {
    if (this.inFlight > 0) return;
    const { clock, policy, random } = this.deps;
    // As in retry(): a batch whose deadline the wait would cross is given up now, not after it.
    const delayMs = backoffMs(this.failedRounds + 1, policy, random);
    const resendAtMs = clock.now() + delayMs;
    const again = this.failed
      .sort((a, b) => a.seq - b.seq)
      .filter((o) => {
        if (o.attempts < policy.attemptsMax && resendAtMs < o.deadlineMs) return true;
        this.giveUp(o, o.lastError);
        return false;
      });
    this.failed = [];
    this.paused = false;
    this.queue.unshift(...again);
    const head = this.queue[0];
    if (head !== undefined && head.lastError instanceof TidemarkError && head.lastError.code === 'OUT_OF_ORDER_SEQUENCE') {
      this.producerId = this.newProducerId();
      this.nextSequence = 0;
      for (const o of this.queue) o.bytes = this.encode(o.batch);
    }
    if (again.length === 0 || this.stopped) {
      void this.pump();
      return;
    }
    this.failedRounds++;
    this.backoffTimer = clock.setTimeout(() => {
      this.backoffTimer = undefined;
      void this.pump();
      this.notifyRoom();
    }, delayMs);
  }

  private giveUp(o: Outgoing, error: unknown): void {
    for (const s of o.batch.sends) s.reject(error);
    this.deps.onSettled(o.batch);
  }
}

function closedError(): TidemarkError {
  return new TidemarkError('CLOSED', 'producer closed before the batch was sent');
}
