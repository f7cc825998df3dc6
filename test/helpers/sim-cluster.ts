/**
 * A Raft quorum of N voters in one process on simulated time (sim-network.ts), with a store per
 * voter that survives kill/restart, optional simulated disk latency, and a safety checker:
 * - election safety: at most one leader per term, checked after every delivery and timer step;
 * - log matching / state machine safety: every voter delivers committed entries in order without
 *   gaps, and no two deliveries of one index differ (term or payload), across restarts;
 * - acknowledged proposals are committed at their index with their payload;
 * - a voter's persisted term never goes down.
 */
import { pino } from 'pino';
import type { ElectionMachine } from '../../src/quorum/election-machine.js';
import type { LogView } from '../../src/quorum/log-view.js';
import { startRaftNode, type RaftNode, type RaftStatus } from '../../src/quorum/raft-node.js';
import { createMemoryRaftStore, MemoryRaftDisk, type LogEntry, type PersistentState, type RaftStore } from '../../src/quorum/raft-store.js';
import type { RaftLimits, RaftTimeouts } from '../../src/quorum/types.js';
import { RELIABLE, seededRandom, SimClock, SimNetwork, type LinkFaults } from './sim-network.js';

export const PREFIX = 'tm.sim';
const silent = pino({ level: process.env['SIM_LOG'] ?? 'silent' });

/** A store whose every call takes simulated time, and whose writes are lost once its voter is killed. */
function slowStore(inner: RaftStore, clock: SimClock, latency: () => number, alive: () => boolean): RaftStore {
  const later = async <T>(fn: () => Promise<T>): Promise<T> => {
    await clock.sleep(latency());
    if (!alive()) throw new Error('voter was killed before this write reached the disk');
    return fn();
  };
  return {
    loadState: () => inner.loadState(),
    lastIndex: () => inner.lastIndex(),
    termAt: (i) => inner.termAt(i),
    view: (): LogView => inner.view(),
    saveState: (s: PersistentState) => later(() => inner.saveState(s)),
    append: (e: readonly LogEntry[]) => later(() => inner.append(e)),
    truncateFrom: (i: number) => later(() => inner.truncateFrom(i)),
    entries: (f: number, m: number, b?: number) => later(() => inner.entries(f, m, b)),
  };
}

export interface SimOptions {
  seed: number;
  voters: number;
  faults?: LinkFaults;
  /** Simulated latency of every store call, ms (min, max). @default [0, 2] */
  diskMs?: [number, number];
  timeouts?: Partial<RaftTimeouts>;
  limits?: Partial<RaftLimits>;
  machine?: ElectionMachine;
  /** Wraps each voter's store (tests that observe persistence). */
  wrapStore?: (id: number, store: RaftStore) => RaftStore;
}

export class SimCluster {
  readonly clock = new SimClock();
  readonly random: ReturnType<typeof seededRandom>;
  readonly net: SimNetwork;
  readonly ids: number[];
  readonly disks = new Map<number, MemoryRaftDisk>();
  readonly nodes = new Map<number, RaftNode>();
  private readonly generation = new Map<number, number>();
  readonly violations: string[] = [];
  /** term -> leader id */
  readonly leaders = new Map<number, number>();
  /** index -> the entry some voter delivered there */
  readonly committed = new Map<number, { term: number; payload: string }>();
  private readonly delivered = new Map<number, number>();
  /** Entries each voter delivered in its current process lifetime. */
  readonly deliveries = new Map<number, LogEntry[]>();
  private readonly persistedTerm = new Map<number, number>();
  readonly acknowledged: Array<{ index: number; payload: string }> = [];

  constructor(readonly options: SimOptions) {
    this.random = seededRandom(options.seed);
    this.net = new SimNetwork(this.clock, this.random, options.faults ?? RELIABLE);
    this.ids = Array.from({ length: options.voters }, (_, i) => i + 1);
    this.net.onDeliver = () => this.check();
    for (const id of this.ids) {
      this.disks.set(id, new MemoryRaftDisk());
      this.start(id);
    }
  }

  start(id: number): RaftNode {
    const gen = (this.generation.get(id) ?? 0) + 1;
    this.generation.set(id, gen);
    const [lo, hi] = this.options.diskMs ?? [0, 2];
    const alive = () => this.generation.get(id) === gen && this.nodes.has(id);
    let store = slowStore(createMemoryRaftStore(this.disks.get(id)!), this.clock, () => this.random.int(lo, hi), alive);
    if (this.options.wrapStore) store = this.options.wrapStore(id, store);
    this.delivered.set(id, 0);
    this.deliveries.set(id, []);
    const node = startRaftNode({
      voterId: id,
      voters: this.ids,
      subjectPrefix: PREFIX,
      transport: this.net.transport(id),
      store,
      clock: this.clock,
      random: seededRandom(this.options.seed * 1009 + id * 7919 + gen),
      logger: silent,
      ...(this.options.timeouts ? { timeouts: this.options.timeouts } : {}),
      ...(this.options.limits ? { limits: this.options.limits } : {}),
      ...(this.options.machine ? { machine: this.options.machine } : {}),
      onCommit: (entries) => this.onCommit(id, entries),
    });
    this.nodes.set(id, node);
    return node;
  }

  /** Like kill -9: timers and subscription gone, writes not yet on disk lost. */
  kill(id: number): void {
    const node = this.nodes.get(id);
    if (node === undefined) return;
    this.nodes.delete(id);
    void node.stop();
  }

  restart(id: number): RaftNode {
    this.kill(id);
    return this.start(id);
  }

  live(): number[] {
    return this.ids.filter((id) => this.nodes.has(id));
  }

  status(id: number): RaftStatus | undefined {
    return this.nodes.get(id)?.status();
  }

  /** The live leader with the highest term, if any. */
  leader(): number | undefined {
    let best: RaftStatus | undefined;
    for (const id of this.live()) {
      const s = this.status(id)!;
      if (s.role === 'leader' && (best === undefined || s.term > best.term)) best = s;
    }
    return best?.voterId;
  }

  /** A leader every live voter of `among` follows in the same term. */
  stableLeader(among: readonly number[] = this.live()): number | undefined {
    const l = this.leader();
    if (l === undefined || !among.includes(l)) return undefined;
    const term = this.status(l)!.term;
    return among.every((id) => {
      const s = this.status(id)!;
      return s.term === term && s.leaderId === l;
    })
      ? l
      : undefined;
  }

  private fail(message: string): void {
    if (this.violations.length < 20) this.violations.push(`seed ${this.options.seed} t=${this.clock.now()}: ${message}`);
  }

  check(): void {
    for (const id of this.live()) {
      const s = this.status(id)!;
      if (s.role === 'leader') {
        const known = this.leaders.get(s.term);
        if (known === undefined) this.leaders.set(s.term, id);
        else if (known !== id) this.fail(`two leaders in term ${s.term}: ${known} and ${id}`);
      }
      if (s.role === 'failed') this.fail(`voter ${id} failed`);
    }
    for (const [id, disk] of this.disks) {
      const before = this.persistedTerm.get(id) ?? 0;
      if (disk.state.term < before) this.fail(`voter ${id}'s persisted term went from ${before} to ${disk.state.term}`);
      this.persistedTerm.set(id, disk.state.term);
    }
  }

  private onCommit(id: number, entries: readonly LogEntry[]): void {
    this.deliveries.get(id)!.push(...entries);
    for (const e of entries) {
      const last = this.delivered.get(id)!;
      if (e.index !== last + 1) this.fail(`voter ${id} delivered ${e.index} after ${last}`);
      this.delivered.set(id, e.index);
      const payload = Buffer.from(e.payload).toString('hex');
      const seen = this.committed.get(e.index);
      if (seen === undefined) this.committed.set(e.index, { term: e.term, payload });
      else if (seen.term !== e.term || seen.payload !== payload) {
        this.fail(`index ${e.index} committed as term ${seen.term} on one voter and term ${e.term} on voter ${id}`);
      }
    }
  }

  /** Proposes through voter `id`; acknowledged results are remembered and checked at the end. */
  async propose(id: number, payloads: Uint8Array[]): Promise<{ index: number } | Error> {
    const node = this.nodes.get(id);
    if (node === undefined) return new Error('voter is down');
    try {
      const r = await node.propose(payloads);
      payloads.forEach((p, i) => this.acknowledged.push({ index: r.index - payloads.length + 1 + i, payload: Buffer.from(p).toString('hex') }));
      return r;
    } catch (error) {
      return error as Error;
    }
  }

  /** Runs the clock until `promise` settles (at most `ms`); undefined if it did not. */
  async drive<T>(promise: Promise<T>, ms = 5000): Promise<T | undefined> {
    let settled = false;
    const watched = promise.finally(() => {
      settled = true;
    });
    await this.runUntil(() => settled, ms);
    return settled ? watched : undefined;
  }

  /** Proposes through voter `id` and runs the clock until the outcome is known. */
  async commit(id: number, payloads: Uint8Array[], ms = 5000): Promise<{ index: number } | Error | undefined> {
    return this.drive(this.propose(id, payloads), ms);
  }

  /** Acknowledged proposals must be committed, unchanged, at their index. */
  checkAcknowledged(): void {
    for (const a of this.acknowledged) {
      const c = this.committed.get(a.index);
      if (c?.payload !== a.payload) this.fail(`acknowledged entry ${a.index} is ${c === undefined ? 'missing' : 'different'}`);
    }
  }

  async run(ms: number): Promise<void> {
    await this.clock.run(ms, () => this.check());
  }

  /** Runs until `done()` or `ms` passed; returns the simulated ms it took, or undefined. */
  async runUntil(done: () => boolean, ms: number): Promise<number | undefined> {
    const start = this.clock.now();
    let hit = false;
    await this.clock.run(ms, () => {
      this.check();
      hit = done();
      return hit;
    });
    return hit ? this.clock.now() - start : undefined;
  }

  async stopAll(): Promise<void> {
    for (const id of this.live()) this.kill(id);
  }
}

export const bytes = (s: string) => new TextEncoder().encode(s);
