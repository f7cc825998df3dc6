/**
 * What producer access modes cost (issue 12), on three node processes over a 3-server NATS
 * cluster, a topic of P partitions (RF 3, min.insync.replicas 2, fsync):
 *   - attach: `createProducer` per mode, from the call until it may send (Shared: one controller
 *     round trip; Exclusive: a metadata commit plus a committed fence in every partition);
 *   - takeover: an ExclusiveWithFencing producer while another holds the topic, and how long until
 *     the old one's next send is refused PRODUCER_FENCED;
 *   - hand-over: a WaitForExclusive producer waiting, from the holder's close() to its grant;
 *   - throughput: N records of B bytes through a Shared and through an Exclusive producer,
 *     interleaved, to show that the epoch check costs the write path nothing measurable.
 * Medians of R interleaved rounds, side by side in one run.
 *
 *   npm run bench:producer-access -- [--rounds 5] [--partitions 16] [--records 20000] [--record-bytes 1024]
 */
import { parseArgs } from 'node:util';
import { codecs, TidemarkError, type Producer } from '../src/index.js';
import { describeEnvironment, environment } from './environment.js';
import { median, table } from './harness.js';
import { startNatsCluster } from './nats-cluster.js';
import { runMain, type Scope } from './scope.js';
import { startTidemarkCluster } from './tidemark-cluster.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    partitions: { type: 'string', default: '16' },
    records: { type: 'string', default: '20000' },
    'record-bytes': { type: 'string', default: '1024' },
  },
});
const ROUNDS = Number(values.rounds);
const PARTITIONS = Number(values.partitions);
const RECORDS = Number(values.records);
const RECORD_BYTES = Number(values['record-bytes']);

const ms = (t0: number) => performance.now() - t0;

async function throughput(producer: Producer<Uint8Array>): Promise<number> {
  const payload = new Uint8Array(RECORD_BYTES).fill(7);
  const t0 = performance.now();
  const window: Promise<unknown>[] = [];
  for (let i = 0; i < RECORDS; i++) {
    window.push(producer.send({ value: payload }));
    if (window.length >= 2_000) await Promise.all(window.splice(0));
  }
  await Promise.all(window);
  return RECORDS / (ms(t0) / 1000);
}

runMain(async (root: Scope) => {
  const began = performance.now();
  const nats = await startNatsCluster({ size: 3 });
  root.defer(() => nats.stop());
  const tm = await startTidemarkCluster(root, { natsUrls: nats.servers.map((s) => s.url) });
  const client = tm.clients[0]!;
  const topic = 'access-bench';
  await client.admin().createTopic({ name: topic, partitions: PARTITIONS, replicationFactor: 3, config: { 'min.insync.replicas': '2', 'flush.mode': 'fsync' } });
  const bytes = codecs.bytes();
  // A new controller grants no Exclusive claim for one producer session timeout: the first
  // createProducer waits that out (the SDK retries BUSY); it is not measured.
  await (await client.createProducer({ topic, codec: bytes, accessMode: 'Exclusive', timeoutMs: 60_000 })).close();

  const samples: Record<string, number[]> = {};
  const note = (k: string, v: number) => (samples[k] ??= []).push(v);
  for (let round = 0; round < ROUNDS; round++) {
    let t0 = performance.now();
    const shared = await client.createProducer({ topic, codec: bytes });
    note('attach Shared (ms)', ms(t0));
    note('records/s Shared', await throughput(shared));
    await shared.close();

    t0 = performance.now();
    const holder = await client.createProducer({ topic, codec: bytes, accessMode: 'Exclusive', producerName: 'holder' });
    note(`attach Exclusive, fences ${PARTITIONS} partitions (ms)`, ms(t0));
    note('records/s Exclusive', await throughput(holder));

    t0 = performance.now();
    const fencer = await tm.clients[1]!.createProducer({ topic, codec: bytes, accessMode: 'ExclusiveWithFencing', producerName: 'fencer' });
    note('takeover ExclusiveWithFencing (ms)', ms(t0));
    t0 = performance.now();
    const refused = await holder.send({ value: new Uint8Array(8) }).then(
      () => 'written',
      (e: unknown) => (e instanceof TidemarkError ? e.code : String(e)),
    );
    if (refused !== 'PRODUCER_FENCED') throw new Error(`the fenced producer's send ended ${refused}`);
    note("fenced producer's next send refused (ms)", ms(t0));
    await holder.close();

    const waiting = tm.clients[2]!.createProducer({ topic, codec: bytes, accessMode: 'WaitForExclusive', producerName: 'waiter', timeoutMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    t0 = performance.now();
    await fencer.close();
    const waiter = await waiting;
    note('hand-over WaitForExclusive after close (ms)', ms(t0));
    await waiter.close();
  }
  const rows = Object.entries(samples).map(([what, v]) => ({ what, median: median(v).toFixed(v[0]! > 1000 ? 0 : 1), min: Math.min(...v).toFixed(1), max: Math.max(...v).toFixed(1) }));
  const ratio = median(samples['records/s Exclusive']!) / median(samples['records/s Shared']!);
  process.stdout.write(
    `producer access modes: ${ROUNDS} rounds, ${PARTITIONS} partitions RF 3 fsync, ${RECORDS} x ${RECORD_BYTES} B per throughput run\n` +
      `${table(rows)}\nExclusive / Shared records/s: ${ratio.toFixed(2)}\n` +
      `${describeEnvironment(environment())}\nwall time ${(ms(began) / 1000).toFixed(0)} s, load at end ${environment().load.join(' ')}\n`,
  );
});
