/**
 * The standard suite, `npm run bench [-- --quick] [--only a,b] [--out DIR] [--render-only]`: replication (1 KiB for
 * every case, 100 B for NATS core, JetStream R3, Tidemark RF1 and RF3 fsync), subscriptions (Tidemark
 * Shared against a JetStream durable pull consumer, 1 KiB and 100 B; 1 KiB only in --quick), produce, failover,
 * partitions and idle, one after another (never two at once), then docs/bench/report.md with its
 * SVG charts and report.json next to it. A bench that fails is reported as failed; the rest run.
 * Progress (one line per step, elapsed and time left) goes to stderr.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { environment } from './environment.js';
import { failoverDefaults, failoverPlanS, runFailover, type FailoverOptions } from './failover.js';
import { idleDefaults, idlePlanS, runIdle, type IdleOptions } from './idle.js';
import { partitionsDefaults, partitionsPlanS, runPartitions, type PartitionsOptions } from './partitions.js';
import { produceDefaults, producePlanS, runProduce, type ProduceOptions } from './produce.js';
import { DEFAULT_CASES, replicationDefaults, replicationPlanS, runReplication, type CaseId, type ReplicationOptions } from './replication.js';
import { runSubscriptions, subscriptionsDefaults, subscriptionsPlanS, type SubscriptionsOptions } from './subscriptions.js';
import { charts } from './report/charts.js';
import { reportMarkdown } from './report/markdown.js';
import type { Outcome, SuiteResults } from './report/results.js';
import { Progress } from './progress.js';
import { runMain, type Scope } from './scope.js';
import { errorText, isMain } from './steps.js';

const BENCHES = ['replication', 'subscriptions', 'produce', 'failover', 'partitions', 'idle'] as const;
type BenchName = (typeof BENCHES)[number];

/** The cases the suite also runs at 100 B: where JetStream pays per message and Tidemark batches. */
const SMALL_RECORD_CASES: CaseId[] = ['nats-core', 'js-r3', 'tm-rf1', 'tm-rf3-fsync'];
const SMALL_RECORD_BYTES = 100;

interface SuitePlan {
  replication: ReplicationOptions;
  subscriptions: SubscriptionsOptions;
  produce: ProduceOptions;
  failover: FailoverOptions;
  partitions: PartitionsOptions;
  idle: IdleOptions;
}

export function suitePlan(quick: boolean): SuitePlan {
  const variants = [...DEFAULT_CASES.map((id) => ({ id, recordBytes: 1024 })), ...SMALL_RECORD_CASES.map((id) => ({ id, recordBytes: SMALL_RECORD_BYTES }))];
  if (!quick) {
    return {
      replication: { ...replicationDefaults(), variants },
      subscriptions: { ...subscriptionsDefaults(), recordBytes: [1024, SMALL_RECORD_BYTES] },
      produce: produceDefaults(),
      failover: failoverDefaults(),
      partitions: partitionsDefaults(),
      idle: idleDefaults(),
    };
  }
  return {
    replication: { ...replicationDefaults(), variants, rounds: 1, records: 10_000, warmup: 2000, latencySeconds: 2 },
    subscriptions: { ...subscriptionsDefaults(), rounds: 1, messages: 10_000, latencySeconds: 3 },
    produce: { ...produceDefaults(), rounds: 1, records: 20_000, latencySeconds: 2 },
    failover: { runs: 1 },
    partitions: { ...partitionsDefaults(), partitions: [1, 100, 1000], records: 20_000, timeoutS: 60 },
    idle: { ...idleDefaults(), partitions: [3, 1000], windowSeconds: 5, settleSeconds: 2, timeoutS: 60 },
  };
}

function planSeconds(plan: SuitePlan, only: BenchName[]): number {
  const by: Record<BenchName, number> = {
    replication: replicationPlanS(plan.replication),
    subscriptions: subscriptionsPlanS(plan.subscriptions),
    produce: producePlanS(plan.produce),
    failover: failoverPlanS(plan.failover),
    partitions: partitionsPlanS(plan.partitions),
    idle: idlePlanS(plan.idle),
  };
  return only.reduce((s, b) => s + by[b], 0);
}

async function outcome<T>(progress: Progress, name: string, run: () => Promise<T>): Promise<Outcome<T>> {
  progress.note(`${name}: starting`);
  try {
    return { ok: true, result: await run() };
  } catch (error) {
    progress.note(`${name}: failed: ${errorText(error)}`);
    return { ok: false, failed: errorText(error) };
  }
}

async function writeReport(dir: string, results: SuiteResults): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const built = charts(results);
  const files: string[] = [];
  for (const c of built) {
    await writeFile(join(dir, c.file), c.svg);
    files.push(c.file);
  }
  await writeFile(join(dir, 'report.md'), reportMarkdown(results, built));
  await writeFile(join(dir, 'report.json'), `${JSON.stringify(results, null, 2)}\n`);
  return ['report.md', 'report.json', ...files];
}

async function main(root: Scope): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string', default: BENCHES.join(',') },
      out: { type: 'string', default: fileURLToPath(new URL('../../docs/bench/', import.meta.url)) },
      'render-only': { type: 'boolean', default: false },
    },
  });
  const dir = String(values.out);
  if (values['render-only'] === true) {
    // Rewrites report.md and the charts from report.json, e.g. after a change to the report code.
    const results = JSON.parse(await readFile(join(dir, 'report.json'), 'utf8'), (_key, v: unknown) => (v === null ? Number.NaN : v)) as SuiteResults;
    const files = await writeReport(dir, results);
    process.stderr.write(`rewrote ${files.join(', ')} in ${dir}\n`);
    return;
  }
  const only = String(values.only)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean) as BenchName[];
  for (const b of only) if (!BENCHES.includes(b)) throw new Error(`unknown bench "${b}" (known: ${BENCHES.join(', ')})`);
  const quick = values.quick === true;
  const plan = suitePlan(quick);
  const progress = new Progress();
  progress.plan(planSeconds(plan, only));
  const env = environment();
  progress.note(`bench suite (${quick ? 'quick' : 'full'}): ${only.join(', ')}; planned about ${Math.round(planSeconds(plan, only))} s; load ${env.load.join(' ')}`);
  const began = performance.now();
  const results: SuiteResults = { mode: quick ? 'quick' : 'full', environment: env, environmentEnd: env, wallSeconds: 0 };
  const runs: Record<BenchName, () => Promise<void>> = {
    replication: async () => void (results.replication = await outcome(progress, 'replication', () => runReplication(root, progress, plan.replication))),
    subscriptions: async () => void (results.subscriptions = await outcome(progress, 'subscriptions', () => runSubscriptions(root, progress, plan.subscriptions))),
    produce: async () => void (results.produce = await outcome(progress, 'produce', () => runProduce(root, progress, plan.produce))),
    failover: async () => void (results.failover = await outcome(progress, 'failover', () => runFailover(root, progress, plan.failover))),
    partitions: async () => void (results.partitions = await outcome(progress, 'partitions', () => runPartitions(root, progress, plan.partitions))),
    idle: async () => void (results.idle = await outcome(progress, 'idle', () => runIdle(root, progress, plan.idle))),
  };
  for (const b of BENCHES) {
    if (!only.includes(b) || root.closed) continue;
    await runs[b]();
  }
  results.wallSeconds = (performance.now() - began) / 1000;
  results.environmentEnd = environment();
  const files = await writeReport(dir, results);
  progress.note(`wrote ${files.map((f) => relative(process.cwd(), join(dir, f))).join(', ')} in ${Math.round(results.wallSeconds)} s`);
}

if (isMain(import.meta.url)) runMain(main);
