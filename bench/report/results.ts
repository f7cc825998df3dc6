/** What `npm run bench` collects: every bench's structured result (or why it failed) and the environment. */
import type { Environment } from '../environment.js';
import type { FailoverResult } from '../failover.js';
import type { IdleResult } from '../idle.js';
import type { PartitionsResult } from '../partitions.js';
import type { ProduceResult } from '../produce.js';
import { rowOf, type ReplicationResult } from '../replication.js';
import { subscriptionsRatio, type SubscriptionsResult } from '../subscriptions.js';

/** A bench's result, or the error that ended it. */
export type Outcome<T> = { ok: true; result: T } | { ok: false; failed: string };

export interface SuiteResults {
  mode: 'quick' | 'full';
  environment: Environment;
  /** Load average (and date) when the suite ended. */
  environmentEnd: Environment;
  wallSeconds: number;
  replication?: Outcome<ReplicationResult>;
  subscriptions?: Outcome<SubscriptionsResult>;
  produce?: Outcome<ProduceResult>;
  failover?: Outcome<FailoverResult>;
  partitions?: Outcome<PartitionsResult>;
  idle?: Outcome<IdleResult>;
}

export function resultOf<T>(o: Outcome<T> | undefined): T | undefined {
  return o?.ok === true ? o.result : undefined;
}

export interface Ratio {
  name: string;
  /** a / b, NaN when either side is missing. */
  value: number;
  /** The two figures it is made of, in words. */
  from: string;
}

const ms = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? 'n/a' : `${v.toFixed(2)} ms`);
const rps = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? 'n/a' : `${Math.round(v)} records/s`);
const mbps = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? 'n/a' : `${v.toFixed(1)} MB/s`);

function ratio(a: number | undefined, b: number | undefined): number {
  return a !== undefined && b !== undefined && b > 0 ? a / b : Number.NaN;
}

const mps = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? 'n/a' : `${Math.round(v)} msgs/s`);

/** Issue 11's ratio: Tidemark Shared (4 consumers) against a JetStream durable pull consumer, msgs/s delivered and acknowledged. */
export function subscriptionRatios(subscriptions: SubscriptionsResult | undefined): Ratio[] {
  const ratios: Ratio[] = [];
  for (const bytes of subscriptions?.options.recordBytes ?? []) {
    const size = bytes === 1024 ? '1 KiB' : `${bytes} B`;
    for (const [js, how] of [
      ['jetstream', 'ackAck'],
      ['jetstream-noack-wait', 'ack() not awaited'],
    ] as const) {
      if (!subscriptions!.options.systems.includes(js)) continue;
      const r = subscriptionsRatio(subscriptions, bytes, js);
      ratios.push({ name: `Shared subscription vs JetStream pull (${how}), msgs/s delivered+acked at ${size}`, value: r.value, from: `${mps(r.tm)} / ${mps(r.js)}` });
    }
  }
  return ratios;
}

/** The ratios issue 10 asks for, from the replication results. */
export function headlineRatios(replication: ReplicationResult | undefined): Ratio[] {
  const row = (id: Parameters<typeof rowOf>[1], bytes: number) => rowOf(replication, id, bytes);
  const ratios: Ratio[] = [];
  for (const bytes of [1024, 100]) {
    const tm = row('tm-rf3-fsync', bytes)?.recordsPerSMedian;
    const js = row('js-r3', bytes)?.recordsPerSMedian;
    ratios.push({
      name: `RF3 acks=all fsync vs JetStream R3, records/s at ${bytes === 1024 ? '1 KiB' : `${bytes} B`}`,
      value: ratio(tm, js),
      from: `${rps(tm)} / ${rps(js)}`,
    });
  }
  const rf1 = row('tm-rf1', 1024)?.mbPerS;
  const nats = row('nats-core', 1024)?.mbPerS;
  ratios.push({ name: 'RF1 acks=1 vs NATS core, MB/s at 1 KiB', value: ratio(rf1, nats), from: `${mbps(rf1)} / ${mbps(nats)}` });
  const rf3 = row('tm-rf3-fsync', 1024)?.latency;
  const js3 = row('js-r3', 1024)?.latency;
  const rate = replication?.options.rate ?? Number.NaN;
  ratios.push({
    name: `RF3 fsync p50 @${rate}/s vs JetStream R3 p99 @${rate}/s (1 KiB)`,
    value: ratio(rf3?.p50Ms, js3?.p99Ms),
    from: `${ms(rf3?.p50Ms)} / ${ms(js3?.p99Ms)}`,
  });
  ratios.push({
    name: `RF3 fsync p99 @${rate}/s vs JetStream R3 p99 @${rate}/s (1 KiB)`,
    value: ratio(rf3?.p99Ms, js3?.p99Ms),
    from: `${ms(rf3?.p99Ms)} / ${ms(js3?.p99Ms)}`,
  });
  return ratios;
}
