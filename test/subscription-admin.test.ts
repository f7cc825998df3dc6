/**
 * describeSubscription / resetSubscription (and their CLI) against a real node and nats-server.
 *
 * NEEDS THE PARTITION-LEADER SIDE (src/actors/subscription/, answering `subjects.subscriptionAdmin`):
 * written with the registry and the admin SDK, before that side existed, so it was not run there.
 * Without it every partition stays unreported and the first wait below times out. Run it after
 * merging: `npx ava dist/test/subscription-admin.test.js`.
 *
 * What it expects of the leader side: a subscription registered in metadata gets a cursor on each
 * partition without any consumer attached (at its initial position: earliest = log start, latest =
 * high watermark at creation), describe reports markDelete / backlog against the high watermark,
 * and reset moves markDelete to the log start, the high watermark, the offset given (clamped to the
 * log), or the first offset whose record timestamp is at or after the time given.
 */
import test, { type ExecutionContext } from 'ava';
import type { Admin, SubscriptionDescription } from '../src/client/admin.js';
import { Tidemark } from '../src/client/client.js';
import { codecs } from '../src/index.js';
import { killAllCliProcesses, runCli, startNodeProcess, type CliProcess } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';
import { rm } from 'node:fs/promises';

const CLUSTER = 'tidemark';
const PARTITIONS = 2;
/** Records per partition. */
const PER_PARTITION = 10;

let nats: NatsServer;
let dataDir: string;
let node: CliProcess;
let client: Tidemark;
let admin: Admin;

test.before(async () => {
  nats = await startNatsServer();
  dataDir = await tempDir('tm-subadmin-');
  node = await startNodeProcess({ nats: nats.url, dataDir });
  client = await Tidemark.connect({ servers: nats.url, cluster: CLUSTER, requestTimeoutMs: 2_000 });
  admin = client.admin();
});

test.after.always(async () => {
  await client?.close();
  await node?.kill('SIGTERM').catch(() => {});
  await killAllCliProcesses();
  await nats?.stop();
  if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
});

/** Describes until `done` holds (bounded): leaders learn of a subscription from metadata a moment after it commits. */
async function describeUntil(t: ExecutionContext, topic: string, name: string, what: string, done: (d: SubscriptionDescription) => boolean): Promise<SubscriptionDescription> {
  const deadline = performance.now() + 10_000;
  let last: SubscriptionDescription | undefined;
  while (performance.now() < deadline) {
    last = await admin.describeSubscription(topic, name);
    if (done(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.fail(`${what}: not reached in 10 s; last: ${JSON.stringify(last)}`);
  throw new Error(what);
}

async function produce(topic: string, startMs?: number): Promise<void> {
  const producer = client.producer<string>({ topic, codec: codecs.string(), acks: 'all', lingerMs: 0 });
  for (let p = 0; p < PARTITIONS; p++) {
    for (let i = 0; i < PER_PARTITION; i++) await producer.send({ value: `${p}-${i}`, partition: p, ...(startMs === undefined ? {} : { timestamp: startMs + i }) });
  }
  await producer.close();
}

const positions = (d: SubscriptionDescription) => d.partitions.map((p) => [p.markDelete, p.backlog]);
/**
 * At the end of the log: nothing left, the position past every record. Cursor records (control
 * batches, docs/decisions.md) take offsets after the records, so the position may be past them too.
 */
const atEnd = (d: SubscriptionDescription) => d.partitions.every((p) => p.backlog === 0 && p.markDelete >= PER_PARTITION && p.markDelete <= p.highWatermark);

test.serial('describe: earliest starts at the log start with the whole backlog; latest at the high watermark with none', async (t) => {
  await admin.createTopic({ name: 'sa-describe', partitions: PARTITIONS });
  await produce('sa-describe');
  await admin.createSubscription({ topic: 'sa-describe', name: 'from-start', initialPosition: 'earliest' });
  await admin.createSubscription({ topic: 'sa-describe', name: 'from-now' });
  const early = await describeUntil(t, 'sa-describe', 'from-start', 'every partition reports from-start', (d) => d.backlogComplete);
  t.deepEqual(positions(early), Array.from({ length: PARTITIONS }, () => [0, PER_PARTITION]));
  t.is(early.backlog, PARTITIONS * PER_PARTITION);
  t.deepEqual(
    early.partitions.map((p) => [p.highWatermark >= PER_PARTITION, p.unacked, p.consumers.length]),
    Array.from({ length: PARTITIONS }, () => [true, 0, 0]),
  );
  const late = await describeUntil(t, 'sa-describe', 'from-now', 'every partition reports from-now', (d) => d.backlogComplete);
  t.true(atEnd(late), JSON.stringify(late.partitions));

  const list = await admin.listSubscriptions('sa-describe');
  t.deepEqual(
    list.map((s) => [s.name, s.backlog, s.backlogComplete]),
    [
      ['from-now', 0, true],
      ['from-start', PARTITIONS * PER_PARTITION, true],
    ],
  );
});

test.serial('reset: latest, an offset on every partition, earliest, a time', async (t) => {
  const base = 1_800_000_000_000;
  await admin.createTopic({ name: 'sa-reset', partitions: PARTITIONS });
  await produce('sa-reset', base);
  await admin.createSubscription({ topic: 'sa-reset', name: 'r', initialPosition: 'earliest' });
  await describeUntil(t, 'sa-reset', 'r', 'reported', (d) => d.backlogComplete);

  await admin.resetSubscription('sa-reset', 'r', 'latest');
  t.true(atEnd(await admin.describeSubscription('sa-reset', 'r')));
  await admin.resetSubscription('sa-reset', 'r', { offset: 3 });
  t.deepEqual(positions(await admin.describeSubscription('sa-reset', 'r')), Array.from({ length: PARTITIONS }, () => [3, PER_PARTITION - 3]));
  await admin.resetSubscription('sa-reset', 'r', 'earliest');
  t.deepEqual(positions(await admin.describeSubscription('sa-reset', 'r')), Array.from({ length: PARTITIONS }, () => [0, PER_PARTITION]));
  // Records carry timestamps base + i: the first at or after base + 6 is offset 6.
  await admin.resetSubscription('sa-reset', 'r', { timestamp: new Date(base + 6) });
  t.deepEqual(positions(await admin.describeSubscription('sa-reset', 'r')), Array.from({ length: PARTITIONS }, () => [6, PER_PARTITION - 6]));
});

test.serial('CLI: describe --json and text, reset --to each form', async (t) => {
  const base = 1_800_000_000_000;
  await admin.createTopic({ name: 'sa-cli', partitions: PARTITIONS });
  await produce('sa-cli', base);
  await admin.createSubscription({ topic: 'sa-cli', name: 'c', initialPosition: 'earliest' });
  await describeUntil(t, 'sa-cli', 'c', 'reported', (d) => d.backlogComplete);
  const cli = async (args: string[]) => {
    const r = await runCli(args, { nats: nats.url });
    t.is(r.code, 0, `tidemark ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const json = JSON.parse(await cli(['subscription', 'describe', 'sa-cli', 'c', '--json'])) as SubscriptionDescription;
  t.is(json.backlog, PARTITIONS * PER_PARTITION);
  const text = (await cli(['subscription', 'describe', 'sa-cli', 'c'])).split('\n').filter(Boolean);
  t.regex(text[0]!, new RegExp(`Backlog: ${PARTITIONS * PER_PARTITION}\\t`));
  t.regex(text[1]!, new RegExp(`^\\tPartition: 0\\tLeader: 1\\tPosition: 0\\tBacklog: ${PER_PARTITION}\\t`));

  await cli(['subscription', 'reset', 'sa-cli', 'c', '--to', 'latest']);
  t.is((await admin.describeSubscription('sa-cli', 'c')).backlog, 0);
  await cli(['subscription', 'reset', 'sa-cli', 'c', '--to', '4']);
  t.deepEqual(positions(await admin.describeSubscription('sa-cli', 'c')), Array.from({ length: PARTITIONS }, () => [4, PER_PARTITION - 4]));
  await cli(['subscription', 'reset', 'sa-cli', 'c', '--to', new Date(base + 8).toISOString()]);
  t.deepEqual(positions(await admin.describeSubscription('sa-cli', 'c')), Array.from({ length: PARTITIONS }, () => [8, PER_PARTITION - 8]));
  await cli(['subscription', 'reset', 'sa-cli', 'c', '--to', 'earliest']);
  t.is((await admin.describeSubscription('sa-cli', 'c')).backlog, PARTITIONS * PER_PARTITION);
});
