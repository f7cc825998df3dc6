/**
 * kcat habits in the CLI against one real nats-server and one `tidemark node start` process:
 * consume --format tokens, value and key bytes printed unchanged, --exit-at-end without a
 * subscription, --version, topic list --json, and parse mistakes as one-line usage errors.
 */
import test, { type ExecutionContext } from 'ava';
import { readFile } from 'node:fs/promises';
import { codecs } from '../src/index.js';
import { runCli } from './helpers/cli.js';
import { cliNodeFixture } from './helpers/cli-node-fixture.js';

const f = cliNodeFixture(test, 'tm-cli-habits-');

const tidemark = f.tidemark;

async function ok(t: ExecutionContext, args: string[]): Promise<string> {
  const r = await tidemark(args);
  t.is(r.code, 0, `tidemark ${args.join(' ')} exits 0; stderr: ${r.stderr}`);
  t.is(r.stderr, '', `tidemark ${args.join(' ')} prints nothing on stderr`);
  return r.stdout;
}

const runCliBytes = f.tidemarkBytes;

const lines = (text: string) => text.split('\n').filter((l) => l !== '');

test.serial('consume --format prints kcat tokens: topic, partition, offset, key, lengths, value, headers, timestamp', async (t) => {
  await f.client.admin().createTopic({ name: 'fmt', partitions: 2, replicationFactor: 1 });
  const producer = f.client.producer<string>({ topic: 'fmt', codec: codecs.string() });
  await producer.send({ partition: 0, key: 'k0', value: 'hello', timestamp: 1_700_000_000_001 });
  await producer.send({ partition: 1, key: 'key1', value: 'v1', headers: { a: '1', b: 'x y' }, timestamp: 1_700_000_000_123 });
  await producer.send({ partition: 1, value: null, timestamp: 1_700_000_000_200 });
  await producer.close();

  const template = '%t|%p|%o|%k|%K|%s|%v|%S|%h|%T|%%\\t.\\n';
  const out = await ok(t, ['consume', 'fmt', '--from-beginning', '--max-messages', '3', '--format', template]);
  t.true(out.endsWith('\n'), 'the \\n escape ends each record');
  t.deepEqual(lines(out).sort(), [
    'fmt|0|0|k0|2|hello|hello|5||1700000000001|%\t.',
    'fmt|1|0|key1|4|v1|v1|2|a=1,b=x y|1700000000123|%\t.',
    'fmt|1|1||-1|||-1||1700000000200|%\t.',
  ]);
  // -f is the short spelling; a template without \n gets one newline per record.
  t.is(await ok(t, ['consume', 'fmt', '--partition', '1', '--offset', '0', '--max-messages', '2', '-f', '%k=%v']), 'key1=v1\n=\n');
  // With a subscription, %r is the redelivery count.
  const sub = await ok(t, ['consume', 'fmt', '--subscription', 'fmt-sub', '--initial-position', 'earliest', '--exit-at-end', '--format', '%p:%o r=%r\\n']);
  t.deepEqual(lines(sub).sort(), ['0:0 r=0', '1:0 r=0', '1:1 r=0']);
});

test.serial('consume writes value and key bytes unchanged: every byte value, invalid UTF-8, newlines, NUL', async (t) => {
  await f.client.admin().createTopic({ name: 'bin', partitions: 1, replicationFactor: 1 });
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const values = [all, Buffer.from([0xff, 0xfe, 0x00, 0x0a, 0xc3]), Buffer.from([0xe2, 0x82]), Buffer.from('plain text')];
  const key = Buffer.from([0x00, 0x80, 0xff, 0x0a]);
  const producer = f.client.producer<Uint8Array>({ topic: 'bin', codec: codecs.bytes() });
  for (const value of values) await producer.send({ key, value });
  await producer.close();

  const plain = await runCliBytes(['consume', 'bin', '--from-beginning', '--max-messages', String(values.length)]);
  t.is(plain.code, 0, plain.stderr);
  t.true(plain.stdout.equals(Buffer.concat(values.flatMap((v) => [v, Buffer.from('\n')]))), 'default: each value\'s bytes, then a newline');

  const formatted = await runCliBytes(['consume', 'bin', '--from-beginning', '--max-messages', String(values.length), '--format', '%K:%k|%S:%v']);
  t.is(formatted.code, 0, formatted.stderr);
  const expected = Buffer.concat(values.flatMap((v) => [Buffer.from(`4:`), key, Buffer.from(`|${v.length}:`), v, Buffer.from('\n')]));
  t.true(formatted.stdout.equals(expected), `--format %k and %v: the bytes as produced (got ${formatted.stdout.length} bytes, want ${expected.length})`);
});

test.serial('consume --exit-at-end without a subscription: exits 0 at the end of every partition, empty ones at once', async (t) => {
  await f.client.admin().createTopic({ name: 'ends', partitions: 3, replicationFactor: 1 });
  const producer = f.client.producer<string>({ topic: 'ends', codec: codecs.string() });
  const sent = ['a0', 'a1', 'a2', 'c0', 'c1'];
  for (const value of sent) await producer.send({ partition: value.startsWith('a') ? 0 : 2, value });
  await producer.close();

  const all = await tidemark(['consume', 'ends', '--from-beginning', '--exit-at-end']);
  t.is(all.code, 0, all.stderr);
  t.deepEqual(lines(all.stdout).sort(), sent, 'every record of partitions 0 and 2; partition 1 is empty');
  const one = await tidemark(['consume', 'ends', '--partition', '0', '--offset', '1', '--exit-at-end']);
  t.is(one.code, 0, one.stderr);
  t.deepEqual(lines(one.stdout), ['a1', 'a2']);

  await f.client.admin().createTopic({ name: 'ends-empty', partitions: 2, replicationFactor: 1 });
  const empty = await tidemark(['consume', 'ends-empty', '--from-beginning', '--exit-at-end'], { timeoutMs: 10_000 });
  t.is(empty.code, 0, empty.stderr);
  t.is(empty.stdout, '');
  t.log(`empty topic: exit after ${Math.round(empty.ms)} ms`);
  const fresh = await tidemark(['consume', 'ends', '--exit-at-end'], { timeoutMs: 10_000 });
  t.is(fresh.code, 0, `from latest, the end is where it starts: ${fresh.stderr}`);
  t.is(fresh.stdout, '');
});

test.serial('--version and topic list --json', async (t) => {
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  for (const args of [['--version'], ['version']]) {
    const r = await runCli(args);
    t.is(r.code, 0);
    t.is(r.stdout, `tidemark ${pkg.version}\n`, `tidemark ${args.join(' ')}`);
  }
  await f.client.admin().createTopic({ name: 'listed', partitions: 1, replicationFactor: 1 });
  const out = await ok(t, ['topic', 'list', '--json']);
  t.regex(out, /^\[.*\]\n$/, 'one line');
  const names = JSON.parse(out) as string[];
  t.deepEqual([...names].sort(), [...(await f.client.admin().listTopics())].sort());
  t.true(names.includes('listed'));
});

test('argument mistakes are one line naming the flag, exit 2, before connecting', async (t) => {
  const unreachable = 'nats://127.0.0.1:1';
  const cases: { args: string[]; stderr: string }[] = [
    { args: ['topic', 'create', 'x', '--partitions', '-3'], stderr: '--partitions must be an integer in 1..10000, got "-3"' },
    { args: ['consume', 'x', '--partition', '0', '--offset', '-1'], stderr: '--offset must be an integer in 0..9007199254740991, got "-1"' },
    { args: ['produce', 'x', '--bogus'], stderr: 'unknown option "--bogus" for "tidemark produce"' },
    { args: ['topic', 'list', '-z'], stderr: 'unknown option "-z" for "tidemark topic list"' },
    { args: ['topic', 'create', 'x', '--partitions'], stderr: 'option --partitions needs a value' },
    { args: ['consume', 'x', '--json=yes'], stderr: 'option --json takes no value, got "yes"' },
    { args: ['consume', 'x', '--format', '%v', '--json'], stderr: 'use --format or --json, not both' },
    { args: ['consume', 'x', '--format', '%v %x'], stderr: '--format: unknown token "%x"' },
    { args: ['consume', 'x', '--format', '%v\\q'], stderr: '--format: unknown escape "\\q"' },
    { args: ['consume', 'x', '-f', '%o %r'], stderr: '--format: %r (redelivery count) needs --subscription' },
    { args: ['version', 'extra'], stderr: 'unexpected argument "extra"' },
  ];
  const results = await Promise.all(cases.map((c) => runCli(c.args, { nats: unreachable, timeoutMs: 10_000 })));
  cases.forEach((c, i) => {
    const r = results[i]!;
    const what = `tidemark ${c.args.join(' ')}`;
    t.is(r.code, 2, `${what}: exit 2; stderr: ${r.stderr}`);
    t.is(r.stdout, '', `${what}: nothing on stdout`);
    t.regex(r.stderr, /^tidemark: [^\n]+\n$/, `${what}: one line`);
    t.true(r.stderr.startsWith(`tidemark: ${c.stderr}`), `${what}: says ${c.stderr}; got ${r.stderr}`);
    t.is((r.stderr.match(/"/g) ?? []).length % 2, 0, `${what}: balanced double quotes`);
    t.false(r.stderr.includes("'"), `${what}: no parseArgs quoting`);
  });
});
