/**
 * Mistakes that used to look like hangs fail fast with a clear message (issue 13): an unknown topic
 * or partition, confirmed by a caught-up broker, is final (not retried for the whole budget), and a
 * cluster name nobody answers for fails `connect` within its clusterWaitMs. A real node process and
 * a real nats-server; the bounds are loose enough for a loaded machine and far below the 18-26 s
 * these took before.
 */
import test from 'ava';
import { codecs, Tidemark, TidemarkError } from '../src/index.js';
import { runCli } from './helpers/cli.js';
import { cliNodeFixture } from './helpers/cli-node-fixture.js';

/** What the SDK must answer within, ms (aim: well under 2 s; the old behaviour took 18-20 s). */
const SDK_BOUND_MS = 3_000;
/** The same through a CLI process (its own start costs about half a second). */
const CLI_BOUND_MS = 5_000;

const f = cliNodeFixture(test, 'tm-fast-', (client) => client.admin().createTopic({ name: 'one', partitions: 1 }));

async function timed<T>(run: () => Promise<T>): Promise<{ ms: number; error: unknown }> {
  const start = performance.now();
  try {
    await run();
    return { ms: performance.now() - start, error: undefined };
  } catch (error) {
    return { ms: performance.now() - start, error };
  }
}

function finalCode(error: unknown): string {
  if (!(error instanceof TidemarkError)) return `not a TidemarkError: ${String(error)}`;
  return `${error.code}${error.retriable ? ' (retriable)' : ''}`;
}

test('the SDK fails a send to an unknown topic at once, UNKNOWN_TOPIC and not retriable', async (t) => {
  const producer = f.client.producer({ topic: 'nosuch', codec: codecs.string() });
  const r = await timed(() => producer.send({ value: 'x' }));
  await producer.close();
  t.is(finalCode(r.error), 'UNKNOWN_TOPIC');
  t.log(`failed after ${Math.round(r.ms)} ms`);
  t.true(r.ms < SDK_BOUND_MS, `failed after ${Math.round(r.ms)} ms`);
});

test('the SDK fails a send to a partition the topic does not have at once', async (t) => {
  const producer = f.client.producer({ topic: 'one', codec: codecs.string() });
  const r = await timed(() => producer.send({ value: 'x', partition: 9 }));
  await producer.send({ value: 'still works', partition: 0 });
  await producer.close();
  t.is(finalCode(r.error), 'UNKNOWN_TOPIC');
  t.regex((r.error as Error).message, /no partition 9 \(it has 1\)/);
  t.log(`failed after ${Math.round(r.ms)} ms`);
  t.true(r.ms < SDK_BOUND_MS, `failed after ${Math.round(r.ms)} ms`);
});

test('a reader of an unknown topic fails at once', async (t) => {
  const reader = f.client.reader({ topic: 'nosuch', partition: 0, from: 'earliest', codec: codecs.string() });
  const r = await timed(() => reader.next());
  await reader.close();
  t.is(finalCode(r.error), 'UNKNOWN_TOPIC');
  t.log(`failed after ${Math.round(r.ms)} ms`);
  t.true(r.ms < SDK_BOUND_MS, `failed after ${Math.round(r.ms)} ms`);
});

test('a topic another client just created is not reported missing', async (t) => {
  // The fast failure must not turn metadata lag into a false "does not exist".
  const other = await Tidemark.connect({ servers: f.nats.url });
  try {
    for (let i = 0; i < 5; i++) {
      const name = `fresh-${i}`;
      await f.client.admin().createTopic({ name, partitions: 2 });
      const producer = other.producer({ topic: name, codec: codecs.string() });
      await producer.send({ value: 'first' });
      await producer.close();
    }
    t.pass();
  } finally {
    await other.close();
  }
});

test('the CLI fails produce to an unknown topic or partition within seconds, naming it', async (t) => {
  const start = performance.now();
  const topic = await runCli(['produce', 'nosuch'], { nats: f.nats.url, stdin: 'hi\n' });
  const topicMs = performance.now() - start;
  t.is(topic.code, 1, topic.stderr);
  t.regex(topic.stderr, /UNKNOWN_TOPIC: topic "nosuch" does not exist/);
  t.log(`produce nosuch: exited after ${Math.round(topicMs)} ms`);
  t.true(topicMs < CLI_BOUND_MS, `exited after ${Math.round(topicMs)} ms`);

  const start2 = performance.now();
  const partition = await runCli(['produce', 'one', '--partition', '9'], { nats: f.nats.url, stdin: 'hi\n' });
  const partitionMs = performance.now() - start2;
  t.is(partition.code, 1, partition.stderr);
  t.regex(partition.stderr, /UNKNOWN_TOPIC: topic "one" has no partition 9/);
  t.log(`produce --partition 9: exited after ${Math.round(partitionMs)} ms`);
  t.true(partitionMs < CLI_BOUND_MS, `exited after ${Math.round(partitionMs)} ms`);
});

test('a cluster name nobody answers for fails connect with a message naming it', async (t) => {
  const r = await timed(() => Tidemark.connect({ servers: f.nats.url, cluster: 'other', clusterWaitMs: 1_500 }));
  t.is(finalCode(r.error), 'NO_RESPONDERS');
  t.regex((r.error as Error).message, /no Tidemark cluster named "other" answers on/);
  t.true(r.ms < 1_500 + SDK_BOUND_MS, `failed after ${Math.round(r.ms)} ms`);

  const start = performance.now();
  const cli = await runCli(['topic', 'list', '--cluster', 'other'], { nats: f.nats.url });
  const cliMs = performance.now() - start;
  t.is(cli.code, 1);
  t.regex(cli.stderr, /^tidemark: NO_RESPONDERS: no Tidemark cluster named "other" answers on nats:\/\/127\.0\.0\.1:\d+ /);
  t.is(cli.stderr.trim().split('\n').length, 1, 'one line');
  t.log(`topic list --cluster other: exited after ${Math.round(cliMs)} ms`);
  t.true(cliMs < 5_000 + CLI_BOUND_MS, `exited after ${Math.round(cliMs)} ms`);
});
