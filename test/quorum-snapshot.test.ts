/**
 * Raft snapshots of the controller quorum: the log view's snapshot base and the follower's check
 * against it as unit tests; then whole clusters on simulated time (test/helpers) with a small
 * `snapshotEveryEntries`, where every voter's state machine is the list of entries it applied, so
 * a snapshot is checked entry by entry against what the others committed (sim-cluster.ts). Last,
 * the metadata store's snapshot()/install() round trip, and a real node (NATS, RocksDB) that
 * compacts its metadata log and restarts from the snapshot.
 */
import test from 'ava';
import { join } from 'node:path';
import { pino } from 'pino';
import { Tidemark } from '../src/index.js';
import { decodeEntry } from '../src/metadata/records.js';
import { openRocksNodeStorage } from '../src/storage/rocksdb-storage.js';
import { startNatsServer } from './helpers/nats-server.js';
import { startTestNode, tempDir } from './helpers/node.js';
import type { Transport } from '../src/runtime/ports.js';
import { createMemoryMetadataStore, createQuorumMetadataStore } from '../src/metadata/metadata-store.js';
import { DiskWorker } from '../src/quorum/disk.js';
import { initialContext } from '../src/quorum/election-machine.js';
import { appendTerms, compactView, EMPTY_LOG, firstIndexOfTerm, isUpToDate, lastTerm, termAt, truncateView, type LogView } from '../src/quorum/log-view.js';
import { decodeRaftMessage, type AppendEntries } from '../src/quorum/messages.js';
import { createMemoryRaftStore } from '../src/quorum/raft-store.js';
import { followerAppend } from '../src/quorum/replication.js';
import { DEFAULT_RAFT_LIMITS, DEFAULT_RAFT_TIMEOUTS, type RaftContext } from '../src/quorum/types.js';
import { bytes, SimCluster } from './helpers/sim-cluster.js';
import { RELIABLE, type LinkFaults } from './helpers/sim-network.js';

const LOSSY: LinkFaults = { dropRate: 0.1, dupRate: 0.05, delayMsMin: 1, delayMsMax: 40 };

// ---- the log view's base -------------------------------------------------------------------------

/** Terms 1 1 2 2 2 3 3 (indexes 1-7). */
const seven = appendTerms(EMPTY_LOG, [1, 1, 2, 2, 2, 3, 3]);

test('log view: a snapshot becomes the base; its term answers at its index, nothing below it', (t) => {
  const v = compactView(seven, 4, 2);
  t.deepEqual(v, { lastIndex: 7, starts: [{ term: 3, index: 6 }], snapshotIndex: 4, snapshotTerm: 2 });
  t.deepEqual([3, 4, 5, 6, 7, 8].map((i) => termAt(v, i)), [undefined, 2, 2, 3, 3, undefined]);
  t.is(termAt(v, 0), undefined);
  t.is(lastTerm(v), 3);
  t.is(firstIndexOfTerm(v, 2), 5, 'entries of the snapshot term after it start right after it');
  t.is(firstIndexOfTerm(v, 3), 6);
  t.is(firstIndexOfTerm(v, 1), undefined);
  // Compacting the whole log: the base is the last entry.
  const all = compactView(seven, 7, 3);
  t.deepEqual(all, { lastIndex: 7, starts: [], snapshotIndex: 7, snapshotTerm: 3 });
  t.is(lastTerm(all), 3);
  t.true(isUpToDate(all, 7, 3));
  t.false(isUpToDate(all, 9, 2));
  // Appends continue from the base; a term equal to the snapshot's adds no start.
  t.deepEqual(appendTerms(all, [3, 4]).starts, [{ term: 4, index: 9 }]);
  t.is(termAt(appendTerms(all, [3, 4]), 8), 3);
  // Truncation never reaches into the snapshot.
  t.deepEqual(truncateView(v, 6), { lastIndex: 5, starts: [], snapshotIndex: 4, snapshotTerm: 2 });
  t.throws(() => truncateView(v, 4));
  // An older snapshot changes nothing.
  t.is(compactView(v, 3, 2), v);
});

test('log view: a snapshot the log does not hold (other term, or past its end) replaces the whole log', (t) => {
  t.deepEqual(compactView(seven, 5, 3), { lastIndex: 5, starts: [], snapshotIndex: 5, snapshotTerm: 3 });
  t.deepEqual(compactView(seven, 12, 4), { lastIndex: 12, starts: [], snapshotIndex: 12, snapshotTerm: 4 });
});

function followerWith(log: LogView, commitIndex: number): RaftContext {
  const store = createMemoryRaftStore();
  const c = initialContext({
    voterId: 1,
    voters: [1, 2, 3],
    subjectPrefix: 'tm.unit',
    transport: {} as Transport,
    logger: pino({ level: 'silent' }),
    random: { next: () => 0.5 },
    timeouts: DEFAULT_RAFT_TIMEOUTS,
    limits: DEFAULT_RAFT_LIMITS,
    worker: new DiskWorker(store, () => {}, pino({ level: 'silent' }), 16),
    state: { term: 3, votedFor: null },
    log,
    snapshot: undefined,
    snapshots: true,
  });
  return { ...c, commitIndex };
}

const ae = (prevLogIndex: number, prevLogTerm: number, terms: number[], leaderCommit = 0): AppendEntries => ({
  type: 'append',
  from: 2,
  term: 3,
  prevLogIndex,
  prevLogTerm,
  entries: terms.map((term) => ({ term, payload: bytes(`t${term}`) })),
  leaderCommit,
});

test('follower: an AppendEntries from below the snapshot is checked against the snapshot and continues after it', (t) => {
  const c = followerWith(compactView(seven, 4, 2), 4);
  // Entirely below the base: the log matches up to the snapshot (committed entries).
  t.deepEqual(followerAppend(c, ae(1, 1, [1, 2])), { kind: 'accept', truncateFrom: undefined, entries: [], matchIndex: 4, commit: 0 });
  // Straddling it: entries after the base are checked as usual (6 and 7 match, 8 is new).
  const out = followerAppend(c, ae(2, 1, [2, 2, 2, 3, 3, 3], 8));
  t.is(out.kind, 'accept');
  if (out.kind === 'accept') {
    t.deepEqual(
      out.entries.map((e) => [e.index, e.term]),
      [[8, 3]],
    );
    t.is(out.matchIndex, 8);
  }
  // A leader whose entry at the base has another term contradicts a committed entry: refused.
  t.deepEqual(followerAppend(c, ae(2, 1, [2, 3])), { kind: 'unsafe', index: 4 });
  // At the base: the snapshot's term is what prevLogTerm is checked against.
  t.is(followerAppend(c, ae(4, 2, [2])).kind, 'accept');
  t.deepEqual(followerAppend(c, ae(4, 1, [])), { kind: 'reject', hintIndex: 4 });
});

// ---- clusters --------------------------------------------------------------------------------------

const payloadsOf = (sim: SimCluster, id: number) => sim.states.get(id)!.map((line) => line.split('/')[2]);

test('a voter partitioned away while the others compacted their logs catches up by InstallSnapshot and ends with the same state', async (t) => {
  const sim = new SimCluster({ seed: 31, voters: 3, limits: { snapshotEveryEntries: 10 } });
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  const leader = sim.leader()!;
  const away = sim.ids.find((id) => id !== leader)!;
  for (let i = 0; i < 3; i++) await sim.commit(leader, [bytes(`early-${i}`)]);
  await sim.run(300);
  sim.net.isolate(away, sim.ids);
  let sent = 0;
  sim.net.onPublish = ({ data }) => {
    if (decodeRaftMessage(data).type === 'installSnapshot') sent++;
  };
  for (let i = 0; i < 40; i++) t.false((await sim.commit(sim.leader()!, [bytes(`while-away-${i}`)])) instanceof Error);
  await sim.run(300);
  const l = sim.leader()!;
  const leaderDisk = sim.disks.get(l)!;
  t.true((leaderDisk.snapshot?.index ?? 0) > sim.status(away)!.lastIndex, 'the leader compacted past what the away voter holds');
  t.true(leaderDisk.entries.length < 10, `the leader keeps ${leaderDisk.entries.length} entries after its snapshot`);

  sim.net.heal();
  const took = await sim.runUntil(() => sim.status(away)!.appliedIndex === sim.status(l)!.commitIndex, 5000);
  t.not(took, undefined, 'caught up');
  t.log(`caught up ${took} simulated ms after healing, ${sent} InstallSnapshot message(s), snapshot at ${leaderDisk.snapshot?.index}`);
  t.true(sent > 0, 'the leader sent InstallSnapshot');
  t.is(sim.installs.get(away)!.length, 1, 'the away voter installed one snapshot');
  t.deepEqual(sim.states.get(away), sim.states.get(l), 'the same state machine content, entry by entry');
  t.is(payloadsOf(sim, away).filter((p) => p !== '').length, 43);
  // It goes on from the snapshot with ordinary appends.
  await sim.commit(l, [bytes('after')]);
  await sim.run(300);
  t.deepEqual(sim.states.get(away), sim.states.get(l));
  t.is(sim.installs.get(away)!.length, 1);
  sim.checkAcknowledged();
  t.deepEqual(sim.violations, []);
  await sim.stopAll();
});

test('a snapshot larger than one chunk arrives in order over a lossy, duplicating network; chunks stay within snapshotChunkBytes', async (t) => {
  const limits = { snapshotEveryEntries: 8, snapshotChunkBytes: 256 };
  let caught = 0;
  const took: number[] = [];
  const chunkCounts: number[] = [];
  for (let seed = 1; seed <= 10; seed++) {
    const sim = new SimCluster({ seed, voters: 3, limits });
    await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
    const away = sim.ids.find((id) => id !== sim.leader())!;
    sim.net.isolate(away, sim.ids);
    for (let i = 0; i < 30; i++) await sim.commit(sim.leader() ?? sim.ids.find((id) => id !== away)!, [bytes(`entry-${seed}-${i}-${'x'.repeat(40)}`)]);
    const chunks = new Map<number, number>();
    sim.net.onPublish = ({ data }) => {
      const m = decodeRaftMessage(data);
      if (m.type !== 'installSnapshot') return;
      chunks.set(m.offset, m.data.length);
      if (m.data.length > limits.snapshotChunkBytes) sim.violations.push(`chunk of ${m.data.length} bytes`);
    };
    sim.net.faults = LOSSY;
    sim.net.heal();
    const caughtUp = await sim.runUntil(() => {
      const l = sim.stableLeader();
      return l !== undefined && sim.status(away)!.appliedIndex === sim.status(l)!.commitIndex && sim.status(away)!.appliedIndex > 30;
    }, 10_000);
    t.not(caughtUp, undefined, `seed ${seed}: caught up`);
    t.true(chunks.size > 4, `seed ${seed}: the snapshot went in ${chunks.size} chunks`);
    took.push(caughtUp ?? Number.POSITIVE_INFINITY);
    chunkCounts.push(chunks.size);
    if (sim.installs.get(away)!.length > 0) caught++;
    sim.net.faults = RELIABLE;
    await sim.run(500);
    const l = sim.leader()!;
    t.deepEqual(sim.states.get(away), sim.states.get(l), `seed ${seed}`);
    t.deepEqual(sim.violations, []);
    await sim.stopAll();
  }
  t.log(`${Math.min(...chunkCounts)}-${Math.max(...chunkCounts)} chunks per snapshot; caught up in ${Math.min(...took)}-${Math.max(...took)} simulated ms (10% loss, 5% duplicates, 1-40 ms delays)`);
  t.is(caught, 10, 'every seed installed a snapshot');
});

test('voters restarted from snapshot + log tail rebuild the same state; the stored log is bounded', async (t) => {
  const every = 10;
  const sim = new SimCluster({ seed: 77, voters: 3, limits: { snapshotEveryEntries: every } });
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  for (let i = 0; i < 57; i++) await sim.commit(sim.leader()!, [bytes(`r${i}`)]);
  await sim.run(500);
  const before = new Map(sim.ids.map((id) => [id, [...sim.states.get(id)!]]));
  for (const id of sim.ids) {
    const disk = sim.disks.get(id)!;
    t.true((disk.snapshot?.index ?? 0) > 40, `voter ${id} compacted (snapshot at ${disk.snapshot?.index})`);
    t.true(disk.entries.length <= every + 2, `voter ${id} keeps ${disk.entries.length} entries`);
  }
  for (const id of sim.ids) sim.kill(id);
  await sim.run(500);
  for (const id of sim.ids) {
    sim.start(id);
    const snapshotIndex = sim.disks.get(id)!.snapshot!.index;
    t.deepEqual(sim.installs.get(id), [snapshotIndex], `voter ${id} installed its stored snapshot at start`);
    t.deepEqual(sim.states.get(id), before.get(id)!.slice(0, snapshotIndex), `voter ${id}'s state right after the install`);
  }
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  await sim.commit(sim.leader()!, [bytes('after restart')]);
  await sim.run(500);
  for (const id of sim.ids) {
    const now = sim.states.get(id)!;
    t.deepEqual(now.slice(0, before.get(id)!.length), before.get(id), `voter ${id}: snapshot + tail = the state before the restart`);
    t.deepEqual(now, sim.states.get(sim.leader()!));
  }
  sim.checkAcknowledged();
  t.deepEqual(sim.violations, []);
  await sim.stopAll();
});

test('a state machine snapshot above snapshotBytesMax is not taken: the log is kept and a lagging voter catches up from it', async (t) => {
  const sim = new SimCluster({ seed: 5, voters: 3, limits: { snapshotEveryEntries: 5, snapshotBytesMax: 64 } });
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  const away = sim.ids.find((id) => id !== sim.leader())!;
  sim.kill(away);
  for (let i = 0; i < 20; i++) await sim.commit(sim.leader()!, [bytes(`big-${i}`)]);
  for (const id of sim.ids) t.is(sim.disks.get(id)!.snapshot, undefined);
  sim.start(away);
  t.not(await sim.runUntil(() => sim.status(away)!.appliedIndex === sim.status(sim.leader()!)!.commitIndex, 5000), undefined);
  t.deepEqual(sim.installs.get(away), []);
  t.deepEqual(sim.states.get(away), sim.states.get(sim.leader()!));
  t.deepEqual(sim.violations, []);
  await sim.stopAll();
});

test('with compaction on, committed entries are never lost or changed across leader changes, kills, restarts and partitions (200 seeds, 3 and 5 voters)', async (t) => {
  let acknowledged = 0;
  let installs = 0;
  let compactions = 0;
  let chunksSent = 0;
  let simulatedMs = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const sim = new SimCluster({
      seed,
      voters: seed % 2 === 0 ? 5 : 3,
      faults: LOSSY,
      diskMs: [0, 5],
      limits: { snapshotEveryEntries: 4 + (seed % 7), snapshotChunkBytes: 128 + (seed % 5) * 200 },
    });
    sim.net.onPublish = ({ data }) => {
      const m = decodeRaftMessage(data);
      if (m.type === 'installSnapshot') chunksSent++;
    };
    const r = sim.random;
    let n = 0;
    for (let step = 0; step < 25 && sim.violations.length === 0; step++) {
      const roll = r.next();
      if (roll < 0.15) {
        const order = [...sim.ids].sort(() => r.next() - 0.5);
        const k = r.int(1, order.length - 1);
        sim.net.partition([order.slice(0, k), order.slice(k)]);
      } else if (roll < 0.3) sim.net.heal();
      else if (roll < 0.4 && sim.live().length > 1) sim.kill(sim.live()[r.int(0, sim.live().length - 1)]!);
      else if (roll < 0.5) for (const id of sim.ids) if (!sim.nodes.has(id)) sim.start(id);
      const live = sim.live();
      for (let k = 0; k < 3; k++) void sim.propose(live[r.int(0, live.length - 1)]!, [bytes(`s${seed}-${n++}`)]);
      const l = sim.leader();
      if (l !== undefined) void sim.propose(l, [bytes(`s${seed}-${n++}`), bytes(`s${seed}-${n++}`)]);
      await sim.run(r.int(50, 400));
    }
    sim.net.heal();
    sim.net.faults = RELIABLE;
    for (const id of sim.ids) if (!sim.nodes.has(id)) sim.start(id);
    t.not(await sim.runUntil(() => sim.stableLeader() !== undefined, 3000), undefined, `seed ${seed}: a leader after healing`);
    const last = await sim.commit(sim.stableLeader() ?? sim.ids[0]!, [bytes('final')], 3000);
    t.true(last !== undefined && !(last instanceof Error), `seed ${seed}: a new entry commits after healing`);
    await sim.run(500);
    t.is(new Set(sim.ids.map((id) => sim.status(id)!.appliedIndex)).size, 1, `seed ${seed}: every voter applied the same log`);
    const leaderState = sim.states.get(sim.leader()!);
    for (const id of sim.ids) t.deepEqual(sim.states.get(id), leaderState, `seed ${seed}: voter ${id}'s state machine`);
    sim.checkAcknowledged();
    t.deepEqual(sim.violations, []);
    acknowledged += sim.acknowledged.length;
    for (const id of sim.ids) {
      installs += sim.installs.get(id)!.length;
      if (sim.disks.get(id)!.snapshot !== undefined) compactions++;
    }
    simulatedMs += sim.clock.now();
    await sim.stopAll();
  }
  t.log(
    `${acknowledged} acknowledged entries checked over ${(simulatedMs / 1000).toFixed(0)} simulated s; ${chunksSent} InstallSnapshot chunks sent; ` +
      `${installs} snapshots installed (from the store at start or from the leader) in the voters' last lifetimes; ${compactions} of ${200 * 4} voters ended compacted`,
  );
  t.true(acknowledged > 5000);
  t.true(installs > 100, 'snapshots were installed (at restart or from the leader)');
});

test('the checker catches an injected bug: a snapshot that misses the last entry applied loses it on every voter that installs it', async (t) => {
  let caught = 0;
  for (let seed = 1; seed <= 10; seed++) {
    const sim = new SimCluster({
      seed,
      voters: 3,
      limits: { snapshotEveryEntries: 5 },
      // Like a state machine that snapshots before it applied the batch it was just handed.
      wrapStateMachine: (_id, machine) => ({
        ...machine,
        snapshot: () => {
          const s = machine.snapshot();
          const state = JSON.parse(new TextDecoder().decode(s.data)) as string[];
          return { index: s.index, data: new TextEncoder().encode(JSON.stringify(state.slice(0, -1))) };
        },
      }),
    });
    await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
    const away = sim.ids.find((id) => id !== sim.leader())!;
    sim.net.isolate(away, sim.ids);
    for (let i = 0; i < 12; i++) await sim.commit(sim.leader() ?? sim.ids.find((id) => id !== away)!, [bytes(`b${i}`)]);
    sim.net.heal();
    await sim.run(2000);
    if (sim.violations.some((v) => /snapshot at \d+ holds/.test(v))) caught++;
    await sim.stopAll();
  }
  t.is(caught, 10);
});

// ---- the metadata store as the state machine -------------------------------------------------------

test('metadata store: snapshot() then install() on another store rebuilds the same image at the same offset', async (t) => {
  const a = createMemoryMetadataStore();
  await a.propose([{ type: 'RegisterBroker', brokerId: 1, brokerEpoch: 3, rack: 'r1', fenced: true, incarnation: 'i1' }]);
  await a.propose([{ type: 'RegisterBroker', brokerId: 2, brokerEpoch: 4, rack: 'r2', fenced: true, incarnation: 'i2' }]);
  await a.propose([{ type: 'UnfenceBroker', brokerId: 2, brokerEpoch: 4 }]);
  await a.propose([
    { type: 'Topic', topicId: 'a'.repeat(32), name: 'orders', config: { 'retention.ms': '1000' } },
    { type: 'Partition', topicId: 'a'.repeat(32), partition: 0, replicas: [1, 2], isr: [2], leader: 2, leaderEpoch: 1, partitionEpoch: 2 },
  ]);
  await a.propose([{ type: 'Topic', topicId: 'b'.repeat(32), name: 'gone', config: {} }]);
  await a.propose([{ type: 'RemoveTopic', topicId: 'b'.repeat(32) }]);
  await a.propose([{ type: 'TopicConfig', topicId: 'a'.repeat(32), config: { 'retention.ms': '5' } }]);
  const snap = a.snapshot();
  t.is(snap.index, a.image().offset);

  const b = createQuorumMetadataStore(async () => undefined);
  const seen: number[] = [];
  b.subscribe((image) => seen.push(image.offset));
  b.apply([{ index: 1, payload: new Uint8Array(0) }]);
  b.install(snap.index, snap.data);
  t.deepEqual(b.image(), a.image());
  t.deepEqual(seen, [1, snap.index], 'listeners hear of the install');
  t.is(b.entriesAfter(1, 10), undefined, 'a broker behind the snapshot gets the image, not entries');
  t.deepEqual(b.entriesAfter(snap.index, 10), []);
  b.apply([{ index: snap.index + 1, payload: new Uint8Array(0) }]);
  t.is(b.image().offset, snap.index + 1);
});

test('a real node compacts its Raft log of metadata and restarts from the snapshot with the same topics', async (t) => {
  const nats = await startNatsServer();
  const dataDir = await tempDir('tm-snap-');
  const options = { dataDir, raftLimits: { snapshotEveryEntries: 5 } };
  let node = await startTestNode(nats.url, options);
  let client = await Tidemark.connect({ servers: nats.url, cluster: node.cluster });
  try {
    const admin = client.admin();
    for (let i = 0; i < 8; i++) await admin.createTopic({ name: `snap-${i}`, partitions: 2, replicationFactor: 1, config: {} });
    await admin.alterTopicConfig('snap-3', { set: { 'retention.ms': '60000' } });
    await admin.deleteTopic('snap-5');
    const before = await Promise.all((await admin.listTopics()).sort().map((name) => admin.describeTopic(name)));
    t.is(before.length, 7);
    await client.close();
    await node.close();

    const storage = await openRocksNodeStorage(join(dataDir, 'rocksdb'));
    const { snapshotIndex, lastIndex } = storage.raftLog.view();
    const snapshot = storage.raftLog.loadSnapshot();
    await storage.close();
    t.true(snapshotIndex >= 10, `the log was compacted up to ${snapshotIndex}`);
    t.true(lastIndex - snapshotIndex < 5, `${lastIndex - snapshotIndex} entries after the snapshot`);
    const names = decodeEntry(snapshot!.data).flatMap((r) => (r.type === 'Topic' ? [r.name] : []));
    t.true(names.length >= 5, 'the snapshot is the image as records');

    node = await startTestNode(nats.url, options);
    client = await Tidemark.connect({ servers: nats.url, cluster: node.cluster });
    const after = await Promise.all((await client.admin().listTopics()).sort().map((name) => client.admin().describeTopic(name)));
    t.deepEqual(
      after.map((d) => [d.name, d.topicId, d.partitions.length, d.config]),
      before.map((d) => [d.name, d.topicId, d.partitions.length, d.config]),
    );
    await client.admin().createTopic({ name: 'after-restart', partitions: 1, replicationFactor: 1, config: {} });
    t.true((await client.admin().listTopics()).includes('after-restart'));
  } finally {
    await client.close();
    await node.destroy();
    await nats.stop();
  }
});
