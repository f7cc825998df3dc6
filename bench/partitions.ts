/**
 * Partitions benchmark: records/s as a topic's partition count grows, RF 1 and RF 3 (acks=all,
 * flush.mode=fsync; RF 3 with min.insync.replicas=2), on 3 Tidemark nodes on 3 nats-servers (as the
 * replication bench sets them up). Per step: create the topic (timed), send one record to every
 * partition (not timed: leaders and producer metadata in place), then keyed produce of N 1 KiB
 * records from several SDK producers in this process (keys `k<i>`, so every partition gets
 * traffic): records/s from the first send to the last ack. Delete the topic. Each step is bounded;
 * a step that fails or times out is a row saying so, and the run goes on.
 *
 * Usage: npm run bench:partitions [-- --partitions 1,10,100,1000 --rf 1,3 --records N --producers P
 *          --record-bytes B --timeout S]
 */
import { parseArgs } from 'node:util';
import { describeEnvironment, environment } from './environment.js';
import { table } from './harness.js';
import { produceKeyed, touchPartitions } from './keyed-produce.js';
import { startNatsCluster } from './nats-cluster.js';
import { Progress } from './progress.js';
import { runMain, type Scope } from './scope.js';
import { bounded, errorText, fmt, intListOption, intOption, isMain } from './steps.js';
import { startTidemarkCluster } from './tidemark-cluster.js';

export interface PartitionsOptions {
  /** @default [1, 10, 100, 1000] */
  partitions: number[];
  /** @default [1, 3] */
  rfs: number[];
  /** Records per step. @default 100000 */
  records: number;
  /** SDK producers in this process. @default 4 */
  producers: number;
  /** @default 1024 */
  recordBytes: number;
  /** Bound on each of create, touch, produce, s. @default 120 */
  timeoutS: number;
}

export interface PartitionsRow {
  rf: number;
  partitions: number;
  records: number;
  createSeconds: number;
  recordsPerS: number;
  mbPerS: number;
  failed?: string;
}

export interface PartitionsResult {
  options: PartitionsOptions;
  rows: PartitionsRow[];
  wallSeconds: number;
}

export function partitionsDefaults(): PartitionsOptions {
  return { partitions: [1, 10, 100, 1000], rfs: [1, 3], records: 100_000, producers: 4, recordBytes: 1024, timeoutS: 120 };
}

/** Rough seconds per step: create (about 10 ms a partition at RF 3), touch, produce at ~12k records/s, delete. */
function stepPlanS(o: PartitionsOptions, partitions: number, rf: number): number {
  return 2 + (partitions * rf) / 300 + o.records / 12_000;
}

export function partitionsPlanS(o: PartitionsOptions): number {
  return 15 + o.rfs.reduce((sum, rf) => sum + o.partitions.reduce((s, p) => s + stepPlanS(o, p, rf), 0), 0);
}

export async function runPartitions(parent: Scope, progress: Progress, o: PartitionsOptions): Promise<PartitionsResult> {
  const began = performance.now();
  const timeoutMs = o.timeoutS * 1000;
  const scope = parent.child();
  const rows: PartitionsRow[] = [];
  try {
    const nats = await startNatsCluster({ size: 3 });
    scope.defer(() => nats.stop());
    const tm = await startTidemarkCluster(scope, { natsUrls: nats.servers.map((s) => s.url) });
    progress.note(`partitions: 3 nats-servers, 3 tidemark nodes ready`);
    const admin = tm.clients[0]!.admin();
    for (const rf of o.rfs) {
      for (const partitions of o.partitions) {
        const row: PartitionsRow = { rf, partitions, records: o.records, createSeconds: Number.NaN, recordsPerS: Number.NaN, mbPerS: Number.NaN };
        rows.push(row);
        const name = `parts-rf${rf}-p${partitions}`;
        if (scope.closed) {
          row.failed = 'stopped';
          continue;
        }
        const topic = `parts-${rf}-${partitions}-${process.pid}`;
        let step = 'create';
        try {
          const t0 = performance.now();
          const config: Record<string, string> = rf > 1 ? { 'flush.mode': 'fsync', 'min.insync.replicas': '2' } : { 'flush.mode': 'fsync' };
          await bounded(`${name} create`, timeoutMs, () => admin.createTopic({ name: topic, partitions, replicationFactor: rf, config }));
          row.createSeconds = (performance.now() - t0) / 1000;
          step = 'touch';
          await bounded(`${name} touch`, timeoutMs, () => touchPartitions(tm.clients[0]!, topic, partitions, 'all', timeoutMs));
          step = 'produce';
          const seconds = await bounded(`${name} produce`, timeoutMs, (aborted) =>
            produceKeyed(tm.clients, { topic, records: o.records, recordBytes: o.recordBytes, producers: o.producers, acks: 'all', deliveryTimeoutMs: timeoutMs }, aborted),
          );
          row.recordsPerS = o.records / seconds;
          row.mbPerS = (row.recordsPerS * o.recordBytes) / 1e6;
          progress.step(`partitions RF${rf} x ${partitions}: created in ${fmt(row.createSeconds, 1)} s, ${fmt(row.recordsPerS)} records/s (${fmt(row.mbPerS, 1)} MB/s)`, stepPlanS(o, partitions, rf));
        } catch (error) {
          row.failed = `${errorText(error)} (${step})`;
          progress.step(`partitions RF${rf} x ${partitions}: failed: ${row.failed}`, stepPlanS(o, partitions, rf));
        } finally {
          await bounded(`${name} delete`, timeoutMs, () => admin.deleteTopic(topic)).catch((error: unknown) => progress.note(`${name} delete: ${errorText(error)}`));
        }
      }
    }
    return { options: o, rows, wallSeconds: (performance.now() - began) / 1000 };
  } finally {
    await scope.close();
  }
}

export function partitionsTable(result: PartitionsResult): string {
  return table(
    result.rows.map((r) => ({
      RF: r.rf,
      partitions: r.partitions,
      'create s': fmt(r.createSeconds, 1),
      'records/s': r.failed === undefined ? fmt(r.recordsPerS) : `failed: ${r.failed}`,
      'MB/s': fmt(r.mbPerS, 1),
    })),
  );
}

export function parsePartitionsArgs(args: string[]): PartitionsOptions {
  const d = partitionsDefaults();
  const { values } = parseArgs({
    args,
    options: {
      partitions: { type: 'string', default: d.partitions.join(',') },
      rf: { type: 'string', default: d.rfs.join(',') },
      records: { type: 'string', default: String(d.records) },
      producers: { type: 'string', default: String(d.producers) },
      'record-bytes': { type: 'string', default: String(d.recordBytes) },
      timeout: { type: 'string', default: String(d.timeoutS) },
    },
  });
  return {
    partitions: intListOption('partitions', values.partitions, 1, 10_000),
    rfs: intListOption('rf', values.rf, 1, 3),
    records: intOption('records', values.records, 1, 10_000_000),
    producers: intOption('producers', values.producers, 1, 64),
    recordBytes: intOption('record-bytes', values['record-bytes'], 1, 1_048_576),
    timeoutS: intOption('timeout', values.timeout, 1, 3600),
  };
}

if (isMain(import.meta.url)) {
  runMain(async (root) => {
    const o = parsePartitionsArgs(process.argv.slice(2));
    const env = environment();
    const progress = new Progress();
    progress.plan(partitionsPlanS(o));
    const result = await runPartitions(root, progress, o);
    process.stdout.write(
      `${describeEnvironment(env)}\npartitions bench: ${o.records} x ${o.recordBytes} B keyed records, ${o.producers} producers, acks=all, fsync\n\n${partitionsTable(result)}\n\nwall time ${result.wallSeconds.toFixed(0)} s\n`,
    );
  });
}
