import { spawn, type ChildProcess } from 'node:child_process';
import { NODE_PROCESS_FLAGS } from '../node-flags.js';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tidemark } from '../../client/client.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse } from '../args.js';
import { ensureNats } from '../embedded-nats.js';
import { onShutdownSignal } from '../signals.js';

export const DEV_HELP = `Usage: tidemark dev [--nodes N] [--data-dir DIR] [--nats URL] [--cluster NAME]

Starts a local Tidemark cluster for development: uses the NATS server at --nats if one answers
there, otherwise runs nats-server (from PATH) itself on that port and stops it on exit. Then starts
N combined nodes (broker + controller voter), each its own process, with data in DIR/node-<id>,
and waits until a controller is elected and every broker is registered. Ctrl-C stops everything
cleanly; data stays for the next run.

Options:
  --nodes N         number of nodes, 1..9 (default 1; npm start uses 3)
  --data-dir DIR    default .tidemark/dev
  --log-level L     pino level for the nodes (default info)
${GLOBAL_HELP}`;

const OPTIONS = { ...GLOBAL_OPTIONS, nodes: { type: 'string' }, 'data-dir': { type: 'string' }, 'log-level': { type: 'string' } } as const;

const BIN = fileURLToPath(new URL('../../../../bin/tidemark.js', import.meta.url));
/** Bound on the cluster becoming ready, ms. */
const READY_TIMEOUT_MS = 60_000;
/** Bound on each node's clean stop after SIGTERM, ms. */
const STOP_TIMEOUT_MS = 15_000;

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      done();
    });
    child.kill('SIGTERM');
  });
}

async function waitForCluster(servers: string, cluster: string, nodes: number): Promise<void> {
  // The nodes are only starting: no cluster check at connect (this loop is the wait).
  const client = await Tidemark.connect({ servers, cluster, clusterWaitMs: 0 });
  try {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const c = await client.admin().describeCluster();
      if (c.controllerId >= 0 && c.brokers.filter((b) => !b.fenced).length >= nodes) return;
      if (Date.now() > deadline) throw new Error(`the cluster was not ready within ${READY_TIMEOUT_MS} ms`);
    }
  } finally {
    await client.close();
  }
}

export async function devCommand(argv: string[]): Promise<number> {
  const { values } = parse('dev', argv, OPTIONS, 0);
  if (values.help) {
    process.stdout.write(`${DEV_HELP}\n`);
    return 0;
  }
  const nodes = intFlag('nodes', values.nodes, 1, 9) ?? 1;
  const dataDir = resolve(values['data-dir'] ?? '.tidemark/dev');
  const { servers, cluster } = connection(values);
  const nats = await ensureNats(servers, join(dataDir, 'nats'));
  const ids = Array.from({ length: nodes }, (_, i) => i + 1);
  // An IPC channel lets each node notice if this process dies, even by kill -9, and stop itself.
  const children = ids.map((id) =>
    spawn(
      process.execPath,
      [...NODE_PROCESS_FLAGS, BIN, 'node', 'start', '--id', String(id), '--data-dir', join(dataDir, `node-${id}`), '--controllers', ids.join(','), '--nats', nats.url, '--cluster', cluster, '--pretty', '--log-level', values['log-level'] ?? 'info'],
      { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
    ),
  );
  const stopAll = async () => {
    await Promise.all(children.map(stopChild));
    await nats.stop();
  };
  try {
    await Promise.race([
      waitForCluster(nats.url, cluster, nodes),
      ...children.map((child, i) => new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`node ${ids[i]} exited with code ${code} while starting`))))),
    ]);
  } catch (error) {
    await stopAll();
    throw error;
  }
  const hint = nats.url === servers ? '' : `\n  NATS is on ${nats.url} (port taken); in other terminals: export TIDEMARK_NATS=${nats.url}`;
  process.stdout.write(
    `Tidemark dev is running: cluster "${cluster}", ${nodes} node(s), NATS ${nats.url} (${nats.owned ? 'started by tidemark dev' : 'existing server'}), data in ${dataDir}${hint}
  Try, in another terminal:
    npx tidemark topic create orders --partitions 3
    seq 1 1000 | npx tidemark produce orders
    npx tidemark consume orders --from-beginning --max-messages 1000
    npx tidemark topic describe orders
    npx tidemark cluster status
  Ctrl-C to stop.
`,
  );
  await onShutdownSignal();
  process.stdout.write('stopping...\n');
  await stopAll();
  return 0;
}
