/**
 * Controller failover: kill -9 the active controller of a fresh 3-node cluster (processes) and
 * measure, from the kill:
 *   - leader seen: the first `tm.<cluster>.status` reply in which a surviving voter is Raft leader
 *     in a higher term (status requests every 10 ms, so this is within ~10 ms of the fact);
 *   - active: the `time` of the new controller's "active controller" log line (its Raft leader
 *     applied its own no-op and the controller actor took over; pino time, ms resolution);
 *   - commit: a raw create-topic request to `tm.<cluster>.admin.create-topic` (retried every
 *     10 ms while nobody answers or the answer is NOT_CONTROLLER) is answered with success, i.e.
 *     the change is committed by the new quorum;
 *   - createTopic: `admin.createTopic()` through the SDK resolves, which also waits until brokers'
 *     metadata shows the topic. Brokers' long-poll metadata fetch pending on the dead controller
 *     only times out 2 s after it was sent (fetch wait 1 s + 1 s), then waits 250 ms: this
 *     column is dominated by that, so the kill comes at a random phase of the 1 s poll.
 *
 *   npm run bench:failover [-- --runs N --nats URL]
 *
 * Each run starts its own cluster (its own `--cluster` prefix and data dirs) on one nats-server
 * (started here unless --nats is given), waits until it is ready and settled, kills the
 * controller, measures, and tears it down. Default timeouts: Raft heartbeat 100 ms, election
 * timeout 300-600 ms, broker heartbeat 250 ms, session timeout 2000 ms.
 */
import { parseArgs } from 'node:util';
import { Tidemark, TidemarkError } from '../src/index.js';
import { createTopicReply, decodeReply, encodeMessage, type CreateTopicRequest } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import { connectNats, type NatsTransport } from '../src/runtime/nats-transport.js';
import { killAllCliProcesses, logLine } from '../test/helpers/cli.js';
import { ProcessCluster, soleLeader, StatusProbe, waitForCluster } from '../test/helpers/cluster.js';
import { startNatsServer } from '../test/helpers/nats-server.js';
import { describeEnvironment, environment } from './environment.js';
import { Progress } from './progress.js';
import { runMain, type Scope } from './scope.js';
import { bounded, intOption, isMain } from './steps.js';

export interface Run {
  run: number;
  from: number;
  to: number;
  termFrom: number;
  termTo: number;
  leaderSeenMs: number;
  activeMs: number;
  commitMs: number;
  createTopicMs: number;
}

const RETRY_PAUSE_MS = 10;
/** The brokers' metadata fetch long poll (DEFAULT_BROKER_TIMEOUTS.metadataFetchWaitMs). */
const METADATA_LONG_POLL_MS = 1000;
const RUN_DEADLINE_MS = 20_000;

/** Raw create-topic requests until one is answered with success; NO_RESPONDERS / TIMEOUT / NOT_CONTROLLER are retried. */
async function commitProbe(transport: NatsTransport, cluster: string, name: string, deadlineMs: number): Promise<number> {
  const subject = new Subjects(cluster).admin('create-topic', name);
  const request: CreateTopicRequest = { timeoutMs: 1000, name, partitions: 1, replicationFactor: 1, config: {} };
  let lastError: unknown;
  while (performance.now() < deadlineMs) {
    try {
      decodeReply(await transport.request(subject, encodeMessage(request), 1000), createTopicReply);
      return performance.now();
    } catch (error) {
      lastError = error;
      if (!(error instanceof TidemarkError) || !['NO_RESPONDERS', 'TIMEOUT', 'NOT_CONTROLLER'].includes(error.code)) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS));
  }
  throw new Error(`create of ${name} not committed in time: ${String(lastError)}`);
}

async function oneRun(nats: string, run: number): Promise<Run> {
  const name = `failover-${process.pid}-${run}`;
  const cluster = await ProcessCluster.start({ nats, cluster: name, waitFor: 'ready', timeoutMs: 30_000 });
  const client = await Tidemark.connect({
    servers: nats,
    cluster: name,
    requestTimeoutMs: 1000,
    retry: { attemptsMax: 1000, backoffMsInitial: 10, backoffMsMax: 50, totalMsMax: RUN_DEADLINE_MS },
  });
  const raw = await connectNats({ servers: nats, name: 'failover-bench' });
  const probe = await StatusProbe.connect(nats, name, 10);
  try {
    const admin = client.admin();
    const { cluster: start } = await waitForCluster(
      admin,
      'settled',
      (c) => {
        const l = soleLeader(c);
        return l !== undefined && c.voters.length === 3 && c.voters.every((v) => v.term === l.term && v.leaderId === l.id) && c.brokers.length === 3 && c.brokers.every((b) => b.reachable && !b.fenced);
      },
      15_000,
    );
    const old = soleLeader(start)!;
    const survivors = cluster.ids.filter((id) => id !== old.id);
    // Brokers long-poll the controller for metadata (1 s, all in step after a commit); kill at a
    // random phase of that poll, or the SDK column would always measure the same phase.
    await new Promise((resolve) => setTimeout(resolve, Math.random() * METADATA_LONG_POLL_MS));

    const seen = probe.waitFor('a new leader', (s) => s.nodeId !== old.id && s.voter?.role === 'leader' && s.voter.term > old.term, RUN_DEADLINE_MS);
    const killedAtEpoch = Date.now();
    const killedAt = performance.now();
    const exited = cluster.kill(old.id, 'SIGKILL');
    const active = Promise.any(
      survivors.map((id) =>
        cluster.process(id).waitForLine(
          'stderr',
          (line) => {
            const l = logLine(line);
            return l?.msg === 'active controller' && typeof l['time'] === 'number' && l['time'] >= killedAtEpoch;
          },
          RUN_DEADLINE_MS,
        ),
      ),
    );
    await exited;
    const deadline = killedAt + RUN_DEADLINE_MS;
    const [leader, activeLine, committedAt, createdAt] = await Promise.all([
      seen,
      active,
      commitProbe(raw, name, 'raw-after-kill', deadline),
      admin.createTopic({ name: 'sdk-after-kill', partitions: 1 }).then(() => performance.now()),
    ]);
    return {
      run,
      from: old.id,
      to: leader.status.nodeId,
      termFrom: old.term,
      termTo: leader.status.voter!.term,
      leaderSeenMs: leader.atMs - killedAt,
      activeMs: (logLine(activeLine)!['time'] as number) - killedAtEpoch,
      commitMs: committedAt - killedAt,
      createTopicMs: createdAt - killedAt,
    };
  } finally {
    await probe.close();
    await raw.close();
    await client.close();
    await cluster.destroy();
  }
}

export interface FailoverOptions {
  /** Runs, each on a fresh cluster. @default 7 */
  runs: number;
  /** Use this nats-server instead of starting one. */
  nats?: string;
}

export interface FailoverStat {
  label: string;
  key: keyof Run;
  medianMs: number;
  minMs: number;
  maxMs: number;
}

export interface FailoverResult {
  options: FailoverOptions;
  runs: Run[];
  stats: FailoverStat[];
  wallSeconds: number;
}

export function failoverDefaults(): FailoverOptions {
  return { runs: 7 };
}

/** Rough seconds per run: cluster start and settle, the failover, teardown. */
const RUN_PLAN_S = 6;

export function failoverPlanS(o: FailoverOptions): number {
  return 2 + o.runs * RUN_PLAN_S;
}

function stats(values: number[]): { median: number; min: number; max: number } {
  if (values.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN };
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]! };
}

const COLUMNS: Array<[string, keyof Run]> = [
  ['leader seen (status probe)', 'leaderSeenMs'],
  ['active controller (log)', 'activeMs'],
  ['create committed (raw request)', 'commitMs'],
  ['createTopic resolved (SDK)', 'createTopicMs'],
];

/** Runs `o.runs` failovers one after another; a run that fails ends the bench with its error. */
export async function runFailover(parent: Scope, progress: Progress, o: FailoverOptions): Promise<FailoverResult> {
  const began = performance.now();
  const scope = parent.child();
  const results: Run[] = [];
  try {
    scope.defer(() => killAllCliProcesses());
    let nats = o.nats;
    if (nats === undefined) {
      const server = await startNatsServer();
      scope.defer(() => server.stop());
      nats = server.url;
    }
    for (let run = 1; run <= o.runs && !scope.closed; run++) {
      const r = await bounded(`failover run ${run}`, RUN_DEADLINE_MS * 4, () => oneRun(nats, run));
      results.push(r);
      progress.step(
        `failover run ${run}: controller ${r.from} (term ${r.termFrom}) -> ${r.to} (term ${r.termTo}): leader seen ${Math.round(r.leaderSeenMs)} ms, active ${r.activeMs} ms, commit ${Math.round(r.commitMs)} ms, createTopic ${Math.round(r.createTopicMs)} ms`,
        RUN_PLAN_S,
      );
    }
  } finally {
    await scope.close();
  }
  return {
    options: o,
    runs: results,
    stats: COLUMNS.map(([label, key]) => {
      const s = stats(results.map((r) => r[key] as number));
      return { label, key, medianMs: s.median, minMs: s.min, maxMs: s.max };
    }),
    wallSeconds: (performance.now() - began) / 1000,
  };
}

function alignedTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (i === 0 ? '-'.repeat(w) : `${'-'.repeat(w - 1)}:`)).join(' | ')} |`;
  return [line(rows[0]!), rule, ...rows.slice(1).map(line)].join('\n');
}

export function failoverTable(result: FailoverResult): string {
  return alignedTable([
    ['ms after kill -9', 'median', 'min', 'max'],
    ...result.stats.map((s) => [s.label, String(Math.round(s.medianMs)), String(Math.round(s.minMs)), String(Math.round(s.maxMs))]),
  ]);
}

export function parseFailoverArgs(args: string[]): FailoverOptions {
  const { values } = parseArgs({ args, options: { runs: { type: 'string' }, nats: { type: 'string' } } });
  const o: FailoverOptions = { runs: values.runs === undefined ? failoverDefaults().runs : intOption('runs', values.runs, 1, 100) };
  if (values.nats !== undefined) o.nats = values.nats;
  return o;
}

if (isMain(import.meta.url)) {
  runMain(async (root) => {
    const o = parseFailoverArgs(process.argv.slice(2));
    const progress = new Progress();
    progress.plan(failoverPlanS(o));
    process.stdout.write(`failover bench: ${o.runs} runs, 3 combined nodes (processes), ${describeEnvironment(environment())}\n`);
    const result = await runFailover(root, progress, o);
    process.stdout.write(`\n${failoverTable(result)}\n`);
    process.stdout.write(
      `\nper run (ms): ${result.runs.map((r) => `${Math.round(r.leaderSeenMs)}/${r.activeMs}/${Math.round(r.commitMs)}/${Math.round(r.createTopicMs)}`).join('  ')}\n`,
    );
  });
}
