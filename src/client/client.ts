/**
 * The SDK's composition root: builds the shared pieces (rpc, metadata cache, retry policy) over a
 * Transport and hands them to admin, producers and readers. `connect` builds a real NATS
 * transport and owns it; `fromTransport` takes one from the caller (tests, the simulator).
 */
import { TidemarkError } from '../protocol/errors.js';
import { REQUEST_TIMEOUT_MS_MAX } from '../protocol/messages.js';
import { Subjects } from '../protocol/subjects.js';
import { connectNats } from '../runtime/nats-transport.js';
import { redactServers, type NatsSecurity } from '../runtime/nats-security.js';
import { systemClock, systemRandom, type Clock, type Random, type Transport } from '../runtime/ports.js';
import { AdminClient, type Admin } from './admin.js';
import { MetadataCache } from './metadata.js';
import { ProducerImpl, type Producer, type ProducerOptions } from './producer.js';
import { ReaderImpl, type Reader, type ReaderOptions } from './reader.js';
import { ConsumerImpl, type Consumer, type ConsumerOptions } from './consumer.js';
import { codecs } from './codecs.js';
import { retry, retryPolicy, type RetryOptions, type RetryPolicy } from '../runtime/retry.js';
import { nodeStatus, type StatusRequest } from '../protocol/controller-messages.js';
import { ProduceChannel } from './produce-channel.js';
import { Rpc } from './rpc.js';

export type ClientOptions = {
  /**
   * Budget of one request (its `timeoutMs`), ms; fetches get this beyond their maxWaitMs.
   * @default 10000
   */
  requestTimeoutMs?: number;
  /**
   * Cached metadata older than this is refreshed on next use, ms.
   * @default 300000
   */
  metadataMaxAgeMs?: number;
  /**
   * Backoff and bounds of the retry layer, for every call path (producers and readers may override).
   * @default { attemptsMax: 25, backoffMsInitial: 100, backoffMsMax: 2000, totalMsMax: 30000 }
   */
  retry?: RetryOptions;
  /**
   * Time source for timers, timestamps and backoff.
   * @default systemClock
   */
  clock?: Clock;
  /**
   * Randomness for jitter and the keyless round robin start.
   * @default systemRandom
   */
  random?: Random;
};

/**
 * Options of {@link Tidemark.connect}. The NATS credentials ({@link NatsSecurity}: `user` and
 * `password`, `token`, `nkeySeedFile` or `credsFile`; `tls`; `inboxPrefix`) are presented to the
 * NATS server, which alone decides what this client may do (docs/security.md). A client whose
 * permissions confine its replies to `_INBOX_<name>.>` must set `inboxPrefix: '_INBOX_<name>'`.
 * A request the permissions deny fails at once with a final `NOT_AUTHORIZED`, as does `connect`
 * itself when the server refuses the credentials or the cluster's status subject.
 */
export type ConnectOptions = ClientOptions & NatsSecurity & {
  /**
   * NATS server URL(s).
   * @default 'nats://127.0.0.1:4222'
   */
  servers?: string | string[];
  /**
   * Cluster name: the `tm.<cluster>` subject prefix.
   * @default 'tidemark'
   */
  cluster?: string;
  /**
   * Connection name shown by the NATS server's monitoring.
   * @default 'tidemark-client'
   */
  name?: string;
  /**
   * @default 2000
   */
  connectTimeoutMs?: number;
  /**
   * How long `connect` waits for any node of the cluster to answer, ms. If none does (nothing
   * subscribes to the cluster's subjects on that NATS server: a wrong cluster name, or no node
   * started) it rejects with a final NO_RESPONDERS naming the cluster, instead of every later call
   * retrying for its whole budget. 0 skips the check (a program that starts before its cluster).
   * @default 5000
   */
  clusterWaitMs?: number;
};

export type FromTransportOptions = ClientOptions & {
  /** Cluster name: the `tm.<cluster>` subject prefix. Required (no default). */
  cluster: string;
};

/** `object` without its undefined fields (exactOptionalPropertyTypes). */
function definedOnly<T extends object>(object: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined)) as { [K in keyof T]?: Exclude<T[K], undefined> };
}

interface Closable {
  close(): Promise<void>;
}

export class Tidemark {
  private readonly rpc: Rpc;
  /** Shared by the client's producers: one produce request per leader broker and topic. */
  private readonly channel: ProduceChannel;
  private readonly subjects: Subjects;
  private readonly metadata: MetadataCache;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly policy: RetryPolicy;
  private readonly requestTimeoutMs: number;
  private readonly children = new Set<Closable>();
  private readonly abort = new AbortController();
  private adminClient: AdminClient | undefined;
  private closing: Promise<void> | undefined;

  /** Connects to NATS; `close()` closes that connection. */
  static async connect(options: ConnectOptions = {}): Promise<Tidemark> {
    const subjects = new Subjects(options.cluster ?? 'tidemark');
    const { user, password, token, nkeySeedFile, credsFile, tls, inboxPrefix } = options;
    const transport = await connectNats({
      servers: options.servers ?? 'nats://127.0.0.1:4222',
      name: options.name ?? 'tidemark-client',
      connectTimeoutMs: options.connectTimeoutMs ?? 2000,
      ...definedOnly({ user, password, token, nkeySeedFile, credsFile, tls, inboxPrefix }),
    });
    const servers = redactServers(options.servers ?? 'nats://127.0.0.1:4222');
    try {
      const client = new Tidemark(transport, subjects, options, () => transport.close());
      await client.awaitCluster(options.clusterWaitMs ?? 5000, servers);
      return client;
    } catch (error) {
      // Invalid options or no cluster: the connection is ours to close.
      await transport.close();
      throw error;
    }
  }

  /** Over a transport the caller owns (and closes). */
  static fromTransport(transport: Transport, options: FromTransportOptions): Tidemark {
    return new Tidemark(transport, new Subjects(options.cluster), options, async () => undefined);
  }

  private constructor(
    transport: Transport,
    subjects: Subjects,
    options: ClientOptions,
    private readonly closeTransport: () => Promise<void>,
  ) {
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    if (!Number.isSafeInteger(this.requestTimeoutMs) || this.requestTimeoutMs < 1 || this.requestTimeoutMs > REQUEST_TIMEOUT_MS_MAX) {
      throw new TidemarkError('INVALID_REQUEST', `requestTimeoutMs must be an integer within 1..${REQUEST_TIMEOUT_MS_MAX}`);
    }
    const metadataMaxAgeMs = options.metadataMaxAgeMs ?? 300_000;
    if (!Number.isSafeInteger(metadataMaxAgeMs) || metadataMaxAgeMs < 0) {
      throw new TidemarkError('INVALID_REQUEST', 'metadataMaxAgeMs must be a non-negative integer');
    }
    this.rpc = new Rpc(transport);
    this.subjects = subjects;
    this.channel = new ProduceChannel(this.rpc, subjects);
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? systemRandom;
    this.policy = retryPolicy(options.retry);
    this.metadata = new MetadataCache(this.rpc, subjects, this.clock, { requestTimeoutMs: this.requestTimeoutMs, maxAgeMs: metadataMaxAgeMs });
  }

  /**
   * Resolves once any node of the cluster answers on its status subject (retried while nobody
   * subscribes, with the retry policy's backoff); rejects with a final NO_RESPONDERS once the next
   * wait would pass `waitMs` of silence. A node that is
   * subscribed but slow (TIMEOUT) or answers with an error still proves the cluster is there.
   * NOT_AUTHORIZED (NATS denies this connection the status subject or its reply inbox) is thrown:
   * every later call would fail the same way.
   */
  private async awaitCluster(waitMs: number, servers: string): Promise<void> {
    if (!Number.isSafeInteger(waitMs) || waitMs < 0 || waitMs > 24 * 3_600_000) {
      throw new TidemarkError('INVALID_REQUEST', 'clusterWaitMs must be an integer within 0..86400000');
    }
    if (waitMs === 0) return;
    const silent = (error: unknown) => error instanceof TidemarkError && error.code === 'NO_RESPONDERS';
    try {
      await retry((remainingMs) => this.rpc.request(this.subjects.status(), { timeoutMs: Math.min(remainingMs, this.requestTimeoutMs) } satisfies StatusRequest, nodeStatus), {
        policy: this.policy,
        clock: this.clock,
        random: this.random,
        totalMs: waitMs,
        retryIf: silent,
      });
    } catch (error) {
      if (error instanceof TidemarkError && error.code === 'NOT_AUTHORIZED') throw error;
      if (!silent(error)) return;
      const cluster = this.subjects.cluster;
      throw new TidemarkError(
        'NO_RESPONDERS',
        `no Tidemark cluster named "${cluster}" answers on ${servers} (nothing subscribes to ${this.subjects.status()}; check --cluster / TIDEMARK_CLUSTER and that its nodes run)`,
        { context: { cluster }, final: true },
      );
    }
  }

  admin(): Admin {
    this.checkOpen();
    this.adminClient ??= new AdminClient({
      rpc: this.rpc,
      subjects: this.subjects,
      metadata: this.metadata,
      clock: this.clock,
      random: this.random,
      policy: this.policy,
      requestTimeoutMs: this.requestTimeoutMs,
      signal: this.abort.signal,
    });
    return this.adminClient;
  }

  /**
   * A Shared producer (any number may write to the topic). It attaches to the topic with its first
   * send. For the other access modes use {@link createProducer}.
   */
  producer<T>(options: ProducerOptions<T>): Producer<T> {
    if ((options.accessMode ?? 'Shared') !== 'Shared') {
      throw new TidemarkError('INVALID_REQUEST', `accessMode ${options.accessMode} needs the cluster's answer first: use await client.createProducer(...)`);
    }
    return this.newProducer(options);
  }

  /**
   * A producer in any access mode, attached: resolves once the cluster granted it the topic (for
   * the exclusive modes, once every partition was fenced against earlier producers). Rejects with
   * PRODUCER_BUSY or PRODUCER_FENCED when the mode is refused, TIMEOUT when `timeoutMs` passes
   * first (WaitForExclusive waits until then), CLOSED when `signal` aborts.
   */
  async createProducer<T>(options: ProducerOptions<T> & { signal?: AbortSignal; timeoutMs?: number }): Promise<Producer<T>> {
    const { signal, timeoutMs, ...producerOptions } = options;
    const producer = this.newProducer(producerOptions);
    try {
      await producer.ready({ ...(signal === undefined ? {} : { signal }), ...(timeoutMs === undefined ? {} : { timeoutMs }) });
    } catch (error) {
      await producer.close();
      throw error;
    }
    return producer;
  }

  private newProducer<T>(options: ProducerOptions<T>): ProducerImpl<T> {
    this.checkOpen();
    const producer: ProducerImpl<T> = new ProducerImpl<T>(
      { ...this.deps(), channel: this.channel, onClosed: () => this.children.delete(producer) },
      options,
    );
    this.children.add(producer);
    return producer;
  }

  reader<T>(options: ReaderOptions<T>): Reader<T> {
    this.checkOpen();
    const reader: Reader<T> = new ReaderImpl<T>(
      { ...this.deps(), onClosed: () => this.children.delete(reader) },
      options,
    );
    this.children.add(reader);
    return reader;
  }

  /**
   * A consumer of a subscription (created if missing). Resolves once the subscription exists and
   * every leader of the topic's partitions accepted the consumer's first poll; rejects if the
   * subscription refuses it (CONSUMER_BUSY: an Exclusive subscription with a consumer already).
   * Errors after that are thrown by the iterator.
   */
  async consumer<T>(options: ConsumerOptions<T>): Promise<Consumer<T>> {
    this.checkOpen();
    const consumer: ConsumerImpl<T> = new ConsumerImpl<T>(
      {
        ...this.deps(),
        ensureSubscription: async (topic, name, initialPosition) => void (await this.admin().createSubscription({ topic, name, initialPosition })),
        ensureTopic: (name, replicationFactor) => this.ensureTopic(name, replicationFactor),
        producer: (topic) => this.producer({ topic, codec: codecs.bytes() }),
        onClosed: () => this.children.delete(consumer),
      },
      options,
    );
    this.children.add(consumer);
    try {
      await consumer.start();
    } catch (error) {
      await consumer.close();
      throw error;
    }
    return consumer;
  }

  /** Creates a one-partition topic unless it exists (a consumer's dead-letter topic). */
  private async ensureTopic(name: string, replicationFactor: number): Promise<void> {
    try {
      await this.admin().createTopic({ name, partitions: 1, replicationFactor });
    } catch (error) {
      if (!(error instanceof TidemarkError && error.code === 'TOPIC_ALREADY_EXISTS')) throw error;
    }
  }

  /** Closes readers and consumers, flushes and closes producers, then the NATS connection if `connect` made it. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.children].map((c) => c.close()));
      this.abort.abort();
      await this.closeTransport();
    })();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private deps() {
    return {
      rpc: this.rpc,
      subjects: this.subjects,
      metadata: this.metadata,
      clock: this.clock,
      random: this.random,
      policy: this.policy,
      requestTimeoutMs: this.requestTimeoutMs,
    };
  }

  private checkOpen(): void {
    if (this.closing !== undefined) throw new TidemarkError('CLOSED', 'client is closed');
  }
}
