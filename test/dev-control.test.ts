/**
 * `tidemark dev --nodes 3` as a child process, against its own nats-server: a node that dies is
 * reported on dev's stderr; `tidemark dev stop|start|restart N`, run as separate processes, control
 * one node over NATS; bad control requests get error replies and leave dev serving; `cluster status`
 * shows a voter that does not answer as unreachable, with the active controller's view of it;
 * `--restart` brings a killed node back by itself.
 */
import test from 'ava';
import { readFile, rm } from 'node:fs/promises';
import { suggestedTopicCreate } from '../src/cli/commands/dev.js';
import { devControlReply } from '../src/protocol/dev-messages.js';
import { TidemarkError } from '../src/protocol/errors.js';
import { decodeReply, encodeMessage } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import { connectNats } from '../src/runtime/nats-transport.js';
import { killAllCliProcesses, runCli, spawnCli, type CliProcess, type CliResult } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';

/** Bound on a 3-node dev cluster starting on a loaded machine, ms. */
const DEV_READY_MS = 60_000;
/** Bound on a dev control command (a stop, then a start that waits for registration), ms. */
const CONTROL_MS = 45_000;

const README = new URL('../../README.md', import.meta.url);

let nats: NatsServer | undefined;
let dev: CliProcess;
let banner: string[] = [];
const dirs: string[] = [];

interface Status {
  controllerId: number;
  voters: Array<{ id: number; role: string; reachable: boolean; matchIndex?: number; heardMsAgo?: number }>;
  brokers: Array<{ id: number; fenced: boolean; reachable: boolean }>;
}

test.before(async () => {
  nats = await startNatsServer();
  const dir = await tempDir('tm-dev-control-');
  dirs.push(dir);
  dev = spawnCli(['dev', '--nodes', '3', '--nats', nats.url, '--data-dir', dir]);
  await dev.waitForLine('stdout', (line) => line.trim() === 'Ctrl-C to stop.', DEV_READY_MS);
  banner = [...dev.stdoutLines];
});

test.after.always(async () => {
  await killAllCliProcesses();
  await nats?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function cli(args: string[], timeoutMs = 20_000): Promise<CliResult> {
  return runCli(args, { nats: nats!.url, timeoutMs });
}

async function clusterStatus(): Promise<Status> {
  const r = await cli(['cluster', 'status', '--json']);
  if (r.code !== 0) throw new Error(`cluster status failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Status;
}

/** The newest pid dev printed for node `id`: a start or restart line on stderr, else the banner. */
function pidOf(p: CliProcess, id: number, bannerLines: string[]): number {
  const pattern = new RegExp(`^tidemark dev: node ${id} (re)?started \\(pid (\\d+)\\)`);
  for (let i = p.stderrLines.length - 1; i >= 0; i--) {
    const m = pattern.exec(p.stderrLines[i]!);
    if (m) return Number(m[2]);
  }
  const m = new RegExp(`\\b${id} \\(pid (\\d+)\\)`).exec(bannerLines.find((l) => l.trim().startsWith('Nodes:')) ?? '');
  if (!m) throw new Error(`no pid for node ${id} in the banner: ${bannerLines.join('\n')}`);
  return Number(m[1]);
}

/** A voter that is not the active controller, so freezing or killing it starts no election. */
async function follower(): Promise<number> {
  const { controllerId } = await clusterStatus();
  return controllerId === 2 ? 3 : 2;
}

/** Waits for a line on p's stderr that comes after the `from` lines already printed. */
function nextStderrLine(p: CliProcess, from: number, match: (line: string) => boolean, timeoutMs = 20_000): Promise<string> {
  let index = 0;
  return p.waitForLine('stderr', (line) => index++ >= from && match(line), timeoutMs);
}

test.serial('the banner suggests the README topic (3 partitions, replication factor 3, min.insync.replicas=2) for 3 nodes, one replica per node below', async (t) => {
  const readme = await readFile(README, 'utf8');
  const suggested = 'npx tidemark topic create orders --partitions 3 --replication-factor 3 --config min.insync.replicas=2';
  t.true(readme.includes(suggested), 'the README quick start uses the same command');
  t.true(
    banner.some((line) => line.trim() === suggested),
    banner.join('\n'),
  );
  t.true(banner.some((line) => /^\s*Nodes: 1 \(pid \d+\), 2 \(pid \d+\), 3 \(pid \d+\)/.test(line)), banner.join('\n'));
  t.is(suggestedTopicCreate(1), 'npx tidemark topic create orders --partitions 3 --replication-factor 1');
  t.is(suggestedTopicCreate(2), 'npx tidemark topic create orders --partitions 3 --replication-factor 2');
});

test.serial('cluster status shows a frozen voter (SIGSTOP) as unreachable with what the leader last knew of it, and exits 0 quickly', async (t) => {
  const victim = await follower();
  const pid = pidOf(dev, victim, banner);
  process.kill(pid, 'SIGSTOP');
  try {
    const json = await cli(['cluster', 'status', '--json']);
    t.is(json.code, 0, json.stderr);
    t.true(json.ms < 10_000, `cluster status took ${json.ms} ms`);
    const status = JSON.parse(json.stdout) as Status;
    t.deepEqual(
      status.voters.map((v) => v.id),
      [1, 2, 3],
      'every voter is listed',
    );
    const v = status.voters.find((x) => x.id === victim)!;
    t.like(v, { id: victim, role: 'unreachable', reachable: false });
    t.true(typeof v.matchIndex === 'number' && v.matchIndex > 0, JSON.stringify(v));
    t.true(typeof v.heardMsAgo === 'number' && v.heardMsAgo >= 0, JSON.stringify(v));
    t.true(
      status.voters.filter((x) => x.id !== victim).every((x) => x.reachable),
      JSON.stringify(status.voters),
    );

    const text = await cli(['cluster', 'status']);
    t.is(text.code, 0, text.stderr);
    t.regex(text.stdout, new RegExp(`^\\t${victim}\\tunreachable \\(last heard \\d+\\.\\d s ago by the leader, matchIndex \\d+\\)$`, 'm'));
  } finally {
    process.kill(pid, 'SIGCONT');
  }
});

test.serial('kill -9 of a node: dev prints it and how to start it; dev start N brings it back registered and unfenced', async (t) => {
  const victim = await follower();
  const from = dev.stderrLines.length;
  process.kill(pidOf(dev, victim, banner), 'SIGKILL');
  await nextStderrLine(dev, from, (line) => line === `tidemark dev: node ${victim} exited (signal SIGKILL); start it again with: tidemark dev start ${victim}`);

  const start = await cli(['dev', 'start', String(victim)], CONTROL_MS);
  t.is(start.code, 0, start.stderr);
  t.regex(start.stdout, new RegExp(`^node ${victim} started \\(pid \\d+\\) and registered\\n$`));
  const status = await clusterStatus();
  t.like(
    status.brokers.find((b) => b.id === victim),
    { id: victim, fenced: false, reachable: true },
  );
  t.like(
    status.voters.find((v) => v.id === victim),
    { id: victim, reachable: true },
  );

  const again = await cli(['dev', 'start', String(victim)]);
  t.is(again.code, 1, 'a running node cannot be started');
  t.regex(again.stderr, new RegExp(`node ${victim} is running`));
});

test.serial('dev restart N stops the node cleanly and starts a new process, registered', async (t) => {
  const victim = await follower();
  const before = pidOf(dev, victim, banner);
  const from = dev.stderrLines.length;
  const restart = await cli(['dev', 'restart', String(victim)], CONTROL_MS);
  t.is(restart.code, 0, restart.stderr);
  t.regex(restart.stdout, new RegExp(`^node ${victim} stopped \\(code 0\\); node ${victim} started \\(pid \\d+\\) and registered\\n$`));
  const after = pidOf(dev, victim, banner);
  t.not(after, before, 'a new process');
  t.like(
    (await clusterStatus()).brokers.find((b) => b.id === victim),
    { fenced: false, reachable: true },
  );
  t.false(
    dev.stderrLines.slice(from).some((line) => line.startsWith(`tidemark dev: node ${victim} exited`)),
    'a stop by dev restart is not reported as a death',
  );
});

test.serial('bad control requests get error replies and dev keeps serving; an unknown node is an error exit', async (t) => {
  const transport = await connectNats({ servers: nats!.url });
  try {
    for (const body of [new Uint8Array([0xc1, 0xff, 0x00]), encodeMessage({ timeoutMs: 1000, action: 'explode', node: 1 }), encodeMessage({ hello: 'world' })]) {
      const reply = await transport.request(new Subjects('tidemark').devControl(), body, 5_000);
      const error = t.throws(() => decodeReply(reply, devControlReply));
      t.true(error instanceof TidemarkError && error.code === 'INVALID_REQUEST', String(error));
    }
  } finally {
    await transport.close();
  }
  const unknown = await cli(['dev', 'stop', '9']);
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /no node 9 \(its nodes: 1, 2, 3\)/);
  const usage = await cli(['dev', 'stop', 'two']);
  t.is(usage.code, 2, usage.stderr);

  // Still serving: a well-formed request is answered.
  const running = await cli(['dev', 'start', '1']);
  t.is(running.code, 1);
  t.regex(running.stderr, /node 1 is running/);
  t.is(dev.child.exitCode, null, 'dev is alive');
});

test.serial('dev stop|start with no tidemark dev for the cluster: a clear message, exit 1', async (t) => {
  const r = await cli(['dev', 'stop', '2', '--cluster', 'nodev']);
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`no tidemark dev answers for cluster "nodev" on ${nats!.url.replaceAll('.', '\\.')}`));
  const down = await runCli(['dev', 'start', '2', '--nats', 'nats://127.0.0.1:1'], { timeoutMs: 20_000 });
  t.is(down.code, 1);
  t.regex(down.stderr, /no tidemark dev answers for cluster "tidemark" on nats:\/\/127\.0\.0\.1:1/);
});

test.serial('dev --restart restarts a killed node by itself; dev stop N then keeps it down', async (t) => {
  const dir = await tempDir('tm-dev-restart-');
  dirs.push(dir);
  const solo = spawnCli(['dev', '--nodes', '1', '--restart', '--cluster', 'solo', '--nats', nats!.url, '--data-dir', dir, '--log-level', 'info']);
  await solo.waitForLine('stdout', (line) => line.trim() === 'Ctrl-C to stop.', DEV_READY_MS);
  const soloBanner = [...solo.stdoutLines];
  t.true(soloBanner.some((l) => l.includes('--replication-factor 1')), soloBanner.join('\n'));
  const from = solo.stderrLines.length;
  process.kill(pidOf(solo, 1, soloBanner), 'SIGKILL');
  await nextStderrLine(solo, from, (line) => /^tidemark dev: node 1 exited \(signal SIGKILL\); restarting it in \d+ ms \(restart 1\)$/.test(line));
  const restarted = await nextStderrLine(solo, from, (line) => /^tidemark dev: node 1 restarted \(pid \d+\)$/.test(line));
  t.truthy(restarted);
  await nextStderrLine(solo, from, (line) => line.includes('node ready'), 30_000);

  const stop = await runCli(['dev', 'stop', '1', '--cluster', 'solo'], { nats: nats!.url, timeoutMs: CONTROL_MS });
  t.is(stop.code, 0, stop.stderr);
  t.regex(stop.stdout, /^node 1 stopped \(code 0\)\n$/);
  t.false(
    solo.stderrLines.slice(from).some((l) => /node 1 exited \(code 0\)/.test(l)),
    'a node stopped by dev stop is not reported as dead nor restarted',
  );
  const start = await runCli(['dev', 'start', '1', '--cluster', 'solo'], { nats: nats!.url, timeoutMs: CONTROL_MS });
  t.is(start.code, 0, start.stderr);
  t.deepEqual(await solo.kill('SIGINT', 30_000), { code: 0, signal: null });
});
