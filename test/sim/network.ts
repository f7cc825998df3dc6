/**
 * An in-memory NATS for every node and client of a simulated cluster, implementing the Transport
 * port with NATS core semantics on simulated time:
 * - subjects with `*` and `>` wildcards; queue groups deliver each message to one member, chosen by
 *   the seeded PRNG among the members the publisher can reach (a NATS cluster routes to where the
 *   interest is), or among all when it reaches none (then the message is lost);
 * - at most once, and in order per (publishing connection, subscribing connection): each delivery
 *   is a timer at max(now + delay, the previous delivery on that pair), so jitter never reorders;
 * - request/reply through a per-connection inbox, with the timeout on the requester's clock;
 *   NO_RESPONDERS (after one simulated round trip) when no subscription matches at all;
 *   requestMany collects every reply until its wait or count is reached;
 * - publishes above `maxPayloadBytes` throw, as nats.js does.
 * Faults: loss and (rare) duplication per delivery, delay with jitter, directed cuts between
 * endpoints (an endpoint cut off from all or some peers, asymmetric partitions), and paused
 * endpoints whose deliveries are held, in order and bounded, until they resume. A cut is silent
 * (requests across it time out); interest still shows through it, as NATS only learns of a dead
 * route later.
 */
import { TidemarkError } from '../../src/protocol/errors.js';
import type { Clock, InboundMessage, SubscribeOptions, Subscription, Transport } from '../../src/runtime/ports.js';
import type { Rng } from './random.js';
import type { SimTime } from './clock.js';
import type { Trace } from './trace.js';

export interface NetFaults {
  /** Probability that a delivery is lost. */
  lossRate: number;
  /** Probability that a delivery is made twice (in order, right after itself). */
  dupRate: number;
  delayMsMin: number;
  delayMsMax: number;
}

export const CALM: NetFaults = { lossRate: 0, dupRate: 0, delayMsMin: 1, delayMsMax: 4 };

/** Largest message, bytes (NATS's default max_payload). */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
/** Deliveries held for one paused connection; beyond it NATS would cut a slow consumer, we drop. */
export const PAUSED_INBOX_MAX = 20_000;

export interface Sub {
  readonly conn: SimConnection;
  readonly tokens: readonly string[];
  readonly queue: string | undefined;
  readonly handler: (msg: InboundMessage) => void;
  active: boolean;
}

export interface Delivery {
  readonly from: SimConnection;
  readonly sub: Sub;
  readonly subject: string;
  readonly data: Uint8Array;
  readonly reply: string | undefined;
}

function matches(pattern: readonly string[], subject: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === '>') return subject.length > i;
    if (i >= subject.length || (pattern[i] !== '*' && pattern[i] !== subject[i])) return false;
  }
  return pattern.length === subject.length;
}

export class SimNats {
  faults: NetFaults;
  readonly stats = { published: 0, delivered: 0, lost: 0, cut: 0, duplicated: 0, held: 0, heldDropped: 0, noResponders: 0 };
  private readonly exact = new Map<string, Set<Sub>>();
  private readonly wild = new Set<Sub>();
  /** Directed cuts, `from>to` between endpoints. */
  private readonly blocked = new Set<string>();
  private readonly paused = new Set<string>();
  /** Due time of the last delivery per (publisher, subscriber) connection pair. */
  private readonly lastAt = new Map<string, number>();
  private nextConnId = 1;

  constructor(
    private readonly time: SimTime,
    private readonly rng: Rng,
    private readonly trace: Trace,
    faults: NetFaults = CALM,
  ) {
    this.faults = faults;
  }

  /** A new connection of `endpoint` (`n1`, `c2`, …) whose request timers run on `clock`. */
  connect(endpoint: string, clock: Clock): SimConnection {
    return new SimConnection(this, this.nextConnId++, endpoint, clock);
  }

  /** Messages from `from` stop reaching `to` (one direction). */
  cut(from: string, to: string): void {
    if (from !== to) this.blocked.add(`${from}>${to}`);
  }

  /** `endpoint` and each of `peers` stop hearing each other. */
  isolate(endpoint: string, peers: readonly string[]): void {
    for (const peer of peers) {
      this.cut(endpoint, peer);
      this.cut(peer, endpoint);
    }
  }

  heal(): void {
    this.blocked.clear();
  }

  get cuts(): number {
    return this.blocked.size;
  }

  reachable(from: string, to: string): boolean {
    return !this.blocked.has(`${from}>${to}`);
  }

  pause(endpoint: string): void {
    this.paused.add(endpoint);
  }

  isPaused(endpoint: string): boolean {
    return this.paused.has(endpoint);
  }

  resume(endpoint: string, conns: readonly SimConnection[]): void {
    this.paused.delete(endpoint);
    for (const conn of conns) {
      const held = conn.held.splice(0);
      for (const d of held) this.deliver(d);
    }
  }

  // ---- used by SimConnection --------------------------------------------------------------------

  addSub(sub: Sub, subject: string): void {
    if (sub.tokens.some((t) => t === '*' || t === '>')) {
      this.wild.add(sub);
    } else {
      let set = this.exact.get(subject);
      if (set === undefined) this.exact.set(subject, (set = new Set()));
      set.add(sub);
    }
  }

  removeSub(sub: Sub, subject: string): void {
    sub.active = false;
    this.wild.delete(sub);
    const set = this.exact.get(subject);
    set?.delete(sub);
    if (set?.size === 0) this.exact.delete(subject);
  }

  hasInterest(subject: string): boolean {
    if ((this.exact.get(subject)?.size ?? 0) > 0) return true;
    const tokens = subject.split('.');
    for (const sub of this.wild) if (matches(sub.tokens, tokens)) return true;
    return false;
  }

  publish(from: SimConnection, subject: string, data: Uint8Array, reply: string | undefined): void {
    if (data.length > MAX_PAYLOAD_BYTES) throw new Error(`MAX_PAYLOAD_EXCEEDED: ${data.length} bytes on ${subject}`);
    if (!from.open) return;
    this.stats.published++;
    const targets: Sub[] = [...(this.exact.get(subject) ?? [])];
    if (this.wild.size > 0) {
      const tokens = subject.split('.');
      for (const sub of this.wild) if (matches(sub.tokens, tokens)) targets.push(sub);
    }
    const groups = new Map<string, Sub[]>();
    for (const sub of targets) {
      if (sub.queue === undefined) {
        this.send(from, sub, subject, data, reply);
        continue;
      }
      const members = groups.get(sub.queue) ?? [];
      members.push(sub);
      groups.set(sub.queue, members);
    }
    for (const members of groups.values()) {
      const near = members.filter((m) => this.reachable(from.endpoint, m.conn.endpoint));
      const chosen = this.rng.pick(near.length > 0 ? near : members)!;
      this.send(from, chosen, subject, data, reply);
    }
  }

  /** Delay of one simulated hop, ms. */
  hopMs(): number {
    return this.rng.int(this.faults.delayMsMin, this.faults.delayMsMax);
  }

  private send(from: SimConnection, sub: Sub, subject: string, data: Uint8Array, reply: string | undefined): void {
    if (!this.reachable(from.endpoint, sub.conn.endpoint)) {
      this.stats.cut++;
      return;
    }
    if (this.rng.chance(this.faults.lossRate)) {
      this.stats.lost++;
      return;
    }
    const copies = this.rng.chance(this.faults.dupRate) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    const pair = `${from.id}>${sub.conn.id}`;
    const at = Math.max(this.time.now() + this.hopMs(), this.lastAt.get(pair) ?? 0);
    this.lastAt.set(pair, at);
    for (let i = 0; i < copies; i++) {
      // Each delivery gets its own bytes, as over a socket: a receiver may stamp them in place.
      const delivery: Delivery = { from, sub, subject, data: data.slice(), reply };
      this.time.setTimeout(() => this.arrive(delivery), at - this.time.now());
    }
  }

  private arrive(d: Delivery): void {
    if (!d.sub.active) return;
    // A link cut while the message was in flight loses it too.
    if (!this.reachable(d.from.endpoint, d.sub.conn.endpoint)) {
      this.stats.cut++;
      return;
    }
    if (this.paused.has(d.sub.conn.endpoint)) {
      if (d.sub.conn.held.length >= PAUSED_INBOX_MAX) {
        this.stats.heldDropped++;
        return;
      }
      this.stats.held++;
      d.sub.conn.held.push(d);
      return;
    }
    this.deliver(d);
  }

  private deliver(d: Delivery): void {
    if (!d.sub.active) return;
    this.stats.delivered++;
    this.trace.mixString(d.subject);
    this.trace.mixNumber(this.time.now());
    const conn = d.sub.conn;
    const reply = d.reply;
    d.sub.handler({
      subject: d.subject,
      data: d.data,
      reply,
      respond: (data) => {
        if (reply === undefined) return false;
        conn.publish(reply, data);
        return true;
      },
    });
  }

  closed(conn: SimConnection): void {
    for (const key of [...this.lastAt.keys()]) {
      const [a, b] = key.split('>');
      if (Number(a) === conn.id || Number(b) === conn.id) this.lastAt.delete(key);
    }
  }
}

/** One NATS connection: the Transport a node incarnation or a client uses. */
export class SimConnection implements Transport {
  readonly maxPayloadBytes = MAX_PAYLOAD_BYTES;
  open = true;
  readonly held: Delivery[] = [];
  private readonly subs = new Map<Sub, string>();
  private nextInbox = 1;

  constructor(
    private readonly net: SimNats,
    readonly id: number,
    readonly endpoint: string,
    private readonly clock: Clock,
  ) {}

  publish(subject: string, data: Uint8Array, reply?: string): void {
    this.net.publish(this, subject, data, reply);
  }

  subscribe(subject: string, handler: (msg: InboundMessage) => void, options?: SubscribeOptions): Subscription {
    const sub: Sub = { conn: this, tokens: subject.split('.'), queue: options?.queue, handler, active: this.open };
    if (this.open) {
      this.subs.set(sub, subject);
      this.net.addSub(sub, subject);
    }
    return {
      unsubscribe: () => {
        if (!this.subs.delete(sub)) return;
        this.net.removeSub(sub, subject);
      },
    };
  }

  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    // A dead process waits forever: nothing of it runs again.
    if (!this.open) return new Promise(() => undefined);
    return new Promise((resolve, reject) => {
      if (!this.net.hasInterest(subject)) {
        this.net.stats.noResponders++;
        this.clock.setTimeout(() => reject(new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`)), 2 * this.net.hopMs());
        return;
      }
      const inbox = `_INBOX.${this.id}.${this.nextInbox++}`;
      const timer = this.clock.setTimeout(() => {
        sub.unsubscribe();
        reject(new TidemarkError('TIMEOUT', `no reply on ${subject} within ${timeoutMs} ms`));
      }, timeoutMs);
      const sub = this.subscribe(inbox, (msg) => {
        this.clock.clearTimeout(timer);
        sub.unsubscribe();
        resolve(msg.data);
      });
      this.publish(subject, data, inbox);
    });
  }

  requestMany(subject: string, data: Uint8Array, options: { maxWaitMs: number; maxReplies: number }): Promise<Uint8Array[]> {
    if (!this.open) return new Promise(() => undefined);
    if (!this.net.hasInterest(subject)) return Promise.resolve([]);
    return new Promise((resolve) => {
      const replies: Uint8Array[] = [];
      const inbox = `_INBOX.${this.id}.${this.nextInbox++}`;
      const done = () => {
        this.clock.clearTimeout(timer);
        sub.unsubscribe();
        resolve(replies);
      };
      const timer = this.clock.setTimeout(done, options.maxWaitMs);
      const sub = this.subscribe(inbox, (msg) => {
        replies.push(msg.data);
        if (replies.length >= options.maxReplies) done();
      });
      this.publish(subject, data, inbox);
    });
  }

  /** The connection drops (process gone or closed): subscriptions go, nothing more is delivered. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    for (const [sub, subject] of this.subs) this.net.removeSub(sub, subject);
    this.subs.clear();
    this.held.length = 0;
    this.net.closed(this);
  }
}
