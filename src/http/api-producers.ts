/**
 * The SDK producers behind POST /v1/topics/{topic}/records: one per (topic, acks), at most
 * API_PRODUCERS_MAX of them, least recently used closed first (its pending records still get
 * their answers: close() flushes). Each holds at most API_PRODUCER_IN_FLIGHT_BYTES_MAX of records,
 * so the API's producers together hold a bounded amount whatever the clients send.
 * The producer is the one retry layer on this path; this file only waits for it, up to the
 * request's timeoutMs.
 */
import { TidemarkError } from '../protocol/errors.js';
import type { Acks, Producer, ProducerRecord, RecordMetadata } from '../client/producer.js';
import type { Clock } from '../runtime/ports.js';

/** SDK producers the API keeps open at once (per topic and acks). */
export const API_PRODUCERS_MAX = 32;
/** Record bytes one API producer holds (batching, in flight, retrying); sends beyond wait. */
export const API_PRODUCER_IN_FLIGHT_BYTES_MAX = 8 * 1024 * 1024;
/** Longest a produce request waits for its records' acknowledgements, ms (its `timeoutMs` bound and default; the producers' delivery timeout). */
export const API_PRODUCE_TIMEOUT_MS_MAX = 30_000;

export type ProducerFactory = (topic: string, acks: Acks) => Producer<Uint8Array>;

export class ProducerCache {
  /** Insertion order is use order: the first entry is the least recently used. */
  private readonly producers = new Map<string, Producer<Uint8Array>>();
  private readonly closing = new Set<Promise<void>>();

  constructor(
    private readonly create: ProducerFactory,
    private readonly producersMax = API_PRODUCERS_MAX,
  ) {}

  get size(): number {
    return this.producers.size;
  }

  /** The producer for (topic, acks), made if missing; synchronous, so a caller's sends go to it before any eviction. */
  get(topic: string, acks: Acks): Producer<Uint8Array> {
    const key = `${acks}/${topic}`;
    const cached = this.producers.get(key);
    if (cached !== undefined) {
      this.producers.delete(key);
      this.producers.set(key, cached);
      return cached;
    }
    if (this.producers.size >= this.producersMax) {
      const [oldestKey, oldest] = this.producers.entries().next().value as [string, Producer<Uint8Array>];
      this.producers.delete(oldestKey);
      this.retire(oldest);
    }
    const producer = this.create(topic, acks);
    this.producers.set(key, producer);
    return producer;
  }

  /** Closes the topic's producers (it was deleted: a re-created topic gets fresh ones). */
  drop(topic: string): void {
    for (const [key, producer] of this.producers) {
      if (producer.topic !== topic) continue;
      this.producers.delete(key);
      this.retire(producer);
    }
  }

  /** Closes every producer, flushing what they hold. */
  async close(): Promise<void> {
    for (const producer of this.producers.values()) this.retire(producer);
    this.producers.clear();
    await Promise.all([...this.closing]);
  }

  private retire(producer: Producer<Uint8Array>): void {
    const closed = producer.close().catch(() => undefined);
    this.closing.add(closed);
    void closed.then(() => this.closing.delete(closed));
  }
}

export type RecordResult = { partition: number; offset: number } | { error: TidemarkError };

/**
 * Sends every record (all in this turn of the event loop) and resolves with each one's result, in
 * order, once all settled or `timeoutMs` passed: a record still unanswered then is a TIMEOUT (it
 * may yet be written; the producer keeps it until its delivery timeout).
 */
export function sendAll(producer: Producer<Uint8Array>, records: readonly ProducerRecord<Uint8Array>[], timeoutMs: number, clock: Clock): Promise<RecordResult[]> {
  const results: Array<RecordResult | undefined> = records.map(() => undefined);
  let pending = records.length;
  return new Promise((resolve) => {
    const finish = () => {
      clock.clearTimeout(timer);
      const timedOut = new TidemarkError('TIMEOUT', `not acknowledged within timeoutMs ${timeoutMs}; it may still be written`);
      resolve(results.map((r) => r ?? { error: timedOut }));
    };
    const timer = clock.setTimeout(finish, timeoutMs);
    records.forEach((record, i) => {
      const settle = (result: RecordResult) => {
        if (results[i] !== undefined) return;
        results[i] = result;
        if (--pending === 0) finish();
      };
      producer.send(record).then(
        (m: RecordMetadata) => settle({ partition: m.partition, offset: m.offset }),
        (error: unknown) => settle({ error: asTidemarkError(error) }),
      );
    });
  });
}

export function asTidemarkError(error: unknown): TidemarkError {
  return error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', error instanceof Error ? error.message : String(error), { cause: error });
}
