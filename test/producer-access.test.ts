/**
 * Producer access modes with real processes (issue 12, "Done when"): three node processes on a
 * real nats-server, topics of 3 partitions with replication factor 3, and producers as SDK
 * clients in this process and as `tidemark produce` processes reading stdin.
 *   - Exclusive refuses a second producer (a CLI process exits 1 naming the code);
 *   - ExclusiveWithFencing takes over from a `tidemark produce --access-mode exclusive` process:
 *     the old one's next send fails (it exits 1 with PRODUCER_FENCED, the lines after it are not
 *     written) and in every partition no record of the old one lies after the new one's first;
 *   - WaitForExclusive proceeds as soon as the holder closes, and after the holder (a process) is
 *     killed -9, once its claim times out;
 *   - a paused (SIGSTOP) exclusive producer process replaced meanwhile is fenced when it wakes;
 *   - a fenced producer cannot write through a new partition leader after a leader failover (a
 *     produce request at the old epoch sent straight to the new leader is refused).
 * Every wait is bounded and awaits an event or polls with a deadline.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { codecs, Tidemark, TidemarkError, type Producer } from '../src/index.js';
import { encodeBatch, NO_PRODUCER_SEQUENCE } from '../src/protocol/batch.js';
import { produceResponse, type ProduceRequest } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import { Rpc } from '../src/client/rpc.js';
import { killAllCliProcesses, runCli, TIDEMARK_BIN } from './helpers/cli.js';
import { waitForCluster } from './helpers/cluster.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { allInSync, ReplicationCluster, waitForTopic } from './helpers/replication-cluster.js';

const IDS = [1, 2, 3] as const;
const CLUSTER = 'pa';
const PARTITIONS = 3;
/** The cluster's producer session timeout (node flag), ms: a silent producer loses its claim after it. */
const SESSION_TIMEOUT_MS = 2_000;

let nats: NatsServer;
let cluster: ReplicationCluster;
let client: Tidemark;

test.before(async () => {
  nats = await startNatsServer();
  cluster = await ReplicationCluster.start(nats.url, CLUSTER, IDS, undefined, ['--producer-session-timeout-ms', String(SESSION_TIMEOUT_MS)]);
  client = await Tidemark.connect({ servers: nats.url, cluster: CLUSTER });
  await waitForCluster(client.admin(), 'three brokers unfenced', (c) => c.controllerId >= 0 && c.brokers.length === IDS.length && c.brokers.every((b) => b.reachable && !b.fenced), 30_000);
  // A new controller grants no Exclusive claim for one session timeout (it waits for producers to report).
  await new Promise((resolve) => setTimeout(resolve, SESSION_TIMEOUT_MS));
});

test.after.always(async () => {
  await killAllCliProcesses();
  await client?.close();
  await cluster?.destroy(false);
  await nats?.stop();
});

async function createTopic(name: string): Promise<void> {
  await client.admin().createTopic({ name, partitions: PARTITIONS, replicationFactor: 3, config: { 'min.insync.replicas': '2' } });
  await waitForTopic(client.admin(), name, `${name} in sync`, (d) => allInSync(d, PARTITIONS, IDS), 30_000);
}

/** Every record of the topic, per partition, in offset order (up to each partition's high watermark). */
async function readTopic(topic: string): Promise<Array<Array<{ offset: number; value: string }>>> {
  const d = await client.admin().describeTopic(topic);
  return Promise.all(
    d.partitions.map(async (p) => {
      const out: Array<{ offset: number; value: string }> = [];
      if (p.highWatermark <= 0) return out;
      const reader = client.reader<string>({ topic, partition: p.partition, codec: codecs.string(), from: 'earliest', maxWaitMs: 100 });
      // Fence records (control records: readers skip them) may be the last below the high
      // watermark, so the reader is stopped once its position passes it, not at a record.
      const watch = setInterval(() => {
        if ((reader.position ?? 0) >= p.highWatermark) void reader.close();
      }, 20);
      try {
        for await (const r of reader) {
          out.push({ offset: r.offset, value: r.value! });
          if (r.offset >= p.highWatermark - 1) break;
        }
      } finally {
        clearInterval(watch);
        await reader.close();
      }
      return out;
    }),
  );
}

/** A `tidemark produce` process whose stdin stays open: lines are written as the test goes. */
class ProduceProcess {
  readonly child: ChildProcess;
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [TIDEMARK_BIN, 'produce', ...args, '--nats', nats.url, '--cluster', CLUSTER], { stdio: ['pipe', 'pipe', 'pipe'] });
    createInterface({ input: this.child.stderr! }).on('line', (l) => this.stderr.push(l));
    this.child.stdout!.resume();
    this.child.stdin!.on('error', () => {});
    this.exited = new Promise((resolve) => this.child.once('close', (code) => resolve(code)));
  }

  write(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  end(): void {
    this.child.stdin!.end();
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  async exitCode(timeoutMs: number): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`produce process did not exit within ${timeoutMs} ms; stderr: ${this.stderr.join('\n')}`)), timeoutMs)));
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Resolves when `done()` holds, polling every 50 ms; rejects after `timeoutMs`. */
async function until(what: string, done: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const values = (parts: Array<Array<{ value: string }>>) => parts.flat().map((r) => r.value);

/** In every partition, no record whose value starts with `old` lies after the first that starts with `fresh`. */
function assertOrdered(t: { fail(m: string): void; pass(): void }, parts: Array<Array<{ offset: number; value: string }>>, old: string, fresh: string): void {
  for (const [i, records] of parts.entries()) {
    const firstNew = records.find((r) => r.value.startsWith(fresh))?.offset ?? Number.POSITIVE_INFINITY;
    const lateOld = records.filter((r) => r.value.startsWith(old) && r.offset > firstNew);
    if (lateOld.length > 0) return t.fail(`partition ${i}: ${lateOld.length} records of the fenced producer after the new one's first (offset ${firstNew}): ${lateOld.map((r) => r.offset).join(',')}`);
  }
  t.pass();
}

test.serial('Exclusive: a second producer is refused at once (SDK and CLI); Shared is refused while it holds the topic; describe names it', async (t) => {
  t.timeout(60_000);
  const topic = 'pa-exclusive';
  await createTopic(topic);
  const holder = await client.createProducer({ topic, codec: codecs.string(), accessMode: 'Exclusive', producerName: 'holder' });
  await holder.send({ value: 'h-0' });
  const epoch = holder.epoch!;
  t.true(epoch >= 1, 'an exclusive grant raises the topic producer epoch');

  const second = await t.throwsAsync(client.createProducer({ topic, codec: codecs.string(), accessMode: 'Exclusive', timeoutMs: 10_000 }), { instanceOf: TidemarkError });
  t.true(['PRODUCER_FENCED', 'PRODUCER_BUSY'].includes(second!.code), second!.code);
  const shared = client.producer({ topic, codec: codecs.string() });
  const refused = await t.throwsAsync(shared.send({ value: 'shared' }), { instanceOf: TidemarkError });
  t.is(refused!.code, 'PRODUCER_BUSY');
  await shared.close();

  const cli = new ProduceProcess([topic, '--access-mode', 'exclusive']);
  cli.write('cli-0');
  t.is(await cli.exitCode(20_000), 1);
  t.is(cli.stderr.length, 1, cli.stderr.join('\n'));
  t.regex(cli.stderr[0]!, /PRODUCER_(FENCED|BUSY)/);

  const d = await client.admin().describeTopic(topic);
  t.is(d.producerEpoch, epoch);
  t.deepEqual(d.exclusiveProducer, { name: 'holder', accessMode: 'Exclusive' });
  const described = await runCli(['topic', 'describe', topic, '--nats', nats.url, '--cluster', CLUSTER]);
  t.is(described.code, 0, described.stderr);
  t.regex(described.stdout, new RegExp(`ProducerEpoch: ${epoch}\tExclusiveProducer: holder \\(Exclusive\\)\t`));
  await holder.send({ value: 'h-1' });
  await holder.close();
  t.deepEqual(values(await readTopic(topic)).sort(), ['h-0', 'h-1'], 'only the holder wrote');
  const after = await client.admin().describeTopic(topic);
  t.is(after.exclusiveProducer, undefined, 'closing gives the topic up');
  t.is(after.producerEpoch, epoch, 'a close does not raise the epoch');
});

test.serial('ExclusiveWithFencing takes over from a produce process: its next send fails, the lines after it are not written, no old record lies after the takeover', async (t) => {
  t.timeout(90_000);
  const topic = 'pa-fencing';
  await createTopic(topic);
  const old = new ProduceProcess([topic, '--access-mode', 'exclusive', '--producer-name', 'old', '--linger-ms', '0']);
  for (let i = 0; i < 30; i++) old.write(`old-${i}`);
  await until('the old producer wrote its first 30 records', async () => values(await readTopic(topic)).length === 30, 30_000);

  const fresh = await client.createProducer({ topic, codec: codecs.string(), accessMode: 'ExclusiveWithFencing', producerName: 'fresh' });
  await Promise.all(Array.from({ length: 30 }, (_, i) => fresh.send({ value: `new-${i}`, partition: i % PARTITIONS })));
  for (let i = 30; i < 60; i++) old.write(`old-${i}`);
  t.is(await old.exitCode(30_000), 1, 'the fenced producer exits non-zero');
  t.true(old.stderr.some((l) => /PRODUCER_FENCED/.test(l)), old.stderr.join('\n'));
  t.is(old.stderr.filter((l) => l.startsWith('tidemark:')).length, 1, 'one line names the code');

  const parts = await readTopic(topic);
  const all = values(parts);
  t.is(all.filter((v) => v.startsWith('new-')).length, 30);
  t.false(all.some((v) => v.startsWith('old-') && Number(v.slice(4)) >= 30), 'nothing read after the fencing was written');
  assertOrdered(t, parts, 'old-', 'new-');
  const d = await client.admin().describeTopic(topic);
  t.deepEqual(d.exclusiveProducer, { name: 'fresh', accessMode: 'ExclusiveWithFencing' });
  await fresh.close();
});

test.serial('WaitForExclusive: proceeds as soon as the holder closes, and after a holder process is killed -9 once its claim times out', async (t) => {
  t.timeout(90_000);
  const topic = 'pa-wait';
  await createTopic(topic);
  const holder = await client.createProducer({ topic, codec: codecs.string(), accessMode: 'Exclusive', producerName: 'holder' });
  await holder.send({ value: 'holder-0' });

  // A waiting CLI process: its lines are read only once it holds the topic.
  const waiter = new ProduceProcess([topic, '--access-mode', 'wait-for-exclusive', '--producer-name', 'waiter']);
  waiter.write('waiter-0');
  waiter.end();
  await until('the waiter is queued', async () => (await client.admin().describeTopic(topic)).exclusiveProducer?.name === 'holder', 5_000);
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.false(values(await readTopic(topic)).includes('waiter-0'), 'the waiter writes nothing while the holder holds the topic');
  const closedAt = Date.now();
  await holder.close();
  t.is(await waiter.exitCode(20_000), 0, waiter.stderr.join('\n'));
  const handover = Date.now() - closedAt;
  t.log(`WaitForExclusive after a close: proceeded and finished within ${handover} ms`);
  t.true(handover < SESSION_TIMEOUT_MS, 'a close hands over at once, not after the session timeout');
  t.true(values(await readTopic(topic)).includes('waiter-0'));

  // The holder is a process killed -9: its claim lapses after the session timeout.
  const doomed = new ProduceProcess([topic, '--access-mode', 'exclusive', '--producer-name', 'doomed']);
  doomed.write('doomed-0');
  await until('the doomed producer holds the topic', async () => (await client.admin().describeTopic(topic)).exclusiveProducer?.name === 'doomed', 20_000);
  const next = client.createProducer({ topic, codec: codecs.string(), accessMode: 'WaitForExclusive', producerName: 'next', timeoutMs: 30_000 });
  let granted = false;
  void next.then(() => (granted = true), () => undefined);
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.false(granted, 'waits while the holder lives');
  const killedAt = Date.now();
  doomed.kill('SIGKILL');
  const producer = await next;
  const waited = Date.now() - killedAt;
  t.log(`WaitForExclusive after kill -9 of the holder: granted ${waited} ms later (session timeout ${SESSION_TIMEOUT_MS} ms)`);
  t.true(waited < SESSION_TIMEOUT_MS * 4, `granted within a few session timeouts (${waited} ms)`);
  await producer.send({ value: 'next-0' });
  t.deepEqual((await client.admin().describeTopic(topic)).exclusiveProducer, { name: 'next', accessMode: 'WaitForExclusive' });
  await producer.close();
});

test.serial('a paused (SIGSTOP) exclusive producer process replaced meanwhile is fenced when it wakes: nothing it sends after is written', async (t) => {
  t.timeout(90_000);
  const topic = 'pa-paused';
  await createTopic(topic);
  const paused = new ProduceProcess([topic, '--access-mode', 'exclusive', '--producer-name', 'paused', '--linger-ms', '0']);
  paused.write('paused-0');
  await until('the first record is written', async () => values(await readTopic(topic)).includes('paused-0'), 20_000);
  paused.kill('SIGSTOP');
  // Its claim lapses; a WaitForExclusive producer takes the topic (epoch + 1) and writes.
  const next = await client.createProducer({ topic, codec: codecs.string(), accessMode: 'WaitForExclusive', producerName: 'next', timeoutMs: 30_000 });
  await Promise.all(Array.from({ length: PARTITIONS }, (_, p) => next.send({ value: `next-${p}`, partition: p })));
  paused.write('paused-1');
  paused.write('paused-2');
  paused.kill('SIGCONT');
  t.is(await paused.exitCode(30_000), 1, 'the woken producer exits non-zero');
  t.true(paused.stderr.some((l) => /PRODUCER_FENCED/.test(l)), paused.stderr.join('\n'));
  const parts = await readTopic(topic);
  t.false(values(parts).some((v) => v === 'paused-1' || v === 'paused-2'), 'nothing sent after it woke was written');
  assertOrdered(t, parts, 'paused-', 'next-');
  await next.close();
});

test.serial('a fenced producer cannot write through a new partition leader after a leader failover', async (t) => {
  t.timeout(120_000);
  const topic = 'pa-failover';
  await createTopic(topic);
  const old: Producer<string> = await client.createProducer({ topic, codec: codecs.string(), accessMode: 'Exclusive', producerName: 'old' });
  await old.send({ value: 'old-0', partition: 0 });
  const oldEpoch = old.epoch!;
  const fresh = await client.createProducer({ topic, codec: codecs.string(), accessMode: 'ExclusiveWithFencing', producerName: 'fresh' });
  t.is(fresh.epoch, oldEpoch + 1);
  await fresh.send({ value: 'fresh-0', partition: 0 });

  // Kill -9 the leader of partition 0: another replica, which copied the fence, takes over.
  const before = await client.admin().describeTopic(topic);
  const victim = before.partitions[0]!.leader;
  await cluster.kill(victim, 'SIGKILL');
  let leader = -1;
  let leaderEpoch = -1;
  await until(
    'a new leader of partition 0',
    async () => {
      const p = (await client.admin().describeTopic(topic)).partitions[0]!;
      leader = p.leader;
      leaderEpoch = p.leaderEpoch;
      return p.leader >= 0 && p.leader !== victim;
    },
    30_000,
  );

  // The old producer's batch, as a zombie would send it: straight to the new leader, at its epoch.
  const rpc = new Rpc((client as unknown as { rpc: Rpc }).rpc.transport);
  const request: ProduceRequest = {
    timeoutMs: 5_000,
    acks: -1,
    accessEpoch: oldEpoch,
    partitions: [{ partition: 0, batch: encodeBatch([{ key: null, value: new TextEncoder().encode('zombie'), headers: {}, timestamp: Date.now() }], NO_PRODUCER_SEQUENCE), leaderEpoch }],
  };
  const reply = await rpc.request(new Subjects(CLUSTER).produce(leader, topic), request, produceResponse);
  t.is(reply.partitions[0]!.error?.code, 'PRODUCER_FENCED', JSON.stringify(reply.partitions[0]));
  // And through the SDK: the old producer's next send fails too.
  const failed = await t.throwsAsync(old.send({ value: 'old-1', partition: 0 }), { instanceOf: TidemarkError });
  t.is(failed!.code, 'PRODUCER_FENCED');
  await fresh.send({ value: 'fresh-1', partition: 0 });
  const parts = await readTopic(topic);
  t.false(values(parts).includes('zombie'));
  t.false(values(parts).includes('old-1'));
  assertOrdered(t, parts, 'old-', 'fresh-');
  await old.close();
  await fresh.close();
  await cluster.startNode(victim);
});
