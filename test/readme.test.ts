/** The README's SDK example is examples/quickstart.ts, and it runs against a real node. */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import test from 'ava';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { startTestNode, type TestNode } from './helpers/node.js';

const root = new URL('../../', import.meta.url);
let nats: NatsServer;
let node: TestNode;

test.before(async () => {
  nats = await startNatsServer();
  node = await startTestNode(nats.url);
});

test.after.always(async () => {
  await node?.destroy();
  await nats?.stop();
});

test('the README SDK block is examples/quickstart.ts, verbatim', async (t) => {
  const readme = await readFile(new URL('README.md', root), 'utf8');
  const example = await readFile(new URL('examples/quickstart.ts', root), 'utf8');
  const block = /## SDK\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  t.is(block, example);
});

test('examples/quickstart runs: sends an order and reads it back', async (t) => {
  const run = () =>
    promisify(execFile)(process.execPath, [new URL('dist/examples/quickstart.js', root).pathname], {
      env: { ...process.env, TIDEMARK_NATS: nats.url },
      timeout: 30_000,
    });
  const first = await run();
  t.regex(first.stdout, /o-1 is at partition \d, offset 0\n\d+ o-1 42 web \d{4}-\d\d-\d\dT/);
  t.regex(first.stdout, /billing got o-1 \(partition \d, offset 0, redelivered 0 times\)/);
  const second = await run(); // the topic exists now: the example tolerates that and appends
  // Appended after the first record (and the subscription's cursor records, which take offsets too).
  const appended = /offset ([1-9]\d*)\n(\d+) o-1 42 web/.exec(second.stdout);
  t.truthy(appended, second.stdout);
  t.is(appended?.[1], appended?.[2]);
  // The subscription acknowledged the first record durably: the second run gets a new one (this
  // run's o-1, or the first run's o-2, whichever partition answers first), never offset 0 again.
  t.regex(second.stdout, /billing got o-[12] \(partition \d, offset [1-9]\d*, redelivered 0 times\)/);
  t.regex(first.stdout, /o-2 written by order-writer at producer epoch 1, partition \d/);
  t.regex(second.stdout, /o-2 written by order-writer at producer epoch 2, partition \d/, 'each takeover raises the epoch');
});
