/**
 * The pure parts of the metrics: bounded label values, the partition-change diff, readiness, the
 * WAL sync's group sizes, the Prometheus registry's series (with the test's text parser), and the
 * parser itself.
 */
import test from 'ava';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { applyRecords, emptyImage, type MetadataImage } from '../src/metadata/image.js';
import type { MetadataRecord } from '../src/metadata/records.js';
import { partitionChanges } from '../src/metrics/metadata-changes.js';
import { createPromMetrics, PARTITION_SERIES_MAX, SUBSCRIPTION_SERIES_MAX, type ScrapeView, type SubscriptionStat } from '../src/metrics/prom-metrics.js';
import { READY_HEARTBEAT_AGE_MS_MAX, readiness } from '../src/metrics/readiness.js';
import { BoundedLabels, capEntries, OTHER_LABEL } from '../src/metrics/topic-labels.js';
import type { Clock } from '../src/runtime/ports.js';
import { createWalSync } from '../src/storage/wal-sync.js';
import { tempDir } from './helpers/node.js';
import { has, parsePromText, sumOf } from './helpers/prom-text.js';

const T1 = 'a'.repeat(32);
const T2 = 'b'.repeat(32);

test('BoundedLabels: the first max values keep their own label, later ones share _other', (t) => {
  const labels = new BoundedLabels(2);
  t.is(labels.of('a'), 'a');
  t.is(labels.of('b'), 'b');
  t.is(labels.of('c'), OTHER_LABEL);
  t.is(labels.of('a'), 'a', 'a value seen before keeps its label');
  t.is(labels.of('d'), OTHER_LABEL);
  t.is(labels.size, 2);
  t.is(new BoundedLabels(0).of('x'), OTHER_LABEL);
  t.throws(() => new BoundedLabels(-1));
});

test('capEntries keeps the first keys in sorted order and merges the rest', (t) => {
  const entries = new Map([['c', 3], ['a', 1], ['d', 4], ['b', 2]]);
  t.deepEqual(capEntries(entries, 2, (x, y) => x + y), { kept: [['a', 1], ['b', 2]], other: 7 });
  t.deepEqual(capEntries(entries, 10, (x, y) => x + y).other, undefined);
});

const partition = (p: number, leader: number, isr: number[], leaderEpoch = 0, topicId = T1): MetadataRecord => ({
  type: 'Partition',
  topicId,
  partition: p,
  replicas: [1, 2, 3],
  isr,
  leader,
  leaderEpoch,
  partitionEpoch: 0,
});

function step(before: MetadataImage, records: MetadataRecord[]): { after: MetadataImage; records: MetadataRecord[] } {
  return { after: applyRecords(before, records, before.offset + 1), records };
}

test('partitionChanges: ISR shrinks and expands and elections, reported by the partition\'s leader only', (t) => {
  const base = applyRecords(emptyImage, [{ type: 'Topic', topicId: T1, name: 'orders', config: {} }, partition(0, 1, [1, 2, 3]), partition(1, 2, [2, 3, 1])], 0);
  const creation = step(emptyImage, [{ type: 'Topic', topicId: T1, name: 'orders', config: {} }, partition(0, 1, [1, 2, 3])]);
  t.deepEqual(partitionChanges(emptyImage, creation.after, creation.records, 1), [], 'a partition created is not a change');

  const shrink = step(base, [partition(0, 1, [1, 3])]);
  t.deepEqual(partitionChanges(base, shrink.after, shrink.records, 1), [{ type: 'isr', topic: 'orders', partition: 0, change: 'shrink' }]);
  t.deepEqual(partitionChanges(base, shrink.after, shrink.records, 2), [], 'a follower does not count it');

  const expand = step(shrink.after, [partition(0, 1, [1, 3, 2])]);
  t.deepEqual(partitionChanges(shrink.after, expand.after, expand.records, 1), [{ type: 'isr', topic: 'orders', partition: 0, change: 'expand' }]);

  // Leader 1 fenced: 2 leads, 1 leaves the ISR; both counted by the new leader.
  const failover = step(base, [partition(0, 2, [2, 3], 1)]);
  t.deepEqual(partitionChanges(base, failover.after, failover.records, 2), [
    { type: 'election', topic: 'orders', partition: 0, clean: true },
    { type: 'isr', topic: 'orders', partition: 0, change: 'shrink' },
  ]);
  t.deepEqual(partitionChanges(base, failover.after, failover.records, 1), []);

  // Two records for one partition in one step: each compared with the one before it.
  const twice = step(base, [partition(0, 1, [1]), partition(0, 1, [1, 2])]);
  t.deepEqual(
    partitionChanges(base, twice.after, twice.records, 1).map((c) => (c.type === 'isr' ? c.change : c.type)),
    ['shrink', 'expand'],
  );

  // Unclean: the new leader was not in the ISR.
  const offline = step(base, [partition(1, -1, [2])]);
  const unclean = step(offline.after, [partition(1, 3, [3], 1)]);
  t.deepEqual(partitionChanges(offline.after, unclean.after, unclean.records, 3), [
    { type: 'election', topic: 'orders', partition: 1, clean: false },
    { type: 'isr', topic: 'orders', partition: 1, change: 'shrink' },
    { type: 'isr', topic: 'orders', partition: 1, change: 'expand' },
  ]);
});

test('readiness names what is missing', (t) => {
  const ok = { brokerEpoch: 3, fenced: false, metadataOffset: 10, controllerOffset: 10, heartbeatAgeMs: 100 };
  t.deepEqual(readiness({ broker: ok }), { ready: true, missing: [] });
  t.deepEqual(readiness({ broker: { ...ok, brokerEpoch: -1, controllerOffset: undefined, heartbeatAgeMs: undefined } }).missing, [
    'not registered with a controller',
    'no heartbeat answered by a controller yet',
  ]);
  t.deepEqual(readiness({ broker: { ...ok, fenced: true } }).missing, ['fenced by the controller']);
  t.deepEqual(readiness({ broker: { ...ok, metadataOffset: 7 } }).missing, ['metadata behind the controller (offset 7 of 10)']);
  t.deepEqual(readiness({ broker: { ...ok, heartbeatAgeMs: READY_HEARTBEAT_AGE_MS_MAX + 1 } }).missing, [`no heartbeat answered by a controller for ${READY_HEARTBEAT_AGE_MS_MAX + 1} ms`]);
  t.true(readiness({ voter: { leaderId: 2 } }).ready, 'a controller-only node is ready once it knows the leader');
  t.deepEqual(readiness({ voter: { leaderId: undefined } }).missing, ['no controller quorum leader known']);
  t.deepEqual(readiness({}), { ready: true, missing: [] });
});

test('the WAL sync reports each fsync with the number of calls it covers', async (t) => {
  const dir = await tempDir('tm-walsync-');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, '000001.log'), 'x');
  const groups: number[] = [];
  let ended = 0;
  const sync = createWalSync(dir, () => 1, (size) => {
    groups.push(size);
    return () => ended++;
  });
  // The first call starts a sync at once; the four made while it runs share the next one.
  await Promise.all([sync.sync(), sync.sync(), sync.sync(), sync.sync(), sync.sync()]);
  await sync.sync();
  await sync.close();
  t.deepEqual(groups, [1, 4, 1]);
  t.is(ended, 3);
});

const clock = (): Clock & { ms: number } => {
  const c = { ms: 1_000, now: () => c.ms, setTimeout: () => 0, clearTimeout: () => {} };
  return c;
};

function imageWith(partitions: MetadataRecord[], config: Record<string, string> = {}): MetadataImage {
  return applyRecords(
    emptyImage,
    [{ type: 'Topic', topicId: T1, name: 'orders', config }, { type: 'Topic', topicId: T2, name: 'audit', config: {} }, ...partitions],
    partitions.length + 1,
  );
}

test('prom metrics: per-topic counters are capped, histograms labelled by acks, heartbeats kept for readiness', async (t) => {
  const c = clock();
  const m = createPromMetrics({ nodeId: 7, clock: c, topicSeriesMax: 2 });
  m.port.produceStarted('a', -1, 100)();
  m.port.produceStarted('b', 1, 50)();
  m.port.produceStarted('c', 0, 10)();
  m.port.produceStarted('d', 0, 5)();
  m.port.appended('a', 12);
  m.port.fetchRequested('b');
  m.port.fetchAnswered('b', 40);
  m.port.fsyncStarted(3)();
  m.port.isrChanged('a', 'shrink');
  m.port.isrChanged('a', 'expand');
  m.port.leaderElected('b', false);
  m.port.heartbeat('missed');
  m.port.heartbeat('ok', 42);
  const s = parsePromText(await m.text());
  t.is(sumOf(s, 'tidemark_produce_requests_total', { topic: 'a' }), 1);
  t.is(sumOf(s, 'tidemark_produce_requests_total', { topic: OTHER_LABEL }), 2, 'c and d past the bound of 2 share _other');
  t.is(sumOf(s, 'tidemark_produce_bytes_total', { topic: OTHER_LABEL }), 15);
  t.is(sumOf(s, 'tidemark_produce_latency_seconds_count', { acks: '0' }), 2);
  t.is(sumOf(s, 'tidemark_produce_latency_seconds_count', { acks: '-1' }), 1);
  t.is(sumOf(s, 'tidemark_records_appended_total', { topic: 'a' }), 12);
  t.is(sumOf(s, 'tidemark_fetch_requests_total', { topic: 'b' }), 1);
  t.is(sumOf(s, 'tidemark_fetch_bytes_total', { topic: 'b' }), 40);
  t.is(sumOf(s, 'tidemark_fsync_group_size_sum'), 3);
  t.is(sumOf(s, 'tidemark_fsync_duration_seconds_count'), 1);
  t.is(sumOf(s, 'tidemark_isr_shrinks_total', { topic: 'a' }), 1);
  t.is(sumOf(s, 'tidemark_isr_expands_total', { topic: 'a' }), 1);
  t.is(sumOf(s, 'tidemark_leader_elections_total', { topic: 'b', kind: 'unclean' }), 1);
  t.is(sumOf(s, 'tidemark_broker_heartbeats_total'), 1);
  t.is(sumOf(s, 'tidemark_broker_heartbeats_missed_total'), 1);
  t.is(s.types.get('tidemark_produce_latency_seconds'), 'histogram');
  t.true(s.samples.filter((x) => x.name.startsWith('tidemark_')).every((x) => x.labels['node'] === '7'), 'every series carries the node label');
  t.true(has(s, 'tidemark_process_resident_memory_bytes'), 'default process metrics, prefixed');
  t.true(has(s, 'tidemark_nodejs_eventloop_lag_p99_seconds'), 'event-loop delay');
  c.ms = 1_500;
  t.deepEqual(m.session(), { heartbeatOkAtMs: 1_000, controllerOffset: 42, previousControllerOffset: undefined });
  m.port.heartbeat('ok', 45);
  t.deepEqual(m.session(), { heartbeatOkAtMs: 1_500, controllerOffset: 45, previousControllerOffset: 42 }, 'readiness compares with the answer before the last');
  t.false(has(s, 'tidemark_partition_isr_size'), 'no per-partition series without the option');
  t.false(has(s, 'tidemark_broker_registered'), 'no broker gauges before the node is wired');
});

test('prom metrics: gauges are read from the view at scrape time', async (t) => {
  const m = createPromMetrics({ nodeId: 1, clock: clock(), partitionSeries: true });
  let image = imageWith([partition(0, 1, [1, 2, 3]), partition(1, 1, [1]), partition(2, 2, [2, 3]), partition(0, -1, [3], 0, T2)], { 'min.insync.replicas': '2' });
  const subs: SubscriptionStat[] = [
    { topic: 'orders', partition: 0, subscription: 's', backlog: 5, unacked: 2 },
    { topic: 'orders', partition: 1, subscription: 's', backlog: 7, unacked: 1 },
  ];
  let active = true;
  m.setView(
    (): ScrapeView => ({
      broker: { brokerId: 1, brokerEpoch: 4, fenced: false, image, subscriptions: () => subs, leaderOffsets: (_, p) => ({ highWatermark: 10 + p, logEndOffset: 20 + p }) },
      controller: { active, term: 9, leaderId: 1, commitIndex: image.offset, image },
    }),
    { broker: true, controller: true },
  );
  m.port.heartbeat('ok', image.offset + 3);
  let s = parsePromText(await m.text());
  t.is(sumOf(s, 'tidemark_partitions_led'), 2);
  t.is(sumOf(s, 'tidemark_partition_replicas_hosted'), 4);
  t.is(sumOf(s, 'tidemark_under_replicated_partitions'), 1);
  t.is(sumOf(s, 'tidemark_under_min_isr_partitions'), 1);
  t.is(sumOf(s, 'tidemark_partitions_by_isr_size', { isr_size: '3' }), 1);
  t.is(sumOf(s, 'tidemark_partitions_by_isr_size', { isr_size: '1' }), 1);
  t.is(sumOf(s, 'tidemark_offline_partitions'), 1);
  t.is(sumOf(s, 'tidemark_controller_active'), 1);
  t.is(sumOf(s, 'tidemark_controller_raft_term'), 9);
  t.is(sumOf(s, 'tidemark_controller_brokers'), 0);
  t.is(sumOf(s, 'tidemark_broker_metadata_offset_lag'), 3);
  t.is(sumOf(s, 'tidemark_subscription_backlog', { topic: 'orders', subscription: 's' }), 12, 'summed over the partitions led here');
  t.is(sumOf(s, 'tidemark_subscription_unacked', { topic: 'orders', subscription: 's' }), 3);
  t.is(sumOf(s, 'tidemark_partition_isr_size', { topic: 'orders', partition: '1' }), 1);
  t.is(sumOf(s, 'tidemark_partition_high_watermark', { topic: 'orders', partition: '1' }), 11);
  t.false(has(s, 'tidemark_partition_isr_size', { partition: '2' }), 'only partitions led here');

  // The next scrape sees the new state: the ISR grew back, another voter leads.
  image = imageWith([partition(0, 1, [1, 2, 3]), partition(1, 1, [1, 2, 3]), partition(2, 2, [2, 3]), partition(0, 3, [3], 1, T2)]);
  active = false;
  s = parsePromText(await m.text());
  t.is(sumOf(s, 'tidemark_under_replicated_partitions'), 0);
  t.is(sumOf(s, 'tidemark_offline_partitions'), 0, 'only the active controller reports offline partitions');
  t.is(sumOf(s, 'tidemark_controller_active'), 0);
  t.false(has(s, 'tidemark_partitions_by_isr_size', { isr_size: '1' }), 'a size no partition has any more is gone');
});

test('prom metrics: subscription and partition series are bounded', async (t) => {
  const m = createPromMetrics({ nodeId: 1, clock: clock(), partitionSeries: true });
  const subs: SubscriptionStat[] = Array.from({ length: SUBSCRIPTION_SERIES_MAX + 5 }, (_, i) => ({ topic: 'orders', partition: 0, subscription: `s${String(i).padStart(4, '0')}`, backlog: 1, unacked: 0 }));
  const partitions = Array.from({ length: PARTITION_SERIES_MAX + 3 }, (_, i) => partition(i, 1, [1]));
  const image = imageWith(partitions);
  m.setView(() => ({ broker: { brokerId: 1, brokerEpoch: 1, fenced: false, image, subscriptions: () => subs, leaderOffsets: () => undefined } }), { broker: true, controller: false });
  t.false(has(parsePromText(await m.text()), 'tidemark_controller_active'), 'no controller series on a broker-only node');
  const s = parsePromText(await m.text());
  const backlog = s.samples.filter((x) => x.name === 'tidemark_subscription_backlog');
  t.is(backlog.length, SUBSCRIPTION_SERIES_MAX + 1);
  t.is(sumOf(s, 'tidemark_subscription_backlog', { subscription: OTHER_LABEL }), 5);
  t.is(s.samples.filter((x) => x.name === 'tidemark_partition_isr_size').length, PARTITION_SERIES_MAX);
  t.is(sumOf(s, 'tidemark_partitions_led'), PARTITION_SERIES_MAX + 3, 'the totals still count every partition');
});

test('two nodes in one process keep separate registries', async (t) => {
  const a = createPromMetrics({ nodeId: 1, clock: clock() });
  const b = createPromMetrics({ nodeId: 2, clock: clock() });
  a.port.appended('x', 5);
  t.is(sumOf(parsePromText(await a.text()), 'tidemark_records_appended_total'), 5);
  t.is(sumOf(parsePromText(await b.text()), 'tidemark_records_appended_total'), 0);
});

test('the text parser reads labels with escapes, special values and comments', (t) => {
  const s = parsePromText(['# HELP x_total A counter.', '# TYPE x_total counter', 'x_total{a="q\\"uote",b="back\\\\slash",c="new\\nline"} 3', 'y +Inf', 'z{le="0.5"} 1e-3 1700000000000', ''].join('\n'));
  t.deepEqual(s.samples[0], { name: 'x_total', labels: { a: 'q"uote', b: 'back\\slash', c: 'new\nline' }, value: 3 });
  t.is(s.samples[1]!.value, Infinity);
  t.is(s.samples[2]!.value, 0.001);
  t.is(s.types.get('x_total'), 'counter');
  t.throws(() => parsePromText('not a metric line at all {'));
});

/** Every metric family of a node with both roles and per-partition series. */
async function allFamilies(): Promise<Set<string>> {
  const m = createPromMetrics({ nodeId: 1, clock: clock(), partitionSeries: true });
  m.setView(() => ({}), { broker: true, controller: true });
  return new Set(parsePromText(await m.text()).types.keys());
}

/** `tidemark_x_bucket` etc. name the histogram `tidemark_x`. */
const familyOf = (name: string, families: Set<string>) => (families.has(name) ? name : name.replace(/_(bucket|sum|count)$/, ''));

test('the Grafana dashboard is valid JSON over metric names the node exports, with panels that do not overlap', async (t) => {
  const families = await allFamilies();
  const dashboard = JSON.parse(await readFile(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8')) as {
    panels: Array<{ type: string; title: string; gridPos: { x: number; y: number; w: number; h: number }; targets?: Array<{ expr: string }> }>;
  };
  const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((x) => x.expr);
  t.true(exprs.length > 20);
  const used = new Set(exprs.flatMap((e) => e.match(/tidemark_[a-z0-9_]+/g) ?? []).map((n) => familyOf(n, families)));
  t.deepEqual([...used].filter((n) => !families.has(n)), [], 'every name in the dashboard is exported');
  const cells = new Set<string>();
  for (const p of dashboard.panels) {
    t.true(p.gridPos.x + p.gridPos.w <= 24, p.title);
    for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
      for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
        t.false(cells.has(`${x},${y}`), `${p.title} overlaps another panel at ${x},${y}`);
        cells.add(`${x},${y}`);
      }
    }
  }
});

test('docs/operations.md lists every metric the node exports, and only those', async (t) => {
  const families = await allFamilies();
  const ours = [...families].filter((n) => !n.startsWith('tidemark_process_') && !n.startsWith('tidemark_nodejs_'));
  const doc = await readFile(new URL('../../docs/operations.md', import.meta.url), 'utf8');
  const table = [...doc.matchAll(/^\| `(tidemark_[a-z0-9_]+)` \|/gm)].map((m) => m[1]!);
  t.deepEqual([...table].sort(), [...ours].sort());
  const named = new Set((doc.match(/tidemark_[a-z0-9_]+/g) ?? []).map((n) => familyOf(n, families)));
  t.deepEqual([...named].filter((n) => !families.has(n) && !/^tidemark_(process|nodejs)_$/.test(n)), [], 'the alerts and prose name exported metrics');
});
