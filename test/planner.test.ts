import test from 'ava';
import { applyRecord, emptyImage, topicByName, type MetadataImage } from '../src/metadata/image.js';
import { planControlledShutdown, planElectLeaders } from '../src/metadata/partition-planner.js';
import {
  partitionChange,
  placeReplicas,
  planAlterConfig,
  planCreatePartitions,
  planCreateTopic,
  planDeleteTopic,
  planFenceBroker,
  planRecoveryElections,
  planUncleanRestart,
  planUnfenceBroker,
  unfencedIn,
} from '../src/metadata/planner.js';
import type { MetadataRecord } from '../src/metadata/records.js';
import { parseTopicConfig } from '../src/metadata/topic-config.js';
import { TidemarkError } from '../src/protocol/errors.js';

function apply(image: MetadataImage, records: MetadataRecord[]): MetadataImage {
  return records.reduce((img, r) => applyRecord(img, r, img.offset + 1), image);
}

function withBrokers(n: number): MetadataImage {
  return apply(
    emptyImage,
    Array.from({ length: n }, (_, id) => ({ type: 'RegisterBroker', brokerId: id + 1, brokerEpoch: 0, rack: '', fenced: false, incarnation: 'test' }) as const),
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
  t.deepEqual(parseTopicConfig({}), {
    retentionMs: 604_800_000,
    retentionBytes: -1,
    maxMessageBytes: 1_048_588,
    minInsyncReplicas: 1,
    uncleanLeaderElection: false,
    flushMode: 'fsync',
  });
  t.is(parseTopicConfig({ 'unclean.leader.election.enable': 'true' }).uncleanLeaderElection, true);
  t.is(parseTopicConfig({ 'flush.mode': 'replicated' }).flushMode, 'replicated');
  t.is(parseTopicConfig({ 'retention.ms': '-1' }).retentionMs, -1);
  t.is(parseTopicConfig({ 'max.message.bytes': '2048' }).maxMessageBytes, 2048);
  for (const bad of <Record<string, string>[]>[{ 'retention.ms': 'soon' }, { 'retention.ms': '-2' }, { 'max.message.bytes': '1' }, { 'retention.bytes': '1.5' }, { nope: '1' }, { 'min.insync.replicas': '0' }, { 'unclean.leader.election.enable': 'yes' }, { 'flush.mode': 'never' }]) {
    t.throws(() => parseTopicConfig(bad), { instanceOf: TidemarkError }, JSON.stringify(bad));
  }
});

test('fencing a broker moves leadership within the ISR, or takes the partition offline; unfencing brings it back', (t) => {
  let image = withBrokers(3);
  image = apply(image, planCreateTopic(image, { name: 'a', partitions: 6, replicationFactor: 2, config: {} }, 'c'.repeat(32), 0));
  image = apply(image, planCreateTopic(image, { name: 'solo', partitions: 3, replicationFactor: 1, config: {} }, 'd'.repeat(32), 0));
  const led = (name: string, id: number) => topicByName(image, name)!.partitions.filter((p) => p.leader === id);
  const before = led('a', 1);
  t.true(before.length > 0);
  image = apply(image, planFenceBroker(image, 1));
  t.true(image.brokers.get(1)!.fenced);
  for (const p of topicByName(image, 'a')!.partitions) {
    t.not(p.leader, 1);
    t.false(p.isr.includes(1));
    t.true(p.isr.includes(p.leader), 'the new leader comes from the ISR');
  }
  for (const p of before) t.is(topicByName(image, 'a')!.partitions[p.partition]!.leaderEpoch, p.leaderEpoch + 1);
  const offline = topicByName(image, 'solo')!.partitions.filter((p) => p.replicas[0] === 1);
  t.true(offline.length > 0);
  for (const p of offline) {
    t.is(p.leader, -1, 'no other replica: offline, not unclean');
    t.deepEqual(p.isr, [1]);
  }
  t.deepEqual(planFenceBroker(image, 1), [], 'fencing twice changes nothing');
  t.throws(() => planCreateTopic(image, { name: 'b', partitions: 1, replicationFactor: 3, config: {} }, 'e'.repeat(32), 0), { instanceOf: TidemarkError }, 'fenced brokers get no replicas');
  image = apply(image, planUnfenceBroker(image, 1));
  t.false(image.brokers.get(1)!.fenced);
  for (const p of offline) t.is(topicByName(image, 'solo')!.partitions[p.partition]!.leader, 1);
});

test('unclean election takes any live replica when the ISR has none', (t) => {
  let image = withBrokers(2);
  image = apply(image, planCreateTopic(image, { name: 'u', partitions: 2, replicationFactor: 2, config: {} }, 'f'.repeat(32), 0));
  // Shrink the ISR to the leader only, as a lagging follower would.
  const topic = topicByName(image, 'u')!;
  image = apply(
    image,
    topic.partitions.map((p) => ({ type: 'Partition' as const, topicId: topic.topicId, partition: p.partition, replicas: [...p.replicas], isr: [p.leader], leader: p.leader, leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch + 1 })),
  );
  const victim = topicByName(image, 'u')!.partitions[0]!.leader;
  const clean = apply(image, planFenceBroker(image, victim));
  t.is(topicByName(clean, 'u')!.partitions[0]!.leader, -1);
  const dirty = apply(image, planFenceBroker(image, victim, () => true));
  t.not(topicByName(dirty, 'u')!.partitions[0]!.leader, -1);
  t.not(topicByName(dirty, 'u')!.partitions[0]!.leader, victim);
});

test('alter config sets and deletes keys, refuses invalid results; create partitions only grows', (t) => {
  let image = withBrokers(2);
  image = apply(image, planCreateTopic(image, { name: 'c', partitions: 2, replicationFactor: 2, config: { 'retention.ms': '1000' } }, '12'.repeat(16), 0));
  image = apply(image, planAlterConfig(image, 'c', { 'retention.bytes': '4096' }, ['retention.ms']));
  t.deepEqual(topicByName(image, 'c')!.config, { 'retention.bytes': '4096' });
  t.is(topicByName(image, 'c')!.partitions.length, 2, 'partitions untouched');
  const code = (fn: () => unknown) => (t.throws(fn, { instanceOf: TidemarkError }) as TidemarkError).code;
  t.is(code(() => planAlterConfig(image, 'c', { 'retention.ms': 'soon' }, [])), 'INVALID_CONFIG');
  t.is(code(() => planAlterConfig(image, 'nope', {}, [])), 'UNKNOWN_TOPIC');
  image = apply(image, planCreatePartitions(image, 'c', 5, 1));
  const parts = topicByName(image, 'c')!.partitions;
  t.is(parts.length, 5);
  for (const p of parts) t.is(new Set(p.replicas).size, 2, 'new partitions keep the replication factor');
  t.is(code(() => planCreatePartitions(image, 'c', 3, 0)), 'INVALID_PARTITIONS');
  t.is(code(() => planCreatePartitions(image, 'c', 5, 0)), 'INVALID_PARTITIONS');
});

function replicatedTopic(brokers: number, partitions: number, rf: number) {
  let image = withBrokers(brokers);
  image = apply(image, planCreateTopic(image, { name: 'rep', partitions, replicationFactor: rf, config: { 'flush.mode': 'replicated' } }, 'ab'.repeat(16), 0));
  return image;
}
const rep = (image: MetadataImage) => topicByName(image, 'rep')!.partitions;

test('flush.mode=replicated: fencing and controlled shutdown move leaders but never shrink the ISR (only a live leader does)', (t) => {
  let image = replicatedTopic(3, 6, 3);
  const isrBefore = rep(image).map((p) => [...p.isr]);
  // Broker 1 fenced: it may hold committed records that a member which silently lost power lacks.
  image = apply(image, planFenceBroker(image, 1));
  rep(image).forEach((p, i) => {
    t.deepEqual(p.isr, isrBefore[i], 'the ISR keeps the fenced member');
    t.not(p.leader, 1);
  });
  const { records } = planControlledShutdown(image, 2, unfencedIn(image, new Set([2])));
  image = apply(image, records);
  rep(image).forEach((p, i) => {
    t.deepEqual(p.isr, isrBefore[i]);
    t.is(p.leader, 3);
  });
  // An fsync topic's ISR still loses a fenced member at once.
  let fsync = withBrokers(3);
  fsync = apply(fsync, planCreateTopic(fsync, { name: 'f', partitions: 3, replicationFactor: 3, config: {} }, 'cd'.repeat(16), 0));
  fsync = apply(fsync, planFenceBroker(fsync, 1));
  for (const p of topicByName(fsync, 'f')!.partitions) t.false(p.isr.includes(1));
});

test('flush.mode=replicated: a broker back from an unclean shutdown is a suspect, never elected while a member that is not one may return', (t) => {
  let image = replicatedTopic(2, 2, 2);
  // Both die; broker 1 comes back first, after an unclean shutdown (its fence happens at registration).
  image = apply(image, planFenceBroker(image, 1));
  image = apply(image, planFenceBroker(image, 2));
  for (const p of rep(image)) t.is(p.leader, -1);
  image = apply(image, planUncleanRestart(image, 1));
  for (const p of rep(image)) t.deepEqual([...p.suspects], [1]);
  t.deepEqual(planUncleanRestart(image, 1), [], 'marking twice changes nothing');
  image = apply(image, planUnfenceBroker(image, 1));
  for (const p of rep(image)) t.is(p.leader, -1, 'broker 2 may hold what broker 1 lost: wait for it');
  t.is(planElectLeaders(image, { type: 'preferred' }, unfencedIn(image)).records.length, 0);
  // Broker 2 returns cleanly: it leads, and broker 1 stays a suspect until the leader drops it.
  image = apply(image, planUnfenceBroker(image, 2));
  for (const p of rep(image)) {
    t.is(p.leader, 2);
    t.deepEqual([...p.suspects], [1]);
  }
  // The leader takes the suspect out (AlterPartition); rejoining later it is a member like any other.
  const p0 = rep(image)[0]!;
  const topicId = topicByName(image, 'rep')!.topicId;
  image = apply(image, [partitionChange(topicId, p0, { isr: [2] })]);
  t.deepEqual([...rep(image)[0]!.suspects], []);
  image = apply(image, [partitionChange(topicId, rep(image)[0]!, { isr: [2, 1] })]);
  t.deepEqual([...rep(image)[0]!.suspects], [], 'a member that rejoins is not a suspect');
});

test('flush.mode=replicated: when every ISR member is a suspect, the one with the latest epoch, then the longest log, leads once all reported', (t) => {
  let image = replicatedTopic(3, 1, 3);
  for (const id of [1, 2, 3]) image = apply(image, planFenceBroker(image, id));
  for (const id of [1, 2, 3]) image = apply(image, planUncleanRestart(image, id));
  for (const id of [1, 2, 3]) image = apply(image, planUnfenceBroker(image, id));
  t.is(rep(image)[0]!.leader, -1, 'no clean candidate');
  const topicId = topicByName(image, 'rep')!.topicId;
  const epochOf = (id: number) => image.brokers.get(id)!.epoch;
  const reports = new Map<number, { lastEpoch: number; logEndOffset: number; brokerEpoch: number }>([
    [1, { lastEpoch: 4, logEndOffset: 120, brokerEpoch: epochOf(1) }],
    [2, { lastEpoch: 5, logEndOffset: 100, brokerEpoch: epochOf(2) }],
  ]);
  const report = (id: number, tid: string, partition: number) => (tid === topicId && partition === 0 ? reports.get(id) : undefined);
  t.deepEqual(planRecoveryElections(image, report, unfencedIn(image)), [], 'broker 3 has not reported');
  reports.set(3, { lastEpoch: 5, logEndOffset: 90, brokerEpoch: epochOf(3) - 1 });
  t.deepEqual(planRecoveryElections(image, report, unfencedIn(image)), [], 'a report from an older registration does not count');
  reports.set(3, { lastEpoch: 5, logEndOffset: 90, brokerEpoch: epochOf(3) });
  image = apply(image, planRecoveryElections(image, report, unfencedIn(image)));
  const p = rep(image)[0]!;
  t.is(p.leader, 2, 'latest epoch first, then the longest log');
  t.deepEqual([...p.isr], [2]);
  t.deepEqual([...p.suspects], []);
});
