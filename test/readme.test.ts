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
  const second = await run(); // the topic exists now: the example tolerates that and appends
  t.regex(second.stdout, /offset 1\n1 o-1 42 web/);
});
