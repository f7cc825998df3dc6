/**
 * A whole cluster's fabric inside one process, on simulated time: a seeded PRNG, a stepping clock
 * built on xstate's SimulatedClock, and an in-memory network that loses, duplicates, delays (and so
 * reorders) messages per link and cuts links by partition sets. Every delivery is a timer on the
 * clock; nothing waits for real time, and the same seed replays the same run.
 */
import { SimulatedClock } from 'xstate';
import { TidemarkError } from '../../src/protocol/errors.js';
import type { InboundMessage, Random, Subscription, Transport } from '../../src/runtime/ports.js';

/** sfc32: small, fast, good enough for fault injection; same seed, same sequence. */
export function seededRandom(seed: number): Random & { int(min: number, max: number): number; chance(p: number): boolean } {
  let a = 0x9e3779b9 ^ seed;
  let b = 0x243f6a88 + seed * 7;
  let c = 0xb7e15162 ^ (seed << 5);
  let d = 1;
  const next = () => {
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    d >>>= 0;
    const t = (a + b + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
  for (let i = 0; i < 16; i++) next();
  return {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    chance: (p) => p > 0 && next() < p,
  };
}

/** Lets every promise chain that can make progress do so; no simulated time passes. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * SimulatedClock that also knows when its next timer is due, so `run()` can step from timer to
 * timer (each fires at its own instant, not all at the end of a big increment).
 */
export class SimClock extends SimulatedClock {
  private readonly due = new Map<number, number>();

  override setTimeout(fn: (...args: unknown[]) => void, timeoutMs: number): number {
    const at = this.now() + Math.max(0, timeoutMs);
    const id: number = super.setTimeout(() => {
      this.due.delete(id);
      fn();
    }, Math.max(0, timeoutMs));
    this.due.set(id, at);
    return id;
  }

  override clearTimeout(id: number): void {
    this.due.delete(id);
    super.clearTimeout(id);
  }

  nextDue(): number | undefined {
    let next: number | undefined;
    for (const at of this.due.values()) if (next === undefined || at < next) next = at;
    return next;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(() => resolve(), ms));
  }

  /**
   * Advances `ms`, firing timers in time order and settling promises between steps. `afterStep`
   * runs after every step (invariant checks); returning true stops early.
   */
  async run(ms: number, afterStep?: () => boolean | void): Promise<void> {
    const target = this.now() + ms;
    for (;;) {
      await settle();
      if (afterStep?.() === true) return;
      const next = this.nextDue();
      if (next === undefined || next > target) break;
      this.set(Math.max(next, this.now()));
    }
    if (this.now() < target) this.set(target);
    await settle();
    afterStep?.();
  }
}

export interface LinkFaults {
  /** Probability a message is lost. */
  dropRate: number;
  /** Probability a message is delivered twice. */
  dupRate: number;
  delayMsMin: number;
  delayMsMax: number;
}

export const RELIABLE: LinkFaults = { dropRate: 0, dupRate: 0, delayMsMin: 1, delayMsMax: 5 };

export interface Delivery {
  from: number;
  to: number;
  subject: string;
  data: Uint8Array;
}

interface Sub {
  owner: number;
  subject: string;
  handler: (msg: InboundMessage) => void;
  active: boolean;
}

export class SimNetwork {
  private readonly subs = new Set<Sub>();
  private readonly links = new Map<string, LinkFaults>();
  private groups: number[][] | undefined;
  readonly stats = { sent: 0, dropped: 0, duplicated: 0, delivered: 0 };
  /** Called after each delivery's handler returned. */
  onDeliver: ((delivery: Delivery) => void) | undefined;
  /** Called for each publish, before faults apply. */
  onPublish: ((delivery: Delivery) => void) | undefined;

  constructor(
    private readonly clock: SimClock,
    private readonly random: ReturnType<typeof seededRandom>,
    public faults: LinkFaults = RELIABLE,
  ) {}

  /** Faults for one direction of one link, overriding the default. */
  setLink(from: number, to: number, faults: LinkFaults | undefined): void {
    if (faults === undefined) this.links.delete(`${from}>${to}`);
    else this.links.set(`${from}>${to}`, faults);
  }

  /** Only nodes in the same group can talk; nodes in no group talk to nobody. */
  partition(groups: number[][]): void {
    this.groups = groups;
  }

  isolate(node: number, all: readonly number[]): void {
    this.partition([[node], all.filter((n) => n !== node)]);
  }

  heal(): void {
    this.groups = undefined;
  }

  connected(a: number, b: number): boolean {
    if (a === b || this.groups === undefined) return true;
    return this.groups.some((g) => g.includes(a) && g.includes(b));
  }

  transport(node: number): Transport {
    return {
      maxPayloadBytes: 1024 * 1024,
      publish: (subject, data) => this.publish(node, subject, data),
      subscribe: (subject, handler): Subscription => {
        const sub: Sub = { owner: node, subject, handler, active: true };
        this.subs.add(sub);
        return {
          unsubscribe: () => {
            sub.active = false;
            this.subs.delete(sub);
          },
        };
      },
      request: () => Promise.reject(new TidemarkError('NO_RESPONDERS', 'the simulated network has no request/reply')),
      requestMany: () => Promise.reject(new TidemarkError('NO_RESPONDERS', 'the simulated network has no request/reply')),
    };
  }

  private publish(from: number, subject: string, data: Uint8Array): void {
    for (const sub of this.subs) {
      if (sub.subject !== subject) continue;
      const delivery = { from, to: sub.owner, subject, data };
      this.stats.sent++;
      this.onPublish?.(delivery);
      const faults = this.links.get(`${from}>${sub.owner}`) ?? this.faults;
      if (!this.connected(from, sub.owner) || this.random.chance(faults.dropRate)) {
        this.stats.dropped++;
        continue;
      }
      const copies = this.random.chance(faults.dupRate) ? 2 : 1;
      if (copies === 2) this.stats.duplicated++;
      for (let i = 0; i < copies; i++) {
        this.clock.setTimeout(() => this.deliver(sub, delivery), this.random.int(faults.delayMsMin, faults.delayMsMax));
      }
    }
  }

  private deliver(sub: Sub, delivery: Delivery): void {
    // A link cut while the message was in flight loses it too.
    if (!sub.active || !this.connected(delivery.from, delivery.to)) {
      this.stats.dropped++;
      return;
    }
    this.stats.delivered++;
    sub.handler({ subject: delivery.subject, data: delivery.data, reply: undefined, respond: () => false });
    this.onDeliver?.(delivery);
  }
}
