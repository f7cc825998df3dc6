/**
 * Chaos with real processes: a 3-node cluster (combined nodes) on a real nats-server under a keyed
 * acks=all load, while nodes are killed (-9), paused (SIGSTOP/SIGCONT) and stopped (SIGTERM) and
 * restarted at random, from a seed. Afterwards, from the outside: every acknowledged record is at
 * the partition and offset its acknowledgement named, and each key's records are in send order.
 *
 *   npm run chaos -- [--seed S] [--seconds N] [--partitions P] [--rf R]   (R defaults to min(3, nodes);
 *   with R >= 2 the topic has min.insync.replicas=2)
 *
 * Prints a summary (with the check's wall time) and exits 1 if any acknowledged record is missing or
 * out of order. The check (tools/chaos-check.ts) keeps 4 bytes per acknowledged record and streams
 * the read-back, so a long run's check stays linear in time and bounded in memory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { NODE_PROCESS_FLAGS } from '../src/cli/node-flags.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { codecs, Tidemark } from '../src/index.js';
import { startNatsServer } from '../test/helpers/nats-server.js';
import { AckCheck, recordValue, type CheckResult } from './chaos-check.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    seconds: { type: 'string', default: '60' },
    partitions: { type: 'string', default: '6' },
    nodes: { type: 'string', default: '3' },
    rf: { type: 'string' },
  },
});
const SEED = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const SECONDS = Number(values.seconds);
const NODES = Number(values.nodes);
const RF = values.rf === undefined ? Math.min(3, NODES) : Number(values.rf);
const KEYS = 32;
/** The read-back gives up on a partition after this long without a record, ms. */
const READ_STALL_MS_MAX = 30_000;
/** Sends not yet settled, upper bound: the load's memory bound. */
const OUTSTANDING_MAX = 2000;
const BIN = fileURLToPath(new URL('../../bin/tidemark.js', import.meta.url));

/** mulberry32: a small seeded PRNG, so a run's faults replay from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Node {
  id: number;
  dataDir: string;
  child: ChildProcess | undefined;
}

async function main(): Promise<number> {
  const random = prng(SEED);
  process.stdout.write(`chaos: seed ${SEED}, ${SECONDS} s, ${NODES} nodes\n`);
  const nats = await startNatsServer();
  const base = await mkdtemp(join(tmpdir(), 'tm-chaos-'));
  const ids = Array.from({ length: NODES }, (_, i) => i + 1);
  const nodes: Node[] = ids.map((id) => ({ id, dataDir: join(base, `node-${id}`), child: undefined }));
  const start = (n: Node) => {
    n.child = spawn(process.execPath, [...NODE_PROCESS_FLAGS, BIN, 'node', 'start', '--id', String(n.id), '--data-dir', n.dataDir, '--controllers', ids.join(','), '--nats', nats.url, '--log-level', 'error'], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  };
  const exited = (n: Node) => new Promise<void>((r) => (n.child === undefined || n.child.exitCode !== null || n.child.signalCode !== null ? r() : n.child.once('exit', () => r())));
  nodes.forEach(start);
  const client = await Tidemark.connect({ servers: nats.url, requestTimeoutMs: 2000, clusterWaitMs: 30_000 });
  const faults: Record<string, number> = { kill: 0, pause: 0, term: 0 };
  let result: CheckResult | undefined;
  try {
    for (const readyBy = Date.now() + 60_000; ; ) {
      const c = await client.admin().describeCluster();
      if (c.controllerId >= 0 && c.brokers.filter((b) => !b.fenced).length === NODES) break;
      if (Date.now() > readyBy) throw new Error('the cluster did not become ready within 60 s');
    }
    await client.admin().createTopic({
      name: 'chaos',
      partitions: Number(values.partitions),
      replicationFactor: RF,
      config: RF >= 2 ? { 'min.insync.replicas': '2' } : {},
    });
    const producer = client.producer<string>({ topic: 'chaos', codec: codecs.string(), acks: 'all', lingerMs: 2, deliveryTimeoutMs: 60_000 });
    const check = new AckCheck(KEYS);
    const pending = new Set<Promise<unknown>>();
    let failed = 0;
    let sending = true;
    const seqs = new Array<number>(KEYS).fill(0);
    const load = (async () => {
      while (sending) {
        if (pending.size >= OUTSTANDING_MAX) {
          await Promise.race(pending);
          continue;
        }
        const key = Math.floor(random() * KEYS);
        const seq = seqs[key]!++;
        const p: Promise<unknown> = producer.send({ key: `k${key}`, value: recordValue(key, seq) }).then(
          (m) => check.ack(key, seq, m.partition, m.offset),
          () => void failed++,
        );
        pending.add(p);
        void p.finally(() => pending.delete(p));
        if (pending.size % 64 === 0) await new Promise((r) => setImmediate(r));
      }
    })();

    const until = Date.now() + SECONDS * 1000;
    while (Date.now() < until) {
      await sleep(500 + random() * 2000);
      const n = nodes[Math.floor(random() * NODES)]!;
      const kind = ['kill', 'pause', 'term'][Math.floor(random() * 3)]!;
      faults[kind]!++;
      process.stdout.write(`  t+${Math.round((SECONDS * 1000 - (until - Date.now())) / 1000)}s ${kind} node ${n.id}\n`);
      if (kind === 'pause') {
        n.child!.kill('SIGSTOP');
        await sleep(500 + random() * 3000);
        n.child!.kill('SIGCONT');
      } else {
        n.child!.kill(kind === 'kill' ? 'SIGKILL' : 'SIGTERM');
        await exited(n);
        await sleep(200 + random() * 1500);
        start(n);
      }
    }
    sending = false;
    await load;
    await Promise.all(pending);
    await producer.close();

    // Read each partition back from the start, one fetch at a time, up to its last acknowledged offset
    // (acknowledgements beyond the high watermark are lost), and compare as the records stream past.
    const checkStartMs = performance.now();
    const topic = await client.admin().describeTopic('chaos');
    for (const p of topic.partitions) {
      const until = Math.min(p.highWatermark, check.readUntil(p.partition));
      if (until <= 0) continue;
      const reader = client.reader({ topic: 'chaos', partition: p.partition, from: 'earliest', codec: codecs.string(), maxWaitMs: 100 });
      const records = reader[Symbol.asyncIterator]();
      // A log shorter than its reported HW would stall the reader for ever: what is not read back
      // within READ_STALL_MS_MAX of the last record counts as lost.
      for (;;) {
        let timer: NodeJS.Timeout | undefined;
        const stalled = new Promise<'stalled'>((r) => (timer = setTimeout(() => r('stalled'), READ_STALL_MS_MAX)));
        const next = await Promise.race([records.next(), stalled]).finally(() => clearTimeout(timer));
        if (next === 'stalled') {
          process.stdout.write(`  partition ${p.partition}: no record for ${READ_STALL_MS_MAX} ms before offset ${until}; the rest counts as lost\n`);
          break;
        }
        if (next.done === true) break;
        check.readBack(p.partition, next.value.offset, next.value.value);
        if (next.value.offset + 1 >= until) break;
      }
      await reader.close();
    }
    result = check.finish();
    const checkMs = Math.round(performance.now() - checkStartMs);
    for (const problem of result.problems) process.stdout.write(`  ${JSON.stringify(problem)}\n`);
    process.stdout.write(
      `chaos summary: seed ${SEED}; RF ${RF}; records acknowledged ${result.acknowledged}, failed ${failed}; faults ${JSON.stringify(faults)}; ` +
        `records lost ${result.lost}; out of order ${result.outOfOrder}; check ${checkMs} ms\n`,
    );
  } finally {
    await client.close();
    for (const n of nodes) {
      n.child?.kill('SIGCONT');
      n.child?.kill('SIGKILL');
    }
    await Promise.all(nodes.map(exited));
    await nats.stop();
    await rm(base, { recursive: true, force: true });
  }
  return result !== undefined && result.lost === 0 && result.outOfOrder === 0 ? 0 : 1;
}

process.exitCode = await main();
