/**
 * The client's metadata cache: which broker leads each partition of the topics this client uses.
 * Asked on `subjects.metadata()` (any node answers). An entry is dropped when a call fails in a way
 * that says it is stale (see {@link isStaleMetadataError}) or when it is older than maxAgeMs; the
 * next lookup refreshes it. Refreshes are single-flight. This cache never retries: its callers'
 * retry layer does.
 */
import { TidemarkError, type ErrorCode } from '../protocol/errors.js';
import { metadataReply, type MetadataReply, type MetadataRequest, type TopicMetadata } from '../protocol/messages.js';
import type { Subjects } from '../protocol/subjects.js';
import type { Clock } from '../runtime/ports.js';
import type { Rpc } from './rpc.js';

/** Topics one client tracks in its cache (the metadata request's own bound). */
export const METADATA_TOPICS_MAX = 1000;

// LEADER_NOT_AVAILABLE too: an election may be moving the partition to another broker. TIMEOUT
// too: a paused (SIGSTOP) or overloaded leader keeps its subscriptions, so requests to it time out
// instead of finding no responder, while the controller elects another leader.
const STALE_CODES = new Set<ErrorCode>(['NOT_LEADER', 'FENCED_LEADER_EPOCH', 'UNKNOWN_TOPIC', 'NO_RESPONDERS', 'LEADER_NOT_AVAILABLE', 'TIMEOUT']);

/** Errors after which the cached leader should not be trusted. */
export function isStaleMetadataError(error: unknown): boolean {
  return error instanceof TidemarkError && STALE_CODES.has(error.code);
}

export type MetadataOptions = {
  /** Budget of one metadata request, ms. */
  requestTimeoutMs: number;
  /** Entries older than this are refreshed on next use, ms. */
  maxAgeMs: number;
};

export interface Leader {
  brokerId: number;
  leaderEpoch: number;
}

interface Entry {
  topic: TopicMetadata;
  fetchedAtMs: number;
}

export class MetadataCache {
  private readonly entries = new Map<string, Entry>();
  /** Topics to ask for on refresh, oldest first (Set keeps insertion order). */
  private readonly wanted = new Set<string>();
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  /** Newest metadata offset seen: requests ask brokers not to answer with older metadata. */
  private minOffset = -1;

  constructor(
    private readonly rpc: Rpc,
    private readonly subjects: Subjects,
    private readonly clock: Clock,
    private readonly options: MetadataOptions,
  ) {}

  /** The topic's metadata, from cache or one refresh. Throws UNKNOWN_TOPIC if the cluster does not know it. */
  async topic(name: string): Promise<TopicMetadata> {
    const cached = this.cached(name);
    if (cached !== undefined) return cached;
    this.want(name);
    await this.refresh();
    const entry = this.entries.get(name);
    if (entry === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `topic "${name}" is unknown to the cluster`, { context: { topic: name } });
    return entry.topic;
  }

  /** The cached metadata if present and fresh; never does I/O. */
  cached(name: string): TopicMetadata | undefined {
    const entry = this.entries.get(name);
    if (entry === undefined) return undefined;
    if (this.clock.now() - entry.fetchedAtMs > this.options.maxAgeMs) {
      this.entries.delete(name);
      return undefined;
    }
    return entry.topic;
  }

  /** Who leads the partition. Throws UNKNOWN_TOPIC (no such partition) or NO_RESPONDERS (no leader right now). */
  async leader(topic: string, partition: number): Promise<Leader> {
    const md = await this.topic(topic);
    const p = md.partitions.find((x) => x.partition === partition);
    if (p === undefined) {
      throw new TidemarkError('UNKNOWN_TOPIC', `topic "${topic}" has no partition ${partition}`, { context: { topic, partition } });
    }
    if (p.leader < 0) {
      this.invalidate(topic);
      throw new TidemarkError('NO_RESPONDERS', `partition ${topic}/${partition} has no leader right now`, { context: { topic, partition } });
    }
    return { brokerId: p.leader, leaderEpoch: p.leaderEpoch };
  }

  invalidate(topic: string): void {
    this.entries.delete(topic);
  }

  /** Drops the topic's entry if `error` says it is stale; returns whether it did. */
  noteError(topic: string, error: unknown): boolean {
    if (!isStaleMetadataError(error)) return false;
    this.invalidate(topic);
    return true;
  }

  /** Notes a metadata offset the client knows exists (e.g. an admin change's commit). */
  observe(offset: number): void {
    if (offset > this.minOffset) this.minOffset = offset;
  }

  /** One uncached request (all topics when `topics` is absent); updates entries it returns. */
  async fetch(topics?: string[]): Promise<MetadataReply> {
    const body: MetadataRequest = { timeoutMs: this.options.requestTimeoutMs, topics, minOffset: this.minOffset };
    const reply = await this.rpc.request(this.subjects.metadata(), body, metadataReply);
    this.observe(reply.offset);
    const now = this.clock.now();
    for (const topic of reply.topics) {
      if (this.wanted.has(topic.name)) this.entries.set(topic.name, { topic, fetchedAtMs: now });
    }
    return reply;
  }

  private want(name: string): void {
    this.wanted.delete(name);
    this.wanted.add(name);
    if (this.wanted.size > METADATA_TOPICS_MAX) {
      const oldest = this.wanted.values().next().value;
      if (oldest !== undefined) {
        this.wanted.delete(oldest);
        this.entries.delete(oldest);
      }
    }
  }

  /**
   * Single flight: joins the running refresh's successor rather than the running one, because the
   * running request may have been sent before the caller learned its data was stale or wanted a
   * new topic. So at most two metadata requests are outstanding however many calls fail at once.
   */
  private refresh(): Promise<void> {
    if (this.running === undefined) return this.run();
    this.queued ??= this.running.then(
      () => this.startQueued(),
      () => this.startQueued(),
    );
    return this.queued;
  }

  private startQueued(): Promise<void> {
    this.queued = undefined;
    return this.run();
  }

  private run(): Promise<void> {
    const topics = [...this.wanted];
    const run = (async () => {
      const reply = await this.fetch(topics);
      const present = new Set(reply.topics.map((t) => t.name));
      for (const name of topics) if (!present.has(name)) this.entries.delete(name);
    })();
    this.running = run;
    const clear = () => {
      if (this.running === run) this.running = undefined;
    };
    run.then(clear, clear);
    return run;
  }
}
