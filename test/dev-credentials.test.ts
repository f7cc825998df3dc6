/**
 * `tidemark dev` against a nats-server that asks for credentials (the documented two-account
 * configuration of docs/security.md): dev and the nodes it starts log in with the node user's
 * credentials given by environment, a client in the other account sees every node through the
 * imported status service, and `dev restart N` (which controls dev over NATS) works with them.
 */
import test from 'ava';
import { readFile, rm } from 'node:fs/promises';
import { killAllCliProcesses, runCli, spawnCli, type CliProcess } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';

const PASSWORDS = { TIDEMARK_NODE_PASSWORD: 'dev-node-pw-41', ALICE_PASSWORD: 'dev-alice-pw-42', BOB_PASSWORD: 'dev-bob-pw-43' };
const AS_NODE = { TIDEMARK_NATS_USER: 'node', TIDEMARK_NATS_PASSWORD: PASSWORDS.TIDEMARK_NODE_PASSWORD };
const AS_BOB = { TIDEMARK_NATS_USER: 'bob', TIDEMARK_NATS_PASSWORD: PASSWORDS.BOB_PASSWORD, TIDEMARK_NATS_INBOX_PREFIX: '_INBOX_bob' };
/** Bound on a 2-node dev cluster starting on a loaded machine, ms. */
const DEV_READY_MS = 60_000;

let nats: NatsServer | undefined;
let dev: CliProcess;
let dir: string;

test.before(async () => {
  const doc = await readFile(new URL('../../docs/security.md', import.meta.url), 'utf8');
  const twoAccounts = /```conf\n([\s\S]*?)```/.exec(doc)![1]!;
  nats = await startNatsServer({ config: twoAccounts, env: PASSWORDS });
  dir = await tempDir('tm-dev-credentials-');
  dev = spawnCli(['dev', '--nodes', '2', '--nats', nats.url, '--data-dir', dir], { env: AS_NODE });
  await dev.waitForLine('stdout', (line) => line.trim() === 'Ctrl-C to stop.', DEV_READY_MS);
});

test.after.always(async () => {
  await killAllCliProcesses();
  await nats?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

test('dev and its nodes log in as the node user; a client of the other account sees both nodes; dev restart works', async (t) => {
  const status = await runCli(['cluster', 'status', '--json'], { nats: nats!.url, env: AS_BOB });
  t.is(status.code, 0, status.stderr);
  const cluster = JSON.parse(status.stdout) as { controllerId: number; brokers: Array<{ id: number; fenced: boolean; reachable: boolean }> };
  t.true(cluster.controllerId > 0);
  t.deepEqual(
    cluster.brokers.map((b) => [b.id, b.fenced, b.reachable]),
    [
      [1, false, true],
      [2, false, true],
    ],
    'both nodes answered status through the import (response: stream)',
  );

  const restart = await runCli(['dev', 'restart', '2'], { nats: nats!.url, env: AS_NODE, timeoutMs: 45_000 });
  t.is(restart.code, 0, restart.stderr);
  t.regex(restart.stdout + restart.stderr, /node 2 started .* and registered/);
  t.false([...dev.stdoutLines, ...dev.stderrLines].join('\n').includes(PASSWORDS.TIDEMARK_NODE_PASSWORD), 'no password in dev or node output');

  // Without credentials dev's control refuses to act: NATS does not let it in.
  const anonymous = await runCli(['dev', 'restart', '2'], { nats: nats!.url });
  t.is(anonymous.code, 1);
  t.regex(anonymous.stderr, /NOT_AUTHORIZED/);
});
