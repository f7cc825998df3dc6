/**
 * The client's metadata cache: which broker leads each partition of the topics this client uses.
 * Asked on `subjects.metadata()` (any node answers). An entry is dropped when a call fails in a way
 * that says it is stale (see {@link isStaleMetadataError}) or when it is older than maxAgeMs; the
 * next lookup refreshes it. Refreshes are single-flight. This cache never retries: its callers'
 * retry layer does. A topic or partition missing from a reply is asked for once more with
 * `confirm` (the broker syncs with the controller first); only a confirmed ("caught-up") reply
 * makes the UNKNOWN_TOPIC final.
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
  /** From a confirmed reply (the broker synced with the controller): a partition missing from it does not exist. */
  current: boolean;
}

export class MetadataCache {
  private readonly entries = new Map<string, Entry>();
  /** Topics to ask for on refresh, oldest first (Set keeps insertion order). */
  private readonly wanted = new Set<string>();
  /** Topics found missing (or missing a partition) in an unconfirmed reply: the next refresh asks to confirm. */
  private readonly confirmNext = new Set<string>();
  /** Each resolves with the wanted topics a confirmed reply said do not exist. */
  private running: Promise<ReadonlySet<string>> | undefined;
  private queued: Promise<ReadonlySet<string>> | undefined;
  /** Newest metadata offset seen: requests ask brokers not to answer with older metadata. */
  private minOffset = -1;

  constructor(
    private readonly rpc: Rpc,
    private readonly subjects: Subjects,
    private readonly clock: Clock,
    private readonly options: MetadataOptions,
  ) {}

  /**
   * The topic's metadata, from cache or one refresh. Throws UNKNOWN_TOPIC if the cluster does not
   * know it: final (not retriable) when a caught-up broker said so, since waiting cannot help.
   */
  async topic(name: string): Promise<TopicMetadata> {
    const cached = this.cached(name);
    if (cached !== undefined) return cached;
    this.want(name);
    let absent = await this.refresh();
    if (!this.entries.has(name) && !absent.has(name)) {
      // Missing from a broker that may lag (a topic created a moment ago): ask again at once,
      // confirmed, so the answering broker first syncs with the controller.
      this.confirmNext.add(name);
      absent = await this.refresh();
    }
    const entry = this.entries.get(name);
    if (entry === undefined) {
      const final = absent.has(name);
      throw new TidemarkError('UNKNOWN_TOPIC', final ? `topic "${name}" does not exist` : `topic "${name}" is unknown to the cluster`, { context: { topic: name }, final });
    }
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

  /**
   * Who leads the partition. Throws UNKNOWN_TOPIC (no such partition: final when a caught-up broker
   * said so) or NO_RESPONDERS (no leader right now).
   */
  async leader(topic: string, partition: number): Promise<Leader> {
    const p = this.partition(await this.topic(topic), partition);
    if (p.leader < 0) {
      this.invalidate(topic);
      throw new TidemarkError('NO_RESPONDERS', `partition ${topic}/${partition} has no leader right now`, { context: { topic, partition } });
    }
    return { brokerId: p.leader, leaderEpoch: p.leaderEpoch };
  }

  /**
   * The partition of `md` (this cache's metadata of its topic), or UNKNOWN_TOPIC: final when a
   * caught-up broker's reply lacked it; otherwise the entry is dropped so the retry asks again.
   */
  partition(md: TopicMetadata, partition: number): TopicMetadata['partitions'][number] {
    const p = md.partitions.find((x) => x.partition === partition);
    if (p !== undefined) return p;
    const final = this.entries.get(md.name)?.current === true;
    if (!final) {
      // The retry layer asks again, confirmed (see topic()).
      this.confirmNext.add(md.name);
      this.invalidate(md.name);
    }
    throw new TidemarkError('UNKNOWN_TOPIC', `topic "${md.name}" has no partition ${partition}${final ? ` (it has ${md.partitions.length})` : ''}`, {
      context: { topic: md.name, partition },
      final,
    });
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

  /**
   * One uncached request (all topics when `topics` is absent); updates entries it returns. With
   * `confirm` the broker syncs with the controller first and says whether it has everything.
   */
  async fetch(topics?: string[], confirm = false): Promise<MetadataReply> {
    const body: MetadataRequest = { timeoutMs: this.options.requestTimeoutMs, topics, minOffset: this.minOffset, ...(confirm ? { confirm } : {}) };
    const reply = await this.rpc.request(this.subjects.metadata(), body, metadataReply);
    this.observe(reply.offset);
    const now = this.clock.now();
    for (const topic of reply.topics) {
      if (this.wanted.has(topic.name)) this.entries.set(topic.name, { topic, fetchedAtMs: now, current: reply.caughtUp === true });
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
        this.confirmNext.delete(oldest);
      }
    }
  }

  /**
   * Single flight: joins the running refresh's successor rather than the running one, because the
   * running request may have been sent before the caller learned its data was stale or wanted a
   * new topic. So at most two metadata requests are outstanding however many calls fail at once.
   */
  private refresh(): Promise<ReadonlySet<string>> {
    if (this.running === undefined) return this.run();
    this.queued ??= this.running.then(
      () => this.startQueued(),
      () => this.startQueued(),
    );
    return this.queued;
  }

  private startQueued(): Promise<ReadonlySet<string>> {
    this.queued = undefined;
    return this.run();
  }

  private run(): Promise<ReadonlySet<string>> {
    const topics = [...this.wanted];
    const confirm = topics.some((name) => this.confirmNext.has(name));
    if (confirm) for (const name of topics) this.confirmNext.delete(name);
    const run = (async () => {
      const reply = await this.fetch(topics, confirm);
      const present = new Set(reply.topics.map((t) => t.name));
      const absent = new Set<string>();
      for (const name of topics) {
        if (present.has(name)) continue;
        this.entries.delete(name);
        if (reply.caughtUp === true) absent.add(name);
      }
      return absent;
    })();
    this.running = run;
    const clear = () => {
      if (this.running === run) this.running = undefined;
    };
    run.then(clear, clear);
    return run;
  }
}
