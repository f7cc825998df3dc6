/**
 * The replication rules as pure functions: high watermark over the (maximal) ISR, ISR shrink and
 * join, leader epoch end offsets and divergence (KIP-101/279/320), and the controller's partition
 * decisions (AlterPartition, controlled shutdown, elections).
 */
import test from 'ava';
import { applyRecord, emptyImage, topicByName, type MetadataImage } from '../src/metadata/image.js';
import { planAlterPartition, planControlledShutdown, planElectLeaders, planPreferredElections } from '../src/metadata/partition-planner.js';
import { planAlterConfig, planCreateTopic, planFenceBroker, planUnfenceBroker, unfencedIn } from '../src/metadata/planner.js';
import type { MetadataRecord } from '../src/metadata/records.js';
import { TidemarkError } from '../src/protocol/errors.js';
import {
  caughtUpUntil,
  divergence,
  highWatermarkOf,
  joinsIsr,
  leaderEndOffsetForEpoch,
  recordFetch,
  shrunkIsr,
  truncationOffset,
  type ReplicationState,
} from '../src/actors/partition/replication.js';

const progress = (logEndOffset: number, lastCaughtUpMs = 0) => ({ logEndOffset, lastCaughtUpMs, lastFetchMs: lastCaughtUpMs, lastFetchLeaderEnd: logEndOffset });

test('HW is the smallest log end in the ISR; a replica outside it does not hold it back', (t) => {
  const state: ReplicationState = { brokerId: 1, isr: [1, 2], pendingIsr: undefined, logEndOffset: 100, followers: { 2: progress(70), 3: progress(5) } };
  t.is(highWatermarkOf(state), 70);
  t.is(highWatermarkOf({ ...state, isr: [1] }), 100);
  // A follower not heard from counts as 0.
  t.is(highWatermarkOf({ ...state, followers: {} }), 0);
});

test('while an ISR change is in flight the HW waits for the old and the new members (maximal ISR)', (t) => {
  const state: ReplicationState = { brokerId: 1, isr: [1, 2], pendingIsr: [1, 2, 3], logEndOffset: 100, followers: { 2: progress(90), 3: progress(60) } };
  t.is(highWatermarkOf(state), 60);
  // A pending shrink keeps the member being removed until it is committed.
  t.is(highWatermarkOf({ ...state, pendingIsr: [1] }), 90);
});

test('a follower is caught up when it reaches the leader end, or the end the leader had at its previous fetch', (t) => {
  const first = recordFetch(undefined, 50, 100, 1_000);
  t.is(first.lastCaughtUpMs, -1);
  const second = recordFetch(first, 100, 120, 1_200);
  t.is(second.lastCaughtUpMs, 1_000, 'it reached the end the leader had at 1000');
  const third = recordFetch(second, 120, 120, 1_300);
  t.is(third.lastCaughtUpMs, 1_300);
});

test('ISR shrinks by followers lagging longer than the bound, and a follower joins once it has the HW and the epoch start', (t) => {
  const state: ReplicationState = { brokerId: 1, isr: [1, 2, 3], pendingIsr: undefined, logEndOffset: 100, followers: { 2: progress(100, 9_000), 3: progress(40, 1_000) } };
  t.deepEqual(shrunkIsr(state, 10_000, 5_000), [1, 2]);
  t.is(shrunkIsr(state, 5_500, 5_000), undefined);
  const out: ReplicationState = { ...state, isr: [1, 2] };
  t.false(joinsIsr(out, 3, 50, 0), 'below the HW');
  t.true(joinsIsr({ ...out, followers: { ...out.followers, 3: progress(50) } }, 3, 50, 0));
  t.false(joinsIsr({ ...out, followers: { ...out.followers, 3: progress(50) } }, 3, 50, 60), 'before the current epoch start');
});

test('a follower that reported the whole log stays caught up until the leader\'s log moves (idle sessions fetch nothing)', (t) => {
  const state: ReplicationState = { brokerId: 1, isr: [1, 2, 3], pendingIsr: undefined, logEndOffset: 100, followers: { 2: progress(100, 0), 3: progress(90, 0) } };
  // Both last heard from at 0; 2 had everything, 3 did not.
  t.deepEqual(shrunkIsr(state, 60_000, 10_000), [1, 2]);
  // The log moves at 70 s: 2 was caught up until then, and lags from then on.
  const followers = caughtUpUntil(state.followers, 100, 70_000);
  t.is(followers[2]!.lastCaughtUpMs, 70_000);
  t.is(followers[3]!.lastCaughtUpMs, 0);
  const moved = { ...state, logEndOffset: 110, followers };
  t.is(shrunkIsr(moved, 79_000, 10_000)?.includes(2), true);
  t.deepEqual(shrunkIsr(moved, 80_001, 10_000), [1]);
});

test('leader epoch end offsets (OffsetsForLeaderEpoch), with the new leader epoch starting at its log end', (t) => {
  const stored = [
    { epoch: 0, startOffset: 0 },
    { epoch: 2, startOffset: 40 },
  ];
  // Leader of epoch 5 elected at log end 70, nothing written yet.
  t.deepEqual(leaderEndOffsetForEpoch(stored, 5, 70, 70, 0), { epoch: 0, endOffset: 40 });
  t.deepEqual(leaderEndOffsetForEpoch(stored, 5, 70, 70, 1), { epoch: 0, endOffset: 40 }, 'an epoch it never had ends where the next starts');
  t.deepEqual(leaderEndOffsetForEpoch(stored, 5, 70, 70, 2), { epoch: 2, endOffset: 70 });
  t.deepEqual(leaderEndOffsetForEpoch(stored, 5, 70, 90, 5), { epoch: 5, endOffset: 90 });
  t.deepEqual(leaderEndOffsetForEpoch(stored, 5, 70, 90, 6), { epoch: -1, endOffset: -1 });
});

test('divergence: a follower with records of an epoch the leader ended earlier truncates to the common point', (t) => {
  // Leader: epoch 0 [0,40), epoch 2 [40,70), now epoch 5. Follower: epoch 0 [0,40), epoch 1 [40,55).
  const leader = (e: number) => leaderEndOffsetForEpoch([{ epoch: 0, startOffset: 0 }, { epoch: 2, startOffset: 40 }], 5, 70, 70, e);
  const d = divergence(leader, 55, 1, 70);
  t.deepEqual(d, { epoch: 0, endOffset: 40 });
  const follower = (e: number) => (e >= 1 ? { epoch: 1, endOffset: 55 } : { epoch: 0, endOffset: 40 });
  t.is(truncationOffset(d!, follower), 40);
  // A follower that is a prefix of the leader does not diverge.
  t.is(divergence(leader, 60, 2, 70), undefined);
  t.is(divergence(leader, 30, 0, 70), undefined);
  // An empty follower never diverges; one beyond the leader's end does.
  t.is(divergence(leader, 0, -1, 70), undefined);
  t.deepEqual(divergence(leader, 80, -1, 70), { epoch: -1, endOffset: 70 });
});

// --- controller decisions -------------------------------------------------------------------

function apply(image: MetadataImage, records: MetadataRecord[]): MetadataImage {
  return records.reduce((img, r) => applyRecord(img, r, img.offset + 1), image);
}

function cluster(config: Record<string, string> = {}): MetadataImage {
  const brokers = apply(
    emptyImage,
    [1, 2, 3].map((id) => ({ type: 'RegisterBroker', brokerId: id, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'x' }) as const),
  );
  return apply(brokers, planCreateTopic(brokers, { name: 't', partitions: 1, replicationFactor: 3, config }, '0'.repeat(32), 0));
}

const partitionOf = (image: MetadataImage) => topicByName(image, 't')!.partitions[0]!;

test('AlterPartition: the current leader of the current epochs changes the ISR; stale requests are refused', (t) => {
  const image = cluster();
  const p = partitionOf(image);
  const base = { timeoutMs: 1000, brokerId: p.leader, brokerEpoch: 1, topicId: '0'.repeat(32), partition: 0, leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch };
  const shrunk = p.isr.filter((id) => id !== p.replicas[2]);
  const next = apply(image, planAlterPartition(image, { ...base, isr: shrunk }, unfencedIn(image)));
  t.deepEqual(partitionOf(next).isr, shrunk);
  t.is(partitionOf(next).partitionEpoch, p.partitionEpoch + 1);
  t.is(partitionOf(next).leaderEpoch, p.leaderEpoch);
  const code = (f: () => unknown) => (t.throws(f, { instanceOf: TidemarkError }) as TidemarkError).code;
  t.is(code(() => planAlterPartition(next, { ...base, isr: [...p.isr] }, unfencedIn(next))), 'INVALID_UPDATE_VERSION');
  t.is(code(() => planAlterPartition(image, { ...base, leaderEpoch: p.leaderEpoch + 1, isr: shrunk }, unfencedIn(image))), 'FENCED_LEADER_EPOCH');
  t.is(code(() => planAlterPartition(image, { ...base, brokerId: p.replicas[1]!, isr: shrunk }, unfencedIn(image))), 'FENCED_LEADER_EPOCH');
  t.is(code(() => planAlterPartition(image, { ...base, isr: shrunk.filter((id) => id !== p.leader) }, unfencedIn(image))), 'INVALID_REQUEST');
  // A broker shutting down may not rejoin.
  const removed = p.replicas[2]!;
  const rejoin = { ...base, partitionEpoch: p.partitionEpoch + 1, isr: [...shrunk, removed] };
  void rejoin.isr;
  t.is(code(() => planAlterPartition(next, rejoin, unfencedIn(next, new Set([removed])))), 'INVALID_REQUEST');
  t.notThrows(() => planAlterPartition(next, rejoin, unfencedIn(next)));
});

test('controlled shutdown moves leadership to another ISR member and leaves the ISRs; fencing the last ISR member leaves the partition offline unless unclean', (t) => {
  const image = cluster();
  const p = partitionOf(image);
  const plan = planControlledShutdown(image, p.leader, unfencedIn(image, new Set([p.leader])));
  t.is(plan.remaining, 0);
  const next = apply(image, plan.records);
  t.not(partitionOf(next).leader, p.leader);
  t.false(partitionOf(next).isr.includes(p.leader));
  t.is(partitionOf(next).leaderEpoch, p.leaderEpoch + 1);

  // Fence all three in turn: the last ISR member stays recorded and the partition goes offline.
  let img = image;
  for (const id of [p.replicas[1]!, p.replicas[2]!, p.leader]) img = apply(img, planFenceBroker(img, id));
  t.is(partitionOf(img).leader, -1);
  t.deepEqual(partitionOf(img).isr, [p.leader]);
  // A replica that was not in the ISR returns: clean topics stay offline, unclean ones elect it.
  const stale = p.replicas[1]!;
  const back = (i: MetadataImage) => apply(i, [{ type: 'RegisterBroker', brokerId: stale, brokerEpoch: 2, rack: '', fenced: true, incarnation: 'y' }]);
  t.is(partitionOf(apply(back(img), planUnfenceBroker(back(img), stale))).leader, -1);
  const uncleanImg = apply(img, [{ type: 'TopicConfig', topicId: '0'.repeat(32), config: { 'unclean.leader.election.enable': 'true' } }]);
  const elected = apply(back(uncleanImg), planUnfenceBroker(back(uncleanImg), stale));
  t.is(partitionOf(elected).leader, stale);
  t.deepEqual(partitionOf(elected).isr, [stale]);
});

test('elections on demand: preferred when in sync, unclean only for offline partitions', (t) => {
  const image = cluster();
  const p = partitionOf(image);
  const moved = apply(image, planControlledShutdown(image, p.leader, unfencedIn(image, new Set([p.leader]))).records);
  // The preferred replica is out of the ISR after its shutdown: not eligible.
  const refused = planElectLeaders(moved, { type: 'preferred' }, unfencedIn(moved));
  t.is(refused.results[0]!.error?.code, 'ELIGIBLE_LEADERS_NOT_AVAILABLE');
  const rejoined = apply(moved, [{ ...(planAlterPartitionRecord(moved)), isr: [...partitionOf(moved).isr, p.leader] }]);
  const elected = planElectLeaders(rejoined, { type: 'preferred', topic: 't' }, unfencedIn(rejoined));
  t.deepEqual(elected.results, [{ topic: 't', partition: 0, leader: p.replicas[0] }]);
  t.is(planPreferredElections(rejoined, unfencedIn(rejoined)).length, 1);
  const after = apply(rejoined, elected.records);
  t.is(planElectLeaders(after, { type: 'preferred' }, unfencedIn(after)).results[0]!.error?.code, 'ELECTION_NOT_NEEDED');
  t.is(planElectLeaders(after, { type: 'unclean' }, unfencedIn(after)).results[0]!.error?.code, 'ELECTION_NOT_NEEDED');
  t.throws(() => planElectLeaders(after, { type: 'preferred', topic: 'nope' }, unfencedIn(after)), { instanceOf: TidemarkError });
});

function planAlterPartitionRecord(image: MetadataImage) {
  const p = partitionOf(image);
  return {
    type: 'Partition' as const,
    topicId: '0'.repeat(32),
    partition: 0,
    replicas: [...p.replicas],
    isr: [...p.isr],
    leader: p.leader,
    leaderEpoch: p.leaderEpoch,
    partitionEpoch: p.partitionEpoch + 1,
  };
}

test('turning unclean election on elects a live replica for offline partitions at once', (t) => {
  let image = cluster();
  const p = partitionOf(image);
  for (const id of [p.replicas[1]!, p.replicas[2]!, p.leader]) image = apply(image, planFenceBroker(image, id));
  const stale = p.replicas[1]!;
  image = apply(image, [{ type: 'RegisterBroker', brokerId: stale, brokerEpoch: 2, rack: '', fenced: true, incarnation: 'y' }]);
  image = apply(image, planUnfenceBroker(image, stale));
  t.is(partitionOf(image).leader, -1, 'clean: offline');
  const after = apply(image, planAlterConfig(image, 't', { 'unclean.leader.election.enable': 'true' }, []));
  t.is(partitionOf(after).leader, stale);
  t.deepEqual(partitionOf(after).isr, [stale]);
});
