/**
 * Issue 10: a topic whose creation does not fit one controller Raft entry is committed as a
 * metadata transaction of several entries, followed by every broker, and works end to end. Real
 * `tidemark node start` processes on a real nats-server; the nodes' entries are bounded by
 * `--raft-append-bytes-max` so that a topic of BIG_PARTITIONS (RF 3) needs several entries here,
 * as 10,000 partitions do with the default 512 KiB (docs/quorum.md, "Metadata transactions").
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { codecs } from '../src/client/codecs.js';
import { pollUntil } from './helpers/behaviour-cluster.js';
import { behaviourFixture } from './helpers/behaviour-fixture.js';
import { soleLeader, waitForCluster } from './helpers/cluster.js';

const CLUSTER = 'big';
const VOTERS = [1, 2, 3];
/** Entry bound of the nodes, bytes: 600 partition records of RF 3 (~130 bytes each) need ~5 entries. */
const APPEND_BYTES_MAX = 16 * 1024;
const BIG_PARTITIONS = 600;
const LOG_DIR = join(tmpdir(), `tidemark-big-topic-${process.pid}`);

const fx = behaviourFixture(test, {
  cluster: CLUSTER,
  nodes: VOTERS.map((id) => ({ id, extraArgs: ['--raft-append-bytes-max', String(APPEND_BYTES_MAX)] })),
  voters: VOTERS,
  logDir: LOG_DIR,
  client: { requestTimeoutMs: 5_000, retry: { attemptsMax: 200, backoffMsInitial: 50, backoffMsMax: 500, totalMsMax: 40_000 } },
});

test.serial('a topic larger than one Raft entry is created as a transaction; its first and last partitions take and serve records', async (t) => {
  t.timeout(90_000);
  await waitForCluster(fx.client.admin(), 'one controller, three brokers', (c) => soleLeader(c) !== undefined && c.brokers.filter((b) => !b.fenced).length === 3, 15_000);
  // describeCluster's offset is the highest a broker's status reply carried; a busy broker may answer
  // after the status wait (then it is -1), so read it until some broker has answered.
  const metadataOffset = async (atLeast: number) =>
    (await pollUntil('a broker reports its metadata offset', () => fx.client.admin().describeCluster(), (c) => c.metadataOffset >= atLeast, 15_000)).value.metadataOffset;
  const before = await metadataOffset(0);
  const started = performance.now();
  const created = await fx.client.admin().createTopic({ name: 'wide', partitions: BIG_PARTITIONS, replicationFactor: 3, config: {} });
  // Newer than `before`: a broker busy with the new partitions may still answer status with the old
  // offset (CI under load saw 7 -> 7); it applies a transaction whole, so its first newer offset is past it.
  const after = await metadataOffset(before + 1);
  t.log(`created ${BIG_PARTITIONS} partitions (RF 3) in ${Math.round(performance.now() - started)} ms, metadata offset ${before} -> ${after}`);
  t.is(created.partitions.length, BIG_PARTITIONS);
  t.true(after - before >= 3, 'the creation took several entries (a transaction)');

  const producer = fx.client.producer<string>({ codec: codecs.string(), topic: 'wide', acks: 'all', lingerMs: 1 });
  t.teardown(() => producer.close());
  const last = BIG_PARTITIONS - 1;
  for (const partition of [0, last]) {
    await Promise.all(Array.from({ length: 5 }, (_, i) => producer.send({ value: `p${partition}-${i}`, partition })));
  }
  for (const partition of [0, last]) {
    const reader = fx.client.reader({ topic: 'wide', partition, from: { offset: 0 }, codec: codecs.string(), maxWaitMs: 200 });
    const timer = setTimeout(() => void reader.close(), 20_000);
    const values: (string | null)[] = [];
    try {
      for await (const r of reader) {
        values.push(r.value);
        if (values.length === 5) break;
      }
    } finally {
      clearTimeout(timer);
      await reader.close();
    }
    t.deepEqual(values, Array.from({ length: 5 }, (_, i) => `p${partition}-${i}`));
  }
  t.log(`created, produced and read back in ${Math.round(performance.now() - started)} ms`);
});
