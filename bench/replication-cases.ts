/**
 * The systems the replication bench compares, each as a case: how to set it up for one round and
 * how to send one record so that the promise resolves when that system acknowledges it.
 * See replication.ts for the run and docs/bench/replication.md for what each acknowledgement means.
 */
import { jetstream, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { codecs, type Acks, type Producer } from '../src/index.js';
import type { NatsCluster } from './nats-cluster.js';
import { bounded, sleep, Window } from './steps.js';
import type { TidemarkCluster } from './tidemark-cluster.js';

export const ALL_CASES = ['nats-core', 'js-r1', 'js-r3', 'tm-rf1', 'tm-rf1-replicated', 'tm-rf3-fsync', 'tm-rf3-replicated', 'tm-rf1-p3', 'tm-rf3-fsync-p3'] as const;
export type CaseId = (typeof ALL_CASES)[number];

/** One system's send path for one phase: send() resolves when the record is acknowledged. */
export interface Target {
  send(): Promise<void>;
  close(): Promise<void>;
}

/** One case set up for one round. */
export interface Instance {
  /** Where the leader is, for the log. */
  where: string;
  throughputTarget(): Promise<Target>;
  latencyTarget(): Promise<Target>;
  teardown(): Promise<void>;
}

export interface CaseDef {
  id: CaseId;
  label: string;
  /** `tag` makes names unique per round and record size. */
  setup(tag: string, payload: Uint8Array): Promise<Instance>;
}

export interface CaseSettings {
  jsWindow: number;
  natsWindow: number;
  /** Tidemark's lingerMs in the latency phase (the throughput phase uses the SDK default, 5). */
  latencyLingerMs: number;
  /** Tidemark deliveryTimeoutMs. */
  timeoutMs: number;
  /** Sends outstanding at once in a throughput run. */
  outstandingMax: number;
}

const REPLY = new Uint8Array(8);

export function natsCoreCase(nats: NatsCluster, settings: CaseSettings): CaseDef {
  return {
    id: 'nats-core',
    label: 'NATS core pub/sub',
    async setup(tag, payload) {
      const url = nats.servers[0]!.url;
      const pub = await connect({ servers: url, name: 'bench-core-pub' });
      const sub = await connect({ servers: url, name: 'bench-core-sub' });
      const subs: Subscription[] = [];
      return {
        where: `publisher and subscriber on ${nats.servers[0]!.name}`,
        async throughputTarget() {
          // send() resolves when the subscriber has the message (in order): a window of natsWindow
          // messages between publish and receipt keeps the server's slow-consumer limit out of reach.
          const subject = `bench.core.${tag}.tp.${subs.length}`;
          const window = new Window(settings.natsWindow);
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
            pub.publish(subject, payload);
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
          const subject = `bench.core.${tag}.rr`;
          subs.push(sub.subscribe(subject, { callback: (_err, msg) => void msg.respond(REPLY) }));
          await sub.flush();
          return {
            async send() {
              await pub.request(subject, payload, { timeout: 10_000 });
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

export function jetStreamCase(nats: NatsCluster, jsm: JetStreamManager, replicas: 1 | 3, settings: CaseSettings): CaseDef {
  return {
    id: replicas === 1 ? 'js-r1' : 'js-r3',
    label: `JetStream R${replicas}`,
    async setup(tag, payload) {
      const name = `BENCH_R${replicas}_${tag}_${process.pid}`.replace(/[^A-Za-z0-9_-]/g, '_');
      const subject = `bench.js.r${replicas}.${tag}`;
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
          const window = new Window(settings.jsWindow);
          const publish = async () => {
            try {
              await js.publish(subject, payload, { timeout: 10_000, retries: 3 });
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

export interface TidemarkSpec {
  id: CaseId;
  label: string;
  rf: 1 | 3;
  acks: Acks;
  partitions: number;
  config: Record<string, string>;
}

export const TIDEMARK_SPECS: TidemarkSpec[] = [
  { id: 'tm-rf1', label: 'Tidemark RF1 acks=1 fsync (default)', rf: 1, acks: 1, partitions: 1, config: {} },
  { id: 'tm-rf1-replicated', label: 'Tidemark RF1 acks=1 replicated', rf: 1, acks: 1, partitions: 1, config: { 'flush.mode': 'replicated' } },
  { id: 'tm-rf3-fsync', label: 'Tidemark RF3 acks=all fsync', rf: 3, acks: 'all', partitions: 1, config: { 'flush.mode': 'fsync', 'min.insync.replicas': '2' } },
  {
    id: 'tm-rf3-replicated',
    label: 'Tidemark RF3 acks=all replicated',
    rf: 3,
    acks: 'all',
    partitions: 1,
    config: { 'flush.mode': 'replicated', 'min.insync.replicas': '2' },
  },
  { id: 'tm-rf1-p3', label: 'Tidemark RF1 acks=1, 3 partitions', rf: 1, acks: 1, partitions: 3, config: {} },
  {
    id: 'tm-rf3-fsync-p3',
    label: 'Tidemark RF3 acks=all fsync, 3 partitions',
    rf: 3,
    acks: 'all',
    partitions: 3,
    config: { 'flush.mode': 'fsync', 'min.insync.replicas': '2' },
  },
];

export function tidemarkCase(tm: () => Promise<TidemarkCluster>, nats: NatsCluster, spec: TidemarkSpec, settings: CaseSettings): CaseDef {
  return {
    id: spec.id,
    label: spec.label,
    async setup(tag, payload) {
      const { clients } = await tm();
      const admin = clients[0]!.admin();
      const topic = `rep-${spec.id}-${tag}`;
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
          const producer = client.producer({
            topic,
            codec: codecs.bytes(),
            acks: spec.acks,
            lingerMs,
            deliveryTimeoutMs: settings.timeoutMs,
            sendsWaitingMax: settings.outstandingMax,
          });
          producers.push(producer);
          return {
            async send() {
              await producer.send({ value: payload });
            },
            close: () => producer.close(),
          };
        };
        const replicas = described.partitions.map((p) => `replicas [${p.replicas.join(',')}] isr [${p.isr.join(',')}]`).join('; ');
        return {
          where: `leader${leaders.length > 1 ? 's' : ''} node ${leaders.join(',')} (${replicas}), producer on ${server.name}`,
          throughputTarget: () => target(5),
          latencyTarget: () => target(settings.latencyLingerMs),
          teardown: cleanup,
        };
      } catch (error) {
        await cleanup();
        throw error;
      }
    },
  };
}
