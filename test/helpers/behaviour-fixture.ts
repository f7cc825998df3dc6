/**
 * One nats-server, one BehaviourCluster of real node processes and one SDK client for a test file,
 * with the hooks every such file needs: start before, node logs dumped when a test fails, and
 * everything stopped after.
 */
import type { TestFn } from 'ava';
import { Tidemark, type ConnectOptions } from '../../src/client/client.js';
import { BehaviourCluster, type NodeSpec } from './behaviour-cluster.js';
import { killAllCliProcesses } from './cli.js';
import { startNatsServer, type NatsServer } from './nats-server.js';

export interface BehaviourFixture {
  readonly nats: NatsServer;
  readonly cluster: BehaviourCluster;
  readonly client: Tidemark;
}

export function behaviourFixture(
  test: TestFn,
  options: { cluster: string; nodes: readonly NodeSpec[]; voters: readonly number[]; logDir: string; client?: Omit<ConnectOptions, 'servers' | 'cluster'> },
): BehaviourFixture {
  const parts: Partial<{ nats: NatsServer; cluster: BehaviourCluster; client: Tidemark }> = {};
  test.before(async () => {
    parts.nats = await startNatsServer();
    parts.cluster = await BehaviourCluster.start(parts.nats.url, options.cluster, options.nodes, options.voters);
    parts.client = await Tidemark.connect({ ...options.client, servers: parts.nats.url, cluster: options.cluster });
  });
  test.afterEach.always(async (t) => {
    if (t.passed || parts.cluster === undefined) return;
    const files = await parts.cluster.dumpLogs(options.logDir);
    t.log(`node logs (${files.length} processes): ${options.logDir}`);
  });
  test.after.always(async () => {
    await parts.client?.close();
    await parts.cluster?.destroy();
    await killAllCliProcesses();
    await parts.nats?.stop();
  });
  return {
    get nats() {
      return parts.nats!;
    },
    get cluster() {
      return parts.cluster!;
    },
    get client() {
      return parts.client!;
    },
  };
}
