/**
 * Seeds on which the simulator (test/sim) found a product bug, replayed with the fix in place. Each
 * failed before its fix with the simulator of the commit named; a later change to the simulator's
 * workload may make a seed take another path, so every fix also has a unit test of its own.
 * Bugs found and not fixed yet (sim/known-bugs.ts) are replayed too, asserting that the simulator
 * still finds them: when one stops failing (fixed, or the seed takes another path), its test fails
 * and says to move the seed up into the regressions.
 */
import test from 'ava';
import { deriveConfig } from './sim/config.js';
import { KNOWN_BUGS } from './sim/known-bugs.js';
import { runSimulation } from './sim/run.js';

const REGRESSIONS: Array<{ seed: number; steps: number; bug: string }> = [
  // Issue 11 (subscriptions):
  { seed: 1970581880, steps: 169, bug: "a new leader whose high watermark had not caught up yet dropped an ack retried to it, and answered it durable (subscription/host.ts)" },
  { seed: 976876307, steps: 1847, bug: 'a deposed leader still in controlled shutdown handed out a message its successor had acknowledged (subscription/host.ts, the delivery lease)' },
  { seed: 1424858801, steps: 569, bug: 'a leader cut off right after it asked to add a follower to the ISR counted its lease over its old ISR; the controller committed the change and elected the follower (the lease counts pending ISR changes)' },
  { seed: 912648745, steps: 530, bug: 'a paused deposed leader, resumed, took fetch requests held while it was paused as fresh and handed out an acknowledged message (the lease counts from replies the follower received)' },
  { seed: 1816590254, steps: 1000, bug: "the subscription host's placeholder for a leadership being opened crashed partition actors (subscription/host.ts)" },
  { seed: 1678219992, steps: 2000, bug: "a consumer whose window (7) was split over two partitions on one broker polled with permits only for the idle partition while the busy one's share sat in its buffer; the leader held the poll and the busy partition drained 8 messages/s (consumer.ts starves)" },
  { seed: 663818561, steps: 600, bug: 'checker: a reader skipped a fence batch at 32, a power loss of the only replica (flush.mode=replicated) took it, and a record was written at 32 anew; the reader checker took the gap for a lost record (readers.ts rewrittenFrom)' },
  { seed: 609765072, steps: 300, bug: "a broker that dropped a consumer's silent session numbered the new session's replies from 0 again; the first, lost, carried the number the consumer had confirmed from the old session, so its messages stayed out for good (subscription/host.ts)" },
  { seed: 40501044, steps: 1249, bug: 'a broker fenced by a deposed controller and unfenced by the new one restarted its leaders from stale metadata at the same leader epoch: the high watermark counted over an ISR older than the committed one (broker/machine.ts unfencedAtOffset)' },
  // Simulator of 016486e. A producer's first batches lost on the way, a later batch was taken as
  // its first by a partition that had never seen it; the lost ones, resent, landed after it.
  // (Seeds 30 and 37, the same bug with the simulator of b9a4c25, now take replication paths: see
  // known-bugs.ts while they fail on another bug.)
  { seed: 3, steps: 300, bug: 'a new producer could start at any sequence (producer-state.ts)' },
  { seed: 50, steps: 300, bug: 'a new producer could start at any sequence (producer-state.ts)' },
  // Replication simulator (the commit that added these lines) on the product of e2047b8: a retried
  // acks=all batch already committed was acknowledged without the min.insync.replicas check (fixed in
  // 239e162; seeds 9, 29, 30, 37, 43, 45, 55, 56 and 59 of CI's list failed on it too).
  { seed: 63, steps: 300, bug: 'a duplicate acks=all batch was acknowledged below min.insync.replicas (machine.ts)' },
  { seed: 71, steps: 300, bug: 'a duplicate acks=all batch was acknowledged below min.insync.replicas (machine.ts)' },
  // Fixed by computing an ISR change when it is sent, from the ISR, HW and followers of that moment.
  { seed: 34, steps: 300, bug: 'an ISR change decided while another was in flight was sent later unchanged (HW above an ISR member; machine.ts)' },
  { seed: 1555526295, steps: 725, bug: 'an ISR change decided while another was in flight was sent later unchanged (HW above an ISR member; machine.ts)' },
  // Fixed in planFenceBroker: the last ISR member of an offline partition stays when fenced.
  { seed: 68, steps: 300, bug: 'fencing the last ISR member of an offline partition emptied its ISR (offline for good; planner.ts)' },
  // Issue 9, swarm finds on the product and simulator of f604fbc. A paused, deposed controller
  // refused an ISR join from its stale image while the new controller committed it; the leader
  // dropped the change and counted its HW over too small an ISR (fixed: every controller answer
  // waits for a barrier entry of its term; controller machine test).
  { seed: 1590800228, steps: 2000, bug: 'a deposed controller refused an ISR change that its successor committed (HW above an ISR member)' },
  // flush.mode=replicated, power loss (the other five seeds, and the KIP-966 window's):
  // the controller took fenced members out of the ISR while the member that stayed had lost
  // committed records in a power loss nobody had noticed yet, and elected it. Fixed by keeping
  // leaving members in those ISRs, suspects after an unclean restart, and recovery elections by
  // log end (planner.replicatedFlush; planner and leader machine tests).
  { seed: 162775133, steps: 2000, bug: 'replicated: a power-lost ISR member was elected over fenced members that kept the records' },
  { seed: 193772981, steps: 2000, bug: 'replicated: a power-lost ISR member was elected over fenced members that kept the records' },
  { seed: 42267390, steps: 2000, bug: 'replicated: a power-lost ISR member was elected over fenced members that kept the records' },
  { seed: 1687695709, steps: 2000, bug: 'replicated: a power-lost ISR member was elected over fenced members that kept the records' },
  { seed: 403279174, steps: 2000, bug: 'replicated: a power-lost ISR member was elected over fenced members that kept the records' },
  { seed: 244942582, steps: 186, bug: 'replicated: a power-lost ISR member was elected over fenced members that kept the records' },
  { seed: 561035908, steps: 441, bug: 'replicated: a power-lost ISR member was elected over fenced members that kept the records' },
  // Swarm finds of this fix's first version: a replica elected while already dead with its loss.
  { seed: 194573650, steps: 731, bug: 'replicated: an election named a replica already down with its power loss (checker excuse while it cannot serve)' },
  // The 1800 s swarm after that fix: a process started after a power loss and stopped cleanly
  // before it registered; its clean close cleared the open mark and the loss went unreported.
  { seed: 296190686, steps: 679, bug: 'replicated: a clean close before registering hid an unclean shutdown (storage open mark)' },
  { seed: 933938449, steps: 1366, bug: 'replicated: a clean close before registering hid an unclean shutdown (storage open mark)' },
  // Issue 10 (fetch sessions), swarm finds while building it: an idle, caught-up follower outside
  // the ISR reports nothing new, so the leader must propose it itself (node tick, settled change);
  // first never (seed 71 above failed on it too), then not when the controller had taken it out
  // after its last report (its broker's live session now counts as hearing from it).
  { seed: 1650223904, steps: 300, bug: 'sessions: a caught-up idle follower taken out of the ISR after its last report never rejoined' },
  { seed: 1227113686, steps: 1000, bug: 'sessions: a caught-up idle follower taken out of the ISR after its last report never rejoined' },
  { seed: 1806248828, steps: 1000, bug: 'sessions: a caught-up idle follower taken out of the ISR after its last report never rejoined' },
  // The checker, not the cluster: convergence looked only at topics the workload knew were live, so
  // it was declared while the leader of a topic whose creation answer was lost (committed anyway)
  // was still opening its log, and the final whole-cluster check then found it not yet serving.
  { seed: 1112994111, steps: 300, bug: 'sim liveness: convergence ignored a committed topic the workload did not know was live' },
];

for (const r of REGRESSIONS) {
  test.serial(`sim seed ${r.seed} (${r.steps} steps): ${r.bug}`, async (t) => {
    t.timeout(50_000);
    const result = await runSimulation(deriveConfig(r.seed, { steps: r.steps }));
    t.deepEqual(result.violations, [], result.traceTail.join('\n'));
  });
}

for (const known of KNOWN_BUGS) {
  const replays = [...known.seeds.map((seed) => ({ seed, steps: 300 })), ...(known.replays ?? [])];
  for (const r of replays) {
    // Not fixed yet: `npm run sim -- --seed S --steps N` shows it.
    test.serial(`sim seed ${r.seed} (${r.steps} steps) still shows a known, unfixed issue: ${known.bug}`, async (t) => {
      t.timeout(50_000);
      const result = await runSimulation(deriveConfig(r.seed, { steps: r.steps }));
      t.true(result.violations.length > 0, 'no violation: fixed (or the seed takes another path now); move it up into REGRESSIONS and out of known-bugs.ts');
    });
  }
}
