import test from 'ava';
import { applyRecord, emptyImage, topicByName, type MetadataImage } from '../src/metadata/image.js';
import { placeReplicas, planCreateTopic, planDeleteTopic } from '../src/metadata/planner.js';
import type { MetadataRecord } from '../src/metadata/records.js';
import { parseTopicConfig } from '../src/metadata/topic-config.js';
import { TidemarkError } from '../src/protocol/errors.js';

function apply(image: MetadataImage, records: MetadataRecord[]): MetadataImage {
  return records.reduce((img, r) => applyRecord(img, r, img.offset + 1), image);
}

function withBrokers(n: number): MetadataImage {
  return apply(
    emptyImage,
    Array.from({ length: n }, (_, id) => ({ type: 'RegisterBroker', brokerId: id + 1, brokerEpoch: 0, rack: '' }) as const),
  );
}

test('placement over many shapes: distinct replicas, per-broker load differs by at most one, leaders spread', (t) => {
  let cases = 0;
  for (let brokers = 1; brokers <= 9; brokers++) {
    const ids = Array.from({ length: brokers }, (_, i) => ({ id: i * 3 + 1, rack: '' }));
    for (let partitions = 1; partitions <= 40; partitions += 3) {
      for (let rf = 1; rf <= brokers; rf++) {
        for (const start of [0, 1, brokers - 1, 17]) {
          const placement = placeReplicas(ids, partitions, rf, start);
          const load = new Map(ids.map((b) => [b.id, 0]));
          const leaders = new Map(ids.map((b) => [b.id, 0]));
          for (const replicas of placement) {
            t.is(new Set(replicas).size, rf);
            for (const r of replicas) load.set(r, load.get(r)! + 1);
            leaders.set(replicas[0]!, leaders.get(replicas[0]!)! + 1);
          }
          t.true(Math.max(...load.values()) - Math.min(...load.values()) <= 1);
          t.true(Math.max(...leaders.values()) - Math.min(...leaders.values()) <= 1);
          cases++;
        }
      }
    }
  }
  t.true(cases > 500);
});

test('placement with racks: every partition spans min(RF, racks) racks when racks are balanced', (t) => {
  let cases = 0;
  for (let racks = 2; racks <= 4; racks++) {
    for (let perRack = 1; perRack <= 4; perRack++) {
      // ids interleaved oddly so rack order is not id order
      const brokers = Array.from({ length: racks * perRack }, (_, i) => ({ id: (i * 7) % (racks * perRack) + 1, rack: `r${(i * 5) % racks}` }));
      const rackOf = new Map(brokers.map((b) => [b.id, b.rack]));
      for (let rf = 1; rf <= brokers.length; rf++) {
        for (const partitions of [1, 5, 12, 31]) {
          for (const start of [0, 3, 11]) {
            const placement = placeReplicas(brokers, partitions, rf, start);
            const load = new Map(brokers.map((b) => [b.id, 0]));
            for (const replicas of placement) {
              t.is(new Set(replicas).size, rf);
              t.is(new Set(replicas.map((r) => rackOf.get(r))).size, Math.min(rf, racks));
              for (const r of replicas) load.set(r, load.get(r)! + 1);
            }
            t.true(Math.max(...load.values()) - Math.min(...load.values()) <= 1);
            cases++;
          }
        }
      }
    }
  }
  t.true(cases > 300);
});

test('create topic: records, then refusals with typed codes', (t) => {
  const image = withBrokers(1);
  const records = planCreateTopic(image, { name: 'orders', partitions: 3, replicationFactor: 1, config: {} }, 'a'.repeat(32), 0);
  const next = apply(image, records);
  const topic = topicByName(next, 'orders')!;
  t.is(topic.partitions.length, 3);
  t.deepEqual(topic.partitions.map((p) => p.leader), [1, 1, 1]);
  const code = (fn: () => unknown) => (t.throws(fn, { instanceOf: TidemarkError }) as TidemarkError).code;
  t.is(code(() => planCreateTopic(next, { name: 'orders', partitions: 1, replicationFactor: 1, config: {} }, 'b'.repeat(32), 0)), 'TOPIC_ALREADY_EXISTS');
  t.is(code(() => planCreateTopic(next, { name: 'bad name', partitions: 1, replicationFactor: 1, config: {} }, 'b'.repeat(32), 0)), 'INVALID_TOPIC');
  t.is(code(() => planCreateTopic(next, { name: 'x', partitions: 1, replicationFactor: 2, config: {} }, 'b'.repeat(32), 0)), 'INVALID_REPLICATION_FACTOR');
  t.is(code(() => planCreateTopic(next, { name: 'x', partitions: 1, replicationFactor: 1, config: { 'retention.mss': '1' } }, 'b'.repeat(32), 0)), 'INVALID_CONFIG');
  t.is(code(() => planDeleteTopic(next, { name: 'nope' })), 'UNKNOWN_TOPIC');
  const deleted = apply(next, planDeleteTopic(next, { name: 'orders' }));
  t.is(topicByName(deleted, 'orders'), undefined);
});

test('topic config: defaults, overrides, and refusals', (t) => {
  t.deepEqual(parseTopicConfig({}), { retentionMs: 604_800_000, retentionBytes: -1, maxMessageBytes: 1_048_588 });
  t.is(parseTopicConfig({ 'retention.ms': '-1' }).retentionMs, -1);
  t.is(parseTopicConfig({ 'max.message.bytes': '2048' }).maxMessageBytes, 2048);
  for (const bad of <Record<string, string>[]>[{ 'retention.ms': 'soon' }, { 'retention.ms': '-2' }, { 'max.message.bytes': '1' }, { 'retention.bytes': '1.5' }, { nope: '1' }]) {
    t.throws(() => parseTopicConfig(bad), { instanceOf: TidemarkError }, JSON.stringify(bad));
  }
});
