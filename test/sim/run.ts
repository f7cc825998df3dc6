/**
 * One simulation run: build the cluster from the config, run `steps` workload steps (each followed
 * by a random slice of simulated time, every timer in it fired one at a time with promises settled
 * in between and the safety checkers run after each), then the liveness phase: faults stop,
 * everything heals, and the cluster must converge (liveness.ts) and acknowledge one probe record per
 * producer within a bound. Everything is determined by the seed; `digest` hashes the whole trace
 * (every event and every delivery) so that two runs of a seed can be compared.
 */
import { SafetyChecker, Violations } from './checkers.js';
import { SimTime } from './clock.js';
import { SimCluster, type ClusterObserver } from './cluster.js';
import type { SimConfig } from './config.js';
import { LIVENESS_BOUND_MS, PROBE_BOUND_MS, unmet } from './liveness.js';
import { SimNats } from './network.js';
import { PartitionBook } from './partitions.js';
import { Rng } from './random.js';
import { RecordLedger } from './records.js';
import { Trace } from './trace.js';
import { Workload } from './workload.js';

/** Timers one run may fire; beyond it the run is a runaway (a timer loop) and fails. */
export const TIMERS_PER_RUN_MAX = 20_000_000;
/** Every acknowledgement is checked against the disks again this often, simulated ms. */
export const VERIFY_EVERY_MS = 1000;
/** How often the liveness phase looks at the cluster, simulated ms. */
const LIVENESS_POLL_MS = 50;

export interface SimResult {
  config: SimConfig;
  ok: boolean;
  violations: string[];
  stepsRun: number;
  simMs: number;
  wallMs: number;
  /** Simulated ms from the end of the faults to convergence; undefined when it did not converge. */
  convergedMs: number | undefined;
  traceTail: string[];
  digest: string;
  stats: Record<string, number>;
}

function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export async function runSimulation(config: SimConfig): Promise<SimResult> {
  const wallStart = performance.now();
  const time = new SimTime();
  const trace = new Trace(() => time.elapsed());
  const rng = new Rng(config.seed);
  const violations = new Violations(trace, () => time.elapsed());
  const ref: { cluster?: SimCluster; workload?: Workload } = {};
  const cluster = () => ref.cluster!;
  const elapsedMs = () => time.elapsed();
  const book = new PartitionBook(elapsedMs, trace);
  const ledger = new RecordLedger(cluster, book, violations, trace, elapsedMs);
  // flush.mode=replicated: a power loss of every replica loses committed records, fences included.
  ledger.onLostEverywhere = (topic, partition, from) => ref.workload?.lostEverywhere(topic, partition, from);
  const checker = new SafetyChecker(cluster, book, ledger, violations, trace, elapsedMs);
  const observer: ClusterObserver = {
    started: (node, parts) => {
      checker.started(node, parts);
      // Leaders report what they hand out to subscriptions (subscriptions.ts checks it).
      const hub = parts.broker?.getSnapshot().context.subscriptionHub;
      if (hub !== undefined) hub.observer = { delivered: (...args) => ref.workload?.subscribers.delivered(...args, node.id) };
    },
    powerLost: (node, lost) => {
      checker.powerLost(node, lost);
      ledger.powerLost(node, lost);
      ref.workload?.powerLost(lost);
    },
    bug: (message) => violations.add(`bug: ${message}`),
    truncated: (node, pid, offset, removed) => {
      checker.truncated();
      ledger.truncated(node, pid, offset, removed);
    },
  };
  const net = new SimNats(time, rng.fork('net'), trace, config.net);
  ref.cluster = new SimCluster(
    { nodes: config.nodes, voters: config.voters, brokers: config.brokers, disk: config.disk, flushEveryMs: config.flushEveryMs, raftTimeouts: config.raftTimeouts, snapshotEveryEntries: config.snapshotEveryEntries, appendBytesMax: config.appendBytesMax, ...(config.machines ? { machines: config.machines } : {}) },
    time,
    net,
    rng.fork('cluster'),
    trace,
    observer,
  );
  const workload = new Workload(ref.cluster, net, time, rng.fork('workload'), trace, ledger, checker, violations, { rate: config.faultRate, powerLoss: config.powerLoss });
  ref.workload = workload;
  let fired = 0;

  /** Fires every timer due within `ms`, one at a time, checking after each; false on a violation. */
  const runFor = async (ms: number): Promise<boolean> => {
    const target = time.now() + ms;
    while (time.fireNext(target)) {
      if (++fired > TIMERS_PER_RUN_MAX) violations.add(`runaway: more than ${TIMERS_PER_RUN_MAX} timers fired`);
      await settle();
      checker.afterStep();
      if (violations.failed) return false;
    }
    time.advanceTo(target);
    return true;
  };

  for (const n of ref.cluster.nodes) ref.cluster.start(n.id);
  const stepRng = rng.fork('steps');
  let stepsRun = 0;
  let nextVerify = time.elapsed() + VERIFY_EVERY_MS;
  for (; stepsRun < config.steps && !violations.failed; stepsRun++) {
    workload.step();
    await runFor(stepRng.int(1, config.stepMsMax));
    if (time.elapsed() >= nextVerify && !violations.failed) {
      ledger.verifyAll();
      checker.checkReplicasAgree('replicas');
      nextVerify = time.elapsed() + VERIFY_EVERY_MS;
    }
  }

  let convergedMs: number | undefined;
  if (!violations.failed) {
    trace.event('liveness', 'faults stop; healing everything');
    net.faults = { ...config.net, lossRate: 0, dupRate: 0 };
    workload.faults.healAll();
    const start = time.elapsed();
    let reason = unmet(ref.cluster, checker, workload);
    while (reason !== undefined && time.elapsed() - start < LIVENESS_BOUND_MS && !violations.failed) {
      workload.faults.healAll();
      await runFor(LIVENESS_POLL_MS);
      const now = unmet(ref.cluster, checker, workload);
      if (now !== reason && now !== undefined) trace.event('liveness', `waiting: ${now}`);
      reason = now;
    }
    if (reason !== undefined && !violations.failed) violations.add(`liveness: not converged ${LIVENESS_BOUND_MS} ms after the faults stopped: ${reason}`);
    if (!violations.failed) {
      convergedMs = time.elapsed() - start;
      trace.event('liveness', `converged in ${convergedMs} ms`);
      // Quiescent: every replica in its ISR, holding its leader's whole log.
      ledger.verifyAll();
      checker.checkReplicasAgree('converged', true);
    }
    if (!violations.failed) {
      let failed: string[] | undefined;
      void workload.probe().then((f) => (failed = f));
      const probeStart = time.elapsed();
      while (failed === undefined && time.elapsed() - probeStart < PROBE_BOUND_MS && !violations.failed) await runFor(LIVENESS_POLL_MS);
      if (failed === undefined) violations.add(`liveness: probe records not settled within ${PROBE_BOUND_MS} ms`);
      else if (failed.length > 0) violations.add(`liveness: probe records of ${failed.join(', ')} failed`);
    }
  }
  if (!violations.failed) ledger.verifyAll();
  if (!violations.failed) checker.checkReplicasAgree('at the end');
  if (!violations.failed) for (const problem of ref.cluster.metrics.check(ledger.acknowledgedByTopic())) violations.add(problem);
  workload.stop();
  for (const n of ref.cluster.nodes) ref.cluster.crash(n.id, false);

  const stats: Record<string, number> = {
    timers: fired,
    terms: checker.maxTerm,
    metadataEntries: checker.maxCommitted,
    ...prefixed('net.', net.stats),
    ...prefixed('fault.', workload.faults.counts),
    ...prefixed('load.', workload.stats),
    ...prefixed('reader.', workload.readerStats),
    ...prefixed('sub.', workload.subscribers.stats),
    'epochs.checked': workload.epochs.checked,
    ...prefixed('ledger.', ledger.stats),
    ...prefixed('metrics.', ref.cluster.metrics.stats),
  };
  return {
    config,
    ok: !violations.failed,
    violations: violations.list,
    stepsRun,
    simMs: time.elapsed(),
    wallMs: Math.round(performance.now() - wallStart),
    convergedMs,
    traceTail: trace.lines(),
    digest: trace.digest,
    stats,
  };
}

function prefixed(prefix: string, values: Readonly<Record<string, number>>): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [`${prefix}${k}`, v]));
}
