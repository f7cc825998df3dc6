/**
 * The ISR metrics of a real 3-node cluster (one process per node, each serving /metrics): a follower
 * SIGSTOPped until the controller fences it out of the ISR shows as an under-replicated partition
 * and an ISR shrink on the leader; after SIGCONT it catches up, the ISR expands and the partition is
 * fully replicated again.
 */
import test from 'ava';
import { Tidemark, codecs } from '../src/index.js';
import { pollUntil } from './helpers/behaviour-cluster.js';
import { killAllCliProcesses } from './helpers/cli.js';
import { ProcessCluster } from './helpers/cluster.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { metricsPortOf, scrape, sumOf, type Scrape } from './helpers/prom-text.js';

/** Bound on each state the cluster is expected to reach (fencing takes the 2 s session timeout), ms. */
const REACH_MS = 30_000;

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

test('a stopped follower shows as under-replicated with an ISR shrink on the leader, and as an expand once it is back', async (t) => {
  cluster = await ProcessCluster.start({ nats: nats.url, cluster: 'isr-metrics', extraArgs: () => ['--metrics-port', '0', '--metrics-partition-series'] });
  const urls = new Map<number, string>();
  for (const id of cluster.ids) urls.set(id, `http://127.0.0.1:${await metricsPortOf(cluster.process(id))}/metrics`);
  const scrapeNode = (id: number): Promise<Scrape> => scrape(urls.get(id)!);

  client = await Tidemark.connect({ servers: nats.url, cluster: 'isr-metrics' });
  await client.admin().createTopic({ name: 'watched', partitions: 1, replicationFactor: 3, config: { 'min.insync.replicas': '2' } });
  const producer = client.producer<string>({ topic: 'watched', codec: codecs.string(), acks: 'all' });
  await Promise.all(Array.from({ length: 20 }, (_, i) => producer.send({ key: null, value: `before-${i}` })));

  const leader = (await client.admin().describeTopic('watched')).partitions[0]!.leader;
  const scrapes = await Promise.all(cluster.ids.map(async (id) => ({ id, s: await scrapeNode(id) })));
  const active = scrapes.find((x) => sumOf(x.s, 'tidemark_controller_active') === 1)?.id;
  t.not(active, undefined, 'one node reports itself the active controller');
  t.is(scrapes.filter((x) => sumOf(x.s, 'tidemark_controller_active') === 1).length, 1, 'exactly one');
  // Stop a follower that is not the active controller (that would be a controller failover instead).
  const follower = cluster.ids.find((id) => id !== leader && id !== active)!;

  const settled = await pollUntil('the ISR complete on the leader', () => scrapeNode(leader), (s) => sumOf(s, 'tidemark_partition_isr_size', { topic: 'watched', partition: '0' }) === 3, REACH_MS);
  t.is(sumOf(settled.value, 'tidemark_under_replicated_partitions'), 0);
  t.is(sumOf(settled.value, 'tidemark_partitions_by_isr_size', { isr_size: '3' }), 1);
  const shrinksBefore = sumOf(settled.value, 'tidemark_isr_shrinks_total', { topic: 'watched' });
  const expandsBefore = sumOf(settled.value, 'tidemark_isr_expands_total', { topic: 'watched' });
  t.is(sumOf(settled.value, 'tidemark_records_appended_total', { topic: 'watched' }), 20);

  cluster.signal(follower, 'SIGSTOP');
  try {
    const shrunk = await pollUntil('under-replicated on the leader', () => scrapeNode(leader), (s) => sumOf(s, 'tidemark_under_replicated_partitions') >= 1, REACH_MS);
    t.true(sumOf(shrunk.value, 'tidemark_isr_shrinks_total', { topic: 'watched' }) > shrinksBefore, 'the leader counted the shrink');
    t.is(sumOf(shrunk.value, 'tidemark_partition_isr_size', { topic: 'watched', partition: '0' }), 2);
    t.is(sumOf(shrunk.value, 'tidemark_partitions_by_isr_size', { isr_size: '2' }), 1);
    t.is(sumOf(shrunk.value, 'tidemark_under_min_isr_partitions'), 0, 'two in sync is min.insync.replicas');
    const controller = await scrapeNode(active!);
    t.is(sumOf(controller, 'tidemark_controller_brokers', { state: 'fenced' }), 1, 'the controller fenced the silent broker');
    t.is(sumOf(controller, 'tidemark_offline_partitions'), 0);
    // Still writable with two in sync.
    await Promise.all(Array.from({ length: 10 }, (_, i) => producer.send({ key: null, value: `during-${i}` })));
  } finally {
    cluster.signal(follower, 'SIGCONT');
  }

  const expanded = await pollUntil('the ISR whole again', () => scrapeNode(leader), (s) => sumOf(s, 'tidemark_under_replicated_partitions') === 0, REACH_MS);
  t.true(sumOf(expanded.value, 'tidemark_isr_expands_total', { topic: 'watched' }) > expandsBefore, 'the leader counted the expand');
  t.is(sumOf(expanded.value, 'tidemark_partition_isr_size', { topic: 'watched', partition: '0' }), 3);
  t.is(sumOf(expanded.value, 'tidemark_records_appended_total', { topic: 'watched' }), 30);
  const back = await pollUntil('the follower ready again', () => fetch(urls.get(follower)!.replace('/metrics', '/readyz'), { signal: AbortSignal.timeout(5_000) }).then((r) => r.status), (status) => status === 200, REACH_MS);
  t.is(back.value, 200);
  await producer.close();
});
