/**
 * /metrics, /healthz and /readyz of real `tidemark node start` processes, scraped with plain fetch:
 * the counters move as records are produced and read, readiness says what a node lacks, and bad
 * requests and flags get typed answers.
 */
import test from 'ava';
import { rm } from 'node:fs/promises';
import { Tidemark, codecs } from '../src/index.js';
import { killAllCliProcesses, runCli, type CliProcess } from './helpers/cli.js';
import { pollUntil } from './helpers/behaviour-cluster.js';
import { startClusterNode } from './helpers/cluster.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';
import { metricsPortOf, scrape, sumOf } from './helpers/prom-text.js';

const HTTP_TIMEOUT_MS = 5_000;

let nats: NatsServer;
let node: CliProcess;
let base: string;
let client: Tidemark;
const dirs: string[] = [];

const dir = async (prefix: string) => {
  const d = await tempDir(prefix);
  dirs.push(d);
  return d;
};

test.before(async () => {
  nats = await startNatsServer();
  node = await startClusterNode({ nats: nats.url, cluster: 'tidemark', id: 1, dataDir: await dir('tm-metrics-'), controllers: [1], extraArgs: ['--metrics-port', '0'] });
  base = `http://127.0.0.1:${await metricsPortOf(node)}`;
  client = await Tidemark.connect({ servers: nats.url, cluster: 'tidemark' });
});

test.after.always(async () => {
  await client?.close();
  await node?.kill('SIGTERM').catch(() => {});
  await killAllCliProcesses();
  await nats?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const get = (url: string, init: RequestInit = {}) => fetch(url, { ...init, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });

test('a ready node answers /healthz and /readyz 200, /metrics in the Prometheus text format, and 404 / 405 otherwise', async (t) => {
  const health = await get(`${base}/healthz`);
  t.is(health.status, 200);
  t.deepEqual(await health.json(), { status: 'ok', node: 1 });
  const ready = await get(`${base}/readyz`);
  t.is(ready.status, 200);
  t.deepEqual(await ready.json(), { ready: true, node: 1, missing: [] });

  const metrics = await get(`${base}/metrics`);
  t.is(metrics.status, 200);
  t.regex(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const s = await scrape(`${base}/metrics`);
  t.is(sumOf(s, 'tidemark_broker_registered'), 1);
  t.is(sumOf(s, 'tidemark_broker_fenced'), 0);
  t.is(sumOf(s, 'tidemark_controller_active'), 1, 'a single combined node is the active controller');
  t.true(sumOf(s, 'tidemark_controller_raft_term') >= 1);
  t.true(sumOf(s, 'tidemark_process_resident_memory_bytes') > 0);
  t.true(s.types.has('tidemark_nodejs_eventloop_lag_p99_seconds'));
  t.true(s.samples.filter((x) => x.name.startsWith('tidemark_')).every((x) => x.labels['node'] === '1'));

  const missing = await get(`${base}/nope`);
  t.is(missing.status, 404);
  t.is(((await missing.json()) as { code: string }).code, 'NOT_FOUND');
  const post = await get(`${base}/metrics`, { method: 'POST', body: 'x' });
  t.is(post.status, 405);
  t.is(((await post.json()) as { code: string }).code, 'INVALID_REQUEST');
  t.is((await get(`${base}/healthz`)).status, 200, 'still serving after bad requests');
});

// Serial, and before the subscription test: it counts the partitions this node leads (metered/0 alone).
test.serial('produce and fetch move the per-topic counters, records appended and the fsync histograms', async (t) => {
  await client.admin().createTopic({ name: 'metered', partitions: 1 });
  const before = await scrape(`${base}/metrics`);
  t.is(sumOf(before, 'tidemark_produce_requests_total', { topic: 'metered' }), 0);
  const fsyncsBefore = sumOf(before, 'tidemark_fsync_duration_seconds_count');
  const latencyBefore = sumOf(before, 'tidemark_produce_latency_seconds_count', { acks: '-1' });

  const producer = client.producer<string>({ topic: 'metered', codec: codecs.string(), acks: 'all', lingerMs: 5 });
  const acks = await Promise.all(Array.from({ length: 50 }, (_, i) => producer.send({ key: null, value: `record-${i}` })));
  await producer.close();
  t.is(acks.length, 50);

  const after = await scrape(`${base}/metrics`);
  const requests = sumOf(after, 'tidemark_produce_requests_total', { topic: 'metered' });
  t.true(requests >= 1 && requests <= 50, `produce requests: ${requests}`);
  t.true(sumOf(after, 'tidemark_produce_bytes_total', { topic: 'metered' }) > 50 * 'record-0'.length);
  t.is(sumOf(after, 'tidemark_records_appended_total', { topic: 'metered' }), 50);
  t.true(sumOf(after, 'tidemark_produce_latency_seconds_count', { acks: '-1' }) - latencyBefore >= requests);
  t.true(sumOf(after, 'tidemark_fsync_duration_seconds_count') > fsyncsBefore, 'flush.mode=fsync: the appends were fsynced');
  t.true(sumOf(after, 'tidemark_fsync_group_size_sum') >= sumOf(after, 'tidemark_fsync_group_size_count'));
  t.is(sumOf(after, 'tidemark_partitions_led'), 1);

  const reader = client.reader<string>({ topic: 'metered', partition: 0, codec: codecs.string() });
  let read = 0;
  for await (const _ of reader) if (++read === 50) break;
  await reader.close();
  const fetched = await scrape(`${base}/metrics`);
  t.true(sumOf(fetched, 'tidemark_fetch_requests_total', { topic: 'metered' }) >= 1);
  t.true(sumOf(fetched, 'tidemark_fetch_bytes_total', { topic: 'metered' }) >= 50 * 'record-0'.length);
});

test.serial("a subscription's consumer moves the consumer counters, and backlog and unacked show what it holds", async (t) => {
  await client.admin().createTopic({ name: 'subbed', partitions: 1 });
  const producer = client.producer<string>({ topic: 'subbed', codec: codecs.string(), acks: 'all' });
  await Promise.all(Array.from({ length: 20 }, (_, i) => producer.send({ key: null, value: `m-${i}` })));
  await producer.close();
  const consumer = await client.consumer<string>({ topic: 'subbed', subscription: 'billing', codec: codecs.string(), initialPosition: 'earliest' });
  // next(), not for-await with break: leaving the loop would close the consumer and release what it holds.
  for (let received = 0; received < 20; received++) {
    const { value: message } = await consumer.next();
    if (message!.offset < 15) await message!.ack(); // 15..19 are received and held
  }
  const held = await pollUntil(
    'the acks applied',
    () => scrape(`${base}/metrics`),
    (s) => sumOf(s, 'tidemark_subscription_unacked', { topic: 'subbed', subscription: 'billing' }) === 5,
    10_000,
  );
  const s = held.value;
  t.is(sumOf(s, 'tidemark_subscription_backlog', { topic: 'subbed', subscription: 'billing' }), 5, 'not acknowledged: the 5 held');
  t.true(sumOf(s, 'tidemark_subscription_delivered_total', { topic: 'subbed', subscription: 'billing' }) >= 20);
  t.true(sumOf(s, 'tidemark_consumer_requests_total', { topic: 'subbed', subscription: 'billing', op: 'consume' }) >= 1);
  t.true(sumOf(s, 'tidemark_consumer_requests_total', { topic: 'subbed', subscription: 'billing', op: 'ack' }) >= 1);
  await consumer.close();
});

test('readyz is 503 naming what is missing while a broker cannot reach its controller, and 200 once the voter runs', async (t) => {
  // Another cluster prefix on the same nats-server: node 12 is its only voter, not started yet.
  const broker = await startClusterNode({ nats: nats.url, cluster: 'lonely', id: 11, roles: 'broker', controllers: [12], dataDir: await dir('tm-metrics-b-'), waitFor: 'started', extraArgs: ['--metrics-port', '0'] });
  const brokerBase = `http://127.0.0.1:${await metricsPortOf(broker)}`;
  const early = await get(`${brokerBase}/readyz`);
  t.is(early.status, 503);
  const body = (await early.json()) as { ready: boolean; node: number; missing: string[] };
  t.false(body.ready);
  t.is(body.node, 11);
  t.true(body.missing.includes('not registered with a controller'), body.missing.join('; '));
  t.is((await get(`${brokerBase}/healthz`)).status, 200, 'alive all the same');
  const s = await scrape(`${brokerBase}/metrics`);
  t.is(sumOf(s, 'tidemark_broker_registered'), 0);
  t.false(s.types.has('tidemark_controller_active'), 'a broker-only node has no controller series');

  const voter = await startClusterNode({ nats: nats.url, cluster: 'lonely', id: 12, roles: 'controller', controllers: [12], dataDir: await dir('tm-metrics-c-'), waitFor: 'started', extraArgs: ['--metrics-port', '0'] });
  const voterBase = `http://127.0.0.1:${await metricsPortOf(voter)}`;
  await pollUntil('the voter ready', () => get(`${voterBase}/readyz`).then((r) => r.status), (status) => status === 200, 20_000);
  await pollUntil('the broker ready', () => get(`${brokerBase}/readyz`).then((r) => r.status), (status) => status === 200, 20_000);
  const registered = await scrape(`${brokerBase}/metrics`);
  t.is(sumOf(registered, 'tidemark_broker_registered'), 1);
  t.true(sumOf(registered, 'tidemark_broker_heartbeats_missed_total') >= 1, 'the attempts before the voter ran were missed');
  t.true(sumOf(registered, 'tidemark_broker_heartbeats_total') >= 1);
  const controller = await scrape(`${voterBase}/metrics`);
  t.is(sumOf(controller, 'tidemark_controller_active'), 1);
  t.is(sumOf(controller, 'tidemark_controller_brokers', { state: 'unfenced' }), 1);
  t.false(controller.types.has('tidemark_broker_registered'), 'a controller-only node has no broker series');

  // The voter goes away: the broker stays alive but is no longer ready.
  await voter.kill('SIGKILL');
  const gone = await pollUntil('the broker not ready', () => get(`${brokerBase}/readyz`).then(async (r) => ({ status: r.status, body: (await r.json()) as { missing: string[] } })), (r) => r.status === 503, 20_000);
  t.regex(gone.value.body.missing.join('; '), /no heartbeat answered by a controller for \d+ ms/);
  await broker.kill('SIGTERM');
});

test('metrics flags are checked, and a port in use stops the node with a clear error', async (t) => {
  const hostOnly = await runCli(['node', 'start', '--id', '5', '--data-dir', await dir('tm-metrics-f-'), '--nats', nats.url, '--metrics-host', '0.0.0.0']);
  t.is(hostOnly.code, 2);
  t.regex(hostOnly.stderr, /--metrics-host needs --metrics-port/);
  const badPort = await runCli(['node', 'start', '--id', '5', '--data-dir', await dir('tm-metrics-f-'), '--nats', nats.url, '--metrics-port', '70000']);
  t.is(badPort.code, 2);
  t.regex(badPort.stderr, /--metrics-port must be an integer in 0\.\.65535/);
  const taken = new URL(base).port;
  const busy = await runCli(['node', 'start', '--id', '6', '--cluster', 'busy', '--data-dir', await dir('tm-metrics-f-'), '--nats', nats.url, '--metrics-port', taken]);
  t.is(busy.code, 1);
  t.regex(busy.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken}`));
  const help = await runCli(['node', 'start', '--help']);
  t.regex(help.stdout, /--metrics-port N/);
  t.regex(help.stdout, /--metrics-partition-series/);
});

test("the node's server also serves the /v1 JSON API over the node's own connection, unless --http-api off", async (t) => {
  // Its own cluster prefix, so its partitions do not move the other tests' gauges.
  const apiNode = await startClusterNode({ nats: nats.url, cluster: 'apinode', id: 31, controllers: [31], dataDir: await dir('tm-metrics-api-'), extraArgs: ['--metrics-port', '0'] });
  const apiBase = `http://127.0.0.1:${await metricsPortOf(apiNode)}`;
  const apiClient = await Tidemark.connect({ servers: nats.url, cluster: 'apinode' });
  try {
    await apiClient.admin().createTopic({ name: 'via-node-api', partitions: 2 });
    const lookup = await get(`${apiBase}/v1/topics/via-node-api/partitions/1/leader`);
    t.is(lookup.status, 200);
    t.like(await lookup.json(), { topic: 'via-node-api', partition: 1, leader: 31 });
    const produced = await get(`${apiBase}/v1/topics/via-node-api/records?acks=all`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([{ key: 'k', value: 'through the node', partition: 1 }]),
    });
    t.is(produced.status, 200);
    t.deepEqual(await produced.json(), { offsets: [{ partition: 1, offset: 0 }] });
    const reader = apiClient.reader<string>({ topic: 'via-node-api', partition: 1, codec: codecs.string() });
    for await (const record of reader) {
      t.is(record.value, 'through the node');
      break;
    }
    await reader.close();
  } finally {
    await apiClient.close();
    await apiNode.kill('SIGTERM');
  }

  const quiet = await startClusterNode({ nats: nats.url, cluster: 'noapi', id: 21, controllers: [21], dataDir: await dir('tm-metrics-noapi-'), waitFor: 'started', extraArgs: ['--metrics-port', '0', '--http-api', 'off'] });
  const quietBase = `http://127.0.0.1:${await metricsPortOf(quiet)}`;
  t.is((await get(`${quietBase}/v1/cluster`)).status, 404);
  t.is((await get(`${quietBase}/healthz`)).status, 200, 'metrics and health stay on');
  await quiet.kill('SIGTERM');
  const apiWithoutPort = await runCli(['node', 'start', '--id', '5', '--data-dir', await dir('tm-metrics-f-'), '--nats', nats.url, '--http-api', 'off']);
  t.is(apiWithoutPort.code, 2);
  t.regex(apiWithoutPort.stderr, /--http-api needs --metrics-port/);
});
