/**
 * Subscription benchmark (issue 11): a Tidemark Shared subscription of 4 consumers acknowledging
 * every message, next to a JetStream durable pull consumer with explicit acks pulled by 4 pullers,
 * on the same messages (count, size, stamping), in one run, on the same 3-server nats-server
 * cluster the replication bench uses (loopback, JetStream file storage on each server).
 *
 *   tidemark   topic RF 3, acks=all, flush.mode=fsync, min.insync.replicas=2, 4 partitions
 *              (records spread round robin by explicit partition); Shared subscription "bench",
 *              initialPosition earliest, receiverQueueSize 1000 per consumer; ack() resolves once
 *              the acknowledgement is durable.
 *   jetstream  R3 file stream; durable pull consumer (ack_policy explicit, deliver_policy all,
 *              max_ack_pending 4 x 1000, R3), 4 pullers each `consume({ max_messages: 1000 })`;
 *              ack is `ackAck()`, resolved when the server answered the ack.
 *
 * Each consumer has its own connection (consumer i on nats-server i mod 3) and at most --ack-window
 * acks outstanding: it takes its next message only when one of them resolved.
 *
 * Per variant (system x record size) and round, interleaved:
 *   1. throughput, on a pre-filled backlog: produce N stamped records (not timed: JetStream with
 *      a publish window, Tidemark with an acks=all producer), then attach the consumers and
 *      consume everything: msgs/s = N / (first delivery -> the ack of the last message resolved);
 *      also delivered/s (first delivery -> last first-time delivery). Pre-filling keeps the
 *      producer's cost out of the consumer figure and is done the same way on both sides.
 *   2. latency, produce and consume concurrently on a fresh topic / stream: consumers attached
 *      first, then records at a fixed offered rate (default 2000/s, the replication bench's rate)
 *      for S seconds; end-to-end latency = consumer receipt - the send time stamped in the record
 *      (bytes 0-7 of the payload, performance.now() of this process, so no clock skew), recorded
 *      after a 1 s warm-up into an HdrHistogram-like histogram merged over rounds.
 * Every message's sequence number (bytes 8-11) is checked: all N must be delivered; duplicates and
 * redeliveries are counted. Each step is bounded by --timeout; a variant that fails is reported and
 * skipped in later rounds.
 *
 * Usage: node dist/bench/subscriptions.js [--rounds R --messages N --record-bytes 1024[,100]
 *          --consumers C --partitions P --receive-window W --ack-window A --rate R
 *          --latency-seconds S --systems tidemark,jetstream,jetstream-noack-wait --linger-ms MS
 *          --js-window W --fill-batch-bytes B --timeout S]
 */
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { describeEnvironment, environment } from './environment.js';
import { median, table } from './harness.js';
import { Histogram, type LatencySummary } from './hdr.js';
import { startNatsCluster } from './nats-cluster.js';
import { Progress } from './progress.js';
import { runMain, type Scope } from './scope.js';
import { bounded, errorText, fmt, intListOption, intOption, isMain, sleep, Window } from './steps.js';
import {
  fill,
  jetStreamSubCase,
  readStamp,
  stamp,
  STAMP_BYTES,
  SUB_SYSTEMS,
  tidemarkSubCase,
  type ConsumerGroup,
  type SubCaseDef,
  type SubCaseSettings,
  type SubInstance,
  type SubSystem,
} from './subscription-cases.js';
import { startTidemarkCluster, type TidemarkCluster } from './tidemark-cluster.js';

export { SUB_SYSTEMS, type SubSystem };

export interface SubscriptionsOptions {
  systems: SubSystem[];
  /** @default [1024] */
  recordBytes: number[];
  /** @default 3 */
  rounds: number;
  /** Messages per throughput run. @default 50000 */
  messages: number;
  /** @default 4 */
  consumers: number;
  /** Tidemark partitions. @default 4 */
  partitions: number;
  /** Messages a consumer may hold unacknowledged from the server (receiverQueueSize / max_messages). @default 1000 */
  receiveWindow: number;
  /** Acks a consumer keeps outstanding. @default 1000 */
  ackWindow: number;
  /** Offered load of the latency run, messages/s. @default 2000 */
  rate: number;
  /** @default 5 */
  latencySeconds: number;
  /** Tidemark producer lingerMs in the latency run. @default 5 */
  lingerMs: number;
  /** JetStream publishes in flight. @default 256 */
  jsWindow: number;
  /**
   * Tidemark only: the producer's batchBytesMax while pre-filling (so the size of the stored
   * batches consumers read); 0 = the SDK default, 1 MiB. A diagnostic knob, not a fairness one:
   * JetStream stores messages one by one. @default 0
   */
  fillBatchBytes: number;
  /** Bound per step, s. @default 120 */
  timeoutS: number;
}

export interface SubscriptionsRow {
  system: SubSystem;
  label: string;
  recordBytes: number;
  /** Delivered and acknowledged per second (first delivery -> last ack resolved), per round. */
  msgsPerS: number[];
  msgsPerSMedian: number;
  /** First delivery -> last first-time delivery, per round. */
  deliveredPerS: number[];
  /** Pre-fill rate, per round (not the measure; for context). */
  fillPerS: number[];
  /** Messages per consumer in the throughput run, per round ("a/b/c/d"). */
  spread: string[];
  /** Deliveries beyond the first of a message, summed over all runs. */
  duplicates: number;
  /** Messages flagged as redelivered, summed over all runs. */
  redelivered: number;
  /** Received and acknowledged per second in the latency runs, per round. */
  latencyAckedPerS: number[];
  /** producer stamp -> consumer receipt, all rounds merged. */
  latency: LatencySummary | undefined;
  where: string[];
  /** Warnings and errors the servers logged during a round, when any (Tidemark nodes' logs). */
  serverWarnings: string[];
  failed?: string;
}

export interface SubscriptionsResult {
  options: SubscriptionsOptions;
  rows: SubscriptionsRow[];
  wallSeconds: number;
}

const OUTSTANDING_MAX = 20_000;
const TICK_MS = 1;
const LATENCY_WARMUP_MS = 1000;
const LOOP_END_MS = 15_000;

export function subscriptionsDefaults(): SubscriptionsOptions {
  return {
    systems: [...SUB_SYSTEMS],
    recordBytes: [1024],
    rounds: 3,
    messages: 50_000,
    consumers: 4,
    partitions: 4,
    receiveWindow: 1000,
    ackWindow: 1000,
    rate: 2000,
    latencySeconds: 5,
    lingerMs: 5,
    jsWindow: 256,
    fillBatchBytes: 0,
    timeoutS: 120,
  };
}

/** Rough seconds per variant and round on the 2-core machine: 2 setups and teardowns, fill at ~15k/s, consume at ~10k/s, latency. */
function variantPlanS(o: SubscriptionsOptions): number {
  return 6 + o.messages / 15_000 + o.messages / 10_000 + o.latencySeconds + 1;
}

export function subscriptionsPlanS(o: SubscriptionsOptions): number {
  return 20 + o.rounds * o.systems.length * o.recordBytes.length * variantPlanS(o);
}

interface DrainStats {
  firstMs: number;
  /** The last first-time delivery. */
  lastDeliveryMs: number;
  lastAckMs: number;
  perConsumer: number[];
  duplicates: number;
  redelivered: number;
}

/**
 * Runs every consumer of `group` until messages 0..expected-1 have all been acknowledged (each
 * consumer keeps at most `ackWindow` acks outstanding), calling `onReceive(stampMs, nowMs)` on each
 * delivery; then closes the group.
 */
async function drain(group: ConsumerGroup, expected: number, ackWindow: number, timeoutMs: number, onReceive?: (stampMs: number, nowMs: number) => void): Promise<DrainStats> {
  const seen = new Uint8Array(expected);
  const acked = new Uint8Array(expected);
  let ackedCount = 0;
  const stats: DrainStats = { firstMs: Number.NaN, lastDeliveryMs: Number.NaN, lastAckMs: Number.NaN, perConsumer: group.streams.map(() => 0), duplicates: 0, redelivered: 0 };
  let failure: unknown;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  let stopping = false;
  const loops = group.streams.map(async (stream, c) => {
    const window = new Window(ackWindow);
    for await (const m of stream) {
      const now = performance.now();
      if (Number.isNaN(stats.firstMs)) stats.firstMs = now;
      const { atMs, seq } = readStamp(m.payload);
      onReceive?.(atMs, now);
      stats.perConsumer[c]!++;
      if (m.redelivered) stats.redelivered++;
      if (seq >= expected) {
        failure ??= new Error(`message with sequence ${seq} beyond the ${expected} sent`);
        finish();
      } else if (seen[seq] === 1) {
        stats.duplicates++;
      } else {
        seen[seq] = 1;
        stats.lastDeliveryMs = now;
      }
      const slot = window.acquire();
      if (slot !== undefined) await slot;
      m.ack().then(
        () => {
          window.release();
          if (seq < expected && acked[seq] === 0) {
            acked[seq] = 1;
            stats.lastAckMs = performance.now();
            if (++ackedCount === expected) finish();
          }
        },
        (error: unknown) => {
          window.release();
          failure ??= new Error(`ack: ${errorText(error)}`);
          finish();
        },
      );
      if (stopping) break;
    }
  });
  for (const l of loops) {
    l.catch((error: unknown) => {
      failure ??= error;
      finish();
    });
  }
  try {
    await bounded('consume', timeoutMs, () => finished);
    if (failure !== undefined) throw failure;
    if (group.settled !== undefined) stats.lastAckMs = await group.settled(expected, timeoutMs);
  } catch (error) {
    const missing = expected - seen.reduce((s, x) => s + x, 0);
    throw new Error(`${errorText(error)} (delivered ${expected - missing} of ${expected}, acked ${ackedCount})`);
  } finally {
    stopping = true;
    await group.close();
    await bounded('consumer loops end', LOOP_END_MS, () => Promise.allSettled(loops)).catch(() => undefined);
  }
  return stats;
}

/** Phase 1: fill `messages` into a fresh instance, then consume and ack them all. */
async function throughputRun(def: SubCaseDef, tag: string, o: SubscriptionsOptions, bytes: number, aborted: () => boolean, onFailureWarnings: (w: string) => void) {
  const timeoutMs = o.timeoutS * 1000;
  const inst = await bounded(`${def.system} setup`, timeoutMs, () => def.setup(tag));
  try {
    const sender = await inst.sender('fill');
    const fillPerS = await bounded(`${def.system} fill`, timeoutMs, () => fill(sender, o.messages, bytes, OUTSTANDING_MAX, aborted));
    await bounded(`${def.system} sender close`, timeoutMs, () => sender.close());
    const group = await bounded(`${def.system} attach`, timeoutMs, () => inst.consumers(o.consumers));
    let stats: DrainStats;
    try {
      stats = await drain(group, o.messages, o.ackWindow, timeoutMs);
    } catch (error) {
      const warnings = inst.serverWarnings?.();
      if (warnings !== undefined) onFailureWarnings(warnings);
      throw error;
    }
    const warnings = inst.serverWarnings?.();
    const where = await inst.consumerWhere().catch(() => inst.where);
    return {
      fillPerS,
      msgsPerS: o.messages / ((stats.lastAckMs - stats.firstMs) / 1000),
      deliveredPerS: o.messages / ((stats.lastDeliveryMs - stats.firstMs) / 1000),
      stats,
      where,
      warnings,
    };
  } finally {
    await bounded(`${def.system} teardown`, timeoutMs, () => inst.teardown()).catch(() => undefined);
  }
}

/** Phase 2: consumers attached to a fresh instance, then `rate` stamped messages/s for `latencySeconds`. */
async function latencyRun(
  def: SubCaseDef,
  tag: string,
  o: SubscriptionsOptions,
  bytes: number,
  histogram: Histogram,
  aborted: () => boolean,
  onFailureWarnings: (w: string) => void,
) {
  const timeoutMs = o.timeoutS * 1000;
  const inst: SubInstance = await bounded(`${def.system} setup`, timeoutMs, () => def.setup(tag));
  try {
    const group = await bounded(`${def.system} attach`, timeoutMs, () => inst.consumers(o.consumers));
    const sender = await inst.sender('latency');
    const total = o.rate * o.latencySeconds;
    const start = performance.now();
    const measureFrom = start + LATENCY_WARMUP_MS;
    const draining = drain(group, total, o.ackWindow, o.latencySeconds * 1000 + timeoutMs, (atMs, nowMs) => {
      if (atMs >= measureFrom) histogram.recordMs(nowMs - atMs);
    });
    draining.catch(() => undefined);
    let failure: unknown;
    const pending: Promise<void>[] = [];
    let sent = 0;
    while (sent < total) {
      if (failure !== undefined) throw failure;
      if (aborted()) throw new Error('aborted');
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * o.rate));
      for (; sent < due; sent++) {
        pending.push(
          sender.send(stamp(bytes, sent), sent).catch((error: unknown) => {
            failure ??= error;
          }),
        );
      }
      await sleep(TICK_MS);
    }
    await Promise.all(pending);
    if (failure !== undefined) throw failure;
    let stats: DrainStats;
    try {
      stats = await draining;
    } catch (error) {
      const warnings = inst.serverWarnings?.();
      if (warnings !== undefined) onFailureWarnings(warnings);
      throw error;
    }
    await bounded(`${def.system} sender close`, timeoutMs, () => sender.close());
    return { ackedPerS: total / ((stats.lastAckMs - start) / 1000), stats, warnings: inst.serverWarnings?.() };
  } finally {
    await bounded(`${def.system} teardown`, timeoutMs, () => inst.teardown()).catch(() => undefined);
  }
}

const variantName = (system: SubSystem, bytes: number) => `${system} ${bytes} B`;

export async function runSubscriptions(parent: Scope, progress: Progress, o: SubscriptionsOptions): Promise<SubscriptionsResult> {
  for (const b of o.recordBytes) if (b < STAMP_BYTES) throw new Error(`record bytes must be at least ${STAMP_BYTES} (the stamp), got ${b}`);
  const began = performance.now();
  const timeoutMs = o.timeoutS * 1000;
  const scope = parent.child();
  try {
    const nats = await startNatsCluster({ size: 3 });
    scope.defer(() => nats.stop());
    progress.note(`subscriptions: nats cluster ${nats.servers.map((s) => `${s.name} ${s.url}`).join(', ')}`);
    const jsNc = await connect({ servers: nats.servers[0]!.url, name: 'bench-sub-jsm' });
    scope.defer(() => jsNc.close());
    const jsm = await jetstreamManager(jsNc, { timeout: 10_000 });
    let tmStarting: Promise<TidemarkCluster> | undefined;
    const tm = () =>
      (tmStarting ??= (scope.closed ? Promise.reject(new Error('stopping')) : startTidemarkCluster(scope, { natsUrls: nats.servers.map((s) => s.url) })).then((c) => {
        progress.note('subscriptions: tidemark 3 nodes ready');
        return c;
      }));
    const settings: SubCaseSettings = {
      partitions: o.partitions,
      receiveWindow: o.receiveWindow,
      consumers: o.consumers,
      jsWindow: o.jsWindow,
      lingerMs: o.lingerMs,
      fillBatchBytes: o.fillBatchBytes,
      timeoutMs,
      outstandingMax: OUTSTANDING_MAX,
    };
    const defs: Record<SubSystem, SubCaseDef> = {
      tidemark: tidemarkSubCase(tm, nats, settings),
      jetstream: jetStreamSubCase(nats, jsm, settings, true),
      'jetstream-noack-wait': jetStreamSubCase(nats, jsm, settings, false),
    };
    const variants = o.recordBytes.flatMap((recordBytes) => o.systems.map((system) => ({ system, recordBytes, def: defs[system], histogram: new Histogram() })));
    const rows: SubscriptionsRow[] = variants.map((v) => ({
      system: v.system,
      label: v.def.label,
      recordBytes: v.recordBytes,
      msgsPerS: [],
      msgsPerSMedian: Number.NaN,
      deliveredPerS: [],
      fillPerS: [],
      spread: [],
      duplicates: 0,
      redelivered: 0,
      latencyAckedPerS: [],
      latency: undefined,
      where: [],
      serverWarnings: [],
    }));
    const planS = variantPlanS(o);
    for (let round = 1; round <= o.rounds; round++) {
      for (const [i, v] of variants.entries()) {
        const row = rows[i]!;
        const name = variantName(v.system, v.recordBytes);
        if (row.failed !== undefined || scope.closed) {
          progress.step(`subscriptions round ${round} ${name}: skipped`, planS);
          continue;
        }
        let step = 'throughput';
        const onFailureWarnings = (w: string) => row.serverWarnings.push(`round ${round} ${step} (failed): ${w}`);
        try {
          const tp = await throughputRun(v.def, `${round}-${v.recordBytes}-tp`, o, v.recordBytes, () => scope.closed, onFailureWarnings);
          step = 'latency';
          const roundHistogram = new Histogram();
          const lat = await latencyRun(v.def, `${round}-${v.recordBytes}-lat`, o, v.recordBytes, roundHistogram, () => scope.closed, onFailureWarnings);
          v.histogram.merge(roundHistogram);
          row.msgsPerS.push(tp.msgsPerS);
          row.deliveredPerS.push(tp.deliveredPerS);
          row.fillPerS.push(tp.fillPerS);
          row.spread.push(tp.stats.perConsumer.join('/'));
          row.duplicates += tp.stats.duplicates + lat.stats.duplicates;
          row.redelivered += tp.stats.redelivered + lat.stats.redelivered;
          row.latencyAckedPerS.push(lat.ackedPerS);
          row.where.push(tp.where);
          for (const w of [tp.warnings, lat.warnings]) if (w !== undefined) row.serverWarnings.push(`round ${round}: ${w}`);
          progress.step(
            `subscriptions round ${round} ${name}: ${fmt(tp.msgsPerS)} msgs/s delivered+acked (delivered ${fmt(tp.deliveredPerS)}/s; filled at ${fmt(tp.fillPerS)}/s; per consumer ${tp.stats.perConsumer.join('/')}; ` +
              `dup ${tp.stats.duplicates}, redelivered ${tp.stats.redelivered}); @${o.rate}/s e2e p50 ${fmt(roundHistogram.percentileMs(50), 2)} ms p99 ${fmt(roundHistogram.percentileMs(99), 2)} ms (acked ${fmt(lat.ackedPerS)}/s); ${tp.where}` +
              (tp.warnings !== undefined || lat.warnings !== undefined ? `; server log: ${[tp.warnings, lat.warnings].filter((w) => w !== undefined).join('; ')}` : ''),
            planS,
          );
        } catch (error) {
          row.failed = `${errorText(error)} (round ${round}, ${step})`;
          const logged = row.serverWarnings[row.serverWarnings.length - 1];
          progress.step(`subscriptions round ${round} ${name}: failed: ${row.failed}${logged?.includes('(failed)') === true ? `; server log: ${logged}` : ''}`, planS);
        }
      }
    }
    for (const [i, v] of variants.entries()) {
      const row = rows[i]!;
      row.msgsPerSMedian = row.msgsPerS.length > 0 ? median(row.msgsPerS) : Number.NaN;
      row.latency = v.histogram.count > 0 ? v.histogram.summary() : undefined;
    }
    return { options: o, rows, wallSeconds: (performance.now() - began) / 1000 };
  } finally {
    await scope.close();
  }
}

export function subscriptionsRowOf(result: SubscriptionsResult | undefined, system: SubSystem, recordBytes: number): SubscriptionsRow | undefined {
  const row = result?.rows.find((r) => r.system === system && r.recordBytes === recordBytes);
  return row === undefined || row.failed !== undefined || row.msgsPerS.length === 0 ? undefined : row;
}

/** Tidemark msgs/s over JetStream msgs/s at `recordBytes` (medians), NaN when either is missing. */
export function subscriptionsRatio(
  result: SubscriptionsResult | undefined,
  recordBytes: number,
  js_: Exclude<SubSystem, 'tidemark'> = 'jetstream',
): { value: number; tm: number; js: number } {
  const tm = subscriptionsRowOf(result, 'tidemark', recordBytes)?.msgsPerSMedian ?? Number.NaN;
  const js = subscriptionsRowOf(result, js_, recordBytes)?.msgsPerSMedian ?? Number.NaN;
  return { value: js > 0 ? tm / js : Number.NaN, tm, js };
}

export function subscriptionsTable(result: SubscriptionsResult): string {
  const { rate } = result.options;
  return table(
    result.rows.map((r) => {
      const ok = r.failed === undefined && r.msgsPerS.length > 0;
      const acked = r.latencyAckedPerS.length > 0 ? median(r.latencyAckedPerS) : Number.NaN;
      return {
        system: r.label,
        message: `${r.recordBytes} B`,
        'msgs/s delivered+acked': ok ? fmt(r.msgsPerSMedian) : `failed: ${r.failed ?? 'no rounds'}`,
        'delivered/s': ok ? fmt(median(r.deliveredPerS)) : '-',
        [`e2e p50 ms @${rate}/s`]: fmt(r.latency?.p50Ms, 2),
        [`e2e p99 ms @${rate}/s`]: fmt(r.latency?.p99Ms, 2),
        [`e2e p99.9 ms @${rate}/s`]: fmt(r.latency?.p999Ms, 2),
        'acked/s @rate': ok ? `${fmt(acked)}${acked < 0.95 * rate ? ' (saturated)' : ''}` : '-',
        'dup / redelivered': ok ? `${r.duplicates} / ${r.redelivered}` : '-',
        'rounds (msgs/s)': r.msgsPerS.map((x) => fmt(x)).join(' / ') || '-',
        'per consumer (last round)': r.spread[r.spread.length - 1] ?? '-',
      };
    }),
  );
}

/** The ratio lines printed under the table, one per record size. */
export function subscriptionsRatioLines(result: SubscriptionsResult): string[] {
  return [...new Set(result.rows.map((r) => r.recordBytes))].map((b) => {
    const x = (v: number) => (Number.isFinite(v) ? `${v.toFixed(2)}x` : 'n/a');
    const r = subscriptionsRatio(result, b);
    const n = subscriptionsRatio(result, b, 'jetstream-noack-wait');
    const tm = subscriptionsRowOf(result, 'tidemark', b)?.latency;
    const js = subscriptionsRowOf(result, 'jetstream', b)?.latency;
    return (
      `${b} B: Tidemark Shared / JetStream pull (ackAck), msgs/s delivered+acked ${x(r.value)} (${fmt(r.tm)} / ${fmt(r.js)}); ` +
      `vs JetStream with acks not awaited ${x(n.value)} (${fmt(n.tm)} / ${fmt(n.js)}); ` +
      `e2e p50 ${fmt(tm?.p50Ms, 2)} / ${fmt(js?.p50Ms, 2)} ms, p99 ${fmt(tm?.p99Ms, 2)} / ${fmt(js?.p99Ms, 2)} ms`
    );
  });
}

/** Warnings and errors the Tidemark nodes logged, per row, as list items (none: empty). */
export function subscriptionsServerLog(result: SubscriptionsResult): string[] {
  return result.rows.flatMap((r) => (r.serverWarnings ?? []).map((w) => `- ${r.system} ${r.recordBytes} B, ${w}`));
}

export function parseSubscriptionsArgs(args: string[]): SubscriptionsOptions {
  const d = subscriptionsDefaults();
  const { values } = parseArgs({
    args,
    options: {
      systems: { type: 'string', default: d.systems.join(',') },
      'record-bytes': { type: 'string', default: d.recordBytes.join(',') },
      rounds: { type: 'string', default: String(d.rounds) },
      messages: { type: 'string', default: String(d.messages) },
      consumers: { type: 'string', default: String(d.consumers) },
      partitions: { type: 'string', default: String(d.partitions) },
      'receive-window': { type: 'string', default: String(d.receiveWindow) },
      'ack-window': { type: 'string', default: String(d.ackWindow) },
      rate: { type: 'string', default: String(d.rate) },
      'latency-seconds': { type: 'string', default: String(d.latencySeconds) },
      'linger-ms': { type: 'string', default: String(d.lingerMs) },
      'js-window': { type: 'string', default: String(d.jsWindow) },
      'fill-batch-bytes': { type: 'string', default: String(d.fillBatchBytes) },
      timeout: { type: 'string', default: String(d.timeoutS) },
    },
  });
  const systems = String(values.systems)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean) as SubSystem[];
  for (const s of systems) if (!SUB_SYSTEMS.includes(s)) throw new Error(`unknown system "${s}" (known: ${SUB_SYSTEMS.join(', ')})`);
  return {
    systems,
    recordBytes: intListOption('record-bytes', values['record-bytes'], STAMP_BYTES, 1_048_576),
    rounds: intOption('rounds', values.rounds, 1, 50),
    messages: intOption('messages', values.messages, 1, 10_000_000),
    consumers: intOption('consumers', values.consumers, 1, 64),
    partitions: intOption('partitions', values.partitions, 1, 1000),
    receiveWindow: intOption('receive-window', values['receive-window'], 1, 100_000),
    ackWindow: intOption('ack-window', values['ack-window'], 1, 100_000),
    rate: intOption('rate', values.rate, 1, 1_000_000),
    latencySeconds: intOption('latency-seconds', values['latency-seconds'], 2, 600),
    lingerMs: intOption('linger-ms', values['linger-ms'], 0, 1000),
    jsWindow: intOption('js-window', values['js-window'], 1, 100_000),
    fillBatchBytes: intOption('fill-batch-bytes', values['fill-batch-bytes'], 0, 1 << 24),
    timeoutS: intOption('timeout', values.timeout, 1, 3600),
  };
}

if (isMain(import.meta.url)) {
  runMain(async (root) => {
    const o = parseSubscriptionsArgs(process.argv.slice(2));
    const progress = new Progress();
    progress.plan(subscriptionsPlanS(o));
    progress.note(
      `subscriptions bench: ${o.systems.join(', ')} at ${o.recordBytes.join(', ')} B; ${o.rounds} round(s) of ${o.messages} messages, ${o.consumers} consumers` +
        `${o.fillBatchBytes > 0 ? `, Tidemark filled in batches of at most ${o.fillBatchBytes} B` : ''}; latency at ${o.rate}/s for ${o.latencySeconds} s; load ${environment().load.join(' ')}`,
    );
    const env = environment();
    const result = await runSubscriptions(root, progress, o);
    process.stdout.write(
      `${describeEnvironment(env)}\n\n${subscriptionsTable(result)}\n\n${subscriptionsRatioLines(result).join('\n')}\n` +
        `${subscriptionsServerLog(result).length > 0 ? `\nserver log warnings and errors:\n${subscriptionsServerLog(result).join('\n')}\n` : ''}\nwall time ${result.wallSeconds.toFixed(0)} s, load at end ${environment().load.join(' ')}\n`,
    );
  });
}
