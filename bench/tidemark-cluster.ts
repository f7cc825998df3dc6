/**
 * Three Tidemark nodes for benches: `tidemark node start` processes (combined broker + controller,
 * voters 1,2,3), node i connected to natsUrls[i], each on its own temp data dir, and one SDK client
 * per nats-server URL. Resolves once describeCluster shows three live, unfenced brokers. Everything
 * it starts is undone by the scope it is given, also after a failed start.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tidemark } from '../src/index.js';
import { killAllCliProcesses, type CliProcess } from '../test/helpers/cli.js';
import { startClusterNode, waitForCluster } from '../test/helpers/cluster.js';
import type { Scope } from './scope.js';
import { bounded } from './steps.js';

export interface TidemarkCluster {
  /** clients[i]: connected to natsUrls[i] (so to the nats-server of node i + 1). */
  clients: Tidemark[];
  nodes: CliProcess[];
  /** The subject prefix (`--cluster`). */
  name: string;
}

export interface TidemarkClusterOptions {
  /** One nats-server URL per node (repeat a URL to put several nodes on one server). */
  natsUrls: string[];
  /** @default 'bench' */
  name?: string;
  /** Bound on the whole start, ms. @default 90000 */
  timeoutMs?: number;
}

/** A node holding many partitions can take over 10 s to stop on SIGTERM; a bench throws its data away, so 5 s, then SIGKILL. */
const NODE_STOP_MS = 5_000;
const CLIENT_CLOSE_MS = 5_000;

export async function startTidemarkCluster(scope: Scope, options: TidemarkClusterOptions): Promise<TidemarkCluster> {
  const name = options.name ?? 'bench';
  const ids = options.natsUrls.map((_, i) => i + 1);
  const dataDirs: string[] = [];
  const nodes: CliProcess[] = [];
  const clients: Tidemark[] = [];
  scope.defer(async () => {
    for (const d of dataDirs) await rm(d, { recursive: true, force: true });
  });
  // Clients close while the nodes stop: a client closed first waits seconds for its pending
  // requests to the live nodes, one closed alongside them is done in about 0.1 s.
  scope.defer(async () => {
    await Promise.allSettled([
      ...clients.map((c) => bounded('client close', CLIENT_CLOSE_MS, () => c.close())),
      ...nodes.map((n) => n.kill('SIGTERM', NODE_STOP_MS)),
    ]);
    await killAllCliProcesses();
  });
  await bounded('tidemark cluster start', options.timeoutMs ?? 90_000, async () => {
    for (const _ of ids) dataDirs.push(await mkdtemp(join(tmpdir(), 'tm-bench-node-')));
    const started = await Promise.allSettled(
      ids.map((id, i) => startClusterNode({ nats: options.natsUrls[i]!, cluster: name, id, dataDir: dataDirs[i]!, controllers: ids, waitFor: 'ready', timeoutMs: 30_000 })),
    );
    for (const s of started) if (s.status === 'fulfilled') nodes.push(s.value);
    const failed = started.find((s) => s.status === 'rejected');
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    for (const [i, url] of options.natsUrls.entries()) clients.push(await Tidemark.connect({ servers: url, cluster: name, name: `bench-${i + 1}` }));
    await waitForCluster(
      clients[0]!.admin(),
      `${ids.length} live brokers`,
      (c) => c.controllerId >= 0 && c.brokers.length === ids.length && c.brokers.every((b) => b.reachable && !b.fenced),
      30_000,
    );
  });
  return { clients, nodes, name };
}
