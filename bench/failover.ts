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
 *   npm run build && node dist/bench/failover.js [--runs N] [--nats URL]
 *
 * Each run starts its own cluster (its own `--cluster` prefix and data dirs) on one nats-server
 * (started here unless --nats is given), waits until it is ready and settled, kills the
 * controller, measures, and tears it down. Default timeouts: Raft heartbeat 100 ms, election
 * timeout 300-600 ms, broker heartbeat 250 ms, session timeout 2000 ms.
 */
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { Tidemark } from '../src/client/client.js';
import { TidemarkError } from '../src/protocol/errors.js';
import { createTopicReply, decodeReply, encodeMessage, type CreateTopicRequest } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import { connectNats, type NatsTransport } from '../src/runtime/nats-transport.js';
import { killAllCliProcesses, logLine } from '../test/helpers/cli.js';
import { ProcessCluster, soleLeader, StatusProbe, waitForCluster } from '../test/helpers/cluster.js';
import { startNatsServer, type NatsServer } from '../test/helpers/nats-server.js';

interface Run {
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
  const subject = new Subjects(cluster).admin('create-topic');
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

function stats(values: number[]): { median: number; min: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]! };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (i === 0 ? '-'.repeat(w) : `${'-'.repeat(w - 1)}:`)).join(' | ')} |`;
  return [line(rows[0]!), rule, ...rows.slice(1).map(line)].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, nats: { type: 'string' } } });
  const runs = values.runs === undefined ? 7 : Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1 || runs > 100) throw new Error(`--runs must be an integer in 1..100, got ${values.runs}`);
  let server: NatsServer | undefined;
  const nats = values.nats ?? (server = await startNatsServer()).url;
  const cpu = cpus();
  process.stdout.write(`failover bench: ${runs} runs, 3 combined nodes (processes), ${cpu.length} cores (${cpu[0]?.model ?? '?'}), node ${process.version}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
  const results: Run[] = [];
  try {
    for (let run = 1; run <= runs; run++) {
      const r = await oneRun(nats, run);
      results.push(r);
      process.stdout.write(
        `run ${run}: controller ${r.from} (term ${r.termFrom}) -> ${r.to} (term ${r.termTo}): leader seen ${Math.round(r.leaderSeenMs)} ms, active ${r.activeMs} ms, commit ${Math.round(r.commitMs)} ms, createTopic ${Math.round(r.createTopicMs)} ms\n`,
      );
    }
  } finally {
    await killAllCliProcesses();
    await server?.stop();
  }
  const columns: Array<[string, keyof Run]> = [
    ['leader seen (status probe)', 'leaderSeenMs'],
    ['active controller (log)', 'activeMs'],
    ['create committed (raw request)', 'commitMs'],
    ['createTopic resolved (SDK)', 'createTopicMs'],
  ];
  const rows = [['ms after kill -9', 'median', 'min', 'max']];
  for (const [label, key] of columns) {
    const s = stats(results.map((r) => r[key] as number));
    rows.push([label, String(Math.round(s.median)), String(Math.round(s.min)), String(Math.round(s.max))]);
  }
  process.stdout.write(`\n${table(rows)}\n`);
  process.stdout.write(`\nper run (ms): ${results.map((r) => `${Math.round(r.leaderSeenMs)}/${r.activeMs}/${Math.round(r.commitMs)}/${Math.round(r.createTopicMs)}`).join('  ')}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
