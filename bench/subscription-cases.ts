/**
 * The two systems the subscription bench compares, each as a case: how to create the topic /
 * stream, produce stamped records into it, and attach N consumers sharing one subscription that
 * yield messages with an ack() resolving when the system confirmed the acknowledgement.
 * See subscriptions.ts for the run and what is measured.
 *
 *   tidemark   topic RF 3, acks=all, flush.mode=fsync, min.insync.replicas=2, P partitions; one
 *              Shared subscription, N consumers (`client.consumer`, one client each), receive
 *              window W each; ack() resolves once the acknowledgement is durable.
 *   jetstream  R3 file stream; one durable pull consumer (ack_policy explicit, deliver all,
 *              max_ack_pending N x W, R3 as its stream), N pullers (`consume({ max_messages: W })`,
 *              one connection each); ack is `ackAck()`, which resolves when the server answered it.
 *
 * Consumer i (both systems) connects to nats-server i mod 3. The producer of the records connects
 * to n1 (Tidemark, whose 4 partitions have leaders on every node) or to the stream leader's server
 * (JetStream), as in the replication bench.
 */
import { AckPolicy, DeliverPolicy, jetstream, StorageType, type ConsumerMessages, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { codecs, Tidemark, type Consumer, type Producer } from '../src/index.js';
import type { NatsCluster } from './nats-cluster.js';
import { bounded, sendBounded, sleep, Window } from './steps.js';
import { logLine } from '../test/helpers/cli.js';
import type { TidemarkCluster } from './tidemark-cluster.js';

export const SUB_SYSTEMS = ['tidemark', 'jetstream', 'jetstream-noack-wait'] as const;
export type SubSystem = (typeof SUB_SYSTEMS)[number];

/** A message as the bench sees it, whichever system delivered it. */
export interface Delivered {
  payload: Uint8Array;
  /** Delivered before (Tidemark redeliveryCount > 0, JetStream info.redelivered). */
  redelivered: boolean;
  /** Resolves when the system confirmed the acknowledgement. */
  ack(): Promise<unknown>;
}

/** N consumers on one subscription / durable: one message stream each. */
export interface ConsumerGroup {
  streams: AsyncIterable<Delivered>[];
  /** Stops every consumer (their iterations end). */
  close(): Promise<void>;
  /**
   * When ack() does not wait for the server: resolves with the time (performance.now()) the
   * server-side state showed every one of `count` messages acknowledged.
   */
  settled?(count: number, timeoutMs: number): Promise<number>;
}

/** Sends stamped payloads: send(payload, i) resolves when the system acknowledged the record. */
export interface Sender {
  send(payload: Uint8Array, i: number): Promise<void>;
  close(): Promise<void>;
}

/** One topic / stream, set up for one phase of one round. */
export interface SubInstance {
  where: string;
  sender(phase: 'fill' | 'latency'): Promise<Sender>;
  /** Attaches `count` consumers reading from the earliest record. */
  consumers(count: number): Promise<ConsumerGroup>;
  /** Where the consumers' server-side state lives (after consumers()), for the log. */
  consumerWhere(): Promise<string>;
  /** Warnings and errors the servers logged since setup, summarised; undefined when none (or not known). */
  serverWarnings?(): string | undefined;
  teardown(): Promise<void>;
}

export interface SubCaseDef {
  system: SubSystem;
  label: string;
  setup(tag: string): Promise<SubInstance>;
}

export interface SubCaseSettings {
  partitions: number;
  /** Per consumer: Tidemark receiverQueueSize, JetStream max_messages of a pull. */
  receiveWindow: number;
  consumers: number;
  /** JetStream publishes in flight. */
  jsWindow: number;
  /** Tidemark producer lingerMs in the latency phase (5 when filling). */
  lingerMs: number;
  /** Tidemark producer batchBytesMax when filling; 0: the SDK default (1 MiB). */
  fillBatchBytes: number;
  timeoutMs: number;
  /** Sends outstanding at once while filling. */
  outstandingMax: number;
}

const CLOSE_MS = 15_000;

/** Each consumer gets its own connection, consumer i on nats-server i mod servers. */
function serverFor(nats: NatsCluster, i: number): string {
  return nats.servers[i % nats.servers.length]!.url;
}

/** How often the no-wait variant polls the consumer's ack floor, ms. */
const ACK_FLOOR_POLL_MS = 10;

/**
 * `waitAcks`: ack with ackAck() (resolves when the server answered); otherwise ack() without a
 * reply, and the run ends when the consumer's ack floor reached the last stream sequence.
 */
export function jetStreamSubCase(nats: NatsCluster, jsm: JetStreamManager, settings: SubCaseSettings, waitAcks = true): SubCaseDef {
  return {
    system: waitAcks ? 'jetstream' : 'jetstream-noack-wait',
    label: `JetStream R3, durable pull, ${settings.consumers} pullers, explicit acks${waitAcks ? ' (ackAck)' : ' (ack(), not awaited)'}`,
    async setup(tag) {
      const name = `BENCH_SUB_${tag}_${process.pid}`.replace(/[^A-Za-z0-9_-]/g, '_');
      const subject = `bench.sub.${tag}`.replace(/[^A-Za-z0-9_.-]/g, '_');
      const durable = 'bench';
      await jsm.streams.add({ name, subjects: [subject], storage: StorageType.File, num_replicas: 3 });
      const connections: NatsConnection[] = [];
      const open = async (url: string, label: string) => {
        const nc = await connect({ servers: url, name: label });
        connections.push(nc);
        return nc;
      };
      try {
        let leader: string | undefined;
        const deadline = performance.now() + 15_000;
        while ((leader = (await jsm.streams.info(name)).cluster?.leader) === undefined) {
          if (performance.now() > deadline) throw new Error(`stream ${name} has no leader after 15 s`);
          await sleep(100);
        }
        const leaderUrl = nats.urlOf(leader);
        return {
          where: `stream leader ${leader}`,
          async sender() {
            const nc = await open(leaderUrl, 'bench-sub-js-pub');
            const js = jetstream(nc);
            const window = new Window(settings.jsWindow);
            const publish = async (payload: Uint8Array) => {
              try {
                await js.publish(subject, payload, { timeout: 10_000, retries: 3 });
              } finally {
                window.release();
              }
            };
            return {
              send(payload) {
                const slot = window.acquire();
                return slot === undefined ? publish(payload) : slot.then(() => publish(payload));
              },
              close: () => nc.drain(),
            };
          },
          async consumers(count) {
            await jsm.consumers.add(name, {
              durable_name: durable,
              ack_policy: AckPolicy.Explicit,
              deliver_policy: DeliverPolicy.All,
              max_ack_pending: count * settings.receiveWindow,
            });
            const pulls: ConsumerMessages[] = [];
            for (let i = 0; i < count; i++) {
              const nc = await open(serverFor(nats, i), `bench-sub-js-${i}`);
              const consumer = await jetstream(nc).consumers.get(name, durable);
              pulls.push(await consumer.consume({ max_messages: settings.receiveWindow }));
            }
            const stream = async function* (messages: ConsumerMessages): AsyncIterable<Delivered> {
              for await (const m of messages) {
                yield {
                  payload: m.data,
                  redelivered: m.redelivered,
                  ack: waitAcks
                    ? () => m.ackAck({ timeout: 30_000 })
                    : () => {
                        m.ack();
                        return Promise.resolve();
                      },
                };
              }
            };
            return {
              streams: pulls.map(stream),
              async close() {
                await Promise.allSettled(pulls.map((p) => p.close()));
              },
              ...(waitAcks
                ? {}
                : {
                    async settled(count: number, timeoutMs: number) {
                      const deadline = performance.now() + timeoutMs;
                      for (;;) {
                        const info = await jsm.consumers.info(name, durable);
                        const now = performance.now();
                        if (info.ack_floor.stream_seq >= count && info.num_ack_pending === 0) return now;
                        if (now > deadline) throw new Error(`ack floor ${info.ack_floor.stream_seq} of ${count} after ${Math.round(timeoutMs / 1000)} s`);
                        await sleep(ACK_FLOOR_POLL_MS);
                      }
                    },
                  }),
            };
          },
          async consumerWhere() {
            const info = await jsm.consumers.info(name, durable);
            return `stream leader ${leader}, consumer leader ${info.cluster?.leader ?? '?'}`;
          },
          async teardown() {
            await Promise.allSettled(connections.map((nc) => bounded('close', CLOSE_MS, () => nc.close())));
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

export function tidemarkSubCase(tm: () => Promise<TidemarkCluster>, nats: NatsCluster, settings: SubCaseSettings): SubCaseDef {
  return {
    system: 'tidemark',
    label: `Tidemark RF3 acks=all, ${settings.partitions} partitions, Shared, ${settings.consumers} consumers`,
    async setup(tag) {
      const cluster = await tm();
      const admin = cluster.clients[0]!.admin();
      const topic = `sub-${tag}`.replace(/[^A-Za-z0-9._-]/g, '_');
      const subscription = 'bench';
      await admin.createTopic({
        name: topic,
        partitions: settings.partitions,
        replicationFactor: 3,
        config: { 'flush.mode': 'fsync', 'min.insync.replicas': '2' },
      });
      const producers: Producer<Uint8Array>[] = [];
      const clients: Tidemark[] = [];
      const logMarks = cluster.nodes.map((n) => n.stderrLines.length);
      const cleanup = async () => {
        await Promise.allSettled(producers.map((p) => bounded('producer close', CLOSE_MS, () => p.close())));
        await Promise.allSettled(clients.map((c) => bounded('client close', CLOSE_MS, () => c.close())));
        await bounded('delete topic', CLOSE_MS, () => admin.deleteTopic(topic)).catch(() => undefined);
      };
      try {
        const described = await admin.describeTopic(topic);
        const leaders = described.partitions.map((p) => p.leader);
        const client = cluster.clients[0]!;
        return {
          where: `partition leaders node ${leaders.join(',')}`,
          async sender(phase) {
            const producer = client.producer({
              topic,
              codec: codecs.bytes(),
              acks: 'all',
              lingerMs: phase === 'fill' ? 5 : settings.lingerMs,
              ...(phase === 'fill' && settings.fillBatchBytes > 0 ? { batchBytesMax: settings.fillBatchBytes } : {}),
              deliveryTimeoutMs: settings.timeoutMs,
              sendsWaitingMax: settings.outstandingMax,
            });
            producers.push(producer);
            return {
              async send(payload, i) {
                await producer.send({ value: payload, partition: i % settings.partitions });
              },
              close: () => producer.close(),
            };
          },
          async consumers(count) {
            const consumers: Consumer<Uint8Array>[] = [];
            for (let i = 0; i < count; i++) {
              const c = await Tidemark.connect({ servers: serverFor(nats, i), cluster: cluster.name, name: `bench-sub-tm-${i}` });
              clients.push(c);
              consumers.push(
                await c.consumer({
                  topic,
                  subscription,
                  type: 'Shared',
                  codec: codecs.bytes(),
                  initialPosition: 'earliest',
                  receiverQueueSize: settings.receiveWindow,
                }),
              );
            }
            const stream = async function* (consumer: Consumer<Uint8Array>): AsyncIterable<Delivered> {
              for await (const m of consumer) yield { payload: m.value ?? new Uint8Array(STAMP_BYTES), redelivered: m.redeliveryCount > 0, ack: () => m.ack() };
            };
            return {
              streams: consumers.map(stream),
              async close() {
                await Promise.allSettled(consumers.map((c) => bounded('consumer close', CLOSE_MS, () => c.close())));
              },
            };
          },
          async consumerWhere() {
            return `partition leaders node ${leaders.join(',')}`;
          },
          serverWarnings() {
            // pino levels: 40 warn, 50 error, 60 fatal; counted by message, per node.
            const counts = new Map<string, number>();
            cluster.nodes.forEach((node, i) => {
              for (const line of node.stderrLines.slice(logMarks[i])) {
                const entry = logLine(line);
                if (typeof entry?.level !== 'number' || entry.level < 40) continue;
                const err = (entry['err'] as { message?: unknown } | undefined)?.message;
                const what = `node ${i + 1}: ${String(entry.msg)}${err !== undefined ? ` (${String(err).slice(0, 80)})` : ''}`;
                counts.set(what, (counts.get(what) ?? 0) + 1);
              }
            });
            return counts.size === 0 ? undefined : [...counts].map(([what, n]) => `${what} x${n}`).join('; ');
          },
          teardown: cleanup,
        };
      } catch (error) {
        await cleanup();
        throw error;
      }
    },
  };
}

/** Fills an instance with `count` stamped records (not timed by the caller's measure). */
export async function fill(sender: Sender, count: number, recordBytes: number, outstandingMax: number, aborted: () => boolean): Promise<number> {
  const start = performance.now();
  await sendBounded(count, outstandingMax, (i) => sender.send(stamp(recordBytes, i, start), i), aborted);
  return count / ((performance.now() - start) / 1000);
}

/**
 * A payload of `bytes` (at least 16): bytes 0-7 the send time (performance.now(), float64 ms, this
 * process), bytes 8-11 the sequence number i; the rest is filler.
 */
export function stamp(bytes: number, i: number, atMs = performance.now()): Uint8Array {
  const payload = new Uint8Array(bytes);
  const view = new DataView(payload.buffer);
  view.setFloat64(0, atMs, true);
  view.setUint32(8, i, true);
  payload.fill(120, 16);
  return payload;
}

export function readStamp(payload: Uint8Array): { atMs: number; seq: number } {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return { atMs: view.getFloat64(0, true), seq: view.getUint32(8, true) };
}

export const STAMP_BYTES = 16;
