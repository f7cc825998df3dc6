/**
 * The subscription registry with real processes: three `tidemark node start` nodes (brokers and
 * controller voters) on a real nats-server. Create, list (the registry as metadata shows it),
 * create again (idempotent: same id, original settings), delete; then the active controller is
 * killed -9 and the new one, from its own replica of the metadata log, still knows them: a create
 * is answered `existing` with the same id, and the restarted node's broker lists them too.
 */
import test from 'ava';
import type { Admin, ClusterDescription, SubscriptionDescription } from '../src/client/admin.js';
import { Tidemark } from '../src/client/client.js';
import { killAllCliProcesses } from './helpers/cli.js';
import { ProcessCluster, soleLeader, waitForCluster } from './helpers/cluster.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';

const CLUSTER = 'subs-registry';
let nats: NatsServer;
let cluster: ProcessCluster | undefined;
let client: Tidemark | undefined;

test.before(async () => {
  nats = await startNatsServer();
});

test.after.always(async () => {
  await client?.close();
  await cluster?.destroy();
  await killAllCliProcesses();
  await nats?.stop();
});

/** One leader every voter agrees on, and every broker reachable and unfenced. */
function settled(c: ClusterDescription, nodes = 3): boolean {
  const leader = soleLeader(c);
  return (
    leader !== undefined &&
    c.voters.length === nodes &&
    c.voters.every((v) => v.term === leader.term && v.leaderId === leader.id) &&
    c.brokers.filter((b) => b.reachable && !b.fenced).length === nodes
  );
}

/** Every reachable broker has applied what the controller committed (any broker may answer metadata). */
function converged(c: ClusterDescription): boolean {
  const leader = soleLeader(c);
  return leader !== undefined && c.brokers.filter((b) => b.reachable).every((b) => b.metadataOffset >= leader.commitIndex);
}

const registry = (list: SubscriptionDescription[]) => list.map((s) => ({ name: s.name, id: s.id, initialPosition: s.initialPosition, partitionsAtCreation: s.partitionsAtCreation }));

test.serial('create, list, re-create, delete; a controller failover keeps the registry', async (t) => {
  t.timeout(120_000);
  cluster = await ProcessCluster.start({ nats: nats.url, cluster: CLUSTER, waitFor: 'ready', timeoutMs: 30_000 });
  client = await Tidemark.connect({
    servers: nats.url,
    cluster: CLUSTER,
    requestTimeoutMs: 2_000,
    retry: { attemptsMax: 100, backoffMsInitial: 50, backoffMsMax: 500, totalMsMax: 20_000 },
  });
  const admin: Admin = client.admin();
  const { cluster: start } = await waitForCluster(admin, 'cluster settled', (c) => settled(c), 20_000);

  await admin.createTopic({ name: 'orders', partitions: 3, replicationFactor: 3 });
  const billing = await admin.createSubscription({ topic: 'orders', name: 'billing', initialPosition: 'earliest' });
  t.like(billing, { name: 'billing', initialPosition: 'earliest', partitionsAtCreation: 3 });
  const audit = await admin.createSubscription({ topic: 'orders', name: 'audit' });
  t.like(audit, { name: 'audit', initialPosition: 'latest', partitionsAtCreation: 3 });
  t.true(audit.id > billing.id, 'ids are the creating entries offsets');
  await admin.createPartitions('orders', 4);
  const temp = await admin.createSubscription({ topic: 'orders', name: 'temp' });
  t.is(temp.partitionsAtCreation, 4);

  // Listed through metadata, right after the calls (they wait until brokers show them).
  t.deepEqual(registry(await admin.listSubscriptions('orders')), [audit, billing, temp]);
  t.deepEqual(await admin.createSubscription({ topic: 'orders', name: 'billing', initialPosition: 'latest' }), billing, 'idempotent: the original');
  await admin.deleteSubscription('orders', 'temp');
  t.deepEqual(registry(await admin.listSubscriptions('orders')), [audit, billing]);
  const missing = await t.throwsAsync(admin.deleteSubscription('orders', 'temp'));
  t.is((missing as { code?: string }).code, 'UNKNOWN_SUBSCRIPTION');

  // kill -9 the active controller: the next one has the registry from its replica of the log.
  const old = soleLeader(start)!;
  const exit = await cluster.kill(old.id, 'SIGKILL');
  t.is(exit.signal, 'SIGKILL');
  const { cluster: after } = await waitForCluster(
    admin,
    'a new controller',
    (c) => {
      const l = soleLeader(c);
      return l !== undefined && l.id !== old.id && l.term > old.term;
    },
    20_000,
  );
  t.log(`controller ${old.id} killed -9; node ${after.controllerId} active`);
  t.deepEqual(await admin.createSubscription({ topic: 'orders', name: 'billing' }), billing, 'the new controller answers existing, same id');
  const late = await admin.createSubscription({ topic: 'orders', name: 'after-failover', initialPosition: 'earliest' });
  t.true(late.id > billing.id);

  // The killed node restarts and catches up: whichever broker answers metadata lists all three.
  await cluster.start(old.id, 'ready', 30_000);
  await waitForCluster(admin, 'settled and converged after the restart', (c) => settled(c) && converged(c), 30_000);
  t.deepEqual(registry(await admin.listSubscriptions('orders')), [late, audit, billing]);

  // Deleting the topic drops its subscriptions.
  await admin.deleteTopic('orders');
  await admin.createTopic({ name: 'orders', partitions: 1, replicationFactor: 3 });
  t.deepEqual(await admin.listSubscriptions('orders'), []);
});
