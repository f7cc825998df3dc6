/**
 * `tidemark dev` as a child process: it runs its own nats-server when nothing answers at --nats (and
 * stops it on Ctrl-C), or uses the one that answers (and leaves it running).
 */
import test, { type ExecutionContext } from 'ava';
import { rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { killAllCliProcesses, runCli, spawnCli, type CliProcess } from './helpers/cli.js';
import { freePort, startNatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';

const PROBE_TIMEOUT_MS = 5_000;

/**
 * What is at 127.0.0.1:port: 'nats' (a server that sends INFO), 'refused' (nothing listens), or
 * 'other'. Bounded by PROBE_TIMEOUT_MS.
 */
function probe(port: number): Promise<'nats' | 'refused' | 'other'> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let seen = '';
    const done = (result: 'nats' | 'refused' | 'other') => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done('other'));
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.toString('utf8');
      if (seen.length >= 4) done(seen.startsWith('INFO') ? 'nats' : 'other');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => done(error.code === 'ECONNREFUSED' ? 'refused' : 'other'));
    socket.once('end', () => done('other'));
  });
}

const dirs: string[] = [];

test.after.always(async () => {
  await killAllCliProcesses();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function startDev(natsUrl: string): Promise<{ dev: CliProcess; banner: string }> {
  const dataDir = await tempDir('tm-dev-');
  dirs.push(dataDir);
  const dev = spawnCli(['dev', '--nats', natsUrl, '--data-dir', dataDir]);
  const banner = await dev.waitForLine('stdout', (line) => line.startsWith('Tidemark dev is running'));
  return { dev, banner };
}

/** topic create + produce + consume through the CLI against `nats`. */
async function roundTrip(t: ExecutionContext, nats: string): Promise<void> {
  const create = await runCli(['topic', 'create', 'dev-orders', '--partitions', '2'], { nats });
  t.is(create.code, 0, create.stderr);
  t.is(create.stdout, 'Created topic dev-orders.\n');
  const produce = await runCli(['produce', 'dev-orders'], { nats, stdin: 'one\ntwo\nthree\nfour\nfive\n' });
  t.is(produce.code, 0, produce.stderr);
  const consume = await runCli(['consume', 'dev-orders', '--from-beginning', '--max-messages', '5'], { nats });
  t.is(consume.code, 0, consume.stderr);
  t.deepEqual(consume.stdout.split('\n').filter(Boolean).sort(), ['five', 'four', 'one', 'three', 'two']);
}

test('dev starts its own nats-server when none answers, works, and stops it on SIGINT', async (t) => {
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  t.is(await probe(port), 'refused', 'nothing listens on the port before dev');

  const { dev, banner } = await startDev(url);
  t.true(banner.includes('started by tidemark dev'), banner);
  t.true(banner.includes(url), `the banner names ${url}: ${banner}`);
  t.is(await probe(port), 'nats', 'a nats-server answers on the port');

  await roundTrip(t, url);

  const exit = await dev.kill('SIGINT');
  t.deepEqual(exit, { code: 0, signal: null }, `dev exits 0 on SIGINT; stderr: ${dev.stderrLines.join('\n')}`);
  t.true(dev.stdoutLines.includes('stopping...'));
  t.is(await probe(port), 'refused', 'its nats-server is gone: the port no longer accepts connections');
});

test('dev uses a nats-server that already answers and leaves it running after SIGINT', async (t) => {
  const nats = await startNatsServer();
  try {
    const { dev, banner } = await startDev(nats.url);
    t.true(banner.includes('existing server'), banner);
    t.true(banner.includes(nats.url), `the banner names ${nats.url}: ${banner}`);

    await roundTrip(t, nats.url);

    const exit = await dev.kill('SIGINT');
    t.deepEqual(exit, { code: 0, signal: null }, `dev exits 0 on SIGINT; stderr: ${dev.stderrLines.join('\n')}`);
    t.is(await probe(nats.port), 'nats', 'the existing nats-server still answers');
  } finally {
    await nats.stop();
  }
});
