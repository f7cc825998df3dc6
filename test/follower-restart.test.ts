/**
 * A follower that was down while retention on the leader deleted past its log end comes back,
 * restarts its log at the leader's log start (Kafka's truncateFullyAndStartAt) instead of retrying
 * OFFSET_OUT_OF_RANGE forever, rejoins the ISR, and then holds the leader's batches. Real
 * `tidemark node start` processes on a real nats-server, with small retention.bytes and retention
 * checked every 200 ms (`--retention-check-interval-ms`).
 *
 * Nothing sleeps blindly: waits poll describeTopic with deadlines or await process exits.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { PartitionDescription } from '../src/client/admin.js';
import { codecs } from '../src/client/codecs.js';
import { pollUntil } from './helpers/behaviour-cluster.js';
import { behaviourFixture } from './helpers/behaviour-fixture.js';
import { soleLeader, waitForCluster } from './helpers/cluster.js';

const CLUSTER = 'frs';
const VOTERS = [1, 2, 3];
const RETENTION_CHECK_MS = 200;
/** The topic's retention.bytes: far below what the test writes while the follower is down. */
const RETENTION_BYTES = 64 * 1024;
const LOG_DIR = join(tmpdir(), `tidemark-follower-restart-${process.pid}`);

const fx = behaviourFixture(test, {
  cluster: CLUSTER,
  nodes: VOTERS.map((id) => ({ id, extraArgs: ['--retention-check-interval-ms', String(RETENTION_CHECK_MS)] })),
  voters: VOTERS,
  logDir: LOG_DIR,
  client: { requestTimeoutMs: 2_000, retry: { attemptsMax: 200, backoffMsInitial: 50, backoffMsMax: 500, totalMsMax: 20_000 } },
});

const ms = (x: number) => `${Math.round(x)} ms`;

async function partition0(topic: string): Promise<PartitionDescription> {
  const p = (await fx.client.admin().describeTopic(topic)).partitions.find((x) => x.partition === 0);
  if (p === undefined) throw new Error(`${topic} has no partition 0`);
  return p;
}

const waitPartition = (topic: string, what: string, done: (p: PartitionDescription) => boolean, timeoutMs: number) =>
  pollUntil(`${topic}/0: ${what}`, () => partition0(topic), done, timeoutMs);

test.serial('a follower down while retention deleted past its log end restarts its log at the leader\'s log start and rejoins the ISR', async (t) => {
  t.timeout(40_000);
  const started = performance.now();
  const { cluster: view } = await waitForCluster(fx.client.admin(), 'one controller, three brokers', (c) => soleLeader(c) !== undefined && c.brokers.filter((b) => !b.fenced).length === 3, 15_000);
  const topic = 'retained-past-follower';
  const created = await fx.client.admin().createTopic({ name: topic, partitions: 1, replicationFactor: 2, config: { 'retention.bytes': String(RETENTION_BYTES) } });
  t.teardown(() => fx.client.admin().deleteTopic(topic).catch(() => undefined));
  const producer = fx.client.producer<string>({ codec: codecs.string(), topic, acks: 'all', lingerMs: 2, batchBytesMax: 8 * 1024 });
  t.teardown(() => producer.close());

  // A few records both replicas hold, so the follower's log is not empty when it goes.
  await Promise.all(Array.from({ length: 50 }, (_, i) => producer.send({ value: `before-${i}`, partition: 0 })));
  const { value: full } = await waitPartition(topic, 'both replicas in sync at 50', (p) => p.isr.length === 2 && p.replicaStates.every((r) => r.logEndOffset === 50), 10_000);
  const follower = full.replicas.find((id) => id !== full.leader)!;
  t.log(`leader ${full.leader}, follower ${follower}, controller ${view.controllerId}`);

  await fx.cluster.kill(follower, 'SIGKILL');
  await waitPartition(topic, `ISR without ${follower}`, (p) => p.isr.length === 1 && !p.isr.includes(follower), 10_000);

  // ~2 MiB while the follower is down: retention (64 KiB) on the leader deletes far past offset 50.
  const N = 2_000;
  const value = 'x'.repeat(1_000);
  await Promise.all(Array.from({ length: N }, (_, i) => producer.send({ value: `${i}-${value}`, partition: 0 })));
  const end = 50 + N;
  const { value: retained } = await waitPartition(topic, 'leader log start past the follower\'s end', (p) => p.logEndOffset === end && p.logStartOffset > 50, 10_000);
  t.log(`leader log [${retained.logStartOffset}, ${end}) after retention; follower's log ends at 50`);

  const restartedAt = performance.now();
  await fx.cluster.startNode(follower);
  const { value: back } = await waitPartition(topic, `${follower} back in the ISR at ${end}`, (p) => p.isr.length === 2 && p.replicaStates.every((r) => r.logEndOffset === end), 20_000);
  t.log(`follower ${follower} back in the ISR [${back.isr}] ${ms(performance.now() - restartedAt)} after its restart`);
  const restarts = fx.cluster.logs(follower, "log ends below the leader's log start; restarting it there");
  t.is(restarts.length, 1, 'the follower restarted its log once');
  t.like(restarts[0], { fetchOffset: 50 });
  t.true((restarts[0]!['leaderLogStartOffset'] as number) >= retained.logStartOffset);

  // Its log, read from its RocksDB after a clean stop: starts at or after the leader's log start
  // when it came back, ends at the leader's end, and holds the leader's batches byte for byte (CRC).
  t.deepEqual(await fx.cluster.kill(follower, 'SIGTERM'), { code: 0, signal: null });
  // (The preferred election may have handed it the leadership meanwhile; its SIGTERM hands it back.)
  const { value: leaderNow } = await waitPartition(topic, 'led by the other replica', (p) => p.leader >= 0 && p.leader !== follower, 10_000);
  const stored = await fx.cluster.storedBatches(follower, created.topicId, 0);
  t.true(stored.logStartOffset >= retained.logStartOffset, `follower log start ${stored.logStartOffset} >= leader's ${retained.logStartOffset}`);
  t.is(stored.logEndOffset, end);
  const from = Math.max(stored.logStartOffset, leaderNow.logStartOffset);
  const leaderLog = await fx.cluster.leaderBatches(leaderNow.leader, topic, 0, from, end);
  t.deepEqual(stored.batches.filter((b) => b.baseOffset >= leaderLog[0]!.baseOffset), leaderLog);
  t.log(`follower log [${stored.logStartOffset}, ${stored.logEndOffset}): ${stored.batches.length} batches, the leader's from ${from}; test took ${ms(performance.now() - started)}`);
});
