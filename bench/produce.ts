/**
 * Produce benchmark: one Tidemark node (its own process) on a real nats-server, 1 KiB records,
 * acks=1 and acks=all, interleaved rounds so machine noise hits both alike.
 *   throughput: as fast as the producer's in-flight window allows -> records/s, MB/s (median of rounds)
 *   latency:    a fixed offered load below saturation -> send() -> acknowledgement in a histogram
 * Usage: npm run bench:produce [-- --records N --rounds R --rate RECORDS_PER_S --latency-seconds S --partitions P]
 */
import { parseArgs } from 'node:util';
import { codecs, Tidemark, type Acks } from '../src/index.js';
import { describeEnvironment, environment } from './environment.js';
import { median, startNatsServer, startNodeProcess, table } from './harness.js';
import { Histogram, type LatencySummary } from './hdr.js';
import { Progress } from './progress.js';
import { runMain, type Scope } from './scope.js';
import { bounded, fmt, intOption, isMain, sleep } from './steps.js';

export interface ProduceOptions {
  /** Records per throughput round. @default 200000 */
  records: number;
  /** @default 3 */
  rounds: number;
  /** Offered load of the latency run, records/s. @default 20000 */
  rate: number;
  /** @default 5 */
  latencySeconds: number;
  /** @default 3 */
  partitions: number;
  /** Bound per step, s. @default 120 */
  timeoutS: number;
}

export interface ProduceRow {
  mode: 'acks=1' | 'acks=all';
  recordsPerS: number[];
  recordsPerSMedian: number;
  mbPerS: number;
  latency: LatencySummary | undefined;
}

export interface ProduceResult {
  options: ProduceOptions;
  rows: ProduceRow[];
  wallSeconds: number;
}

const RECORD_BYTES = 1024;
/** Sends outstanding at once in the throughput run (the producer's byte window bounds memory too). */
const OUTSTANDING_MAX = 50_000;
const TICK_MS = 5;
const MODES: Array<{ mode: ProduceRow['mode']; acks: Acks }> = [
  { mode: 'acks=1', acks: 1 },
  { mode: 'acks=all', acks: 'all' },
];

export function produceDefaults(): ProduceOptions {
  return { records: 200_000, rounds: 3, rate: 20_000, latencySeconds: 5, partitions: 3, timeoutS: 120 };
}

export function producePlanS(o: ProduceOptions): number {
  return 5 + MODES.length * (o.rounds * (1 + o.records / 50_000) + 1 + o.latencySeconds);
}

const value = new Uint8Array(RECORD_BYTES).fill(120);

async function throughput(client: Tidemark, topic: string, acks: Acks, records: number): Promise<number> {
  const producer = client.producer({ topic, codec: codecs.bytes(), acks, lingerMs: 5, sendsWaitingMax: OUTSTANDING_MAX });
  const pending: Promise<unknown>[] = [];
  let failure: unknown;
  const fail = (error: unknown) => {
    failure ??= error;
  };
  const start = performance.now();
  for (let i = 0; i < records; i++) {
    pending.push(producer.send({ value }).catch(fail));
    if (pending.length >= OUTSTANDING_MAX) await Promise.all(pending.splice(0, pending.length / 2));
    if (failure !== undefined) break;
  }
  await Promise.all(pending);
  if (failure !== undefined) throw failure;
  await producer.flush();
  const seconds = (performance.now() - start) / 1000;
  await producer.close();
  return records / seconds;
}

async function latency(client: Tidemark, topic: string, acks: Acks, rate: number, seconds: number): Promise<Histogram> {
  const producer = client.producer({ topic, codec: codecs.bytes(), acks, lingerMs: 1 });
  const histogram = new Histogram();
  let failure: unknown;
  const fail = (error: unknown) => {
    failure ??= error;
  };
  const pending: Promise<unknown>[] = [];
  const total = rate * seconds;
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
    for (; sent < due; sent++) {
      const t0 = performance.now();
      pending.push(producer.send({ value }).then(() => histogram.recordMs(performance.now() - t0), fail));
    }
    if (failure !== undefined) break;
    await sleep(TICK_MS);
  }
  await Promise.all(pending);
  if (failure !== undefined) throw failure;
  await producer.close();
  return histogram;
}

export async function runProduce(parent: Scope, progress: Progress, o: ProduceOptions): Promise<ProduceResult> {
  const began = performance.now();
  const timeoutMs = o.timeoutS * 1000;
  const scope = parent.child();
  try {
    const nats = await startNatsServer();
    scope.defer(() => nats.stop());
    const node = await startNodeProcess(nats.url);
    scope.defer(() => node.stop());
    const client = await Tidemark.connect({ servers: nats.url });
    scope.defer(() => client.close());
    const admin = client.admin();
    const rows: ProduceRow[] = MODES.map((m) => ({ mode: m.mode, recordsPerS: [], recordsPerSMedian: Number.NaN, mbPerS: Number.NaN, latency: undefined }));
    for (let round = 0; round < o.rounds; round++) {
      for (const [i, m] of MODES.entries()) {
        const topic = `bench-${round}-${m.acks}`;
        await bounded(`produce create`, timeoutMs, () => admin.createTopic({ name: topic, partitions: o.partitions, replicationFactor: 1, config: {} }));
        const rate = await bounded(`produce ${m.mode} throughput`, timeoutMs, () => throughput(client, topic, m.acks, o.records));
        rows[i]!.recordsPerS.push(rate);
        await bounded(`produce delete`, timeoutMs, () => admin.deleteTopic(topic));
        progress.step(`produce round ${round + 1} ${m.mode}: ${fmt(rate)} records/s`, 1 + o.records / 50_000);
      }
    }
    for (const [i, m] of MODES.entries()) {
      const topic = `bench-latency-${m.acks}`;
      await bounded(`produce create`, timeoutMs, () => admin.createTopic({ name: topic, partitions: o.partitions, replicationFactor: 1, config: {} }));
      const h = await bounded(`produce ${m.mode} latency`, o.latencySeconds * 1000 + timeoutMs, () => latency(client, topic, m.acks, o.rate, o.latencySeconds));
      await bounded(`produce delete`, timeoutMs, () => admin.deleteTopic(topic));
      const row = rows[i]!;
      row.latency = h.summary();
      row.recordsPerSMedian = median(row.recordsPerS);
      row.mbPerS = (row.recordsPerSMedian * RECORD_BYTES) / 1e6;
      progress.step(`produce latency ${m.mode} @${o.rate}/s: p50 ${fmt(row.latency.p50Ms, 2)} ms, p99 ${fmt(row.latency.p99Ms, 2)} ms`, 1 + o.latencySeconds);
    }
    return { options: o, rows, wallSeconds: (performance.now() - began) / 1000 };
  } finally {
    await scope.close();
  }
}

export function produceTable(result: ProduceResult): string {
  const { rate } = result.options;
  return table(
    result.rows.map((r) => ({
      mode: r.mode,
      'records/s (median)': fmt(r.recordsPerSMedian),
      'MB/s': fmt(r.mbPerS, 1),
      rounds: r.recordsPerS.map((x) => fmt(x)).join(' / '),
      [`p50 ms @ ${rate}/s`]: fmt(r.latency?.p50Ms, 2),
      [`p99 ms @ ${rate}/s`]: fmt(r.latency?.p99Ms, 2),
      [`p99.9 ms @ ${rate}/s`]: fmt(r.latency?.p999Ms, 2),
    })),
  );
}

export function parseProduceArgs(args: string[]): ProduceOptions {
  const d = produceDefaults();
  const { values } = parseArgs({
    args,
    options: {
      records: { type: 'string', default: String(d.records) },
      rounds: { type: 'string', default: String(d.rounds) },
      rate: { type: 'string', default: String(d.rate) },
      'latency-seconds': { type: 'string', default: String(d.latencySeconds) },
      partitions: { type: 'string', default: String(d.partitions) },
      timeout: { type: 'string', default: String(d.timeoutS) },
    },
  });
  return {
    records: intOption('records', values.records, 1, 10_000_000),
    rounds: intOption('rounds', values.rounds, 1, 50),
    rate: intOption('rate', values.rate, 1, 1_000_000),
    latencySeconds: intOption('latency-seconds', values['latency-seconds'], 1, 600),
    partitions: intOption('partitions', values.partitions, 1, 10_000),
    timeoutS: intOption('timeout', values.timeout, 1, 3600),
  };
}

if (isMain(import.meta.url)) {
  runMain(async (root) => {
    const o = parseProduceArgs(process.argv.slice(2));
    const env = environment();
    const progress = new Progress();
    progress.plan(producePlanS(o));
    const result = await runProduce(root, progress, o);
    process.stdout.write(
      `${describeEnvironment(env)}\nTidemark produce, one node, ${o.records} x ${RECORD_BYTES} B records per round, ${o.rounds} rounds, ${o.partitions} partitions\n${produceTable(result)}\n`,
    );
  });
}
