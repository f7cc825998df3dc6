/**
 * Replication benchmark: the produce hot path of Tidemark next to NATS core and JetStream, in one
 * run, on the same 3-server nats-server cluster (loopback, JetStream on each server, file storage),
 * 1 KiB records, one partition / one stream per case.
 *
 *   nats-core          publisher -> subscriber (the ceiling); latency: request -> reply
 *   js-r1, js-r3       JetStream stream, num_replicas 1 / 3: js.publish() with a window of
 *                      in-flight publishes (default 256); latency: publish -> PubAck
 *   tm-rf1             Tidemark RF 1, acks=1, topic defaults (flush.mode=fsync)
 *   tm-rf1-replicated  Tidemark RF 1, acks=1, flush.mode=replicated (no fsync, as JetStream's default)
 *   tm-rf3-fsync       Tidemark RF 3, acks=all, flush.mode=fsync, min.insync.replicas=2
 *   tm-rf3-replicated  Tidemark RF 3, acks=all, flush.mode=replicated, min.insync.replicas=2
 *   (not run by default: tm-rf1-p3, tm-rf3-fsync-p3: the same with 3 partitions)
 *
 * Tidemark: 3 `tidemark node start` processes (combined broker + controller voters 1,2,3), node i
 * connected to nats-server i. The bench's producer connects to the nats-server of the partition's
 * leader (JetStream: of the stream's leader; NATS core: publisher and subscriber on server n1), so
 * the produce request crosses no route and replication traffic crosses routes.
 *
 * Per case and round: create the topic / stream, warm up, throughput (N records as fast as the
 * window allows: records/s from the first send to the last ack), latency (a fixed offered load,
 * the same for every case: p50 / p99 of send -> ack), delete. Rounds interleave the cases; the
 * table shows medians of rounds. Every step is bounded by --timeout; a case that fails is reported
 * as "failed: <reason>" and skipped in later rounds, and the run goes on.
 *
 * Usage: npm run bench:replication [-- --rounds R --records N --rate RECORDS_PER_S
 *          --latency-seconds S --cases a,b,c --js-window W --nats-window W --linger-ms MS
 *          --timeout S --warmup N]
 * Defaults: 3 rounds, 100000 records, 2000 records/s for 4 s, JetStream window 256, NATS core
 * window 20000, Tidemark lingerMs 5 (the SDK default) in both phases, 90 s per step. docs/bench/replication.md
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { jetstream, jetstreamManager, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { Tidemark } from '../src/client/client.js';
import { codecs } from '../src/client/codecs.js';
import type { Acks, Producer } from '../src/client/producer.js';
import { killAllCliProcesses, type CliProcess } from '../test/helpers/cli.js';
import { startClusterNode, waitForCluster } from '../test/helpers/cluster.js';
import { median, percentile, table } from './harness.js';
import { startNatsCluster, type NatsCluster } from './nats-cluster.js';

const ALL_CASES = ['nats-core', 'js-r1', 'js-r3', 'tm-rf1', 'tm-rf1-replicated', 'tm-rf3-fsync', 'tm-rf3-replicated', 'tm-rf1-p3', 'tm-rf3-fsync-p3'] as const;
type CaseId = (typeof ALL_CASES)[number];
const DEFAULT_CASES: CaseId[] = ['nats-core', 'js-r1', 'js-r3', 'tm-rf1', 'tm-rf1-replicated', 'tm-rf3-fsync', 'tm-rf3-replicated'];

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    records: { type: 'string', default: '100000' },
    rate: { type: 'string', default: '2000' },
    'latency-seconds': { type: 'string', default: '4' },
    cases: { type: 'string', default: DEFAULT_CASES.join(',') },
    'js-window': { type: 'string', default: '256' },
    'nats-window': { type: 'string', default: '20000' },
    'linger-ms': { type: 'string', default: '5' },
    timeout: { type: 'string', default: '90' },
    warmup: { type: 'string', default: '5000' },
  },
});

function intArg(name: keyof typeof values, min: number, max: number): number {
  const n = Number(values[name]);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}, got ${String(values[name])}`);
  return n;
}
const ROUNDS = intArg('rounds', 1, 50);
const RECORDS = intArg('records', 1, 10_000_000);
const RATE = intArg('rate', 1, 1_000_000);
const LATENCY_S = intArg('latency-seconds', 1, 600);
const JS_WINDOW = intArg('js-window', 1, 100_000);
const NATS_WINDOW = intArg('nats-window', 1, 60_000);
const LATENCY_LINGER_MS = intArg('linger-ms', 0, 1000);
const TIMEOUT_MS = intArg('timeout', 1, 3600) * 1000;
const WARMUP = intArg('warmup', 0, 1_000_000);
const CASES = String(values.cases)
  .split(',')
  .map((c) => c.trim())
  .filter(Boolean) as CaseId[];
for (const c of CASES) if (!ALL_CASES.includes(c)) throw new Error(`unknown case "${c}" (known: ${ALL_CASES.join(', ')})`);

const RECORD_BYTES = 1024;
const PAYLOAD = new Uint8Array(RECORD_BYTES).fill(120);
const REPLY = new Uint8Array(8);
/** Sends outstanding at once in a throughput run (each system's own window bounds it further). */
const OUTSTANDING_MAX = 50_000;
const TM_CLUSTER = 'bench';
/** Fixed-rate loop tick, ms (a setTimeout: about 1-2 ms; at 2000/s 2-4 records per tick). */
const TICK_MS = 1;

const log = (line: string) => process.stderr.write(`${line}\n`);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function errorText(error: unknown): string {
  const text = error instanceof Error ? `${(error as { code?: unknown }).code !== undefined ? `${String((error as { code?: unknown }).code)}: ` : ''}${error.message}` : String(error);
  return text.replace(/\s+/g, ' ').slice(0, 160);
}

/** Runs `run` and rejects after `ms` unless it settled first; `aborted()` turns true then, so its loops stop. */
async function bounded<T>(what: string, ms: number, run: (aborted: () => boolean) => Promise<T>): Promise<T> {
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new Error(`${what}: timed out after ${Math.round(ms / 1000)} s`));
    }, ms);
  });
  const running = run(() => timedOut);
  running.catch(() => undefined);
  try {
    return await Promise.race([running, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A counting window: at most `max` holders; waiters are served in order. */
class Window {
  private inFlight = 0;
  private readonly waiters: Array<() => void> = [];
  private head = 0;
  constructor(private readonly max: number) {}

  /** undefined when a slot was free (take it synchronously), else a promise for the slot. */
  acquire(): Promise<void> | undefined {
    if (this.inFlight < this.max && this.head === this.waiters.length) {
      this.inFlight++;
      return undefined;
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    if (this.head < this.waiters.length) {
      const next = this.waiters[this.head]!;
      this.waiters[this.head++] = undefined as never;
      if (this.head > 4096 && this.head * 2 > this.waiters.length) {
        this.waiters.splice(0, this.head);
        this.head = 0;
      }
      next(); // the slot passes on: inFlight unchanged
    } else {
      this.inFlight--;
    }
  }
}

/** One system's send path for one phase: send() resolves when the record is acknowledged. */
interface Target {
  send(): Promise<void>;
  close(): Promise<void>;
}

/** One case set up for one round. */
interface Instance {
  /** Where the leader is, for the log. */
  where: string;
  throughputTarget(): Promise<Target>;
  latencyTarget(): Promise<Target>;
  teardown(): Promise<void>;
}

interface CaseDef {
  id: CaseId;
  label: string;
  setup(round: number): Promise<Instance>;
}

/** Sends `n` records keeping at most OUTSTANDING_MAX unacknowledged; records/s from first send to last ack. */
async function throughput(target: Target, n: number, aborted: () => boolean): Promise<number> {
  let failure: unknown;
  const fail = (error: unknown) => {
    failure ??= error;
  };
  let pending: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    pending.push(target.send().catch(fail));
    if (pending.length >= OUTSTANDING_MAX) {
      const half = pending.length / 2;
      await Promise.all(pending.slice(0, half));
      pending = pending.slice(half);
      if (failure !== undefined) throw failure;
      if (aborted()) throw new Error('aborted');
    }
  }
  await Promise.all(pending);
  if (failure !== undefined) throw failure;
  return n / ((performance.now() - start) / 1000);
}

interface LatencyResult {
  p50: number;
  p99: number;
  /** Records acknowledged per second over the run: below the offered rate means saturation. */
  achieved: number;
}

/** A fixed offered load: RATE records/s for LATENCY_S s; each sample is send() -> ack. */
async function latency(target: Target, aborted: () => boolean): Promise<LatencyResult> {
  const total = RATE * LATENCY_S;
  const samples: number[] = [];
  let failure: unknown;
  const pending: Promise<void>[] = [];
  const start = performance.now();
  let lastAck = start;
  let sent = 0;
  while (sent < total) {
    if (failure !== undefined) throw failure;
    if (aborted()) throw new Error('aborted');
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * RATE));
    for (; sent < due; sent++) {
      const t0 = performance.now();
      pending.push(
        target.send().then(
          () => {
            lastAck = performance.now();
            samples.push(lastAck - t0);
          },
          (error: unknown) => {
            failure ??= error;
          },
        ),
      );
    }
    await sleep(TICK_MS);
  }
  await Promise.all(pending);
  if (failure !== undefined) throw failure;
  samples.sort((a, b) => a - b);
  return { p50: percentile(samples, 50), p99: percentile(samples, 99), achieved: total / ((lastAck - start) / 1000) };
}

async function warmup(target: Target, aborted: () => boolean): Promise<void> {
  if (WARMUP > 0) await throughput(target, WARMUP, aborted);
}

// ---------------------------------------------------------------------------------------------
// NATS core

function natsCoreCase(nats: NatsCluster): CaseDef {
  return {
    id: 'nats-core',
    label: 'NATS core pub/sub',
    async setup(round) {
      const url = nats.servers[0]!.url;
      const pub = await connect({ servers: url, name: 'bench-core-pub' });
      const sub = await connect({ servers: url, name: 'bench-core-sub' });
      const subs: Subscription[] = [];
      return {
        where: `publisher and subscriber on ${nats.servers[0]!.name}`,
        async throughputTarget() {
          // send() resolves when the subscriber has the message (in order): a window of NATS_WINDOW
          // messages between publish and receipt keeps the server's slow-consumer limit out of reach.
          const subject = `bench.core.${round}.tp.${subs.length}`;
          const window = new Window(NATS_WINDOW);
          const waiting: Array<() => void> = [];
          let head = 0;
          subs.push(
            sub.subscribe(subject, {
              callback: () => {
                window.release();
                const resolve = waiting[head];
                waiting[head++] = undefined as never;
                if (head > 65_536) {
                  waiting.splice(0, head);
                  head = 0;
                }
                resolve?.();
              },
            }),
          );
          await sub.flush();
          const publish = (resolve: () => void) => {
            waiting.push(resolve);
            pub.publish(subject, PAYLOAD);
          };
          return {
            send() {
              const slot = window.acquire();
              if (slot === undefined) return new Promise<void>(publish);
              return slot.then(() => new Promise<void>(publish));
            },
            async close() {},
          };
        },
        async latencyTarget() {
          const subject = `bench.core.${round}.rr`;
          subs.push(sub.subscribe(subject, { callback: (_err, msg) => void msg.respond(REPLY) }));
          await sub.flush();
          return {
            async send() {
              await pub.request(subject, PAYLOAD, { timeout: 10_000 });
            },
            async close() {},
          };
        },
        async teardown() {
          for (const s of subs) s.unsubscribe();
          await Promise.allSettled([pub.close(), sub.close()]);
        },
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// JetStream

function jetStreamCase(nats: NatsCluster, jsm: JetStreamManager, replicas: 1 | 3): CaseDef {
  return {
    id: replicas === 1 ? 'js-r1' : 'js-r3',
    label: `JetStream R${replicas}`,
    async setup(round) {
      const name = `BENCH_R${replicas}_${round}_${process.pid}`;
      const subject = `bench.js.r${replicas}.${round}`;
      await jsm.streams.add({ name, subjects: [subject], storage: StorageType.File, num_replicas: replicas });
      const connections: NatsConnection[] = [];
      try {
        let leader: string | undefined;
        const deadline = performance.now() + 15_000;
        while ((leader = (await jsm.streams.info(name)).cluster?.leader) === undefined) {
          if (performance.now() > deadline) throw new Error(`stream ${name} has no leader after 15 s`);
          await sleep(100);
        }
        const url = nats.urlOf(leader);
        const target = async (): Promise<Target> => {
          const nc = await connect({ servers: url, name: `bench-js-r${replicas}` });
          connections.push(nc);
          const js: JetStreamClient = jetstream(nc);
          const window = new Window(JS_WINDOW);
          const publish = async () => {
            try {
              await js.publish(subject, PAYLOAD, { timeout: 10_000, retries: 3 });
            } finally {
              window.release();
            }
          };
          return {
            send() {
              const slot = window.acquire();
              return slot === undefined ? publish() : slot.then(publish);
            },
            async close() {
              await nc.drain();
            },
          };
        };
        return {
          where: `stream leader ${leader}, publisher on ${leader}`,
          throughputTarget: target,
          latencyTarget: target,
          async teardown() {
            await Promise.allSettled(connections.map((nc) => nc.close()));
            await jsm.streams.delete(name);
          },
        };
      } catch (error) {
        await Promise.allSettled(connections.map((nc) => nc.close()));
        await jsm.streams.delete(name).catch(() => undefined);
        throw error;
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Tidemark

interface TidemarkCluster {
  /** clients[i]: connected to nats-server i, where node i + 1 is connected. */
  clients: Tidemark[];
  nodes: CliProcess[];
}

function tidemarkCase(
  tm: () => Promise<TidemarkCluster>,
  nats: NatsCluster,
  spec: { id: CaseId; label: string; rf: 1 | 3; acks: Acks; partitions: number; config: Record<string, string> },
): CaseDef {
  return {
    id: spec.id,
    label: spec.label,
    async setup(round) {
      const { clients } = await tm();
      const admin = clients[0]!.admin();
      const topic = `rep-${spec.id}-${round}`;
      await admin.createTopic({ name: topic, partitions: spec.partitions, replicationFactor: spec.rf, config: spec.config });
      const producers: Producer<Uint8Array>[] = [];
      const cleanup = async () => {
        await Promise.allSettled(producers.map((p) => bounded('producer close', 15_000, () => p.close())));
        await bounded('delete topic', 15_000, () => admin.deleteTopic(topic)).catch(() => undefined);
      };
      try {
        const described = await admin.describeTopic(topic);
        const leaders = described.partitions.map((p) => p.leader);
        // One partition: produce through the leader's nats-server (node i is on server i - 1).
        const leaderIndex = spec.partitions === 1 ? leaders[0]! - 1 : 0;
        const client = clients[leaderIndex] ?? clients[0]!;
        const server = nats.servers[leaderIndex] ?? nats.servers[0]!;
        const target = async (lingerMs: number): Promise<Target> => {
          const producer = client.producer({ topic, codec: codecs.bytes(), acks: spec.acks, lingerMs, deliveryTimeoutMs: TIMEOUT_MS, sendsWaitingMax: OUTSTANDING_MAX });
          producers.push(producer);
          return {
            async send() {
              await producer.send({ value: PAYLOAD });
            },
            close: () => producer.close(),
          };
        };
        const replicas = described.partitions.map((p) => `replicas [${p.replicas.join(',')}] isr [${p.isr.join(',')}]`).join('; ');
        return {
          where: `leader${leaders.length > 1 ? 's' : ''} node ${leaders.join(',')} (${replicas}), producer on ${server.name}`,
          throughputTarget: () => target(5),
          latencyTarget: () => target(LATENCY_LINGER_MS),
          teardown: cleanup,
        };
      } catch (error) {
        await cleanup();
        throw error;
      }
    },
  };
}

async function startTidemark(nats: NatsCluster, dataDirs: string[], nodes: CliProcess[], clients: Tidemark[]): Promise<TidemarkCluster> {
  const ids = [1, 2, 3];
  for (const _ of ids) dataDirs.push(await mkdtemp(join(tmpdir(), 'tm-bench-rep-')));
  const started = await Promise.allSettled(
    ids.map((id, i) =>
      startClusterNode({ nats: nats.servers[i]!.url, cluster: TM_CLUSTER, id, dataDir: dataDirs[i]!, controllers: ids, waitFor: 'ready', timeoutMs: 30_000 }),
    ),
  );
  for (const s of started) if (s.status === 'fulfilled') nodes.push(s.value);
  const failed = started.find((s) => s.status === 'rejected');
  if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
  for (const s of nats.servers) clients.push(await Tidemark.connect({ servers: s.url, cluster: TM_CLUSTER, name: `bench-${s.name}` }));
  await waitForCluster(
    clients[0]!.admin(),
    'three live brokers',
    (c) => c.controllerId >= 0 && c.brokers.length === 3 && c.brokers.every((b) => b.reachable && !b.fenced),
    30_000,
  );
  return { clients, nodes };
}

// ---------------------------------------------------------------------------------------------

interface CaseResult {
  rates: number[];
  p50: number[];
  p99: number[];
  achieved: number[];
  failed?: string;
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

function natsServerVersion(): string {
  try {
    return execFileSync('nats-server', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'nats-server ?';
  }
}

function gitCommit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== '';
    return `${sha}${dirty ? ' + uncommitted changes in src/' : ''}`;
  } catch {
    return '?';
  }
}

async function main(): Promise<void> {
  const began = performance.now();
  const cpu = cpus();
  const header =
    `replication bench: ${ROUNDS} round(s), ${RECORDS} x ${RECORD_BYTES} B records per throughput run, latency at ${RATE} records/s for ${LATENCY_S} s, ` +
    `JetStream window ${JS_WINDOW}, NATS core window ${NATS_WINDOW}, Tidemark lingerMs 5 (throughput) / ${LATENCY_LINGER_MS} (latency), one partition / stream per case\n` +
    `${cpu.length} cores (${cpu[0]?.model ?? '?'}), node ${process.version}, ${natsServerVersion()}, commit ${gitCommit()}, ${new Date().toISOString()}, load ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}\n`;
  log(`replication bench: ${CASES.join(', ')}; ${ROUNDS} round(s) of ${RECORDS} records; latency at ${RATE}/s for ${LATENCY_S} s`);

  const cleanups: Array<() => Promise<unknown>> = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      for (const c of cleanups.reverse()) {
        try {
          await bounded('cleanup step', 20_000, () => c());
        } catch (error) {
          log(`cleanup: ${errorText(error)}`);
        }
      }
    })());
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    stopping = true;
    log(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const nats = await startNatsCluster({ size: 3 });
    cleanups.push(() => nats.stop());
    log(`nats cluster: ${nats.servers.map((s) => `${s.name} ${s.url}`).join(', ')}`);
    const jsNc = await connect({ servers: nats.servers[0]!.url, name: 'bench-jsm' });
    cleanups.push(() => jsNc.close());
    const jsm = await jetstreamManager(jsNc, { timeout: 10_000 });

    // Tidemark starts lazily (only if a Tidemark case runs) and once; a failed start fails those cases.
    const dataDirs: string[] = [];
    const nodes: CliProcess[] = [];
    const clients: Tidemark[] = [];
    cleanups.push(async () => {
      for (const d of dataDirs) await rm(d, { recursive: true, force: true });
    });
    cleanups.push(async () => {
      await Promise.allSettled(nodes.map((n) => n.kill('SIGTERM', 10_000)));
      await killAllCliProcesses();
    });
    cleanups.push(() => Promise.allSettled(clients.map((c) => bounded('client close', 5_000, () => c.close()))));
    let tmStarting: Promise<TidemarkCluster> | undefined;
    const tm = () =>
      (tmStarting ??= (stopping ? Promise.reject(new Error('stopping')) : bounded('tidemark cluster start', 90_000, () => startTidemark(nats, dataDirs, nodes, clients))).then((c) => {
        log('tidemark: 3 nodes ready');
        return c;
      }));

    const defs: Record<CaseId, () => CaseDef> = {
      'nats-core': () => natsCoreCase(nats),
      'js-r1': () => jetStreamCase(nats, jsm, 1),
      'js-r3': () => jetStreamCase(nats, jsm, 3),
      'tm-rf1': () => tidemarkCase(tm, nats, { id: 'tm-rf1', label: 'Tidemark RF1 acks=1 fsync (default)', rf: 1, acks: 1, partitions: 1, config: {} }),
      'tm-rf1-replicated': () =>
        tidemarkCase(tm, nats, {
          id: 'tm-rf1-replicated',
          label: 'Tidemark RF1 acks=1 replicated',
          rf: 1,
          acks: 1,
          partitions: 1,
          config: { 'flush.mode': 'replicated' },
        }),
      'tm-rf3-fsync': () =>
        tidemarkCase(tm, nats, {
          id: 'tm-rf3-fsync',
          label: 'Tidemark RF3 acks=all fsync',
          rf: 3,
          acks: 'all',
          partitions: 1,
          config: { 'flush.mode': 'fsync', 'min.insync.replicas': '2' },
        }),
      'tm-rf3-replicated': () =>
        tidemarkCase(tm, nats, {
          id: 'tm-rf3-replicated',
          label: 'Tidemark RF3 acks=all replicated',
          rf: 3,
          acks: 'all',
          partitions: 1,
          config: { 'flush.mode': 'replicated', 'min.insync.replicas': '2' },
        }),
      'tm-rf1-p3': () => tidemarkCase(tm, nats, { id: 'tm-rf1-p3', label: 'Tidemark RF1 acks=1, 3 partitions', rf: 1, acks: 1, partitions: 3, config: {} }),
      'tm-rf3-fsync-p3': () =>
        tidemarkCase(tm, nats, {
          id: 'tm-rf3-fsync-p3',
          label: 'Tidemark RF3 acks=all fsync, 3 partitions',
          rf: 3,
          acks: 'all',
          partitions: 3,
          config: { 'flush.mode': 'fsync', 'min.insync.replicas': '2' },
        }),
    };
    const cases = CASES.map((id) => defs[id]());
    const results = new Map<CaseId, CaseResult>(cases.map((c) => [c.id, { rates: [], p50: [], p99: [], achieved: [] }]));

    for (let round = 1; round <= ROUNDS; round++) {
      for (const c of cases) {
        const result = results.get(c.id)!;
        if (result.failed !== undefined) continue;
        let instance: Instance | undefined;
        let step = 'setup';
        try {
          instance = await bounded(`${c.id} setup`, TIMEOUT_MS, () => c.setup(round));
          const inst = instance;
          step = 'warm-up';
          const tpTarget = await inst.throughputTarget();
          await bounded(`${c.id} warm-up`, TIMEOUT_MS, (aborted) => warmup(tpTarget, aborted));
          step = 'throughput';
          const rate = await bounded(`${c.id} throughput`, TIMEOUT_MS, (aborted) => throughput(tpTarget, RECORDS, aborted));
          await bounded(`${c.id} close`, TIMEOUT_MS, () => tpTarget.close());
          step = 'latency';
          const latTarget = await inst.latencyTarget();
          const lat = await bounded(`${c.id} latency`, LATENCY_S * 1000 + TIMEOUT_MS, (aborted) => latency(latTarget, aborted));
          await bounded(`${c.id} close`, TIMEOUT_MS, () => latTarget.close());
          result.rates.push(rate);
          result.p50.push(lat.p50);
          result.p99.push(lat.p99);
          result.achieved.push(lat.achieved);
          log(
            `round ${round} ${c.id}: ${fmt(rate)} records/s, ${fmt((rate * RECORD_BYTES) / 1e6, 1)} MB/s; @${RATE}/s p50 ${fmt(lat.p50, 2)} ms p99 ${fmt(lat.p99, 2)} ms (acked ${fmt(lat.achieved)}/s); ${inst.where}`,
          );
        } catch (error) {
          result.failed = `${errorText(error)} (round ${round}, ${step})`;
          log(`round ${round} ${c.id}: failed: ${result.failed}`);
        } finally {
          if (instance !== undefined) {
            await bounded(`${c.id} teardown`, TIMEOUT_MS, () => instance!.teardown()).catch((error: unknown) => log(`${c.id} teardown: ${errorText(error)}`));
          }
        }
      }
    }

    const rateOf = (id: CaseId) => {
      const r = results.get(id);
      return r === undefined || r.failed !== undefined || r.rates.length === 0 ? Number.NaN : median(r.rates);
    };
    const p99Of = (id: CaseId) => {
      const r = results.get(id);
      return r === undefined || r.failed !== undefined || r.p99.length === 0 ? Number.NaN : median(r.p99);
    };
    const natsRate = rateOf('nats-core');
    const rows = cases.map((c) => {
      const r = results.get(c.id)!;
      const rps = median(r.rates);
      const ok = r.failed === undefined && r.rates.length > 0;
      return {
        case: c.label,
        'records/s': ok ? fmt(rps) : `failed: ${r.failed ?? 'no rounds'}`,
        'MB/s': ok ? fmt((rps * RECORD_BYTES) / 1e6, 1) : '-',
        'vs NATS core': ok && Number.isFinite(natsRate) ? `${fmt((100 * rps) / natsRate)}%` : '-',
        [`p50 ms @${RATE}/s`]: ok ? fmt(median(r.p50), 2) : '-',
        [`p99 ms @${RATE}/s`]: ok ? fmt(median(r.p99), 2) : '-',
        'acked/s': ok ? `${fmt(median(r.achieved))}${median(r.achieved) < 0.95 * RATE ? ' (saturated)' : ''}` : '-',
        'rounds (records/s)': r.rates.map((x) => fmt(x)).join(' / ') || '-',
      };
    });
    const ratios: string[] = [];
    const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : 'n/a');
    ratios.push(
      `Tidemark RF3 acks=all fsync vs JetStream R3: records/s ${ratio(rateOf('tm-rf3-fsync'), rateOf('js-r3'))}, p99 ${ratio(p99Of('tm-rf3-fsync'), p99Of('js-r3'))}`,
    );
    ratios.push(
      `Tidemark RF3 acks=all replicated vs JetStream R3: records/s ${ratio(rateOf('tm-rf3-replicated'), rateOf('js-r3'))}, p99 ${ratio(p99Of('tm-rf3-replicated'), p99Of('js-r3'))}`,
    );
    ratios.push(`Tidemark RF1 acks=1 vs JetStream R1: records/s ${ratio(rateOf('tm-rf1'), rateOf('js-r1'))}, p99 ${ratio(p99Of('tm-rf1'), p99Of('js-r1'))}`);
    ratios.push(`Tidemark RF1 MB/s vs NATS core MB/s: ${ratio(rateOf('tm-rf1'), natsRate)} (flush.mode=replicated: ${ratio(rateOf('tm-rf1-replicated'), natsRate)})`);
    ratios.push(`Tidemark RF3 fsync vs Tidemark RF1: records/s ${ratio(rateOf('tm-rf3-fsync'), rateOf('tm-rf1'))}`);
    const elapsed = (performance.now() - began) / 1000;
    process.stdout.write(
      `${header}\n${table(rows)}\n\n${ratios.join('\n')}\n\nwall time ${elapsed.toFixed(0)} s, load at end ${loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}\n`,
    );
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
