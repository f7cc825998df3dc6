/**
 * Idle benchmark: what holding partitions costs when nothing is produced. A 3-node Tidemark
 * cluster on one nats-server; per step a topic of N partitions at RF 3 (flush.mode=fsync,
 * min.insync.replicas=2) is created and left to settle, then over a window:
 *   - CPU of the three node processes (utime + stime from /proc/<pid>/stat, threads included), as a
 *     % of one core, summed and per node;
 *   - RSS of each node (VmRSS from /proc/<pid>/status) at the end of the window;
 * then a keyed produce of 20,000 1 KiB records through the SDK (one producer, acks=all, keys `k<i>`
 * over all N partitions): seconds from the first send to the last ack. The topic is deleted before
 * the next step. Each step is bounded; a failure is a row, not a crash.
 *
 * Usage: npm run bench:idle [-- --partitions 3,200,1000,2000 --window-seconds S --settle-seconds S
 *          --records N --timeout S]
 */
import { parseArgs } from 'node:util';
import { startNatsServer } from '../test/helpers/nats-server.js';
import { describeEnvironment, environment } from './environment.js';
import { table } from './harness.js';
import { produceKeyed } from './keyed-produce.js';
import { cpuSeconds, rssMiB } from './proc.js';
import { Progress } from './progress.js';
import { runMain, type Scope } from './scope.js';
import { bounded, errorText, fmt, intListOption, intOption, isMain, sleep } from './steps.js';
import { startTidemarkCluster } from './tidemark-cluster.js';

export interface IdleOptions {
  /** Partition counts, one step each. @default [3, 200, 1000, 2000] */
  partitions: number[];
  /** CPU measuring window, s. @default 20 */
  windowSeconds: number;
  /** Wait after the topic is created before measuring, s. @default 5 */
  settleSeconds: number;
  /** Records of the keyed produce after the window. @default 20000 */
  records: number;
  /** Bound on create, produce and delete, s. @default 120 */
  timeoutS: number;
}

export interface IdleRow {
  partitions: number;
  /** Sum over the three nodes, % of one core. */
  cpuPercent: number;
  cpuPercentPerNode: number[];
  rssMiBPerNode: number[];
  produceSeconds: number;
  failed?: string;
}

export interface IdleResult {
  options: IdleOptions;
  rows: IdleRow[];
  wallSeconds: number;
}

const RECORD_BYTES = 1024;

export function idleDefaults(): IdleOptions {
  return { partitions: [3, 200, 1000, 2000], windowSeconds: 20, settleSeconds: 5, records: 20_000, timeoutS: 120 };
}

function stepPlanS(o: IdleOptions, partitions: number): number {
  return 2 + partitions / 200 + o.settleSeconds + o.windowSeconds + o.records / 8000;
}

export function idlePlanS(o: IdleOptions): number {
  return 10 + o.partitions.reduce((s, p) => s + stepPlanS(o, p), 0);
}

export async function runIdle(parent: Scope, progress: Progress, o: IdleOptions): Promise<IdleResult> {
  const began = performance.now();
  const timeoutMs = o.timeoutS * 1000;
  const scope = parent.child();
  const rows: IdleRow[] = [];
  try {
    const nats = await startNatsServer();
    scope.defer(() => nats.stop());
    const tm = await startTidemarkCluster(scope, { natsUrls: [nats.url, nats.url, nats.url], name: 'idle' });
    progress.note('idle: 3 tidemark nodes on one nats-server ready');
    const admin = tm.clients[0]!.admin();
    const pids = tm.nodes.map((n) => n.pid);
    for (const partitions of o.partitions) {
      const row: IdleRow = { partitions, cpuPercent: Number.NaN, cpuPercentPerNode: [], rssMiBPerNode: [], produceSeconds: Number.NaN };
      rows.push(row);
      if (scope.closed) {
        row.failed = 'stopped';
        continue;
      }
      const topic = `idle-${partitions}-${process.pid}`;
      let step = 'create';
      try {
        await bounded(`idle ${partitions} create`, timeoutMs, () =>
          admin.createTopic({ name: topic, partitions, replicationFactor: 3, config: { 'flush.mode': 'fsync', 'min.insync.replicas': '2' } }),
        );
        step = 'settle';
        await sleep(o.settleSeconds * 1000);
        step = 'window';
        const before = pids.map(cpuSeconds);
        const t0 = performance.now();
        await sleep(o.windowSeconds * 1000);
        const after = pids.map(cpuSeconds);
        const seconds = (performance.now() - t0) / 1000;
        row.cpuPercentPerNode = pids.map((_, i) => (100 * (after[i]! - before[i]!)) / seconds);
        row.cpuPercent = row.cpuPercentPerNode.reduce((a, b) => a + b, 0);
        row.rssMiBPerNode = pids.map(rssMiB);
        step = 'produce';
        row.produceSeconds = await bounded(`idle ${partitions} produce`, timeoutMs, (aborted) =>
          produceKeyed(tm.clients, { topic, records: o.records, recordBytes: RECORD_BYTES, producers: 1, acks: 'all', deliveryTimeoutMs: timeoutMs }, aborted),
        );
        progress.step(
          `idle ${partitions} partitions RF3: CPU ${fmt(row.cpuPercent, 1)} % of a core (${row.cpuPercentPerNode.map((c) => fmt(c, 1)).join(' / ')}), RSS ${row.rssMiBPerNode.map((r) => fmt(r)).join(' / ')} MiB; ${o.records} keyed records in ${fmt(row.produceSeconds, 2)} s`,
          stepPlanS(o, partitions),
        );
      } catch (error) {
        row.failed = `${errorText(error)} (${step})`;
        progress.step(`idle ${partitions} partitions: failed: ${row.failed}`, stepPlanS(o, partitions));
      } finally {
        await bounded(`idle ${partitions} delete`, timeoutMs, () => admin.deleteTopic(topic)).catch((error: unknown) => progress.note(`idle ${partitions} delete: ${errorText(error)}`));
      }
    }
    return { options: o, rows, wallSeconds: (performance.now() - began) / 1000 };
  } finally {
    await scope.close();
  }
}

export function idleTable(result: IdleResult): string {
  return table(
    result.rows.map((r) => ({
      'partitions (RF3)': r.partitions,
      'CPU % of a core (3 nodes)': r.failed === undefined ? fmt(r.cpuPercent, 1) : `failed: ${r.failed}`,
      'per node %': r.cpuPercentPerNode.map((c) => fmt(c, 1)).join(' / ') || '-',
      'RSS MiB per node': r.rssMiBPerNode.map((x) => fmt(x)).join(' / ') || '-',
      [`${result.options.records} keyed records, s`]: fmt(r.produceSeconds, 2),
    })),
  );
}

export function parseIdleArgs(args: string[]): IdleOptions {
  const d = idleDefaults();
  const { values } = parseArgs({
    args,
    options: {
      partitions: { type: 'string', default: d.partitions.join(',') },
      'window-seconds': { type: 'string', default: String(d.windowSeconds) },
      'settle-seconds': { type: 'string', default: String(d.settleSeconds) },
      records: { type: 'string', default: String(d.records) },
      timeout: { type: 'string', default: String(d.timeoutS) },
    },
  });
  return {
    partitions: intListOption('partitions', values.partitions, 1, 100_000),
    windowSeconds: intOption('window-seconds', values['window-seconds'], 1, 3600),
    settleSeconds: intOption('settle-seconds', values['settle-seconds'], 0, 3600),
    records: intOption('records', values.records, 1, 10_000_000),
    timeoutS: intOption('timeout', values.timeout, 1, 3600),
  };
}

if (isMain(import.meta.url)) {
  runMain(async (root) => {
    const o = parseIdleArgs(process.argv.slice(2));
    const env = environment();
    const progress = new Progress();
    progress.plan(idlePlanS(o));
    const result = await runIdle(root, progress, o);
    process.stdout.write(`${describeEnvironment(env)}\nidle bench: window ${o.windowSeconds} s after ${o.settleSeconds} s settling\n\n${idleTable(result)}\n\nwall time ${result.wallSeconds.toFixed(0)} s\n`);
  });
}
