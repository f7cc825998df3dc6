/**
 * The load of the replication failover tests, and its checks.
 *
 * Producers (one SDK client each) send keyed records with acks=all at a steady, paced rate, with a
 * bound on sends not yet settled; each record's value names it (`p<producer>:<key>:<seq>`, seq per
 * producer and key), and every acknowledgement is kept with the (partition, offset) it named.
 * Readers (one SDK client for all) follow every partition from offset 0 and keep what they saw at
 * each offset; a reader that fails is reopened at its position.
 *
 * `verify` compares all that with the partitions' final logs (read from the nodes' RocksDB).
 */
import { codecs, Tidemark, type Producer, type Reader } from '../../src/index.js';
import { partitionForKey } from '../../src/client/partitioner.js';
import { TidemarkError } from '../../src/protocol/errors.js';
import type { StoredRecord } from '../../src/protocol/batch.js';

export interface WorkloadOptions {
  nats: string;
  cluster: string;
  topic: string;
  partitions: number;
  producers: number;
  keysPerPartition: number;
  /** Records per second, per producer. */
  ratePerProducer: number;
  /** Sends not yet settled, per producer: beyond it the pacer skips (the load stays bounded). */
  outstandingMax: number;
  deliveryTimeoutMs: number;
  requestTimeoutMs: number;
  /** The clients' metadataMaxAgeMs. @default the SDK's */
  metadataMaxAgeMs?: number;
  /** Whether readers follow every partition from offset 0 (tests that consume otherwise turn them off). @default true */
  readers?: boolean;
}

export interface Ack {
  producer: number;
  key: string;
  seq: number;
  value: string;
  partition: number;
  offset: number;
  /** Date.now() when the acknowledgement arrived. */
  atMs: number;
}

interface PartitionReader {
  partition: number;
  /** Offset the reader expects next: everything below it was seen, in order. */
  next: number;
  seen: Map<number, string>;
  reopened: number;
  errors: Map<string, number>;
  /** What the reader saw that broke the rules (a gap, an offset going back). */
  anomalies: string[];
  current: Reader<string> | undefined;
  loop: Promise<void> | undefined;
}

const TICK_MS = 20;
const utf8 = new TextEncoder();
const text = new TextDecoder();

/** `count` keys per partition ("k<n>"), chosen with the producer's own partitioner. */
export function keysPerPartition(partitions: number, count: number): string[][] {
  const out: string[][] = Array.from({ length: partitions }, () => []);
  for (let n = 0; out.some((k) => k.length < count); n++) {
    if (n > 100_000) throw new Error('cannot find keys for every partition');
    const key = `k${n}`;
    const p = partitionForKey(utf8.encode(key), partitions);
    if (out[p]!.length < count) out[p]!.push(key);
  }
  return out;
}

function errorCode(error: unknown): string {
  return error instanceof TidemarkError ? error.code : error instanceof Error ? error.message.slice(0, 60) : String(error);
}

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

export class Workload {
  readonly acks: Ack[] = [];
  readonly failures = new Map<string, number>();
  readonly ackedPerPartition: number[];
  readonly keyPartition = new Map<string, number>();
  private readonly keys: string[];
  private readonly seqs: Array<Map<string, number>>;
  private readonly outstanding: number[];
  /** Per producer: how many records it sent (picks the next key, round robin over all keys). */
  private readonly turn: number[];
  private readonly pending = new Set<Promise<unknown>>();
  private readonly readers: PartitionReader[];
  private readonly waiters = new Set<() => void>();
  private timers: NodeJS.Timeout[] = [];
  private sent = 0;
  private stopped = false;

  private constructor(
    private readonly options: WorkloadOptions,
    private readonly producerClients: Tidemark[],
    private readonly producers: Array<Producer<string>>,
    private readonly readerClient: Tidemark,
  ) {
    const byPartition = keysPerPartition(options.partitions, options.keysPerPartition);
    byPartition.forEach((keys, p) => keys.forEach((k) => this.keyPartition.set(k, p)));
    // Interleave partitions so consecutive sends spread over all of them.
    this.keys = Array.from({ length: options.keysPerPartition }, (_, i) => byPartition.map((keys) => keys[i]!)).flat();
    this.seqs = producers.map(() => new Map());
    this.outstanding = producers.map(() => 0);
    this.turn = producers.map((_, i) => i);
    this.ackedPerPartition = new Array<number>(options.partitions).fill(0);
    this.readers = Array.from({ length: options.partitions }, (_, partition) => ({
      partition,
      next: 0,
      seen: new Map(),
      reopened: 0,
      errors: new Map(),
      anomalies: [],
      current: undefined,
      loop: undefined,
    }));
  }

  static async start(options: WorkloadOptions): Promise<Workload> {
    const retry = { attemptsMax: 1000, backoffMsInitial: 50, backoffMsMax: 500, totalMsMax: 120_000 };
    const connect = (name: string) =>
      Tidemark.connect({
        servers: options.nats,
        cluster: options.cluster,
        name,
        requestTimeoutMs: options.requestTimeoutMs,
        retry,
        ...(options.metadataMaxAgeMs === undefined ? {} : { metadataMaxAgeMs: options.metadataMaxAgeMs }),
      });
    const producerClients: Tidemark[] = [];
    let readerClient: Tidemark | undefined;
    try {
      for (let i = 0; i < options.producers; i++) producerClients.push(await connect(`repl-producer-${i}`));
      readerClient = await connect('repl-readers');
    } catch (error) {
      await Promise.allSettled([...producerClients, ...(readerClient === undefined ? [] : [readerClient])].map((c) => c.close()));
      throw error;
    }
    const producers = producerClients.map((c) =>
      c.producer<string>({
        topic: options.topic,
        codec: codecs.string(),
        acks: 'all',
        lingerMs: 5,
        deliveryTimeoutMs: options.deliveryTimeoutMs,
        requestTimeoutMs: options.requestTimeoutMs,
      }),
    );
    const w = new Workload(options, producerClients, producers, readerClient);
    if (options.readers !== false) for (const r of w.readers) w.follow(r);
    producers.forEach((_, i) => w.timers.push(setInterval(() => w.tick(i), TICK_MS)));
    return w;
  }

  get sentCount(): number {
    return this.sent;
  }

  get failedCount(): number {
    return [...this.failures.values()].reduce((a, b) => a + b, 0);
  }

  /** One pacing tick of producer `i`: its share of the rate, unless too much is outstanding. */
  private tick(i: number): void {
    if (this.stopped) return;
    const perTick = Math.max(1, Math.round((this.options.ratePerProducer * TICK_MS) / 1000));
    for (let n = 0; n < perTick && this.outstanding[i]! < this.options.outstandingMax; n++) {
      const key = this.keys[this.turn[i]!++ % this.keys.length]!;
      const seq = this.seqs[i]!.get(key) ?? 0;
      this.seqs[i]!.set(key, seq + 1);
      const value = `p${i}:${key}:${seq}`;
      this.sent++;
      this.outstanding[i]!++;
      const p = this.producers[i]!.send({ key, value }).then(
        (m) => {
          this.acks.push({ producer: i, key, seq, value, partition: m.partition, offset: m.offset, atMs: Date.now() });
          this.ackedPerPartition[m.partition]!++;
          this.notify();
        },
        (error: unknown) => bump(this.failures, errorCode(error)),
      );
      this.pending.add(p);
      void p.finally(() => {
        this.pending.delete(p);
        this.outstanding[i]!--;
      });
    }
  }

  /** Wakes `waitUntil` waiters: for conditions on events outside the workload (a consumer's deliveries). */
  notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Counters, for error messages. */
  status(): string {
    return (
      `sent ${this.sent}, acknowledged per partition ${this.ackedPerPartition.join(',')}, unsettled ${this.pending.size}, ` +
      `failed ${JSON.stringify(Object.fromEntries(this.failures))}, readers at ${this.readerPositions().join(',')}`
    );
  }

  /** Resolves once `done()` holds (checked on every acknowledgement and reader record); rejects after `timeoutMs`. */
  waitUntil(what: string, done: () => boolean, timeoutMs: number): Promise<number> {
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!done()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(Date.now() - started);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`${what}: not reached within ${timeoutMs} ms (${this.status()})`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Follows one partition from offset 0 for good; a failed reader is reopened where it stopped. */
  private follow(r: PartitionReader): void {
    r.loop = (async () => {
      while (!this.stopped) {
        const reader = this.readerClient.reader<string>({
          topic: this.options.topic,
          partition: r.partition,
          from: { offset: r.next },
          codec: codecs.string(),
          maxWaitMs: 500,
        });
        r.current = reader;
        try {
          for await (const rec of reader) {
            if (rec.offset !== r.next) r.anomalies.push(`reader of partition ${r.partition} expected offset ${r.next}, got ${rec.offset}`);
            const value = rec.value ?? '<null>';
            const before = r.seen.get(rec.offset);
            if (before !== undefined && before !== value) r.anomalies.push(`reader of partition ${r.partition} saw offset ${rec.offset} as ${before}, then as ${value}`);
            r.seen.set(rec.offset, value);
            if (rec.keyString === null || !value.includes(`:${rec.keyString}:`)) r.anomalies.push(`partition ${r.partition} offset ${rec.offset}: key ${rec.keyString} does not match value ${value}`);
            r.next = Math.max(r.next, rec.offset + 1);
            this.notify();
          }
        } catch (error) {
          if (this.stopped) break;
          bump(r.errors, errorCode(error));
          r.reopened++;
          // Back off before reopening (a reader error is already the end of its own retries).
          await new Promise((resolve) => setTimeout(resolve, 200));
        } finally {
          await reader.close();
        }
      }
    })();
  }

  /**
   * The longest stretch within [fromMs, toMs) in which `partition` got no acknowledgement (counted
   * from `fromMs`, and to `toMs` after the last one).
   */
  longestAckGap(partition: number, fromMs: number, toMs: number): number {
    let last = fromMs;
    let longest = 0;
    for (const a of this.acks) {
      if (a.partition !== partition || a.atMs < fromMs || a.atMs >= toMs) continue;
      longest = Math.max(longest, a.atMs - last);
      last = a.atMs;
    }
    return Math.max(longest, toMs - last);
  }

  /** True when producer `p<i>` sent a record with this value (its seq was handed out). */
  wasSent(value: string): boolean {
    const m = /^p(\d+):(.+):(\d+)$/.exec(value);
    if (m === null) return false;
    const seqs = this.seqs[Number(m[1])];
    return seqs !== undefined && Number(m[3]) < (seqs.get(m[2]!) ?? 0);
  }

  readerPositions(): number[] {
    return this.readers.map((r) => r.next);
  }

  readerReport(): Array<{ partition: number; next: number; seen: number; reopened: number; errors: Record<string, number>; anomalies: string[] }> {
    return this.readers.map((r) => ({
      partition: r.partition,
      next: r.next,
      seen: r.seen.size,
      reopened: r.reopened,
      errors: Object.fromEntries(r.errors),
      anomalies: r.anomalies,
    }));
  }

  /** Stops sending and waits (bounded) for every send to settle; producers are closed. */
  async stopProducing(timeoutMs: number): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    const settled = Promise.all([...this.pending]).then(() => Promise.all(this.producers.map((p) => p.close())));
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.pending.size} sends still unsettled ${timeoutMs} ms after the load stopped`)), timeoutMs);
    });
    try {
      await Promise.race([settled, expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits (bounded) until every reader has seen everything below `ends[partition]`. */
  async drainReaders(ends: readonly number[], timeoutMs: number): Promise<number> {
    return this.waitUntil(
      `readers reach ${ends.join(',')} (at ${this.readerPositions().join(',')})`,
      () => this.readers.every((r) => r.next >= ends[r.partition]!),
      timeoutMs,
    );
  }

  async close(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await Promise.allSettled(this.readers.map((r) => r.current?.close()));
    await Promise.allSettled([...this.producerClients, this.readerClient].map((c) => c.close()));
    await Promise.allSettled(this.readers.map((r) => r.loop));
  }

  /** What readers saw, per partition and offset. */
  seen(partition: number): ReadonlyMap<number, string> {
    return this.readers[partition]!.seen;
  }
}

/** A partition's final log: offset -> record (and the leader epoch of its batch). */
export type FinalLog = ReadonlyMap<number, { record: StoredRecord; leaderEpoch: number }>;

export interface Verdict {
  acked: number;
  /** Acknowledged records not at their offset (missing, or another record there). */
  misplaced: string[];
  /** Per key and producer, acknowledged offsets not increasing in send order. */
  disordered: string[];
  /** Keys acknowledged on another partition than their own. */
  wrongPartition: string[];
  /** Records stored at more than one offset. */
  duplicates: Array<{ value: string; partition: number; offsets: number[] }>;
  /** What readers saw that is not what the final log has there (or reader anomalies). */
  readerMismatches: string[];
  /** Stored records that no producer sent. */
  unknown: string[];
  /** Stored records whose send was never acknowledged (failed or retried into a duplicate). */
  unacknowledgedStored: number;
}

const valueOf = (r: StoredRecord) => (r.value === null ? '<null>' : text.decode(r.value));

/** Every check of the acceptance test, against the final logs (one per partition, identical on every replica). */
export function verify(w: Workload, logs: readonly FinalLog[]): Verdict {
  const misplaced: string[] = [];
  const disordered: string[] = [];
  const wrongPartition: string[] = [];
  const ackedValues = new Set<string>();
  for (const a of w.acks) {
    ackedValues.add(a.value);
    if (a.partition !== w.keyPartition.get(a.key)) wrongPartition.push(`${a.value} acknowledged on partition ${a.partition}, key belongs to ${w.keyPartition.get(a.key)}`);
    const stored = logs[a.partition]?.get(a.offset);
    if (stored === undefined) misplaced.push(`${a.value} acknowledged at ${a.partition}/${a.offset}: nothing stored there`);
    else {
      const v = valueOf(stored.record);
      const k = stored.record.key === null ? null : text.decode(stored.record.key);
      if (v !== a.value || k !== a.key) misplaced.push(`${a.value} (key ${a.key}) acknowledged at ${a.partition}/${a.offset}: stored there is ${v} (key ${k}, epoch ${stored.leaderEpoch})`);
    }
  }
  const byProducerKey = new Map<string, Ack[]>();
  for (const a of w.acks) {
    const id = `p${a.producer}:${a.key}`;
    const list = byProducerKey.get(id) ?? [];
    list.push(a);
    byProducerKey.set(id, list);
  }
  for (const [id, list] of byProducerKey) {
    list.sort((x, y) => x.seq - y.seq);
    for (let i = 1; i < list.length; i++) {
      const [prev, cur] = [list[i - 1]!, list[i]!];
      if (cur.partition === prev.partition && cur.offset <= prev.offset) {
        disordered.push(`${id}: seq ${prev.seq} at ${prev.partition}/${prev.offset}, seq ${cur.seq} at ${cur.partition}/${cur.offset}`);
      }
    }
  }
  const duplicates: Verdict['duplicates'] = [];
  const unknown: string[] = [];
  let unacknowledgedStored = 0;
  logs.forEach((log, partition) => {
    const at = new Map<string, number[]>();
    for (const [offset, { record }] of log) {
      const v = valueOf(record);
      const list = at.get(v) ?? [];
      list.push(offset);
      at.set(v, list);
    }
    for (const [value, offsets] of at) {
      if (!w.wasSent(value)) unknown.push(`${partition}/${offsets.join(',')}: ${value}`);
      if (!ackedValues.has(value)) unacknowledgedStored++;
      if (offsets.length > 1) duplicates.push({ value, partition, offsets: offsets.sort((a, b) => a - b) });
    }
  });
  const readerMismatches: string[] = [];
  for (const report of w.readerReport()) readerMismatches.push(...report.anomalies);
  logs.forEach((log, partition) => {
    for (const [offset, value] of w.seen(partition)) {
      const stored = log.get(offset);
      const v = stored === undefined ? undefined : valueOf(stored.record);
      if (v !== value) readerMismatches.push(`reader saw ${partition}/${offset} = ${value}; the final log has ${v ?? 'nothing'} there`);
    }
  });
  return { acked: w.acks.length, misplaced, disordered, wrongPartition, duplicates, readerMismatches, unknown, unacknowledgedStored };
}
