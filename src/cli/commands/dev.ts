import { spawn, type ChildProcess } from 'node:child_process';
import { NODE_PROCESS_FLAGS } from '../node-flags.js';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tidemark } from '../../client/client.js';
import { Rpc } from '../../client/rpc.js';
import { nodeStatus, type StatusRequest } from '../../protocol/controller-messages.js';
import { devControlRequest, type DevControlRequest } from '../../protocol/dev-messages.js';
import { devControlCommand, NODE_READY_TIMEOUT_MS, STOP_TIMEOUT_MS } from './dev-control.js';
import { TidemarkError } from '../../protocol/errors.js';
import { decodeRequest, encodeError, encodeMessage } from '../../protocol/messages.js';
import { Subjects } from '../../protocol/subjects.js';
import { connectNats, type NatsTransport } from '../../runtime/nats-transport.js';
import { systemRandom } from '../../runtime/ports.js';
import { backoffMs, type BackoffPolicy } from '../../runtime/retry.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, natsSecurityEnv, natsSecurityOf, parse } from '../args.js';
import type { NatsSecurity } from '../../runtime/nats-security.js';
import { ensureNats } from '../embedded-nats.js';
import { onShutdownSignal } from '../signals.js';

export const DEV_HELP = `Usage: tidemark dev [--nodes N] [--restart] [--data-dir DIR] [--nats URL] [--cluster NAME]
       tidemark dev stop|start|restart N [--nats URL] [--cluster NAME]

Starts a local Tidemark cluster for development: uses the NATS server at --nats if one answers
there, otherwise runs nats-server (from PATH) itself on that port and stops it on exit. Then starts
N combined nodes (broker + controller voter), each its own process, with data in DIR/node-<id>,
and waits until a controller is elected and every broker is registered. Ctrl-C stops everything
cleanly; data stays for the next run.

When a node process dies, tidemark dev prints one line on stderr and leaves it down, or, with
--restart, starts it again after a backoff (full jitter, from 1 s doubling up to 30 s; the count
starts over once a node stayed up 30 s).

From another terminal, with the same --nats and --cluster, control one node of the running
tidemark dev (it answers on the NATS subject tm.<cluster>.dev.control):
  tidemark dev stop N      SIGTERM (a clean, controlled shutdown), SIGKILL after 15 s; stays
                           down, also with --restart, until started again
  tidemark dev start N     starts it again with the same flags; returns once it is registered
  tidemark dev restart N   stop, then start
These exit 1 when no tidemark dev answers, or when it refuses (unknown node, already running).

Options:
  --nodes N         number of nodes, 1..9 (default 1; npm start uses 3)
  --restart         restart a node that died, with backoff
  --data-dir DIR    default .tidemark/dev
  --log-level L     pino level for the nodes (default info)
  --metrics-port BASE
                    node i serves /metrics, /healthz and /readyz on 127.0.0.1:BASE+i-1
                    (default: off; npm start uses 9641, so nodes 1..3 on 9641..9643)
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  nodes: { type: 'string' },
  restart: { type: 'boolean' },
  'data-dir': { type: 'string' },
  'log-level': { type: 'string' },
  'metrics-port': { type: 'string' },
} as const;

const BIN = fileURLToPath(new URL('../../../../bin/tidemark.js', import.meta.url));
/** Bound on the cluster becoming ready, ms. */
const READY_TIMEOUT_MS = 60_000;
/** Control requests waiting for the one running, at most. */
const CONTROL_QUEUE_MAX = 16;
/** How long each status round waits for the started node's answer, ms. */
const STATUS_WAIT_MS = 300;
/** --restart: backoff before each restart of a node that died. */
const RESTART_BACKOFF: BackoffPolicy = { backoffMsInitial: 1_000, backoffMsMax: 30_000 };
/** --restart: a node that stayed up this long starts its restart count over, ms. */
const RESTART_RESET_AFTER_MS = 30_000;

function running(child: ChildProcess | undefined): boolean {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

function stopChild(child: ChildProcess): Promise<void> {
  if (!running(child)) return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      done();
    });
    child.kill('SIGTERM');
  });
}

function exitText(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `signal ${signal}` : `code ${code}`;
}

function say(line: string): void {
  process.stderr.write(`tidemark dev: ${line}\n`);
}

async function waitForCluster(servers: string, cluster: string, nodes: number, security: NatsSecurity): Promise<void> {
  // The nodes are only starting: no cluster check at connect (this loop is the wait).
  const client = await Tidemark.connect({ ...security, servers, cluster, clusterWaitMs: 0 });
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

/** The topic the banner suggests: replication factor 3 (and min.insync.replicas=2, as the README) with 3+ nodes, else one replica per node. */
export function suggestedTopicCreate(nodes: number): string {
  return nodes >= 3
    ? 'npx tidemark topic create orders --partitions 3 --replication-factor 3 --config min.insync.replicas=2'
    : `npx tidemark topic create orders --partitions 3 --replication-factor ${nodes}`;
}

/** One node process of the dev cluster. */
interface DevNode {
  readonly id: number;
  child: ChildProcess | undefined;
  /** False after `dev stop N`: its exit is expected and --restart leaves it down. */
  wanted: boolean;
  startedAtMs: number;
  /** --restart: restarts since it last stayed up RESTART_RESET_AFTER_MS. */
  restarts: number;
  restartTimer: NodeJS.Timeout | undefined;
}

export async function devCommand(argv: string[]): Promise<number> {
  const sub = argv[0];
  if (sub === 'stop' || sub === 'start' || sub === 'restart') {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(`${DEV_HELP}\n`);
      return 0;
    }
    return devControlCommand(sub, argv.slice(1));
  }
  const { values } = parse('dev', argv, OPTIONS, 0);
  if (values.help) {
    process.stdout.write(`${DEV_HELP}\n`);
    return 0;
  }
  const nodes = intFlag('nodes', values.nodes, 1, 9) ?? 1;
  // Node ids start at 1: node i gets BASE + i - 1.
  const metricsBase = intFlag('metrics-port', values['metrics-port'], 1, 65_535 - 8);
  const metricsPortOf = (id: number) => (metricsBase === undefined ? undefined : metricsBase + id - 1);
  const autoRestart = values.restart === true;
  const dataDir = resolve(values['data-dir'] ?? '.tidemark/dev');
  const target = connection(values);
  const { servers, cluster } = target;
  // With a NATS that asks for credentials, dev and its nodes present the ones given (nodes by environment, not argv).
  const security = natsSecurityOf(target);
  const subjects = new Subjects(cluster);
  const nats = await ensureNats(servers, join(dataDir, 'nats'));
  const ids = Array.from({ length: nodes }, (_, i) => i + 1);
  const devNodes = new Map<number, DevNode>(ids.map((id) => [id, { id, child: undefined, wanted: true, startedAtMs: 0, restarts: 0, restartTimer: undefined }]));
  let ready = false;
  let shuttingDown = false;

  const onExit = (node: DevNode, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null) => {
    if (node.child !== child) return;
    node.child = undefined;
    // Before the cluster is ready the start-up race reports it; after `dev stop N` or Ctrl-C it is expected.
    if (!ready || shuttingDown || !node.wanted) return;
    if (!autoRestart) {
      say(`node ${node.id} exited (${exitText(code, signal)}); start it again with: tidemark dev start ${node.id}`);
      return;
    }
    if (Date.now() - node.startedAtMs >= RESTART_RESET_AFTER_MS) node.restarts = 0;
    node.restarts++;
    const delay = backoffMs(node.restarts, RESTART_BACKOFF, systemRandom);
    say(`node ${node.id} exited (${exitText(code, signal)}); restarting it in ${delay} ms (restart ${node.restarts})`);
    node.restartTimer = setTimeout(() => {
      node.restartTimer = undefined;
      if (shuttingDown || !node.wanted || running(node.child)) return;
      const restarted = spawnNode(node);
      say(`node ${node.id} restarted (pid ${restarted.pid})`);
    }, delay);
  };

  // An IPC channel lets each node notice if this process dies, even by kill -9, and stop itself.
  const spawnNode = (node: DevNode): ChildProcess => {
    const id = node.id;
    const child = spawn(
      process.execPath,
      [...NODE_PROCESS_FLAGS, BIN, 'node', 'start', '--id', String(id), '--data-dir', join(dataDir, `node-${id}`), '--controllers', ids.join(','), '--nats', nats.url, '--cluster', cluster, '--pretty', '--log-level', values['log-level'] ?? 'info', ...(metricsBase === undefined ? [] : ['--metrics-port', String(metricsPortOf(id))])],
      { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...natsSecurityEnv(security) } },
    );
    node.child = child;
    node.startedAtMs = Date.now();
    child.once('exit', (code, signal) => onExit(node, child, code, signal));
    return child;
  };

  for (const node of devNodes.values()) spawnNode(node);
  let control: NatsTransport | undefined;
  const stopAll = async () => {
    shuttingDown = true;
    for (const node of devNodes.values()) clearTimeout(node.restartTimer);
    await control?.close().catch(() => {});
    await Promise.all([...devNodes.values()].map((n) => (n.child === undefined ? undefined : stopChild(n.child))));
    await nats.stop();
  };
  try {
    await Promise.race([
      waitForCluster(nats.url, cluster, nodes, security),
      ...[...devNodes.values()].map(
        (node) => new Promise<never>((_, reject) => node.child!.once('exit', (code, signal) => reject(new Error(`node ${node.id} exited (${exitText(code, signal)}) while starting`)))),
      ),
    ]);
    control = await connectNats({ ...security, servers: nats.url, name: 'tidemark dev' });
  } catch (error) {
    await stopAll();
    throw error;
  }
  ready = true;

  // ---- the control subject: `tidemark dev stop|start|restart N` from another terminal ----
  const rpc = new Rpc(control);
  /** Resolves once node `id` answers status as a registered, unfenced broker; rejects if its process exits first or after the bound. */
  const waitForNode = async (node: DevNode, child: ChildProcess): Promise<void> => {
    const deadline = Date.now() + NODE_READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (!running(child)) throw new TidemarkError('INTERNAL', `node ${node.id} exited (${exitText(child.exitCode, child.signalCode)}) while starting`);
      const statuses = await rpc.requestMany(subjects.status(), { timeoutMs: STATUS_WAIT_MS } satisfies StatusRequest, nodeStatus, 100);
      const broker = statuses.find((s) => s.nodeId === node.id)?.broker;
      if (broker !== undefined && !broker.fenced && broker.brokerEpoch >= 0) return;
    }
    throw new TidemarkError('TIMEOUT', `node ${node.id} (pid ${child.pid}) did not register within ${NODE_READY_TIMEOUT_MS} ms; it keeps starting`);
  };
  const stopNode = async (node: DevNode): Promise<string> => {
    node.wanted = false;
    clearTimeout(node.restartTimer);
    node.restartTimer = undefined;
    const child = node.child;
    if (child === undefined || !running(child)) return `node ${node.id} was not running`;
    await stopChild(child);
    const text = `node ${node.id} stopped (${exitText(child.exitCode, child.signalCode)})`;
    say(text);
    return text;
  };
  const startNode = async (node: DevNode): Promise<string> => {
    if (running(node.child)) throw new TidemarkError('INVALID_REQUEST', `node ${node.id} is running (pid ${node.child!.pid}); use: tidemark dev restart ${node.id}`);
    clearTimeout(node.restartTimer);
    node.restartTimer = undefined;
    node.wanted = true;
    node.restarts = 0;
    const child = spawnNode(node);
    say(`node ${node.id} started (pid ${child.pid})`);
    await waitForNode(node, child);
    return `node ${node.id} started (pid ${child.pid}) and registered`;
  };
  const act = async (request: DevControlRequest): Promise<string> => {
    const node = devNodes.get(request.node);
    if (node === undefined) throw new TidemarkError('INVALID_REQUEST', `this tidemark dev has no node ${request.node} (its nodes: ${ids.join(', ')})`);
    if (shuttingDown) throw new TidemarkError('SHUTTING_DOWN', 'tidemark dev is stopping');
    if (request.action === 'stop') return stopNode(node);
    if (request.action === 'start') return startNode(node);
    const stopped = await stopNode(node);
    return `${stopped}; ${await startNode(node)}`;
  };
  // One action at a time: a start racing a stop of the same node would leave either outcome. At
  // most CONTROL_QUEUE_MAX wait; more are refused BUSY.
  let queue: Promise<unknown> = Promise.resolve();
  let queued = 0;
  control.subscribe(subjects.devControl(), (msg) => {
    const answer = (async () => {
      try {
        const request = decodeRequest(msg.data, devControlRequest);
        if (queued >= CONTROL_QUEUE_MAX) throw new TidemarkError('BUSY', `${queued} control requests are waiting`);
        queued++;
        const message = await (queue = queue.then(
          () => act(request),
          () => act(request),
        )).finally(() => queued--);
        msg.respond(encodeMessage({ ok: true, message }));
      } catch (error) {
        const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', error instanceof Error ? error.message : String(error), { cause: error });
        msg.respond(encodeError(err.toWire()));
      }
    })();
    answer.catch((error: unknown) => say(`control request failed: ${error instanceof Error ? error.message : String(error)}`));
  });
  await control.connection.flush();

  const hint = nats.url === servers ? '' : `\n  NATS is on ${nats.url} (port taken); in other terminals: export TIDEMARK_NATS=${nats.url}`;
  const metricsLine = metricsBase === undefined ? '' : `\n  Metrics: ${ids.map((id) => `node ${id} http://127.0.0.1:${metricsPortOf(id)}/metrics`).join(', ')} (also /healthz, /readyz)`;
  const pids = [...devNodes.values()].map((n) => `${n.id} (pid ${n.child?.pid ?? '-'})`).join(', ');
  process.stdout.write(
    `Tidemark dev is running: cluster "${cluster}", ${nodes} node(s), NATS ${nats.url} (${nats.owned ? 'started by tidemark dev' : 'existing server'}), data in ${dataDir}${hint}
  Nodes: ${pids}${autoRestart ? '; a node that dies is restarted (--restart)' : ''}${metricsLine}
  Try, in another terminal:
    ${suggestedTopicCreate(nodes)}
    seq 1 1000 | npx tidemark produce orders
    npx tidemark consume orders --from-beginning --max-messages 1000
    npx tidemark topic describe orders
    npx tidemark cluster status
    npx tidemark dev restart ${nodes}        # also: dev stop N, dev start N
  Ctrl-C to stop.
`,
  );
  await onShutdownSignal();
  process.stdout.write('stopping...\n');
  await stopAll();
  return 0;
}
