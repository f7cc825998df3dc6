/**
 * Raft elections of the controller quorum: 3 and 5 voters in one process on xstate's
 * SimulatedClock over a seeded lossy network (test/helpers). Safety is checked after every delivery
 * and timer step by the cluster's checker; a failing seed is named in the violation to replay it.
 */
import test from 'ava';
import { enqueueActions } from 'xstate';
import { TidemarkError } from '../src/protocol/errors.js';
import { electionMachine } from '../src/quorum/election-machine.js';
import { isUpToDate } from '../src/quorum/log-view.js';
import { decodeRaftMessage } from '../src/quorum/messages.js';
import type { PersistentState, RaftStore } from '../src/quorum/raft-store.js';
import { DEFAULT_RAFT_TIMEOUTS } from '../src/quorum/types.js';
import { bytes, SimCluster } from './helpers/sim-cluster.js';
import { RELIABLE, type LinkFaults } from './helpers/sim-network.js';

const { heartbeatIntervalMs: HB, electionTimeoutMsMax: MAX } = DEFAULT_RAFT_TIMEOUTS;
const BOUND_MS = MAX + HB;
const LOSSY: LinkFaults = { dropRate: 0.15, dupRate: 0.05, delayMsMin: 1, delayMsMax: 40 };

/** Shuffles voters into two random non-empty groups. */
function randomSplit(sim: SimCluster): number[][] {
  const order = [...sim.ids].sort(() => sim.random.next() - 0.5);
  const k = sim.random.int(1, order.length - 1);
  return [order.slice(0, k), order.slice(k)];
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;

for (const voters of [3, 5]) {
  test(`${voters} voters: a leader is elected and followed within electionTimeoutMsMax + a heartbeat (200 seeds)`, async (t) => {
    const took: number[] = [];
    for (let seed = 1; seed <= 200; seed++) {
      const sim = new SimCluster({ seed, voters });
      took.push((await sim.runUntil(() => sim.stableLeader() !== undefined, 5000)) ?? Number.POSITIVE_INFINITY);
      t.deepEqual(sim.violations, []);
      await sim.stopAll();
    }
    t.log(`cold start to a followed leader: p50 ${quantile(took, 0.5)} ms, p99 ${quantile(took, 0.99)} ms, max ${Math.max(...took)} ms`);
    t.true(took.every((ms) => ms <= BOUND_MS), `every seed within ${BOUND_MS} ms`);
  });

  test(`${voters} voters: the leader is killed; a new one is elected in bound, and the old one restarts from its store as a follower`, async (t) => {
    const took: number[] = [];
    for (let seed = 1; seed <= 100; seed++) {
      const sim = new SimCluster({ seed, voters });
      await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
      await sim.commit(sim.leader()!, [bytes('before')]);
      await sim.run(sim.random.int(0, 300));
      const old = sim.leader()!;
      const oldTerm = sim.status(old)!.term;
      sim.kill(old);
      took.push((await sim.runUntil(() => sim.leader() !== undefined, 5000)) ?? Number.POSITIVE_INFINITY);
      t.true(sim.status(sim.leader()!)!.term > oldTerm);
      await sim.run(1000);
      const restarted = sim.start(old);
      await sim.run(1000);
      t.is(restarted.status().role, 'follower', `seed ${seed}`);
      t.is(restarted.status().leaderId, sim.leader() ?? null);
      t.true(restarted.status().appliedIndex >= 2, 'the restarted voter redelivered the committed log');
      t.deepEqual(sim.violations, []);
      await sim.stopAll();
    }
    const within = took.filter((ms) => ms <= BOUND_MS).length;
    t.log(`failover: p50 ${quantile(took, 0.5)} ms, max ${Math.max(...took)} ms, ${within}/100 within ${BOUND_MS} ms`);
    // A split vote costs one more randomized timeout; with 3 voters the pre-candidate tie-break
    // removes it, with 5 two pre-candidates can still each win over a different pair.
    t.true(took.every((ms) => ms <= 2 * MAX + HB), 'every failover within one split vote of the bound');
    t.true(within >= (voters === 3 ? 100 : 97), `${within}/100 within ${BOUND_MS} ms`);
  });
}

test('at most one leader per term under drops, duplicates, delays and random partitions (200 seeds x 5 s, 3 and 5 voters)', async (t) => {
  let elections = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const sim = new SimCluster({ seed, voters: seed % 2 === 0 ? 5 : 3, faults: LOSSY, diskMs: [0, 5] });
    for (let step = 0; step < 20 && sim.violations.length === 0; step++) {
      const roll = sim.random.next();
      if (roll < 0.3) sim.net.partition(randomSplit(sim));
      else if (roll < 0.5) sim.net.heal();
      await sim.run(250);
    }
    elections += sim.leaders.size;
    t.deepEqual(sim.violations, []);
    await sim.stopAll();
  }
  t.log(`${elections} leaders elected over 200 seeds x 5 simulated s`);
  t.true(elections > 300, 'the faults forced many elections');
});

test('a minority cannot elect a leader: its terms do not even move (pre-vote), and proposals are refused', async (t) => {
  for (let seed = 1; seed <= 20; seed++) {
    const sim = new SimCluster({ seed, voters: 5 });
    sim.net.partition([
      [1, 2],
      [3, 4, 5],
    ]);
    await sim.run(5000);
    for (const id of [1, 2]) {
      const s = sim.status(id)!;
      t.not(s.role, 'leader');
      t.is(s.term, 0, 'pre-vote never succeeded, so no term was burned');
    }
    t.not(sim.stableLeader([3, 4, 5]), undefined, 'the majority elected a leader');
    const refused = await sim.commit(1, [bytes('x')]);
    t.true(refused instanceof TidemarkError && refused.code === 'NOT_CONTROLLER');
    t.deepEqual(sim.violations, []);
    await sim.stopAll();
  }
});

test('a follower cut off and rejoining does not depose a healthy leader (pre-vote, leader stickiness)', async (t) => {
  for (let seed = 1; seed <= 30; seed++) {
    const sim = new SimCluster({ seed, voters: seed % 2 === 0 ? 5 : 3 });
    await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
    const leader = sim.leader()!;
    const term = sim.status(leader)!.term;
    const lonely = sim.ids.find((id) => id !== leader)!;
    sim.net.isolate(lonely, sim.ids);
    await sim.run(3000);
    t.is(sim.status(lonely)!.term, term, 'the isolated voter never got past pre-vote');
    sim.net.heal();
    await sim.run(2000);
    t.is(sim.leader(), leader, `seed ${seed}: same leader`);
    t.is(sim.status(leader)!.term, term, 'same term');
    t.is(sim.stableLeader(), leader, 'the rejoined voter follows it');
    t.deepEqual(sim.violations, []);
    await sim.stopAll();
  }
});

test('a leader cut off from the majority steps down within electionTimeoutMsMax + a heartbeat (check-quorum) and commits nothing', async (t) => {
  const took: number[] = [];
  for (let seed = 1; seed <= 50; seed++) {
    const sim = new SimCluster({ seed, voters: seed % 2 === 0 ? 5 : 3 });
    await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
    await sim.run(sim.random.int(0, 200));
    const stale = sim.leader()!;
    sim.net.isolate(stale, sim.ids);
    const lost = sim.propose(stale, [bytes(`stale-${seed}`)]);
    took.push((await sim.runUntil(() => sim.status(stale)!.role !== 'leader', 5000)) ?? Number.POSITIVE_INFINITY);
    const outcome = await sim.drive(lost);
    t.true(outcome instanceof TidemarkError && outcome.code === 'NOT_CONTROLLER' && outcome.context['outcome'] === 'unknown', 'failed as unknown');
    t.not(sim.stableLeader(sim.ids.filter((id) => id !== stale)), undefined, 'the majority has a new leader');
    sim.net.heal();
    await sim.run(2000);
    const committed = [...sim.committed.values()].map((e) => e.payload);
    t.false(committed.includes(Buffer.from(`stale-${seed}`).toString('hex')), 'the stale leader committed nothing');
    t.deepEqual(sim.violations, []);
    await sim.stopAll();
  }
  t.log(`step-down after isolation: p50 ${quantile(took, 0.5)} ms, max ${Math.max(...took)} ms`);
  t.true(took.every((ms) => ms <= BOUND_MS));
});

test('term and vote are durable before a vote request leaves or a vote is granted (slow disk, lossy network, 50 seeds)', async (t) => {
  let requests = 0;
  let grants = 0;
  for (let seed = 1; seed <= 50; seed++) {
    const durable = new Map<number, PersistentState>();
    const observe = (id: number, store: RaftStore): RaftStore => ({
      ...store,
      loadState: () => store.loadState(),
      saveState: async (state, options) => {
        await store.saveState(state, options);
        durable.set(id, state);
      },
    });
    const sim = new SimCluster({ seed, voters: 3, faults: LOSSY, diskMs: [5, 30], wrapStore: observe });
    sim.net.onPublish = ({ from, to, data }) => {
      const m = decodeRaftMessage(data);
      const d = durable.get(from) ?? { term: 0, votedFor: null };
      if (m.type === 'vote') {
        requests++;
        if (d.term !== m.term || d.votedFor !== from) sim.violations.push(`seed ${seed}: vote request for term ${m.term} sent with ${JSON.stringify(d)} on disk`);
      } else if (m.type === 'voteReply' && m.granted) {
        grants++;
        if (d.term !== m.term || d.votedFor !== to) sim.violations.push(`seed ${seed}: vote for ${to} in term ${m.term} sent with ${JSON.stringify(d)} on disk`);
      }
    };
    for (let step = 0; step < 10; step++) {
      if (sim.random.chance(0.4)) sim.net.partition(randomSplit(sim));
      else sim.net.heal();
      await sim.run(300);
    }
    t.deepEqual(sim.violations, []);
    await sim.stopAll();
  }
  t.true(requests > 100 && grants > 50, `${requests} vote requests and ${grants} grants observed`);
});

test('proposals to a follower are refused NOT_CONTROLLER naming the leader; to a voter that knows none, naming none', async (t) => {
  const sim = new SimCluster({ seed: 7, voters: 3 });
  const early = await sim.commit(1, [bytes('too early')]);
  t.true(early instanceof TidemarkError && early.code === 'NOT_CONTROLLER');
  t.is((early as TidemarkError).context['leaderId'], null);
  await sim.runUntil(() => sim.stableLeader() !== undefined, 5000);
  const leader = sim.leader()!;
  const follower = sim.ids.find((id) => id !== leader)!;
  const refused = await sim.commit(follower, [bytes('x')]);
  t.true(refused instanceof TidemarkError);
  t.is((refused as TidemarkError).code, 'NOT_CONTROLLER');
  t.is((refused as TidemarkError).context['leaderId'], leader);
  t.true((refused as TidemarkError).retriable);
  const accepted = await sim.commit(leader, [bytes('x')]);
  t.true(accepted !== undefined);
  t.false(accepted instanceof Error);
  await sim.stopAll();
});

test('a single voter elects itself and commits alone', async (t) => {
  const sim = new SimCluster({ seed: 1, voters: 1 });
  t.not(await sim.runUntil(() => sim.leader() === 1, 1000), undefined);
  const r = await sim.commit(1, [bytes('a'), bytes('b')]);
  t.deepEqual(r, { index: 3, term: 1 });
  t.true(sim.status(1)!.leaderReady);
  await sim.stopAll();
});

/** Voters 1 and 2 cannot hear each other; both reach 3. Near-equal timeouts make them stand together. */
async function splitCandidacies(machine: typeof electionMachine, seeds: number): Promise<{ caught: number; violations: string[] }> {
  let caught = 0;
  const violations: string[] = [];
  for (let seed = 1; seed <= seeds; seed++) {
    const sim = new SimCluster({ seed, voters: 3, machine, timeouts: { heartbeatIntervalMs: 100, electionTimeoutMsMin: 300, electionTimeoutMsMax: 310 } });
    const cut = { ...RELIABLE, dropRate: 1 };
    sim.net.setLink(1, 2, cut);
    sim.net.setLink(2, 1, cut);
    await sim.run(3000);
    if (sim.violations.length > 0) caught++;
    violations.push(...sim.violations);
    await sim.stopAll();
  }
  return { caught, violations };
}

test('the checker catches an injected bug: a vote granted without checking votedFor elects two leaders in one term', async (t) => {
  const control = await splitCandidacies(electionMachine, 50);
  t.deepEqual(control.violations, [], 'the real machine: one leader per term');
  const buggy = electionMachine.provide({
    guards: {
      voteGrantable: ({ context, event }) =>
        event.type === 'raft.vote' && event.msg.term >= context.term && isUpToDate(context.log, event.msg.lastLogIndex, event.msg.lastLogTerm),
    },
  });
  const result = await splitCandidacies(buggy, 50);
  t.log(`caught in ${result.caught}/50 seeds, e.g. ${result.violations[0]}`);
  t.true(result.caught >= 10);
  t.regex(result.violations[0] ?? '', /two leaders in term/);
});

test('the persistence check catches an injected bug: a vote answered before it is durable', async (t) => {
  const leaky = electionMachine.provide({
    actions: {
      grantVote: enqueueActions(({ context, event, enqueue }) => {
        if (event.type !== 'raft.vote') return;
        enqueue.assign({ votedFor: event.msg.from });
        enqueue.sendTo('disk', { type: 'PERSIST', state: { term: context.term, votedFor: event.msg.from }, then: undefined });
        const msg = { type: 'voteReply', from: context.voterId, term: context.term, granted: true } as const;
        enqueue.sendTo('net', { type: 'SEND', to: event.msg.from, msg });
      }),
    },
  });
  const durable = new Map<number, PersistentState>();
  const sim = new SimCluster({
    seed: 3,
    voters: 3,
    machine: leaky,
    diskMs: [5, 30],
    wrapStore: (id, store) => ({
      ...store,
      loadState: () => store.loadState(),
      saveState: async (state, options) => {
        await store.saveState(state, options);
        durable.set(id, state);
      },
    }),
  });
  let early = 0;
  sim.net.onPublish = ({ from, to, data }) => {
    const m = decodeRaftMessage(data);
    const d = durable.get(from);
    if (m.type === 'voteReply' && m.granted && (d?.term !== m.term || d.votedFor !== to)) early++;
  };
  await sim.run(2000);
  t.true(early > 0, 'a grant left before its vote was on disk');
  await sim.stopAll();
});
