/**
 * Keyed produce through the public SDK, for the partitions and idle benches: several producers in
 * this process, record i keyed `k<i>` (murmur2 spreads the keys over every partition), producer j
 * sending records j, j + P, j + 2P, ...; seconds from the first send to the last acknowledgement.
 */
import { codecs, type Acks, type Producer, type Tidemark } from '../src/index.js';
import { bounded, sendBounded } from './steps.js';

export interface KeyedProduceOptions {
  topic: string;
  records: number;
  recordBytes: number;
  /** Producers, spread over `clients` round robin. */
  producers: number;
  acks: Acks;
  deliveryTimeoutMs: number;
}

/** Sends outstanding at once per producer. */
const OUTSTANDING_MAX = 20_000;
const PRODUCER_CLOSE_MS = 15_000;

/** One record to each partition (not timed), so leaders and producers' metadata are in place. */
export async function touchPartitions(client: Tidemark, topic: string, partitions: number, acks: Acks, deliveryTimeoutMs: number): Promise<void> {
  const producer = client.producer({ topic, codec: codecs.bytes(), acks, deliveryTimeoutMs, sendsWaitingMax: Math.max(10_000, partitions) });
  try {
    const value = new Uint8Array(16);
    const sends = Array.from({ length: partitions }, (_, partition) => producer.send({ value, partition }));
    for (const s of sends) s.catch(() => undefined);
    await Promise.all(sends);
  } finally {
    await bounded('producer close', PRODUCER_CLOSE_MS, () => producer.close()).catch(() => undefined);
  }
}

export async function produceKeyed(clients: Tidemark[], o: KeyedProduceOptions, aborted: () => boolean): Promise<number> {
  const value = new Uint8Array(o.recordBytes).fill(120);
  const producers: Producer<Uint8Array>[] = Array.from({ length: o.producers }, (_, j) =>
    clients[j % clients.length]!.producer({ topic: o.topic, codec: codecs.bytes(), acks: o.acks, deliveryTimeoutMs: o.deliveryTimeoutMs, sendsWaitingMax: OUTSTANDING_MAX }),
  );
  try {
    const start = performance.now();
    // Producer j sends records j, j + n, j + 2n, ... (n producers), all at once.
    const per = (j: number) => Math.ceil((o.records - j) / producers.length);
    await Promise.all(producers.map((producer, j) => sendBounded(per(j), OUTSTANDING_MAX, (k) => producer.send({ key: `k${j + k * producers.length}`, value }), aborted)));
    return (performance.now() - start) / 1000;
  } finally {
    await Promise.allSettled(producers.map((p) => bounded('producer close', PRODUCER_CLOSE_MS, () => p.close())));
  }
}
