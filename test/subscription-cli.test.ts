/**
 * `tidemark subscription ...` end to end: child processes against a real `tidemark node start`
 * child and a real nats-server. Argument mistakes are one line and exit 2; create / list / delete
 * go through the controller's registry. describe is checked for its shape only: what a partition
 * reports depends on the partition-leader side (test/subscription-admin.test.ts checks the values).
 */
import test, { type ExecutionContext } from 'ava';
import { rm } from 'node:fs/promises';
import { killAllCliProcesses, runCli, startNodeProcess, type CliProcess, type CliResult } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';

let nats: NatsServer;
let dataDir: string;
let node: CliProcess;

test.before(async () => {
  nats = await startNatsServer();
  dataDir = await tempDir('tm-subcli-');
  node = await startNodeProcess({ nats: nats.url, dataDir });
});

test.after.always(async () => {
  await node?.kill('SIGTERM').catch(() => {});
  await killAllCliProcesses();
  await nats?.stop();
  if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
});

function tidemark(args: string[]): Promise<CliResult> {
  return runCli(args, { nats: nats.url });
}

async function ok(t: ExecutionContext, args: string[]): Promise<string> {
  const r = await tidemark(args);
  t.is(r.code, 0, `tidemark ${args.join(' ')} exits 0; stderr: ${r.stderr}`);
  t.is(r.stderr, '', `tidemark ${args.join(' ')} prints nothing on stderr`);
  return r.stdout;
}

/** A command that must fail with exit `code` and exactly one line on stderr matching `pattern`. */
async function fails(t: ExecutionContext, args: string[], code: number, pattern: RegExp): Promise<void> {
  const r = await tidemark(args);
  t.is(r.code, code, `tidemark ${args.join(' ')} exits ${code}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  t.is(lines.length, 1, `one line on stderr: ${r.stderr}`);
  t.regex(lines[0] ?? '', pattern);
  t.is(r.stdout, '');
}

const lines = (text: string) => text.split('\n').filter((l) => l !== '');

test('argument mistakes: one line, exit 2, before connecting', async (t) => {
  await Promise.all([
    fails(t, ['subscription', 'frobnicate', 't'], 2, /^tidemark: unknown subscription command "frobnicate"/),
    fails(t, ['subscription', 'list'], 2, /^tidemark: expected 1 argument\(s\), got 0/),
    fails(t, ['subscription', 'describe', 't'], 2, /^tidemark: expected 2 argument\(s\), got 1/),
    fails(t, ['subscription', 'delete', 't', 's', 'x'], 2, /^tidemark: unexpected argument "x"/),
    fails(t, ['subscription', 'reset', 't', 's'], 2, /^tidemark: subscription reset needs --to/),
    fails(t, ['subscription', 'reset', 't', 's', '--to', 'soon'], 2, /^tidemark: --to must be earliest, latest, an offset or an ISO time/),
    fails(t, ['subscription', 'reset', 't', 's', '--to', '-5'], 2, /^tidemark: /),
    fails(t, ['subscription', 'reset', 't', 's', '--to', '2026-13-45T00:00:00Z'], 2, /^tidemark: --to is not a valid time/),
    fails(t, ['subscription', 'describe', 't', 's', '--to', 'latest'], 2, /^tidemark: --to is not an option of subscription describe/),
    fails(t, ['subscription', 'delete', 't', 's', '--json'], 2, /^tidemark: --json is not an option of subscription delete/),
    fails(t, ['subscription', 'list', 't', '--bogus'], 2, /^tidemark: unknown option "--bogus" for "tidemark subscription list"/),
    fails(t, ['subscription', 'create', 't', 's', '--initial-position', 'middle'], 2, /^tidemark: --initial-position must be earliest or latest/),
  ]);
  const help = await tidemark(['subscription', '--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /tidemark subscription reset TOPIC NAME --to earliest\|latest\|OFFSET\|ISO-TIME/);
});

test('create, list (idempotent create), describe shape, delete; typed errors exit 1 with one line', async (t) => {
  await ok(t, ['topic', 'create', 'subs-cli', '--partitions', '2']);
  t.deepEqual(lines(await ok(t, ['subscription', 'list', 'subs-cli'])), [], 'no subscriptions yet');
  t.regex(await ok(t, ['subscription', 'create', 'subs-cli', 'billing', '--initial-position', 'earliest']), /^Subscription billing on subs-cli \(initial position earliest, id \d+\)\.\n$/);
  // Again, with another initial position: the existing one, unchanged.
  t.regex(await ok(t, ['subscription', 'create', 'subs-cli', 'billing']), /initial position earliest/);
  await ok(t, ['subscription', 'create', 'subs-cli', 'audit']);
  t.deepEqual(lines(await ok(t, ['subscription', 'list', 'subs-cli'])), ['audit', 'billing']);

  const json = JSON.parse(await ok(t, ['subscription', 'list', 'subs-cli', '--json'])) as Array<{ name: string; initialPosition: string; partitionsAtCreation: number; partitions: unknown[] }>;
  t.deepEqual(
    json.map((s) => [s.name, s.initialPosition, s.partitionsAtCreation, s.partitions.length]),
    [
      ['audit', 'latest', 2, 2],
      ['billing', 'earliest', 2, 2],
    ],
  );
  const described = lines(await ok(t, ['subscription', 'describe', 'subs-cli', 'billing']));
  t.is(described.length, 3, 'a header and one line per partition');
  t.regex(described[0]!, /^Subscription: billing\tTopic: subs-cli\tId: \d+\tInitialPosition: earliest\tType: \S+\tBacklog: \S+/);
  t.regex(described[1]!, /^\tPartition: 0\tLeader: 1\tPosition: (-|\d+)\tBacklog: (-|\d+)\tUnacked: (-|\d+)\tHighWatermark: (-|\d+)\tConsumers: /);

  t.regex(await ok(t, ['subscription', 'delete', 'subs-cli', 'billing']), /^Deleted subscription billing on subs-cli\.\n$/);
  t.deepEqual(lines(await ok(t, ['subscription', 'list', 'subs-cli'])), ['audit']);
  await fails(t, ['subscription', 'delete', 'subs-cli', 'billing'], 1, /^tidemark: UNKNOWN_SUBSCRIPTION: /);
  await fails(t, ['subscription', 'describe', 'subs-cli', 'billing'], 1, /^tidemark: UNKNOWN_SUBSCRIPTION: /);
  await fails(t, ['subscription', 'list', 'no-such-topic'], 1, /^tidemark: UNKNOWN_TOPIC: /);
  await fails(t, ['subscription', 'create', 'no-such-topic', 's'], 1, /^tidemark: UNKNOWN_TOPIC: /);
  // Deleting the topic drops its subscriptions: a new topic of that name has none.
  await ok(t, ['topic', 'delete', 'subs-cli']);
  await ok(t, ['topic', 'create', 'subs-cli']);
  t.deepEqual(lines(await ok(t, ['subscription', 'list', 'subs-cli'])), []);
});
