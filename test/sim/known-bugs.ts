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
  // Empty: the flush.mode=replicated KIP-966 window (seeds 244942582, 561035908) was closed in
  // issue 9; its seeds are in test/sim-regressions.test.ts.
];

/** Seed -> the bug it fails on, over every known bug. */
export const KNOWN_FAILING_SEEDS: ReadonlyMap<number, string> = new Map(KNOWN_BUGS.flatMap((b) => b.seeds.map((s) => [s, b.bug] as const)));
