/**
 * Replication benchmark: the produce hot path of Tidemark next to NATS core and JetStream, in one
 * run, on the same 3-server nats-server cluster (loopback, JetStream on each server, file storage),
 * one partition / one stream per case, at one or more record sizes.
 *
 *   nats-core          publisher -> subscriber (the ceiling); latency: request -> reply
 *   js-r1, js-r3       JetStream stream, num_replicas 1 / 3: js.publish() with a window of
 *                      in-flight publishes (default 256); latency: publish -> PubAck
 *   tm-rf1             Tidemark RF 1, acks=1, topic defaults (flush.mode=fsync)
 *   tm-rf1-replicated  Tidemark RF 1, acks=1, flush.mode=replicated (no fsync, as JetStream's default)
 *   tm-rf3-fsync       Tidemark RF 3, acks=all, flush.mode=fsync, min.insync.replicas=2
 *   tm-rf3-replicated  Tidemark RF 3, acks=all, flush.mode=replicated, min.insync.replicas=2
 *   (not run by default: tm-rf1-p3, tm-rf3-fsync-p3: the same with 3 partitions)
 *
 * Tidemark: 3 `tidemark node start` processes (tidemark-cluster.ts), node i connected to
 * nats-server i. The producer connects to the nats-server of the partition's leader (JetStream: of
 * the stream's leader; NATS core: publisher and subscriber on server n1), so the produce request
 * crosses no route and replication traffic crosses routes.
 *
 * Per variant (case x record size) and round: create the topic / stream, warm up, throughput (N
 * records as fast as the window allows: records/s from the first send to the last ack), latency (a
 * fixed offered load, the same for every case, send -> ack recorded in an HdrHistogram-like
 * histogram, merged over rounds), delete. Rounds interleave the variants; records/s is the median
 * of rounds. Every step is bounded by --timeout; a variant that fails is reported as
 * "failed: <reason>" and skipped in later rounds, and the run goes on.
 *
 * Usage: npm run bench:replication [-- --rounds R --records N --record-bytes B[,B2] --rate R
 *          --latency-seconds S --cases a,b,c --js-window W --nats-window W --linger-ms MS
 *          --timeout S --warmup N]
 * docs/bench/replication.md
 */
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { describeEnvironment, environment } from './environment.js';
import { Histogram, type LatencySummary } from './hdr.js';
import { median, table } from './harness.js';
import { startNatsCluster } from './nats-cluster.js';
import { Progress } from './progress.js';
import { ALL_CASES, jetStreamCase, natsCoreCase, TIDEMARK_SPECS, tidemarkCase, type CaseDef, type CaseId, type CaseSettings, type Instance, type Target } from './replication-cases.js';
import { runMain, type Scope } from './scope.js';
import { bounded, errorText, fmt, intListOption, intOption, isMain, sendBounded, sleep } from './steps.js';
import { startTidemarkCluster, type TidemarkCluster } from './tidemark-cluster.js';

export { ALL_CASES, type CaseId };
export const DEFAULT_CASES: CaseId[] = ['nats-core', 'js-r1', 'js-r3', 'tm-rf1', 'tm-rf1-replicated', 'tm-rf3-fsync', 'tm-rf3-replicated'];

export interface Variant {
  id: CaseId;
  recordBytes: number;
}

export interface ReplicationOptions {
  variants: Variant[];
  /** @default 3 */
  rounds: number;
  /** Records per throughput run. @default 100000 */
  records: number;
  /** Offered load of the latency run, records/s. @default 2000 */
  rate: number;
  /** @default 4 */
  latencySeconds: number;
  /** JetStream publishes in flight. @default 256 */
  jsWindow: number;
  /** NATS core messages published and not yet received. @default 20000 */
  natsWindow: number;
  /** Tidemark lingerMs in the latency run. @default 5 */
  lingerMs: number;
  /** Bound per step, s. @default 90 */
  timeoutS: number;
  /** Records before each throughput run, not measured. @default 5000 */
  warmup: number;
}

export interface ReplicationRow {
  id: CaseId;
  label: string;
  recordBytes: number;
  /** Per round. */
  recordsPerS: number[];
  /** Median of rounds; NaN if none. */
  recordsPerSMedian: number;
  mbPerS: number;
  /** Acknowledged per second in the latency runs (below 95 % of the rate: saturated), per round. */
  ackedPerS: number[];
  /** send -> ack at the offered rate, all rounds merged. */
  latency: LatencySummary | undefined;
  where: string[];
  failed?: string;
}

export interface ReplicationResult {
  options: ReplicationOptions;
  rows: ReplicationRow[];
  wallSeconds: number;
}

/** Sends outstanding at once in a throughput run (each system's own window bounds it further). */
const OUTSTANDING_MAX = 50_000;
/** Fixed-rate loop tick, ms (a setTimeout: about 1-2 ms; at 2000/s 2-4 records per tick). */
const TICK_MS = 1;

export function replicationDefaults(): ReplicationOptions {
  return {
    variants: DEFAULT_CASES.map((id) => ({ id, recordBytes: 1024 })),
    rounds: 3,
    records: 100_000,
    rate: 2000,
    latencySeconds: 4,
    jsWindow: 256,
    natsWindow: 20_000,
    lingerMs: 5,
    timeoutS: 90,
    warmup: 5000,
  };
}

/** Rough seconds per variant and round on the 2-core machine: setup and teardown, warm-up + throughput at ~20k records/s, latency. */
function variantPlanS(o: ReplicationOptions): number {
  return 2 + (o.records + o.warmup) / 20_000 + o.latencySeconds;
}

export function replicationPlanS(o: ReplicationOptions): number {
  return 15 + o.rounds * o.variants.length * variantPlanS(o);
}

/** Sends `n` records keeping at most OUTSTANDING_MAX unacknowledged; records/s from first send to last ack. */
async function throughput(target: Target, n: number, aborted: () => boolean): Promise<number> {
  const start = performance.now();
  await sendBounded(n, OUTSTANDING_MAX, () => target.send(), aborted);
  return n / ((performance.now() - start) / 1000);
}

/** A fixed offered load: `rate` records/s for `seconds`; each send() -> ack goes into `histogram`. Returns acked/s. */
async function latency(target: Target, rate: number, seconds: number, histogram: Histogram, aborted: () => boolean): Promise<number> {
  const total = rate * seconds;
  let failure: unknown;
  const pending: Promise<void>[] = [];
  const start = performance.now();
  let lastAck = start;
  let sent = 0;
  while (sent < total) {
    if (failure !== undefined) throw failure;
    if (aborted()) throw new Error('aborted');
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
    for (; sent < due; sent++) {
      const t0 = performance.now();
      pending.push(
        target.send().then(
          () => {
            lastAck = performance.now();
            histogram.recordMs(lastAck - t0);
          },
          (error: unknown) => {
            failure ??= error;
          },
        ),
      );
    }
    await sleep(TICK_MS);
  }
  await Promise.all(pending);
  if (failure !== undefined) throw failure;
  return total / ((lastAck - start) / 1000);
}

function variantName(v: Variant): string {
  return `${v.id} ${v.recordBytes} B`;
}

/** Starts the NATS cluster (and the Tidemark cluster when a Tidemark case runs) in `parent`'s child scope and runs every variant. */
export async function runReplication(parent: Scope, progress: Progress, o: ReplicationOptions): Promise<ReplicationResult> {
  const began = performance.now();
  const timeoutMs = o.timeoutS * 1000;
  const scope = parent.child();
  try {
    const nats = await startNatsCluster({ size: 3 });
    scope.defer(() => nats.stop());
    progress.note(`replication: nats cluster ${nats.servers.map((s) => `${s.name} ${s.url}`).join(', ')}`);
    const jsNc = await connect({ servers: nats.servers[0]!.url, name: 'bench-jsm' });
    scope.defer(() => jsNc.close());
    const jsm = await jetstreamManager(jsNc, { timeout: 10_000 });

    // Tidemark starts lazily (only if a Tidemark case runs) and once; a failed start fails those cases.
    let tmStarting: Promise<TidemarkCluster> | undefined;
    const tm = () =>
      (tmStarting ??= (scope.closed ? Promise.reject(new Error('stopping')) : startTidemarkCluster(scope, { natsUrls: nats.servers.map((s) => s.url) })).then((c) => {
        progress.note('replication: tidemark 3 nodes ready');
        return c;
      }));
    const settings: CaseSettings = { jsWindow: o.jsWindow, natsWindow: o.natsWindow, latencyLingerMs: o.lingerMs, timeoutMs, outstandingMax: OUTSTANDING_MAX };
    const defOf = (id: CaseId): CaseDef => {
      if (id === 'nats-core') return natsCoreCase(nats, settings);
      if (id === 'js-r1' || id === 'js-r3') return jetStreamCase(nats, jsm, id === 'js-r1' ? 1 : 3, settings);
      return tidemarkCase(tm, nats, TIDEMARK_SPECS.find((s) => s.id === id)!, settings);
    };
    const variants = o.variants.map((v) => ({ ...v, def: defOf(v.id), payload: new Uint8Array(v.recordBytes).fill(120), histogram: new Histogram() }));
    const rows: ReplicationRow[] = variants.map((v) => ({
      id: v.id,
      label: v.def.label,
      recordBytes: v.recordBytes,
      recordsPerS: [],
      recordsPerSMedian: Number.NaN,
      mbPerS: Number.NaN,
      ackedPerS: [],
      latency: undefined,
      where: [],
    }));
    const planS = variantPlanS(o);

    for (let round = 1; round <= o.rounds; round++) {
      for (const [i, v] of variants.entries()) {
        const row = rows[i]!;
        if (row.failed !== undefined || scope.closed) {
          progress.step(`replication round ${round} ${variantName(v)}: skipped`, planS);
          continue;
        }
        let instance: Instance | undefined;
        let step = 'setup';
        try {
          instance = await bounded(`${v.id} setup`, timeoutMs, () => v.def.setup(`${round}-${v.recordBytes}`, v.payload));
          const inst = instance;
          step = 'warm-up';
          const tpTarget = await inst.throughputTarget();
          if (o.warmup > 0) await bounded(`${v.id} warm-up`, timeoutMs, (aborted) => throughput(tpTarget, o.warmup, aborted));
          step = 'throughput';
          const rate = await bounded(`${v.id} throughput`, timeoutMs, (aborted) => throughput(tpTarget, o.records, aborted));
          await bounded(`${v.id} close`, timeoutMs, () => tpTarget.close());
          step = 'latency';
          const latTarget = await inst.latencyTarget();
          const roundHistogram = new Histogram();
          const acked = await bounded(`${v.id} latency`, o.latencySeconds * 1000 + timeoutMs, (aborted) => latency(latTarget, o.rate, o.latencySeconds, roundHistogram, aborted));
          await bounded(`${v.id} close`, timeoutMs, () => latTarget.close());
          v.histogram.merge(roundHistogram);
          row.recordsPerS.push(rate);
          row.ackedPerS.push(acked);
          row.where.push(inst.where);
          progress.step(
            `replication round ${round} ${variantName(v)}: ${fmt(rate)} records/s, ${fmt((rate * v.recordBytes) / 1e6, 1)} MB/s; @${o.rate}/s p50 ${fmt(roundHistogram.percentileMs(50), 2)} ms p99 ${fmt(roundHistogram.percentileMs(99), 2)} ms (acked ${fmt(acked)}/s); ${inst.where}`,
            planS,
          );
        } catch (error) {
          row.failed = `${errorText(error)} (round ${round}, ${step})`;
          progress.step(`replication round ${round} ${variantName(v)}: failed: ${row.failed}`, planS);
        } finally {
          if (instance !== undefined) {
            await bounded(`${v.id} teardown`, timeoutMs, () => instance!.teardown()).catch((error: unknown) => progress.note(`${v.id} teardown: ${errorText(error)}`));
          }
        }
      }
    }
    for (const [i, v] of variants.entries()) {
      const row = rows[i]!;
      row.recordsPerSMedian = row.recordsPerS.length > 0 ? median(row.recordsPerS) : Number.NaN;
      row.mbPerS = (row.recordsPerSMedian * v.recordBytes) / 1e6;
      row.latency = v.histogram.count > 0 ? v.histogram.summary() : undefined;
    }
    return { options: o, rows, wallSeconds: (performance.now() - began) / 1000 };
  } finally {
    await scope.close();
  }
}

/** The row of a case at a record size, if it ran and did not fail. */
export function rowOf(result: ReplicationResult | undefined, id: CaseId, recordBytes: number): ReplicationRow | undefined {
  const row = result?.rows.find((r) => r.id === id && r.recordBytes === recordBytes);
  return row === undefined || row.failed !== undefined || row.recordsPerS.length === 0 ? undefined : row;
}

/** The table the standalone bench prints (the report has its own). */
export function replicationTable(result: ReplicationResult): string {
  const { rate } = result.options;
  return table(
    result.rows.map((r) => {
      const ok = r.failed === undefined && r.recordsPerS.length > 0;
      const nats = rowOf(result, 'nats-core', r.recordBytes);
      const acked = r.ackedPerS.length > 0 ? median(r.ackedPerS) : Number.NaN;
      return {
        case: r.label,
        record: `${r.recordBytes} B`,
        'records/s': ok ? fmt(r.recordsPerSMedian) : `failed: ${r.failed ?? 'no rounds'}`,
        'MB/s': ok ? fmt(r.mbPerS, 1) : '-',
        'vs NATS core': ok && nats !== undefined ? `${fmt((100 * r.recordsPerSMedian) / nats.recordsPerSMedian)}%` : '-',
        [`p50 ms @${rate}/s`]: fmt(r.latency?.p50Ms, 2),
        [`p99 ms @${rate}/s`]: fmt(r.latency?.p99Ms, 2),
        [`p99.9 ms @${rate}/s`]: fmt(r.latency?.p999Ms, 2),
        'acked/s': ok ? `${fmt(acked)}${acked < 0.95 * rate ? ' (saturated)' : ''}` : '-',
        'rounds (records/s)': r.recordsPerS.map((x) => fmt(x)).join(' / ') || '-',
      };
    }),
  );
}

export function parseReplicationArgs(args: string[]): ReplicationOptions {
  const d = replicationDefaults();
  const { values } = parseArgs({
    args,
    options: {
      rounds: { type: 'string', default: String(d.rounds) },
      records: { type: 'string', default: String(d.records) },
      'record-bytes': { type: 'string', default: '1024' },
      rate: { type: 'string', default: String(d.rate) },
      'latency-seconds': { type: 'string', default: String(d.latencySeconds) },
      cases: { type: 'string', default: DEFAULT_CASES.join(',') },
      'js-window': { type: 'string', default: String(d.jsWindow) },
      'nats-window': { type: 'string', default: String(d.natsWindow) },
      'linger-ms': { type: 'string', default: String(d.lingerMs) },
      timeout: { type: 'string', default: String(d.timeoutS) },
      warmup: { type: 'string', default: String(d.warmup) },
    },
  });
  const cases = String(values.cases)
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean) as CaseId[];
  for (const c of cases) if (!ALL_CASES.includes(c)) throw new Error(`unknown case "${c}" (known: ${ALL_CASES.join(', ')})`);
  const sizes = intListOption('record-bytes', values['record-bytes'], 1, 1_048_576);
  return {
    variants: sizes.flatMap((recordBytes) => cases.map((id) => ({ id, recordBytes }))),
    rounds: intOption('rounds', values.rounds, 1, 50),
    records: intOption('records', values.records, 1, 10_000_000),
    rate: intOption('rate', values.rate, 1, 1_000_000),
    latencySeconds: intOption('latency-seconds', values['latency-seconds'], 1, 600),
    jsWindow: intOption('js-window', values['js-window'], 1, 100_000),
    natsWindow: intOption('nats-window', values['nats-window'], 1, 60_000),
    lingerMs: intOption('linger-ms', values['linger-ms'], 0, 1000),
    timeoutS: intOption('timeout', values.timeout, 1, 3600),
    warmup: intOption('warmup', values.warmup, 0, 1_000_000),
  };
}

if (isMain(import.meta.url)) {
  runMain(async (root) => {
    const o = parseReplicationArgs(process.argv.slice(2));
    const env = environment();
    const progress = new Progress();
    progress.plan(replicationPlanS(o));
    progress.note(`replication bench: ${o.variants.map(variantName).join(', ')}; ${o.rounds} round(s) of ${o.records} records; latency at ${o.rate}/s for ${o.latencySeconds} s`);
    const result = await runReplication(root, progress, o);
    const nats = (b: number) => rowOf(result, 'nats-core', b);
    const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && Number.isFinite(a / b) ? `${(a / b).toFixed(2)}x` : 'n/a');
    const lines = [...new Set(o.variants.map((v) => v.recordBytes))].map((b) => {
      const r = (id: CaseId) => rowOf(result, id, b);
      return (
        `${b} B: RF3 acks=all fsync vs JetStream R3 records/s ${ratio(r('tm-rf3-fsync')?.recordsPerSMedian, r('js-r3')?.recordsPerSMedian)}, ` +
        `p99 ${ratio(r('tm-rf3-fsync')?.latency?.p99Ms, r('js-r3')?.latency?.p99Ms)}; RF1 vs NATS core MB/s ${ratio(r('tm-rf1')?.mbPerS, nats(b)?.mbPerS)}`
      );
    });
    process.stdout.write(
      `${describeEnvironment(env)}\n\n${replicationTable(result)}\n\n${lines.join('\n')}\n\nwall time ${result.wallSeconds.toFixed(0)} s, load at end ${describeEnvironment(environment()).split('load ')[1]}\n`,
    );
  });
}
