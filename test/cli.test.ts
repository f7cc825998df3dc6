/**
 * The CLI end to end: `node bin/tidemark.js ...` child processes against a real `tidemark node start`
 * child and a real nats-server. Each wait is bounded; nothing sleeps.
 */
import test, { type ExecutionContext } from 'ava';
import { rm } from 'node:fs/promises';
import { utf8 } from '../src/client/codecs.js';
import { partitionForKey } from '../src/index.js';
import { TOPIC_CONFIG_KEYS } from '../src/metadata/topic-config.js';
import { killAllCliProcesses, runCli, spawnCli, startNodeProcess, type CliOptions, type CliProcess, type CliResult } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';

interface JsonRecord {
  topic: string;
  partition: number;
  offset: number;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
  timestamp: number;
}

interface JsonDescription {
  name: string;
  partitions: {
    partition: number;
    leader: number;
    logStartOffset: number;
    logEndOffset: number;
    highWatermark: number;
    replicaStates: { brokerId: number; logEndOffset: number; lagMs: number }[];
  }[];
}

let nats: NatsServer;
let dataDir: string;
let node: CliProcess;

test.before(async () => {
  nats = await startNatsServer();
  dataDir = await tempDir('tm-cli-');
  node = await startNodeProcess({ nats: nats.url, dataDir });
});

test.after.always(async () => {
  await node?.kill('SIGTERM').catch(() => {});
  await killAllCliProcesses();
  await nats?.stop();
  if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
});

function tidemark(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return runCli(args, { nats: nats.url, ...options });
}

/** Runs a command that must succeed (exit 0, nothing on stderr) and returns its stdout. */
async function ok(t: ExecutionContext, args: string[], options: CliOptions = {}): Promise<string> {
  const r = await tidemark(args, options);
  t.is(r.code, 0, `tidemark ${args.join(' ')} exits 0; stderr: ${r.stderr}`);
  t.is(r.stderr, '', `tidemark ${args.join(' ')} prints nothing on stderr`);
  return r.stdout;
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

function parseRecords(stdout: string): JsonRecord[] {
  return lines(stdout).map((l) => JSON.parse(l) as JsonRecord);
}

function byPartitionOffset(records: JsonRecord[]): JsonRecord[] {
  return [...records].sort((a, b) => a.partition - b.partition || a.offset - b.offset);
}

function groupByPartition(records: JsonRecord[]): Map<number, JsonRecord[]> {
  const groups = new Map<number, JsonRecord[]>();
  for (const r of records) groups.set(r.partition, [...(groups.get(r.partition) ?? []), r]);
  return groups;
}

/** An error is one line on stderr with no stack trace, nothing on stdout, and a non-zero exit. */
function assertOneLineError(t: ExecutionContext, r: CliResult, what: string): void {
  t.not(r.code, 0, `${what}: non-zero exit`);
  t.is(r.signal, null, `${what}: exits, not killed by a signal`);
  t.is(r.stdout, '', `${what}: nothing on stdout`);
  t.regex(r.stderr, /^tidemark: [^\n]+\n$/, `${what}: exactly one line on stderr, got ${JSON.stringify(r.stderr)}`);
  t.false(r.stderr.includes('    at '), `${what}: no stack trace`);
}

const SEQ_1_1000 = Array.from({ length: 1000 }, (_, i) => `${i + 1}\n`).join('');

test.serial('README quick start: create, produce 1000 lines, consume, describe, list; survives kill -9; delete', async (t) => {
  t.is(await ok(t, ['topic', 'create', 'orders', '--partitions', '3']), 'Created topic orders.\n');
  t.is(await ok(t, ['produce', 'orders'], { stdin: SEQ_1_1000 }), '', 'produce prints nothing');

  const text = lines(await ok(t, ['consume', 'orders', '--from-beginning', '--max-messages', '1000']));
  t.is(text.length, 1000, 'exactly 1000 lines');
  t.deepEqual(
    [...text].sort((a, b) => Number(a) - Number(b)),
    Array.from({ length: 1000 }, (_, i) => String(i + 1)),
    'the values are 1..1000, each once',
  );

  const records = parseRecords(await ok(t, ['consume', 'orders', '--from-beginning', '--max-messages', '1000', '--json']));
  t.is(records.length, 1000);
  const partitionOf = new Map(records.map((r) => [r.value, r.partition]));
  t.is(partitionOf.size, 1000, 'every value once in the --json output');
  for (const r of records) {
    t.is(r.topic, 'orders');
    t.is(r.key, null, 'no key');
    t.deepEqual(r.headers, {});
    t.true(r.partition >= 0 && r.partition < 3, `partition ${r.partition} in 0..2`);
  }
  const groups = groupByPartition(records);
  for (const [partition, recs] of groups) {
    t.deepEqual(
      recs.map((r) => r.offset),
      recs.map((_, i) => i),
      `partition ${partition}: offsets contiguous from 0, printed in order`,
    );
    const values = recs.map((r) => Number(r.value));
    t.deepEqual(values, [...values].sort((a, b) => a - b), `partition ${partition}: values ascending (one producer, in order)`);
    // The plain output keeps the same per-partition order.
    t.deepEqual(
      text.filter((v) => partitionOf.get(v) === partition).map(Number),
      values,
      `partition ${partition}: plain output in the same order as --json`,
    );
  }

  const described = await ok(t, ['topic', 'describe', 'orders']);
  t.regex(described, /^Topic: orders\t.*\tPartitions: 3\t/, 'header line names the topic and 3 partitions');
  for (let p = 0; p < 3; p++) {
    const end = groups.get(p)?.length ?? 0;
    t.regex(
      described,
      new RegExp(`\\tPartition: ${p}\\tLeader: 1\\tLeaderEpoch: 0\\tReplicas: 1\\tIsr: 1\\tLogStartOffset: 0\\tLogEndOffset: ${end}\\tHighWatermark: ${end}\\tReplicaLEO: 1=${end}$`, 'm'),
      `partition ${p}: leader 1 (epoch 0, the only replica and ISR), log start 0, log end and high watermark ${end}, replica 1 at ${end}`,
    );
  }
  t.is(lines(described).length, 4, 'one header line and one line per partition');

  const description = JSON.parse(await ok(t, ['topic', 'describe', 'orders', '--json'])) as JsonDescription;
  t.is(description.name, 'orders');
  t.deepEqual(
    description.partitions.map((p) => p.partition),
    [0, 1, 2],
  );
  t.true(description.partitions.every((p) => p.leader === 1 && p.logStartOffset === 0));
  for (const p of description.partitions) {
    t.deepEqual(p.replicaStates, [{ brokerId: 1, logEndOffset: p.logEndOffset, lagMs: 0 }], `partition ${p.partition}: --json has the leader's replica state`);
  }
  t.is(
    description.partitions.reduce((sum, p) => sum + p.logEndOffset, 0),
    1000,
    'sum of logEndOffset is 1000',
  );

  t.true(lines(await ok(t, ['topic', 'list'])).includes('orders'), 'topic list prints orders');

  // kill -9 the node, start a new one on the same data dir: the same records at the same places.
  const killed = await node.kill('SIGKILL');
  t.deepEqual(killed, { code: null, signal: 'SIGKILL' });
  node = await startNodeProcess({ nats: nats.url, dataDir });
  const after = parseRecords(await ok(t, ['consume', 'orders', '--from-beginning', '--max-messages', '1000', '--json']));
  t.deepEqual(byPartitionOffset(after), byPartitionOffset(records), 'after kill -9 and restart: identical records, partitions and offsets');
  const describedAfter = JSON.parse(await ok(t, ['topic', 'describe', 'orders', '--json'])) as JsonDescription;
  t.deepEqual(
    describedAfter.partitions.map((p) => p.logEndOffset),
    description.partitions.map((p) => p.logEndOffset),
    'same log end offsets after restart',
  );

  // The restarted node appends after what it recovered.
  await ok(t, ['produce', 'orders'], { stdin: Array.from({ length: 10 }, (_, i) => `${1001 + i}\n`).join('') });
  const more = parseRecords(await ok(t, ['consume', 'orders', '--from-beginning', '--max-messages', '1010', '--json']));
  t.deepEqual(
    more.map((r) => Number(r.value)).sort((x, y) => x - y),
    Array.from({ length: 1010 }, (_, i) => i + 1),
  );
  for (const [partition, recs] of groupByPartition(more)) {
    t.deepEqual(
      recs.map((r) => r.offset),
      recs.map((_, i) => i),
      `partition ${partition}: offsets still contiguous from 0 after the restart`,
    );
  }

  t.is(await ok(t, ['topic', 'delete', 'orders']), 'Deleted topic orders.\n');
  t.false(lines(await ok(t, ['topic', 'list'])).includes('orders'), 'topic list no longer shows orders');
  const gone = await tidemark(['topic', 'describe', 'orders']);
  assertOneLineError(t, gone, 'describe a deleted topic');
  t.true(gone.stderr.includes('UNKNOWN_TOPIC'), gone.stderr);
});

test.serial('keys: --key-separator keeps a key on one partition in order; --key puts every record on one partition', async (t) => {
  await ok(t, ['topic', 'create', 'keyed', '--partitions', '4']);
  await ok(t, ['produce', 'keyed', '--key-separator', ':'], { stdin: 'a:1\nb:2\na:3\n' });
  const records = parseRecords(await ok(t, ['consume', 'keyed', '--from-beginning', '--max-messages', '3', '--json']));
  t.deepEqual(
    byPartitionOffset(records)
      .map((r) => [r.key, r.value])
      .sort(),
    [
      ['a', '1'],
      ['a', '3'],
      ['b', '2'],
    ],
    'the separator splits key from value',
  );
  const a = byPartitionOffset(records.filter((r) => r.key === 'a'));
  t.is(a.length, 2);
  t.is(a[0]!.partition, a[1]!.partition, 'both "a" records on one partition');
  t.deepEqual(
    a.map((r) => r.value),
    ['1', '3'],
    '"a" records in the order sent',
  );
  t.is(a[0]!.partition, partitionForKey(utf8('a'), 4), '"a" on its murmur2 partition');
  const b = records.find((r) => r.key === 'b')!;
  t.is(b.partition, partitionForKey(utf8('b'), 4), '"b" on its murmur2 partition');

  await ok(t, ['topic', 'create', 'one-key', '--partitions', '4']);
  const values = Array.from({ length: 50 }, (_, i) => `v${i}`);
  await ok(t, ['produce', 'one-key', '--key', 'K'], { stdin: values.map((v) => `${v}\n`).join('') });
  const one = parseRecords(await ok(t, ['consume', 'one-key', '--from-beginning', '--max-messages', '50', '--json']));
  t.deepEqual(new Set(one.map((r) => r.partition)), new Set([partitionForKey(utf8('K'), 4)]), 'all on the partition of K');
  t.true(one.every((r) => r.key === 'K'));
  t.deepEqual(
    one.map((r) => r.value),
    values,
    'in the order sent',
  );
  t.deepEqual(
    one.map((r) => r.offset),
    values.map((_, i) => i),
  );
});

test.serial('produce takes an input larger than the producer\'s sendsWaitingMax: it reads on as acknowledgements come, and every line lands', async (t) => {
  await ok(t, ['topic', 'create', 'large-input', '--partitions', '8']);
  const count = 30_000; // three times the producer's default sendsWaitingMax (10,000)
  await ok(t, ['produce', 'large-input', '--key-separator', ':'], { stdin: Array.from({ length: count }, (_, i) => `k${i}:${i}\n`).join('') });
  const values = lines(await ok(t, ['consume', 'large-input', '--from-beginning', '--max-messages', String(count)]));
  t.is(values.length, count);
  t.is(new Set(values).size, count, 'each line once');
});

test.serial('errors are one line on stderr, no stack trace, non-zero exit', async (t) => {
  await ok(t, ['topic', 'create', 'dup']);
  const cases: { args: string[]; code: number; mentions?: string; options?: CliOptions }[] = [
    { args: ['bogus'], code: 2, mentions: 'unknown command' },
    { args: ['topic', 'create', 'x', '--bogus'], code: 2, mentions: '--bogus' },
    { args: ['topic', 'create', 'x', '--partitions', '0'], code: 2, mentions: '--partitions' },
    { args: ['topic', 'create', 'x', '--partitions', 'abc'], code: 2, mentions: '--partitions' },
    { args: ['topic', 'create', 'dup'], code: 1, mentions: 'TOPIC_ALREADY_EXISTS' },
    { args: ['topic', 'describe', 'no-such-topic'], code: 1, mentions: 'UNKNOWN_TOPIC' },
    { args: ['topic', 'create', 'a b'], code: 1, mentions: 'INVALID_TOPIC' },
    { args: ['consume', 'orders', '--offset', '5'], code: 2, mentions: '--partition' },
    { args: ['partition', 'bogus'], code: 2, mentions: 'unknown partition command' },
    { args: ['partition', 'elect-leaders', '--bogus'], code: 2, mentions: '--bogus' },
    { args: ['partition', 'elect-leaders', '--preferred', '--unclean'], code: 2, mentions: '--unclean' },
    { args: ['partition', 'elect-leaders', '--partition', '0'], code: 2, mentions: '--topic' },
    { args: ['partition', 'elect-leaders', '--topic', 'dup', '--partition', '-1'], code: 2, mentions: '--partition' },
    { args: ['partition', 'elect-leaders', '--topic', 'dup', 'extra'], code: 2, mentions: 'extra' },
    { args: ['partition', 'elect-leaders', '--topic', 'no-such-topic'], code: 1, mentions: 'UNKNOWN_TOPIC' },
  ];
  const results = await Promise.all(cases.map((c) => tidemark(c.args, c.options)));
  cases.forEach((c, i) => {
    const r = results[i]!;
    const what = `tidemark ${c.args.join(' ')}`;
    assertOneLineError(t, r, what);
    t.is(r.code, c.code, `${what}: exit ${c.code}; stderr: ${r.stderr}`);
    if (c.mentions !== undefined) t.true(r.stderr.includes(c.mentions), `${what}: mentions ${c.mentions}; stderr: ${r.stderr}`);
  });
  t.false(lines(await ok(t, ['topic', 'list'])).includes('a b'), 'the illegal name was not created');

  // Nothing listens on port 1: a clear one-line error, quickly (runCli fails the test past 10 s).
  for (const args of [
    ['topic', 'list', '--nats', 'nats://127.0.0.1:1'],
    ['produce', 'dup', '--nats', 'nats://127.0.0.1:1'],
  ]) {
    const r = await tidemark(args, { timeoutMs: 10_000, stdin: 'x\n' });
    assertOneLineError(t, r, `tidemark ${args.join(' ')}`);
    t.true(r.stderr.includes('nats://127.0.0.1:1'), `names the URL: ${r.stderr}`);
    t.log(`unreachable NATS (${args[0]}): exit ${r.code} after ${Math.round(r.ms)} ms: ${r.stderr.trim()}`);
  }
});

test.serial('--help exits 0 and prints a Usage line', async (t) => {
  const commands = [[], ['topic'], ['produce'], ['consume'], ['node'], ['dev'], ['cluster'], ['partition'], ['partition', 'elect-leaders']];
  const results = await Promise.all(commands.map((c) => runCli([...c, '--help'])));
  commands.forEach((c, i) => {
    const r = results[i]!;
    const what = `tidemark ${[...c, '--help'].join(' ')}`;
    t.is(r.code, 0, `${what}: exit 0`);
    t.regex(r.stdout, /^Usage:/m, `${what}: a Usage line`);
    t.is(r.stderr, '', `${what}: nothing on stderr`);
  });
  const topicHelp = results[1]!.stdout;
  const keys = /^Topic config keys: (.*)\.$/m.exec(topicHelp)?.[1]?.split(', ');
  t.deepEqual(keys, TOPIC_CONFIG_KEYS, 'topic --help lists every topic config key');
  t.regex(results[0]!.stdout, /partition elect-leaders/, 'the command list names partition elect-leaders');
});

test.serial('cluster status shows the elected controller and the broker; topic alter grows a topic and refuses to shrink it', async (t) => {
  const status = JSON.parse(await ok(t, ['cluster', 'status', '--json'])) as {
    controllerId: number;
    voters: Array<{ id: number; role: string; term: number }>;
    brokers: Array<{ id: number; fenced: boolean; reachable: boolean }>;
  };
  t.is(status.controllerId, 1);
  t.like(status.voters[0], { id: 1, role: 'leader' });
  t.true(status.voters[0]!.term >= 1);
  t.like(status.brokers[0], { id: 1, fenced: false, reachable: true });
  t.regex(await ok(t, ['cluster', 'status']), /^Controller: 1$/m);

  await ok(t, ['topic', 'create', 'growing', '--partitions', '2']);
  // One replica per partition: it already leads, so a preferred election has nothing to do.
  const elected = lines(await ok(t, ['partition', 'elect-leaders', '--topic', 'growing']));
  t.is(elected.length, 2, 'one line per partition');
  elected.forEach((line, p) => t.regex(line, new RegExp(`^Topic: growing\\tPartition: ${p}\\tLeader: 1\\tResult: ELECTION_NOT_NEEDED \\(.+\\)$`)));
  t.like(JSON.parse(await ok(t, ['partition', 'elect-leaders', '--topic', 'growing', '--partition', '1', '--unclean', '--json'])), {
    topic: 'growing',
    partition: 1,
    leader: 1,
    error: { code: 'ELECTION_NOT_NEEDED' },
  });
  t.regex(await ok(t, ['topic', 'alter', 'growing', '--partitions', '5']), /5 partitions/);
  const described = JSON.parse(await ok(t, ['topic', 'describe', 'growing', '--json'])) as { partitions: unknown[] };
  t.is(described.partitions.length, 5);
  const shrink = await tidemark(['topic', 'alter', 'growing', '--partitions', '3']);
  t.is(shrink.code, 1);
  t.regex(shrink.stderr, /INVALID_PARTITIONS.*delete/);
  t.regex(await ok(t, ['topic', 'alter', 'growing', '--config', 'retention.ms=60000']), /retention\.ms=60000/);
  const altered = JSON.parse(await ok(t, ['topic', 'describe', 'growing', '--json'])) as { config: Record<string, string> };
  t.deepEqual(altered.config, { 'retention.ms': '60000' });
  t.regex(await ok(t, ['topic', 'alter', 'growing', '--delete-config', 'retention.ms']), /\(defaults\)/);
  const bad = await tidemark(['topic', 'alter', 'growing', '--config', 'retention.ms=soon']);
  t.is(bad.code, 1);
  t.regex(bad.stderr, /INVALID_CONFIG/);
});

// stdout closing early (`tidemark consume T | head -1`) must end the command quietly, not on an
// unhandled EPIPE with a stack trace.
test.serial('consume into a pipe that closes early exits without a stack trace (like `| head -1`)', async (t) => {
  await ok(t, ['topic', 'create', 'piped']);
  await ok(t, ['produce', 'piped'], { stdin: 'first\n' });
  const consume = spawnCli(['consume', 'piped', '--from-beginning'], { nats: nats.url });
  try {
    await consume.waitForLine('stdout', (line) => line === 'first');
    consume.child.stdout!.destroy(); // what `head -1` does after its line: the read end closes
    await ok(t, ['produce', 'piped'], { stdin: 'second\n' }); // the next write hits the closed pipe
    let timer: NodeJS.Timeout | undefined;
    const exit = await Promise.race([
      consume.exited,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('consume did not exit within 10 s of its stdout closing')), 10_000);
      }),
    ]).finally(() => clearTimeout(timer));
    const stderr = consume.stderrLines.join('\n');
    t.false(stderr.includes('    at '), `no stack trace; stderr: ${stderr}`);
    t.true(exit.code === 0 || exit.signal === 'SIGPIPE', `exits quietly like other Unix filters: ${JSON.stringify(exit)}`);
  } finally {
    await consume.kill('SIGKILL');
  }
});
