/**
 * A run's configuration, derived from its seed alone (so `--seed S` replays exactly what a swarm
 * run did): cluster size and roles, network faults, fault rate, power loss, disk latency. Options
 * given on the command line override what the seed would pick.
 */
import type { NodeTestSeam } from '../../src/node.js';
import { DEFAULT_RAFT_LIMITS, DEFAULT_RAFT_TIMEOUTS, type RaftTimeouts } from '../../src/quorum/types.js';
import type { DiskLatency } from './disk.js';
import type { NetFaults } from './network.js';
import { Rng } from './random.js';

export interface SimConfig {
  seed: number;
  /** Workload steps before the liveness phase. */
  steps: number;
  nodes: number;
  voters: number[];
  brokers: number[];
  net: NetFaults;
  /** Scales fault weights. */
  faultRate: number;
  powerLoss: boolean;
  disk: DiskLatency;
  /** Simulated time between two steps, ms (drawn in [1, stepMsMax]). */
  stepMsMax: number;
  /** Between write-backs of unsynced writes, ms. */
  flushEveryMs: [number, number];
  /** Raft timing; a narrow election window makes split votes (and double votes) likely. */
  raftTimeouts: RaftTimeouts;
  /** Snapshot every this many applied metadata entries (small: InstallSnapshot and broker snapshots run often). */
  snapshotEveryEntries: number;
  /**
   * Raft entry payload bound, bytes: often small, so topic creations, fencings and broker snapshots
   * need metadata transactions and chunks (issue 10) with topics of a few partitions.
   */
  appendBytesMax: number;
  /** Injected bugs: machines to run instead of the product's. Not derived from the seed. */
  machines?: NodeTestSeam['machines'];
}

export interface ConfigOverrides {
  steps?: number;
  nodes?: number;
  faultRate?: number;
  powerLoss?: boolean;
}

export const DEFAULT_STEPS = 300;
export const NODES_MAX = 7;

export function deriveConfig(seed: number, overrides: ConfigOverrides = {}): SimConfig {
  const rng = new Rng(seed).fork('config');
  const nodes = overrides.nodes ?? rng.pick([3, 3, 3, 4, 5])!;
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > NODES_MAX) throw new Error(`--nodes must be within 1..${NODES_MAX}`);
  const ids = Array.from({ length: nodes }, (_, i) => i + 1);
  // Three voters (the rest brokers only) or every node a voter; now and then one controller-only node.
  const voters = nodes <= 3 || rng.chance(0.5) ? ids : ids.slice(0, 3);
  const brokers = nodes >= 4 && rng.chance(0.3) ? ids.slice(1) : ids;
  const slowDisk = rng.chance(0.4);
  return {
    seed,
    steps: overrides.steps ?? DEFAULT_STEPS,
    nodes,
    voters,
    brokers,
    net: {
      lossRate: rng.pick([0, 0.002, 0.01, 0.03])!,
      dupRate: rng.pick([0, 0.001, 0.005])!,
      delayMsMin: 1,
      delayMsMax: rng.pick([3, 6, 15])!,
    },
    // Now and then a storm: twice the usual rate.
    faultRate: overrides.faultRate ?? rng.between(0.3, 1.5) * (rng.chance(0.2) ? 2 : 1),
    powerLoss: overrides.powerLoss ?? rng.chance(0.5),
    disk: slowDisk ? { writeMs: [0, 8], syncMs: [2, 12], readMs: [0, 3] } : { writeMs: [0, 2], syncMs: [1, 4], readMs: [0, 1] },
    stepMsMax: 200,
    flushEveryMs: [500, 5000],
    raftTimeouts: rng.chance(0.3) ? { heartbeatIntervalMs: 100, electionTimeoutMsMin: 300, electionTimeoutMsMax: 320 } : DEFAULT_RAFT_TIMEOUTS,
    snapshotEveryEntries: rng.chance(0.5) ? rng.int(3, 15) : DEFAULT_RAFT_LIMITS.snapshotEveryEntries,
    appendBytesMax: rng.chance(0.6) ? rng.int(400, 1200) : DEFAULT_RAFT_LIMITS.appendBytesMax,
  };
}

export function describeConfig(c: SimConfig): string {
  const roles = `voters ${c.voters.join(',')}, brokers ${c.brokers.join(',')}`;
  const net = `loss ${c.net.lossRate}, dup ${c.net.dupRate}, delay ${c.net.delayMsMin}-${c.net.delayMsMax} ms`;
  const election = `${c.raftTimeouts.electionTimeoutMsMin}-${c.raftTimeouts.electionTimeoutMsMax}`;
  return `${c.nodes} nodes (${roles}); ${net}; fault rate ${c.faultRate.toFixed(2)}; power loss ${c.powerLoss ? 'on' : 'off'}; disk write ${c.disk.writeMs.join('-')} ms; election timeout ${election} ms; snapshot every ${c.snapshotEveryEntries} entries; entries up to ${c.appendBytesMax} bytes`;
}
