/**
 * Product bugs the simulator found that are not fixed yet, with the seeds that show them (each was
 * reported with its replay command, trace and analysis). CI's seed list skips these seeds
 * (test/sim.test.ts) and test/sim-regressions.test.ts lists them as skipped; once a fix lands, its
 * seeds move to the regressions and back into CI's list.
 */
export interface KnownBug {
  /** Seeds (300 steps, as CI runs them) that fail on it with the simulator of the commit that added them. */
  seeds: readonly number[];
  /** Replays beyond CI's seeds (swarm finds), with their step counts. */
  replays?: ReadonlyArray<{ seed: number; steps: number }>;
  bug: string;
}

export const KNOWN_BUGS: readonly KnownBug[] = [
  {
    // Partition leader (machine.ts noteFollower/sendIsrChange): wantedIsr is built from the ISR and
    // HW of the moment a follower qualifies, also while another change is in flight, and sent as is
    // once that one settles: the change can drop the member just added and add a follower that has
    // fallen below the HW since. Seed 34: ISR {1} + pending {1,3}; n2 qualifies at HW 20; {1,3}
    // commits 2.5 s later, then {1,2} is sent and committed with n2 at 25 and the HW at 33.
    seeds: [34],
    replays: [{ seed: 1555526295, steps: 725 }],
    bug: 'an ISR change decided while another is in flight is sent later unchanged (HW above an ISR member)',
  },
  {
    // Controller (planner.ts planFenceBroker): for a partition it does not lead, a fenced broker
    // leaves the ISR even when it is the last member, so an offline partition (leader -1, ISR {b})
    // ends with an empty ISR when b is fenced again (re-registration), and no clean leader exists.
    seeds: [68],
    bug: 'fencing the last ISR member of an offline partition empties its ISR (offline for good)',
  },
  {
    // flush.mode=replicated (a question of semantics, reported): a replica whose power loss took
    // committed records stays in the ISR (not fenced yet, e.g. while controllers change, or kept as
    // the last member of an offline partition) and is elected when the replicas that kept them
    // leave the ISR: acks=all records lost after one power loss, not "a power loss of every replica
    // at once" as topic-config.ts says. Kafka without KIP-966 has the same window;
    // SIM_KAFKA_REPLICATED=1 checks against that instead.
    seeds: [],
    replays: [{ seed: 244942582, steps: 186 }],
    bug: 'flush.mode=replicated: a replica that lost committed records in a power loss is elected (KIP-966 window)',
  },
];

/** Seed -> the bug it fails on, over every known bug. */
export const KNOWN_FAILING_SEEDS: ReadonlyMap<number, string> = new Map(KNOWN_BUGS.flatMap((b) => b.seeds.map((s) => [s, b.bug] as const)));
