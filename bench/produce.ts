/**
 * Produce benchmark: one Tidemark node (its own process) on a real nats-server, 1 KiB records,
 * acks=1 and acks=all, interleaved rounds so machine noise hits both alike.
 *   throughput: as fast as the producer's in-flight window allows -> records/s, MB/s (median of rounds)
 *   latency:    a fixed offered load below saturation -> p50 / p99 of send() -> acknowledgement
 * Usage: npm run bench:produce [-- --records N --rounds R --rate RECORDS_PER_S]
 */
import { parseArgs } from 'node:util';
import { Tidemark } from '../src/client/client.js';
import { codecs } from '../src/client/codecs.js';
import type { Acks } from '../src/client/producer.js';
import { median, percentile, startNatsServer, startNodeProcess, table } from './harness.js';

const { values } = parseArgs({
  options: {
    records: { type: 'string', default: '200000' },
    rounds: { type: 'string', default: '3' },
    rate: { type: 'string', default: '20000' },
    'latency-seconds': { type: 'string', default: '5' },
    partitions: { type: 'string', default: '3' },
  },
});
const RECORDS = Number(values.records);
const ROUNDS = Number(values.rounds);
const RATE = Number(values.rate);
const LATENCY_S = Number(values['latency-seconds']);
const RECORD_BYTES = 1024;
/** Sends outstanding at once in the throughput run (the producer's byte window bounds memory too). */
const OUTSTANDING_MAX = 50_000;

const value = new Uint8Array(RECORD_BYTES).fill(120);

async function throughput(client: Tidemark, topic: string, acks: Acks): Promise<number> {
  const producer = client.producer({ topic, codec: codecs.bytes(), acks, lingerMs: 5, sendsWaitingMax: OUTSTANDING_MAX });
  const pending: Promise<unknown>[] = [];
  const start = performance.now();
  for (let i = 0; i < RECORDS; i++) {
    pending.push(producer.send({ value }));
    if (pending.length >= OUTSTANDING_MAX) await Promise.all(pending.splice(0, pending.length / 2));
  }
  await Promise.all(pending);
  await producer.flush();
  const seconds = (performance.now() - start) / 1000;
  await producer.close();
  return RECORDS / seconds;
}

async function latency(client: Tidemark, topic: string, acks: Acks): Promise<number[]> {
  const producer = client.producer({ topic, codec: codecs.bytes(), acks, lingerMs: 1 });
  const samples: number[] = [];
  const pending: Promise<unknown>[] = [];
  const total = RATE * LATENCY_S;
  const start = performance.now();
  const tickMs = 5;
  let sent = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * RATE));
    for (; sent < due; sent++) {
      const t0 = performance.now();
      pending.push(producer.send({ value }).then(() => samples.push(performance.now() - t0)));
    }
    await new Promise((r) => setTimeout(r, tickMs));
  }
  await Promise.all(pending);
  await producer.close();
  return samples.sort((a, b) => a - b);
}

async function main(): Promise<void> {
  const nats = await startNatsServer();
  const node = await startNodeProcess(nats.url);
  const client = await Tidemark.connect({ servers: nats.url });
  try {
    const admin = client.admin();
    const modes: Array<{ name: string; acks: Acks }> = [
      { name: 'acks=1', acks: 1 },
      { name: 'acks=all', acks: 'all' },
    ];
    const rates = new Map<string, number[]>(modes.map((m) => [m.name, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of modes) {
        const topic = `bench-${round}-${mode.acks}`;
        await admin.createTopic({ name: topic, partitions: Number(values.partitions), replicationFactor: 1, config: {} });
        rates.get(mode.name)!.push(await throughput(client, topic, mode.acks));
        await admin.deleteTopic(topic);
      }
    }
    const rows = [];
    for (const mode of modes) {
      const topic = `bench-latency-${mode.acks}`;
      await admin.createTopic({ name: topic, partitions: Number(values.partitions), replicationFactor: 1, config: {} });
      const samples = await latency(client, topic, mode.acks);
      await admin.deleteTopic(topic);
      const rps = median(rates.get(mode.name)!);
      rows.push({
        mode: mode.name,
        'records/s (median)': Math.round(rps),
        'MB/s': ((rps * RECORD_BYTES) / 1e6).toFixed(1),
        rounds: rates.get(mode.name)!.map((r) => Math.round(r)).join(' / '),
        [`p50 ms @ ${RATE}/s`]: percentile(samples, 50).toFixed(2),
        [`p99 ms @ ${RATE}/s`]: percentile(samples, 99).toFixed(2),
      });
    }
    process.stdout.write(
      `Tidemark produce, one node, ${RECORDS} x ${RECORD_BYTES} B records per round, ${ROUNDS} rounds, ${values.partitions} partitions\n${table(rows)}\n`,
    );
  } finally {
    await client.close();
    await node.stop();
    await nats.stop();
  }
}

await main();
