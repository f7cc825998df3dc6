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
    // flush.mode=replicated (a question of semantics, reported): a replica whose power loss took
    // committed records stays in the ISR (not fenced yet, e.g. while controllers change, or kept as
    // the last member of an offline partition) and is elected when the replicas that kept them
    // leave the ISR: acks=all records lost after one power loss, not "a power loss of every replica
    // at once" as topic-config.ts says. Kafka without KIP-966 has the same window;
    // SIM_KAFKA_REPLICATED=1 checks against that instead.
    seeds: [],
    replays: [
      { seed: 244942582, steps: 186 },
      // Issue 9's swarm after the controller fix (d9a86d7): n5 lost power, the other members left the ISR.
      { seed: 561035908, steps: 441 },
    ],
    bug: 'flush.mode=replicated: a replica that lost committed records in a power loss is elected (KIP-966 window)',
  },
];

/** Seed -> the bug it fails on, over every known bug. */
export const KNOWN_FAILING_SEEDS: ReadonlyMap<number, string> = new Map(KNOWN_BUGS.flatMap((b) => b.seeds.map((s) => [s, b.bug] as const)));
