/**
 * Replication's acceptance test, with real node processes on a real nats-server: three combined
 * nodes, a topic of 6 partitions with replication factor 3 and min.insync.replicas=2, keyed acks=all
 * producers at a steady rate and readers following every partition from offset 0, while the
 * leader of one partition after another is killed -9 and restarted on its data dir (first test: 10
 * rounds; even rounds wait until another node leads the partition and acknowledges records before
 * the restart, odd ones restart at once), or paused with SIGSTOP past the broker session timeout
 * until another node leads the partition and acknowledges records for it, then resumed with SIGCONT
 * (second test: 3 rounds). Rounds rotate over the nodes; each waits (bounded) until the node is back
 * in every ISR. The longest time each partition went without an acknowledgement after each fault is
 * logged.
 *
 * Afterwards, with every node stopped cleanly (SIGTERM), each node's RocksDB is opened directly:
 *   - the three replicas of every partition are identical up to the high watermark (sha256 over the
 *     stored batches, whose headers carry the stamped leader epoch);
 *   - every acknowledged record is in that log at exactly the (partition, offset) its
 *     acknowledgement named, with its key and value;
 *   - each producer's acknowledged records of one key have increasing offsets in send order;
 *   - what readers saw at each offset is what the final log has there, with no gap and no offset
 *     seen twice with different records.
 * Records written twice (a retry across a leader change whose first attempt did land) are allowed,
 * counted and logged.
 *
 * Every wait is bounded and awaits an event or polls with a deadline. On failure the nodes' logs
 * (every process each node ran) are written to a directory named in the test log, and the data dirs
 * are kept.
 */
import test, { type ExecutionContext } from 'ava';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tidemark, type Admin, type TopicDescription } from '../src/index.js';
import { killAllCliProcesses } from './helpers/cli.js';
import { waitForCluster } from './helpers/cluster.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { ReplicationCluster, waitForTopic, allInSync, roundTarget, readReplicas, type StoredReplica } from './helpers/replication-cluster.js';
import { verify, Workload, type FinalLog } from './helpers/replication-workload.js';

const IDS = [1, 2, 3] as const;
const TOPIC = 'orders';
const PARTITIONS = 6;
const SESSION_TIMEOUT_MS = 2000;

let nats: NatsServer;

test.before(async () => {
  nats = await startNatsServer();
});

test.after.always(async () => {
  await killAllCliProcesses();
  await nats?.stop();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const inSync = (d: TopicDescription) => allInSync(d, PARTITIONS, IDS);

const target = (d: TopicDescription, round: number) => roundTarget(d, round, IDS);

interface Scenario {
  name: string;
  rounds: number;
  /** One round against `victim`, the leader of `partition`; returns a line for the log. */
  round(ctx: { t: ExecutionContext; cluster: ReplicationCluster; admin: Admin; w: Workload; round: number; partition: number; victim: number }): Promise<string>;
}

async function run(t: ExecutionContext, scenario: Scenario): Promise<void> {
  const began = Date.now();
  const name = `repl-${scenario.name}`;
  let cluster: ReplicationCluster | undefined;
  let adminClient: Tidemark | undefined;
  let w: Workload | undefined;
  let ok = false;
  const timeline: string[] = [];
  const note = (line: string) => {
    timeline.push(`${new Date().toISOString()} ${line}`);
    t.log(line);
  };
  try {
    cluster = await ReplicationCluster.start(nats.url, name, IDS);
    adminClient = await Tidemark.connect({
      servers: nats.url,
      cluster: name,
      requestTimeoutMs: 2000,
      retry: { attemptsMax: 1000, backoffMsInitial: 50, backoffMsMax: 500, totalMsMax: 20_000 },
    });
    const admin = adminClient.admin();
    await waitForCluster(admin, 'three brokers unfenced', (c) => c.controllerId >= 0 && c.brokers.length === IDS.length && c.brokers.every((b) => b.reachable && !b.fenced), 20_000);
    const created = await admin.createTopic({ name: TOPIC, partitions: PARTITIONS, replicationFactor: 3, config: { 'min.insync.replicas': '2' } });
    const { d: initial } = await waitForTopic(admin, TOPIC, 'every partition led, ISR of 3', inSync, 20_000);
    note(`cluster up and topic created in ${Date.now() - began} ms; leaders ${initial.partitions.map((p) => p.leader).join(',')}`);

    w = await Workload.start({
      nats: nats.url,
      cluster: name,
      topic: TOPIC,
      partitions: PARTITIONS,
      producers: 2,
      keysPerPartition: 4,
      ratePerProducer: 150,
      outstandingMax: 1500,
      deliveryTimeoutMs: 60_000,
      requestTimeoutMs: 3000,
    });
    const load = w;
    await load.waitUntil('acknowledgements on every partition', () => load.ackedPerPartition.every((n) => n >= 20), 20_000);

    const victims = new Set<number>();
    const faultsAtMs: number[] = [];
    for (let round = 0; round < scenario.rounds; round++) {
      const { d } = await waitForTopic(admin, TOPIC, `round ${round}: describe`, inSync, 20_000);
      const { partition, leader: victim } = target(d, round);
      victims.add(victim);
      faultsAtMs.push(Date.now());
      const line = await scenario.round({ t, cluster, admin, w: load, round, partition, victim });
      note(`round ${round}: partition ${partition} leader ${victim} (epoch ${d.partitions[partition]!.leaderEpoch}): ${line}`);
    }
    t.is(victims.size, IDS.length, `rounds hit nodes ${[...victims].join(',')}`);
    note(`rounds done; nodes hit: ${[...victims].sort().join(',')}`);

    // Stop the load, let the cluster converge, drain the readers.
    const stoppedAtMs = Date.now();
    await load.stopProducing(30_000);
    // Availability: from each fault to the next, the longest time a partition went without an acknowledgement.
    const stalls = faultsAtMs.map((from, round) => {
      const to = faultsAtMs[round + 1] ?? stoppedAtMs;
      const gaps = Array.from({ length: PARTITIONS }, (_, p) => load.longestAckGap(p, from, to));
      const worst = gaps.indexOf(Math.max(...gaps));
      return `round ${round}: ${gaps.map((g) => Math.round(g)).join(',')} ms (worst partition ${worst})`;
    });
    t.log(`longest time without an acknowledgement per partition, from each fault to the next:\n${stalls.join('\n')}`);
    const maxAcked = new Array<number>(PARTITIONS).fill(0);
    for (const a of load.acks) maxAcked[a.partition] = Math.max(maxAcked[a.partition]!, a.offset + 1);
    const { d: final } = await waitForTopic(
      admin,
      TOPIC,
      'every partition fully replicated (ISR of 3, HW = LEO, past every acknowledged offset)',
      (x) => inSync(x) && x.partitions.every((p) => p.highWatermark === p.logEndOffset && p.highWatermark >= maxAcked[p.partition]!),
      30_000,
    );
    const hws = final.partitions.map((p) => p.highWatermark);
    await load.drainReaders(hws, 30_000);
    await load.close();
    await adminClient.close();
    adminClient = undefined;
    const exits = await cluster.stopAll();
    note(`final: leaders ${final.partitions.map((p) => `${p.leader}@${p.leaderEpoch}`).join(',')}; HWs ${hws.join(',')}; stopped: ${[...exits].map(([id, s]) => `${id}=${typeof s === 'string' ? s : (s.code ?? s.signal)}`).join(' ')}`);

    const count = (msg: string) => cluster!.logs((l) => l['msg'] === msg).length;
    note(
      `node logs: ${count('broker session expired; fencing it')} fencings, ${count('followers lag; shrinking the ISR')} ISR shrinks by lag, ` +
        `${count('ISR changed')} ISR changes, ${count('log diverges from the leader; truncating')} divergence truncations, ` +
        `${count('batch boundary differs from the leader; truncating')} batch-boundary truncations`,
    );
    const errors = cluster.logs((l) => (l['level'] as number) >= 50);
    for (const { node, n, line } of errors.slice(0, 10)) t.log(`error logged by node ${node}.${n}: ${JSON.stringify(line).slice(0, 600)}`);

    // The replicas on disk.
    const stored = new Map<number, StoredReplica[]>();
    for (const id of IDS) stored.set(id, await readReplicas(id, cluster.dataDirs.get(id)!, created.topicId, hws));
    const mismatches: string[] = [];
    for (let p = 0; p < PARTITIONS; p++) {
      const reps = IDS.map((id) => stored.get(id)![p]!);
      const sums = new Set(reps.map((r) => r.sha256));
      t.log(
        `partition ${p}: HW ${hws[p]}, ${reps[0]!.batches} batches, epochs ${reps[0]!.epochRuns}; ` +
          reps.map((r) => `node ${r.node} LEO ${r.logEndOffset} sha256 ${r.sha256.slice(0, 16)}`).join(', '),
      );
      for (const r of reps) {
        if (r.hashedEnd !== hws[p]) mismatches.push(`partition ${p} node ${r.node}: its batches below the HW ${hws[p]} end at ${r.hashedEnd} (LEO ${r.logEndOffset})`);
      }
      if (sums.size !== 1) mismatches.push(`partition ${p}: replicas differ below the HW ${hws[p]}: ${firstDifference(reps)}`);
    }

    const leaderLogs: FinalLog[] = final.partitions.map((p) => stored.get(p.leader)![p.partition]!.records);
    const v = verify(load, leaderLogs);
    const dupRecords = v.duplicates.reduce((n, d) => n + d.offsets.length - 1, 0);
    note(
      `${load.sentCount} sent, ${v.acked} acknowledged, ${load.failedCount} failed ${JSON.stringify(Object.fromEntries(load.failures))}; ` +
        `stored ${hws.reduce((a, b) => a + b, 0)} records (${v.unacknowledgedStored} not acknowledged); duplicates: ${v.duplicates.length} records written ${dupRecords} extra times`,
    );
    for (const d of v.duplicates.slice(0, 10)) t.log(`duplicate: ${d.value} at ${d.partition}/${d.offsets.join(',')}`);
    const readers = load.readerReport();
    t.log(`readers: ${readers.map((r) => `p${r.partition} ${r.seen} seen, reopened ${r.reopened} ${JSON.stringify(r.errors)}`).join('; ')}`);

    t.deepEqual(mismatches, [], 'replicas identical up to the HW');
    t.deepEqual(v.misplaced.slice(0, 20), [], `${v.misplaced.length} acknowledged records not at their offset`);
    t.deepEqual(v.disordered.slice(0, 20), [], `${v.disordered.length} order violations`);
    t.deepEqual(v.wrongPartition.slice(0, 20), [], 'keys acknowledged on their partition');
    t.deepEqual(v.readerMismatches.slice(0, 20), [], `${v.readerMismatches.length} reader mismatches`);
    t.deepEqual(v.unknown.slice(0, 20), [], 'no stored record that was never sent');
    t.true(v.acked > 1000, `${v.acked} acknowledged records`);
    if (v.misplaced.length > 0) explainMisplaced(t, cluster, stored, v.misplaced, hws);
    ok =
      victims.size === IDS.length &&
      v.acked > 1000 &&
      [mismatches, v.misplaced, v.disordered, v.wrongPartition, v.readerMismatches, v.unknown].every((list) => list.length === 0);
    note(`done in ${Date.now() - began} ms`);
  } catch (error) {
    note(`error after ${Date.now() - began} ms: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    throw error;
  } finally {
    await w?.close().catch(() => undefined);
    await adminClient?.close().catch(() => undefined);
    if (cluster !== undefined && !ok) {
      const dir = join(tmpdir(), `tm-replication-failover-${scenario.name}-${Date.now()}`);
      await cluster.dumpLogs(dir).catch(() => []);
      t.log(`FAILED: node logs in ${dir}; data dirs kept: ${[...cluster.dataDirs.values()].join(' ')}`);
      t.log(`timeline:\n${timeline.join('\n')}`);
    }
    await cluster?.destroy(!ok);
  }
}

/** The first offset at which the replicas of one partition differ, with what each has there. */
function firstDifference(reps: StoredReplica[]): string {
  const end = Math.max(...reps.map((r) => r.hashedEnd));
  for (let o = 0; o < end; o++) {
    const at = reps.map((r) => r.records.get(o));
    const shown = at.map((x) => (x === undefined ? 'nothing' : `${Buffer.from(x.record.value ?? new Uint8Array()).toString()}@epoch ${x.leaderEpoch}`));
    if (new Set(shown).size > 1) return `offset ${o}: ${reps.map((r, i) => `node ${r.node} has ${shown[i]}`).join(', ')}`;
  }
  return `same records, different batches (epochs: ${reps.map((r) => `node ${r.node}: ${r.epochRuns}`).join(' | ')})`;
}

/** For the first misplaced records: what every replica has around the offset, and the partition's warnings. */
function explainMisplaced(t: ExecutionContext, cluster: ReplicationCluster, stored: Map<number, StoredReplica[]>, misplaced: string[], hws: number[]): void {
  for (const m of misplaced.slice(0, 3)) {
    const at = /at (\d+)\/(\d+)/.exec(m);
    if (at === null) continue;
    const [p, o] = [Number(at[1]), Number(at[2])];
    t.log(`${m} (HW ${hws[p]})`);
    for (const id of IDS) {
      const r = stored.get(id)![p]!;
      const around = [o - 1, o, o + 1].map((x) => {
        const rec = r.records.get(x);
        return `${x}=${rec === undefined ? '-' : `${Buffer.from(rec.record.value ?? new Uint8Array()).toString()}@e${rec.leaderEpoch}`}`;
      });
      t.log(`  node ${id}: ${around.join(' ')}; epochs ${JSON.stringify(r.epochs)}`);
    }
  }
  const partitions = new Set(misplaced.map((m) => /at (\d+)\//.exec(m)?.[1]).filter((x) => x !== undefined).map(Number));
  const lines = cluster.logs((l) => partitions.has(l['partition'] as number) && ((l['level'] as number) >= 40 || l['msg'] === 'ISR changed'));
  for (const { node, n, line } of lines.slice(-40)) t.log(`  log node ${node}.${n}: ${JSON.stringify(line)}`);
}

test.serial('kill -9 of partition leaders under acks=all load: acknowledged records survive at their offsets, replicas identical', async (t) => {
  t.timeout(170_000);
  await run(t, {
    name: 'kill',
    rounds: 10,
    async round({ cluster, admin, w, round, partition, victim }) {
      const killedAt = Date.now();
      await cluster.kill(victim, 'SIGKILL');
      let failover = 'restarted at once';
      // Even rounds wait for the failover (and acks from the new leader) before the restart; odd
      // ones restart at once, so the new process registers while the old one still leads.
      if (round % 2 === 0) {
        const { d } = await waitForTopic(admin, TOPIC, `partition ${partition} led by another node`, (x) => x.partitions[partition]!.leader >= 0 && x.partitions[partition]!.leader !== victim, 15_000, 50);
        const base = w.ackedPerPartition[partition]!;
        const ackMs = await w.waitUntil(`acks on partition ${partition} from its new leader`, () => w.ackedPerPartition[partition]! >= base + 20, 20_000);
        failover = `led by ${d.partitions[partition]!.leader} (epoch ${d.partitions[partition]!.leaderEpoch}) ${Date.now() - killedAt - ackMs} ms after the kill, acks flowing ${ackMs} ms later`;
      }
      const restartAt = Date.now();
      await cluster.startNode(victim);
      const readyMs = Date.now() - restartAt;
      const { ms } = await waitForTopic(admin, TOPIC, `node ${victim} back in every ISR`, inSync, 30_000);
      return `${failover}; restarted, ready in ${readyMs} ms, in every ISR ${ms} ms later`;
    },
  });
});

test.serial('SIGSTOP of partition leaders past the session timeout, then SIGCONT: acknowledged records survive, replicas identical', async (t) => {
  t.timeout(120_000);
  const STOP_MS_MIN = SESSION_TIMEOUT_MS + 1000;
  await run(t, {
    name: 'stop',
    rounds: 3,
    async round({ cluster, admin, w, partition, victim }) {
      const stoppedAt = Date.now();
      cluster.signal(victim, 'SIGSTOP');
      let moved: string;
      try {
        // Paused for at least STOP_MS_MIN, and until its partition has another leader (bounded).
        const { d } = await waitForTopic(admin, TOPIC, `partition ${partition} led by another node`, (x) => x.partitions[partition]!.leader >= 0 && x.partitions[partition]!.leader !== victim, 20_000, 50);
        moved = `led by ${d.partitions[partition]!.leader} (epoch ${d.partitions[partition]!.leaderEpoch}) ${Date.now() - stoppedAt} ms after SIGSTOP`;
        const left = STOP_MS_MIN - (Date.now() - stoppedAt);
        if (left > 0) await sleep(left);
        const base = w.ackedPerPartition[partition]!;
        await w.waitUntil(`acks on partition ${partition} while its old leader is paused`, () => w.ackedPerPartition[partition]! >= base + 20, 20_000);
      } finally {
        cluster.signal(victim, 'SIGCONT');
      }
      const pausedMs = Date.now() - stoppedAt;
      const { ms } = await waitForTopic(admin, TOPIC, `node ${victim} back in every ISR`, inSync, 30_000);
      return `${moved}; SIGCONT after ${pausedMs} ms, in every ISR ${ms} ms later`;
    },
  });
});
