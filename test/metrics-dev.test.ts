/**
 * `tidemark dev --metrics-port BASE`: node i serves /metrics on BASE+i-1, and the banner says where.
 * Runs on free ports (never npm start's documented 9641..9643).
 */
import test from 'ava';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { killAllCliProcesses, runCli, spawnCli } from './helpers/cli.js';
import { pollUntil } from './helpers/behaviour-cluster.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';
import { scrape, sumOf } from './helpers/prom-text.js';

let nats: NatsServer;
const dirs: string[] = [];

test.before(async () => {
  nats = await startNatsServer();
});

test.after.always(async () => {
  await killAllCliProcesses();
  await nats?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** A base port whose next `count` ports were free a moment ago (bounded number of tries). */
async function freeRun(count: number): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await free(base + i);
    if (ok) return base;
  }
  throw new Error(`no run of ${count} free ports found`);
}

test('dev --metrics-port BASE gives node i port BASE+i-1 and prints it in the banner', async (t) => {
  const base = await freeRun(2);
  const dataDir = await tempDir('tm-dev-metrics-');
  dirs.push(dataDir);
  const dev = spawnCli(['dev', '--nodes', '2', '--nats', nats.url, '--cluster', 'devmetrics', '--data-dir', dataDir, '--metrics-port', String(base)]);
  await dev.waitForLine('stdout', (line) => line.startsWith('Tidemark dev is running'), 60_000);
  const banner = await dev.waitForLine('stdout', (line) => line.trim().startsWith('Metrics:'));
  t.true(banner.includes(`node 1 http://127.0.0.1:${base}/metrics`), banner);
  t.true(banner.includes(`node 2 http://127.0.0.1:${base + 1}/metrics`), banner);
  for (const [i, port] of [base, base + 1].entries()) {
    const s = await scrape(`http://127.0.0.1:${port}/metrics`);
    t.is(s.samples.find((x) => x.name === 'tidemark_broker_registered')?.labels['node'], String(i + 1), `port ${port} is node ${i + 1}`);
    await pollUntil(`node ${i + 1} ready`, () => fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(5_000) }).then((r) => r.status), (status) => status === 200, 20_000);
  }
  t.is(sumOf(await scrape(`http://127.0.0.1:${base}/metrics`), 'tidemark_broker_registered'), 1);
  const exit = await dev.kill('SIGINT', 30_000);
  t.is(exit.code, 0);
});

test('dev --help documents --metrics-port; a bad value is a usage error', async (t) => {
  const help = await runCli(['dev', '--help']);
  t.regex(help.stdout, /--metrics-port BASE/);
  t.regex(help.stdout, /9641/);
  const bad = await runCli(['dev', '--metrics-port', 'x']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--metrics-port must be an integer/);
});
