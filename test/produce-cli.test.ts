/**
 * `tidemark produce` is binary safe, with kcat's habits, against one real nats-server and one
 * `tidemark node start` process: records split only at "\n" (a "\r" of "\r\n" stripped) or at
 * --delimiter, bytes sent unchanged, --value-format checks, -H headers, the key-separator warning,
 * bad records (stop with a summary, or --skip-errors), and Ctrl-C with a summary and exit 130.
 * Records are read back with the SDK's reader and the bytes codec.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { codecs } from '../src/index.js';
import { spawnCli, type CliResult } from './helpers/cli.js';
import { cliNodeFixture } from './helpers/cli-node-fixture.js';

const f = cliNodeFixture(test, 'tm-produce-cli-');

const tidemark = f.tidemark;

async function createTopic(name: string): Promise<void> {
  await f.client.admin().createTopic({ name, partitions: 1, replicationFactor: 1 });
}

interface Stored {
  key: Buffer | null;
  value: Buffer;
  headers: Record<string, string | null | undefined>;
}

/** Every record of partition 0, in offset order, up to its high watermark (bounded). */
async function readAll(topic: string, headerNames: string[] = []): Promise<Stored[]> {
  const described = await f.client.admin().describeTopic(topic);
  const end = described.partitions[0]!.highWatermark;
  const out: Stored[] = [];
  if (end <= 0) return out;
  const reader = f.client.reader({ topic, partition: 0, from: 'earliest', codec: codecs.bytes(), maxWaitMs: 100 });
  const timer = setTimeout(() => void reader.close(), 15_000);
  try {
    for await (const r of reader) {
      out.push({
        key: r.key === null ? null : Buffer.from(r.key),
        value: Buffer.from(r.value ?? new Uint8Array()),
        headers: Object.fromEntries(headerNames.map((h) => [h, r.headerString(h)])),
      });
      if (r.offset + 1 >= end) break;
    }
  } finally {
    clearTimeout(timer);
    await reader.close();
  }
  return out;
}

async function values(topic: string): Promise<string[]> {
  return (await readAll(topic)).map((r) => r.value.toString('latin1'));
}

/** Polls (bounded) until the topic's high watermark reaches `count`. */
async function waitForRecords(topic: string, count: number, timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const hw = (await f.client.admin().describeTopic(topic)).partitions[0]!.highWatermark;
    if (hw >= count) return;
    if (performance.now() > deadline) throw new Error(`${topic}: ${hw} records after ${timeoutMs} ms, expected ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function expectOk(t: ExecutionContext, r: CliResult, what: string): void {
  t.is(r.code, 0, `${what} exits 0; stderr: ${r.stderr}`);
  t.is(r.stderr, '', `${what} prints nothing on stderr`);
}

test('200 KB of random bytes are split only at \\n and sent unchanged', async (t) => {
  await createTopic('bin');
  const input = randomBytes(200 * 1024);
  const r = await tidemark(['produce', 'bin'], { stdin: input, timeoutMs: 30_000 });
  expectOk(t, r, 'produce bin');
  // Expected: split at \n, a \r just before it removed, a final record without \n kept.
  const expected: Buffer[] = [];
  let start = 0;
  for (let at = input.indexOf(0x0a); at >= 0; at = input.indexOf(0x0a, start)) {
    const end = at > start && input[at - 1] === 0x0d ? at - 1 : at;
    expected.push(input.subarray(start, end));
    start = at + 1;
  }
  if (start < input.length) expected.push(input.subarray(start));
  const stored = await readAll('bin');
  t.is(stored.length, expected.length, 'one record per \\n');
  t.true(
    stored.every((s, i) => s.value.equals(expected[i]!)),
    'every record holds the bytes as read',
  );
  t.is(
    stored.reduce((n, s) => n + s.value.length, 0),
    expected.reduce((n, e) => n + e.length, 0),
  );
});

test('a lone \\r is data; \\r\\n ends a line without its \\r', async (t) => {
  await createTopic('crlf');
  const r = await tidemark(['produce', 'crlf'], { stdin: 'a\rb\r\nc\n\r\nd\r' });
  expectOk(t, r, 'produce crlf');
  t.deepEqual(await values('crlf'), ['a\rb', 'c', '', 'd']);
});

test('--delimiter: a multi-byte delimiter, kcat escapes, no \\r stripping', async (t) => {
  await createTopic('delim');
  const r = await tidemark(['produce', 'delim', '--delimiter', '||'], { stdin: 'one||two\nlines\r\n||three\r||' });
  expectOk(t, r, 'produce --delimiter ||');
  const r2 = await tidemark(['produce', 'delim', '-D', '\\0\\x1e'], { stdin: Buffer.from('four\0\x1efive\n\0\x1e') });
  expectOk(t, r2, 'produce -D \\0\\x1e');
  t.deepEqual(await values('delim'), ['one', 'two\nlines\r\n', 'three\r', 'four', 'five\n']);
});

test('argument mistakes are one-line usage errors', async (t) => {
  for (const [args, message] of [
    [['-D', ''], /--delimiter must not be empty/],
    [['-D', '\\q'], /unknown escape/],
    [['-H', 'novalue'], /--header must be key=value, got "novalue"/],
    [['--value-format', 'xml'], /--value-format must be one of bytes, string, json/],
  ] as const) {
    const r = await tidemark(['produce', 'any', ...args]);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test('--value-format string refuses invalid UTF-8 per record; json refuses what does not parse', async (t) => {
  await createTopic('utf8');
  const input = Buffer.concat([Buffer.from('ok é\n'), Buffer.from([0xc3, 0x28, 0x0a]), Buffer.from('after\n')]);
  const r = await tidemark(['produce', 'utf8', '--value-format', 'string', '--skip-errors'], { stdin: input });
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /^tidemark: record 2: INVALID_RECORD: value is not valid UTF-8/m);
  t.regex(r.stderr, /tidemark: 2 records acknowledged, 1 failed, 0 not sent/);
  t.deepEqual(await values('utf8'), [Buffer.from('ok é').toString('latin1'), 'after']);
  // Without --value-format the same bytes pass.
  const bytes = await tidemark(['produce', 'utf8'], { stdin: input });
  expectOk(t, bytes, 'produce (bytes)');
  t.true((await readAll('utf8'))[3]!.value.equals(Buffer.from([0xc3, 0x28])));

  await createTopic('json');
  const j = await tidemark(['produce', 'json', '--value-format', 'json', '--skip-errors'], { stdin: '{"a":1}\nnot json\n[2, 3]\n' });
  t.is(j.code, 1, j.stderr);
  t.regex(j.stderr, /^tidemark: record 2: INVALID_RECORD: value is not JSON/m);
  t.deepEqual(await values('json'), ['{"a":1}', '[2, 3]'], 'the bytes as read');

  // Without --skip-errors the first bad record stops the command; what was read after it is not sent.
  await createTopic('json-stop');
  const stop = await tidemark(['produce', 'json-stop', '--value-format', 'json'], { stdin: '1\n{bad\n2\n3\n' });
  t.is(stop.code, 1, stop.stderr);
  t.deepEqual(stop.stderr.trim().split('\n').map((l) => l.replace(/: INVALID_RECORD: .*/, ': INVALID_RECORD')), [
    'tidemark: record 2: INVALID_RECORD',
    'tidemark: 1 records acknowledged, 1 failed, 2 not sent',
  ]);
  t.deepEqual(await values('json-stop'), ['1']);
});

test('-H key=value headers on every record, visible to a reader', async (t) => {
  await createTopic('headers');
  const r = await tidemark(['produce', 'headers', '-H', 'a=1', '--header', 'b=', '-H', 'c=x=y'], { stdin: 'v1\nv2\n' });
  expectOk(t, r, 'produce -H');
  const stored = await readAll('headers', ['a', 'b', 'c', 'd']);
  t.deepEqual(
    stored.map((s) => s.headers),
    [1, 2].map(() => ({ a: '1', b: '', c: 'x=y', d: undefined })),
  );
});

test('--key-separator: a record without it is sent with a null key, with one warning naming the first', async (t) => {
  await createTopic('keys');
  const r = await tidemark(['produce', 'keys', '--key-separator', '::'], { stdin: 'k1::v1\nnokey\nalso none\nk2::v::2\n' });
  t.is(r.code, 0, r.stderr);
  const warnings = r.stderr.trim().split('\n');
  t.is(warnings.length, 1, r.stderr);
  t.regex(warnings[0]!, /^tidemark: warning: record 2 has no key separator "::"; sent with a null key/);
  const stored = await readAll('keys');
  t.deepEqual(
    stored.map((s) => [s.key?.toString() ?? null, s.value.toString()]),
    [
      ['k1', 'v1'],
      [null, 'nokey'],
      [null, 'also none'],
      ['k2', 'v::2'],
    ],
  );
});

test('a record too large stops the command with a summary; --skip-errors sends the others', async (t) => {
  const huge = 'x'.repeat((1 << 20) + 100);
  await createTopic('large');
  const r = await tidemark(['produce', 'large'], { stdin: `a\n${huge}\nb\n`, timeoutMs: 30_000 });
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /^tidemark: record 2: RECORD_TOO_LARGE: /m);
  t.regex(r.stderr, /^tidemark: 1 records acknowledged, 1 failed, \d+ not sent$/m);
  t.false(r.stderr.includes('    at '), 'no stack');
  t.deepEqual(await values('large'), ['a'], 'nothing after the bad record is sent');

  await createTopic('large-skip');
  const s = await tidemark(['produce', 'large-skip', '--skip-errors'], { stdin: `a\n${huge}\nb\n${huge}\nc`, timeoutMs: 30_000 });
  t.is(s.code, 1, s.stderr);
  t.deepEqual(
    s.stderr.trim().split('\n').map((l) => l.replace(/: RECORD_TOO_LARGE: .*/, '')),
    ['tidemark: record 2', 'tidemark: record 4', 'tidemark: 3 records acknowledged, 2 failed, 0 not sent'],
  );
  t.deepEqual(await values('large-skip'), ['a', 'b', 'c']);
});

test('Ctrl-C mid-stream prints how many records were acknowledged and exits 130', async (t) => {
  await createTopic('interrupted');
  const producer = spawnCli(['produce', 'interrupted'], { nats: f.nats.url, stdin: 'r1\nr2\nr3\n', keepStdinOpen: true });
  await waitForRecords('interrupted', 3);
  const status = await producer.kill('SIGINT', 15_000);
  t.is(status.code, 130, producer.stderrLines.join('\n'));
  t.deepEqual(producer.stderrLines, ['tidemark: 3 records acknowledged, 0 failed, 0 not sent']);
});

test("a record over the topic's max.message.bytes fails alone: the records around it are written", async (t) => {
  await f.client.admin().createTopic({ name: 'small', partitions: 1, replicationFactor: 1, config: { 'max.message.bytes': '2000' } });
  const big = 'y'.repeat(3_000);
  // Record 2 is over the limit as read; record 4 fits it, but not with a batch's overhead.
  const r = await tidemark(['produce', 'small', '--skip-errors'], { stdin: `a\n${big}\nb\n${'w'.repeat(1_990)}\n${'z'.repeat(1_500)}\n` });
  t.is(r.code, 1, r.stderr);
  t.deepEqual(
    r.stderr.trim().split('\n').map((l) => l.replace(/: RECORD_TOO_LARGE: .*/, ': RECORD_TOO_LARGE')),
    ['tidemark: record 2: RECORD_TOO_LARGE', 'tidemark: record 4: RECORD_TOO_LARGE', 'tidemark: 3 records acknowledged, 2 failed, 0 not sent'],
  );
  t.deepEqual(await values('small'), ['a', 'b', 'z'.repeat(1_500)]);
});
