/**
 * kill -9 of a node in the middle of a keyed produce load: after a restart on the same data dir,
 * every acknowledged record is at the partition and offset its acknowledgement named, and each
 * key's records are in send order. The producer's retries ride through the restart.
 */
import test from 'ava';
import { rm } from 'node:fs/promises';
import { codecs, Tidemark, type RecordMetadata } from '../src/index.js';
import { killAllCliProcesses, startNodeProcess } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';

let nats: NatsServer;

test.before(async () => {
  nats = await startNatsServer();
});

test.after.always(async () => {
  await killAllCliProcesses();
  await nats?.stop();
});

const KEYS = 10;
const ACKED_BEFORE_KILL = 3000;
/** Sends made after the kill, so some are surely in flight across the restart. */
const SENDS_AFTER_KILL = 1000;
/** Upper bound on sends, in case acknowledgements never reach ACKED_BEFORE_KILL. */
const SENDS_MAX = 100_000;

for (const acks of [1, 'all'] as const) {
  test.serial(`acks=${acks}: acknowledged records survive kill -9 mid-load, at their offsets, in key order`, async (t) => {
    const dataDir = await tempDir();
    let node = await startNodeProcess({ nats: nats.url, dataDir });
    const client = await Tidemark.connect({ servers: nats.url });
    try {
      await client.admin().createTopic({ name: 'load', partitions: 3 });
      const producer = client.producer<string>({ topic: 'load', codec: codecs.string(), acks, lingerMs: 2, deliveryTimeoutMs: 30_000 });
      const acked: Array<{ i: number; meta: RecordMetadata }> = [];
      let killed: Promise<unknown> | undefined;
      const sends: Promise<unknown>[] = [];
      let sentAfterKill = 0;
      for (let i = 0; i < SENDS_MAX && sentAfterKill < SENDS_AFTER_KILL; i++) {
        if (killed !== undefined) sentAfterKill++;
        sends.push(
          producer.send({ key: `k${i % KEYS}`, value: String(i) }).then(
            (meta) => {
              acked.push({ i, meta });
              if (acked.length === ACKED_BEFORE_KILL) killed = node.kill('SIGKILL');
            },
            () => undefined, // a send may fail for good; only acknowledged records are promised
          ),
        );
        // Let acknowledgements arrive while sending: the load keeps flowing across the kill.
        if (i % 100 === 99) await new Promise((r) => setImmediate(r));
      }
      t.truthy(killed, 'the node was killed while sends were in flight');
      await killed;
      node = await startNodeProcess({ nats: nats.url, dataDir });
      await Promise.all(sends);
      t.true(acked.length >= ACKED_BEFORE_KILL);

      const stored = new Map<string, string>();
      const description = await client.admin().describeTopic('load');
      for (const p of description.partitions) {
        const reader = client.reader({ topic: 'load', partition: p.partition, from: 'earliest', codec: codecs.string(), maxWaitMs: 0 });
        for await (const r of reader) {
          stored.set(`${p.partition}/${r.offset}`, r.value ?? '');
          if (r.offset + 1 >= p.highWatermark) break;
        }
      }
      const missing = acked.filter(({ i, meta }) => stored.get(`${meta.partition}/${meta.offset}`) !== String(i));
      t.deepEqual(missing.slice(0, 5), [], `${missing.length} acknowledged records not at their offsets`);
      for (let k = 0; k < KEYS; k++) {
        const ofKey = acked.filter(({ i }) => i % KEYS === k).sort((a, b) => a.i - b.i);
        const offsets = ofKey.map(({ meta }) => meta.offset);
        t.true(new Set(ofKey.map(({ meta }) => meta.partition)).size <= 1, `key k${k} stays on one partition`);
        t.true(offsets.every((o, j) => j === 0 || o > offsets[j - 1]!), `key k${k} in send order`);
      }
      t.log(`${acked.length} acknowledged of ${sends.length} sent; ${stored.size} records stored`);
    } finally {
      await client.close();
      await node.kill('SIGTERM');
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}
