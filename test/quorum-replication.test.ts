/**
 * Raft log replication of the controller quorum: the pure rules (follower consistency check and
 * truncation, the leader's commit rule) as unit tests, then whole clusters on simulated time with
 * the safety checker (log matching, state machine safety, acknowledged entries never lost).
 */
import test from 'ava';
import { enqueueActions } from 'xstate';
import { pino } from 'pino';
import { TidemarkError } from '../src/protocol/errors.js';
import type { Transport } from '../src/runtime/ports.js';
import { DiskWorker } from '../src/quorum/disk.js';
import { electionMachine, initialContext } from '../src/quorum/election-machine.js';
import { appendTerms, EMPTY_LOG } from '../src/quorum/log-view.js';
import { decodeRaftMessage, type AppendEntries } from '../src/quorum/messages.js';
import { createMemoryRaftStore } from '../src/quorum/raft-store.js';
import { advanceCommit, draft, followerAppend, onSynced, requestApply } from '../src/quorum/replication.js';
import { DEFAULT_RAFT_LIMITS, DEFAULT_RAFT_TIMEOUTS, type RaftContext } from '../src/quorum/types.js';
import { bytes, SimCluster } from './helpers/sim-cluster.js';
import { RELIABLE, type LinkFaults } from './helpers/sim-network.js';

const LOSSY: LinkFaults = { dropRate: 0.1, dupRate: 0.05, delayMsMin: 1, delayMsMax: 40 };
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** A context over a log whose entries have these terms (index 1 first). */
function contextWith(terms: number[], patch: Partial<RaftContext> = {}): RaftContext {
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
    state: { term: Math.max(0, ...terms), votedFor: null },
    log: appendTerms(EMPTY_LOG, terms),
    snapshot: undefined,
    snapshots: false,
  });
  return { ...c, ...patch };
}

const ae = (prevLogIndex: number, prevLogTerm: number, terms: number[], leaderCommit = 0, term = 9): AppendEntries => ({
  type: 'append',
  from: 2,
  term,
  prevLogIndex,
  prevLogTerm,
  entries: terms.map((t) => ({ term: t, payload: bytes(`t${t}`) })),
  leaderCommit,
});

test('follower: a log too short for prevLogIndex is refused with a hint at its end', (t) => {
  t.deepEqual(followerAppend(contextWith([1, 1]), ae(5, 1, [])), { kind: 'reject', hintIndex: 3 });
});

test('follower: a term mismatch at prevLogIndex is refused with a hint skipping the whole conflicting term', (t) => {
  // log: 1 1 2 2 2; the leader thinks index 5 has term 3.
  t.deepEqual(followerAppend(contextWith([1, 1, 2, 2, 2]), ae(5, 3, [])), { kind: 'reject', hintIndex: 3 });
  // ...but never below the commit index.
  t.deepEqual(followerAppend(contextWith([1, 1, 2, 2, 2], { commitIndex: 3 }), ae(5, 3, [])), { kind: 'reject', hintIndex: 4 });
});

test('follower: a conflicting suffix is truncated and replaced; matching entries are kept', (t) => {
  // log: 1 1 2 2; the leader's: 1 1 2 3 3. Index 3 matches, index 4 conflicts.
  const out = followerAppend(contextWith([1, 1, 2, 2]), ae(2, 1, [2, 3, 3], 4));
  t.is(out.kind, 'accept');
  if (out.kind !== 'accept') return;
  t.is(out.truncateFrom, 4);
  t.deepEqual(
    out.entries.map((e) => [e.index, e.term]),
    [
      [4, 3],
      [5, 3],
    ],
  );
  t.is(out.matchIndex, 5);
  t.is(out.commit, 4);
});

test('follower: a stale duplicate AppendEntries never truncates entries that follow it', (t) => {
  const out = followerAppend(contextWith([1, 1, 1, 1, 1]), ae(1, 1, [1, 1]));
  t.deepEqual(out, { kind: 'accept', truncateFrom: undefined, entries: [], matchIndex: 3, commit: 0 });
});

test('follower: an AppendEntries that would truncate a committed entry is refused as unsafe', (t) => {
  t.deepEqual(followerAppend(contextWith([1, 1, 1], { commitIndex: 3 }), ae(1, 1, [2, 2])), { kind: 'unsafe', index: 2 });
});

test('leader: an entry of an earlier term on a majority is not committed until one of its own term is', (t) => {
  // Thesis figure 3.7: the leader of term 4 holds an entry of term 2 at index 2, replicated to a majority.
  const base = contextWith([1, 2], { term: 4, leaderId: 1, selfMatch: 2, commitIndex: 1 });
  const progress = { 2: { next: 3, match: 2, heardTick: 0, reading: false }, 3: { next: 2, match: 1, heardTick: 0, reading: false } };
  const d = draft({ ...base, progress });
  advanceCommit(d);
  t.is(d.c.commitIndex, 1, 'term 2 entry on a majority is not committed by counting');
  const withOwn = draft({ ...base, log: appendTerms(base.log, [4]), selfMatch: 3, progress: { ...progress, 2: { ...progress[2], match: 3, next: 4 } } });
  advanceCommit(withOwn);
  t.is(withOwn.c.commitIndex, 3, 'its own entry on a majority commits everything before it');
  t.deepEqual(withOwn.disk.at(-1), { type: 'APPLY', upTo: 3, cached: [] });
});

for (const voters of [3, 5]) {
  test(`${voters} voters: committed entries reach every voter in order, exactly once, at the index propose resolves to`, async (t) => {
    const sim = new SimCluster({ seed: 11, voters });
    await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
    const leader = sim.leader()!;
    const results = await sim.drive(Promise.all([1, 2, 3].map((n) => sim.propose(leader, [bytes(`a${n}`), bytes(`b${n}`)]))));
    t.deepEqual(
      results?.map((r) => (r instanceof Error ? r.message : r.index)),
      [3, 5, 7],
      'after the leader\'s no-op at 1: consecutive pairs',
    );
    await sim.run(300);
    for (const id of sim.ids) {
      t.deepEqual(
        sim.deliveries.get(id)?.map((e) => [e.index, new TextDecoder().decode(e.payload)]),
        [
          [1, ''],
          [2, 'a1'],
          [3, 'b1'],
          [4, 'a2'],
          [5, 'b2'],
          [6, 'a3'],
          [7, 'b3'],
        ],
        `voter ${id}`,
      );
    }
    t.deepEqual(sim.violations, []);
    await sim.stopAll();
  });
}

test('AppendEntries stay within appendEntriesMax and appendBytesMax while a backlog is pipelined', async (t) => {
  const limits = { appendEntriesMax: 8, appendBytesMax: 4096, inflightEntriesMax: 32 };
  const sim = new SimCluster({ seed: 5, voters: 3, limits, faults: LOSSY });
  let appends = 0;
  let biggest = 0;
  sim.net.onPublish = ({ data }) => {
    const m = decodeRaftMessage(data);
    if (m.type !== 'append') return;
    appends++;
    biggest = Math.max(biggest, m.entries.length);
    const size = m.entries.reduce((n, e) => n + e.payload.length, 0);
    if (m.entries.length > limits.appendEntriesMax || (m.entries.length > 1 && size > limits.appendBytesMax)) {
      sim.violations.push(`append of ${m.entries.length} entries, ${size} bytes`);
    }
  };
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  const leader = sim.leader()!;
  const proposals = Array.from({ length: 40 }, (_, p) =>
    sim.propose(
      leader,
      Array.from({ length: 10 }, (_, i) => new Uint8Array(i === 0 ? 2000 : sim.random.int(1, 300)).fill(p * 10 + i)),
    ),
  );
  const results = await sim.drive(Promise.all(proposals), 20_000);
  t.true(results?.every((r) => !(r instanceof Error)), 'all 400 entries committed');
  t.is(biggest, limits.appendEntriesMax, 'batches fill up to the bound');
  t.true(appends > 50);
  t.deepEqual(sim.violations, []);
  await sim.stopAll();
});

test('a voter that was down catches up from the leader\'s store, beyond its in-memory cache', async (t) => {
  const reads = new Map<number, number>();
  const sim = new SimCluster({
    seed: 9,
    voters: 3,
    limits: { logCacheEntriesMax: 16, appendEntriesMax: 32 },
    wrapStore: (id, store) => ({
      ...store,
      entries: (from, max, maxBytes) => {
        reads.set(id, (reads.get(id) ?? 0) + 1);
        return store.entries(from, max, maxBytes);
      },
    }),
  });
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  const leader = sim.leader()!;
  const down = sim.ids.find((id) => id !== leader)!;
  sim.kill(down);
  for (let i = 0; i < 30; i++) {
    const r = await sim.commit(leader, Array.from({ length: 10 }, (_, k) => bytes(`e${i}-${k}`)));
    t.false(r instanceof Error || r === undefined);
  }
  const readsBefore = reads.get(leader) ?? 0;
  const node = sim.start(down);
  t.not(await sim.runUntil(() => node.status().appliedIndex === sim.status(leader)!.commitIndex, 5000), undefined);
  const logOf = (id: number) => sim.disks.get(id)!.entries.map((e) => `${e.index}/${e.term}/${hex(e.payload)}`);
  t.is(logOf(down).length, 301);
  // 285 entries older than the 16-entry cache, 32 per read.
  t.true((reads.get(leader) ?? 0) - readsBefore >= Math.ceil(285 / 32), 'the leader read the old entries from its store');
  t.deepEqual(logOf(down), logOf(leader));
  t.deepEqual(sim.violations, []);
  await sim.stopAll();
});

test('an isolated leader\'s uncommitted entries are truncated when it rejoins; committed entries never are', async (t) => {
  for (let seed = 1; seed <= 20; seed++) {
    const sim = new SimCluster({ seed, voters: seed % 2 === 0 ? 5 : 3 });
    await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
    const old = sim.leader()!;
    await sim.commit(old, [bytes('committed-before')]);
    sim.net.isolate(old, sim.ids);
    const doomed = sim.propose(old, [bytes('doomed-1'), bytes('doomed-2')]);
    const others = sim.ids.filter((id) => id !== old);
    await sim.runUntil(() => sim.stableLeader(others) !== undefined, 5000);
    t.true((await sim.drive(doomed)) instanceof TidemarkError);
    await sim.commit(sim.leader()!, [bytes('committed-after')]);
    sim.net.heal();
    await sim.run(1500);
    const logOf = (id: number) => sim.disks.get(id)!.entries.map((e) => `${e.term}/${hex(e.payload)}`);
    for (const id of sim.ids) t.deepEqual(logOf(id), logOf(sim.leader()!), `seed ${seed}: voter ${id}'s log matches the leader's`);
    const payloads = sim.disks.get(old)!.entries.map((e) => new TextDecoder().decode(e.payload));
    t.false(payloads.includes('doomed-1'));
    t.true(payloads.includes('committed-before') && payloads.includes('committed-after'));
    sim.checkAcknowledged();
    t.deepEqual(sim.violations, []);
    await sim.stopAll();
  }
});

test('a leader that loses leadership fails its pending proposals as unknown: here they commit anyway', async (t) => {
  const sim = new SimCluster({ seed: 4, voters: 3 });
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  const old = sim.leader()!;
  // The followers get the entry, the leader never hears back: it cannot commit, and steps down.
  for (const id of sim.ids) if (id !== old) sim.net.setLink(id, old, { ...RELIABLE, dropRate: 1 });
  const outcome = await sim.drive(sim.propose(old, [bytes('maybe')]));
  t.true(outcome instanceof TidemarkError);
  t.is((outcome as TidemarkError).code, 'NOT_CONTROLLER');
  t.is((outcome as TidemarkError).context['outcome'], 'unknown');
  await sim.run(2000);
  const committed = [...sim.committed.values()].map((e) => e.payload);
  t.true(committed.includes(hex(bytes('maybe'))), 'the new leader committed it with its own no-op');
  t.deepEqual(sim.violations, []);
  await sim.stopAll();
});

test('proposals are checked: empty or oversized payloads are INVALID_REQUEST, a full queue is BUSY', async (t) => {
  const sim = new SimCluster({ seed: 2, voters: 3, limits: { appendBytesMax: 1000, proposalsPendingMax: 3 } });
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  const leader = sim.leader()!;
  const code = (r: unknown) => (r instanceof TidemarkError ? r.code : r);
  t.is(code(await sim.propose(leader, [])), 'INVALID_REQUEST');
  t.is(code(await sim.propose(leader, [new Uint8Array(0)])), 'INVALID_REQUEST');
  t.is(code(await sim.propose(leader, [new Uint8Array(1001)])), 'INVALID_REQUEST');
  const pending = [1, 2, 3].map(() => sim.propose(leader, [bytes('p')]));
  t.is(code(await sim.propose(leader, [bytes('one too many')])), 'BUSY');
  t.true((await sim.drive(Promise.all(pending)))?.every((r) => !(r instanceof Error)));
  await sim.stopAll();
});

test('every voter restarted from its store keeps its term and redelivers the committed log from index 1', async (t) => {
  const sim = new SimCluster({ seed: 21, voters: 3 });
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  for (let i = 0; i < 5; i++) await sim.commit(sim.leader()!, [bytes(`r${i}`)]);
  await sim.run(300);
  const terms = new Map(sim.ids.map((id) => [id, sim.status(id)!.term]));
  const commit = sim.status(sim.leader()!)!.commitIndex;
  for (const id of sim.ids) sim.kill(id);
  await sim.run(1000);
  const again = new Map<number, number[]>();
  for (const id of sim.ids) sim.start(id).onCommit((entries) => again.set(id, [...(again.get(id) ?? []), ...entries.map((e) => e.index)]));
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  await sim.run(500);
  for (const id of sim.ids) {
    t.true(sim.status(id)!.term > terms.get(id)!, 'a new term after the restart, never an older one');
    t.deepEqual(again.get(id)?.slice(0, commit), Array.from({ length: commit }, (_, i) => i + 1));
  }
  sim.checkAcknowledged();
  t.deepEqual(sim.violations, []);
  await sim.stopAll();
});

test('committed entries are never lost or changed across leader changes, kills, restarts and partitions (200 seeds, 3 and 5 voters)', async (t) => {
  let acknowledged = 0;
  let simulatedMs = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const sim = new SimCluster({ seed, voters: seed % 2 === 0 ? 5 : 3, faults: LOSSY, diskMs: [0, 5] });
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
    // Liveness once the faults stop: one leader, a new entry commits, every voter converges.
    sim.net.heal();
    sim.net.faults = RELIABLE;
    for (const id of sim.ids) if (!sim.nodes.has(id)) sim.start(id);
    t.not(await sim.runUntil(() => sim.stableLeader() !== undefined, 3000), undefined, `seed ${seed}: a leader after healing`);
    const last = await sim.commit(sim.stableLeader() ?? sim.ids[0]!, [bytes('final')], 3000);
    t.true(last !== undefined && !(last instanceof Error), `seed ${seed}: a new entry commits after healing`);
    await sim.run(500);
    t.is(new Set(sim.ids.map((id) => sim.status(id)!.appliedIndex)).size, 1, `seed ${seed}: every voter applied the same log`);
    sim.checkAcknowledged();
    t.deepEqual(sim.violations, []);
    acknowledged += sim.acknowledged.length;
    simulatedMs += sim.clock.now();
    await sim.stopAll();
  }
  t.log(`${acknowledged} acknowledged entries checked over ${(simulatedMs / 1000).toFixed(0)} simulated s`);
  t.true(acknowledged > 5000);
});

test('the checker catches an injected bug: a leader that commits its own write without a majority loses committed entries', async (t) => {
  const buggy = electionMachine.provide({
    actions: {
      onSynced: enqueueActions(({ context, event, enqueue }) => {
        if (event.type !== 'disk.synced') return;
        const d = draft(context);
        onSynced(d, event.token);
        if (d.c.leaderId === d.c.voterId && d.c.selfMatch > d.c.commitIndex) {
          d.c.commitIndex = d.c.selfMatch;
          requestApply(d);
        }
        enqueue.assign(d.c);
        for (const out of d.send) enqueue.sendTo('net', { type: 'SEND', ...out });
        for (const command of d.disk) enqueue.sendTo('disk', command);
      }),
    },
  });
  let caught = 0;
  for (let seed = 1; seed <= 20; seed++) {
    const sim = new SimCluster({ seed, voters: 3, machine: buggy });
    await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
    // Isolate the leader, let it "commit" alone while the majority commits something else.
    const isolated = sim.leader()!;
    sim.net.isolate(isolated, sim.ids);
    void sim.propose(isolated, [bytes('alone')]);
    const others = sim.ids.filter((id) => id !== isolated);
    await sim.runUntil(() => sim.stableLeader(others) !== undefined, 3000);
    void sim.propose(sim.stableLeader(others) ?? others[0]!, [bytes('majority')]);
    await sim.run(500);
    sim.net.heal();
    await sim.run(1000);
    if (sim.violations.some((v) => /committed as term/.test(v))) caught++;
    await sim.stopAll();
  }
  t.is(caught, 20, 'every seed shows one index committed with two different entries');
});
