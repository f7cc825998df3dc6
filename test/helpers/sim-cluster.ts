/**
 * A Raft quorum of N voters in one process on simulated time (sim-network.ts), with a store per
 * voter that survives kill/restart, optional simulated disk latency, and a safety checker:
 * - election safety: at most one leader per term, checked after every delivery and timer step;
 * - log matching / state machine safety: every voter delivers committed entries in order without
 *   gaps, and no two deliveries of one index differ (term or payload), across restarts;
 * - acknowledged proposals are committed at their index with their payload;
 * - a voter's persisted term never goes down;
 * - every snapshot a voter installs (from its store at start, or from the leader) holds exactly the
 *   committed entries up to its index: each voter's state machine is the list of every entry it
 *   applied, so a snapshot is checked entry by entry like a delivery.
 */
import { pino } from 'pino';
import type { ElectionMachine } from '../../src/quorum/election-machine.js';
import type { LogView } from '../../src/quorum/log-view.js';
import { startRaftNode, type RaftNode, type RaftStateMachine, type RaftStatus } from '../../src/quorum/raft-node.js';
import { createMemoryRaftStore, MemoryRaftDisk, type LogEntry, type PersistentState, type RaftStore, type Snapshot } from '../../src/quorum/raft-store.js';
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
    loadSnapshot: () => inner.loadSnapshot(),
    saveState: (s: PersistentState) => later(() => inner.saveState(s)),
    saveSnapshot: (s: Snapshot) => later(() => inner.saveSnapshot(s)),
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
  /** Wraps each voter's state machine (injected snapshot bugs). */
  wrapStateMachine?: (id: number, machine: RaftStateMachine) => RaftStateMachine;
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
  /** Each voter's state machine: `index/term/payload hex` of every entry applied, from index 1. */
  readonly states = new Map<number, string[]>();
  /** Snapshots installed per voter in its current process lifetime (from its store or its leader). */
  readonly installs = new Map<number, number[]>();
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
    this.states.set(id, []);
    this.installs.set(id, []);
    let stateMachine: RaftStateMachine = {
      snapshot: () => ({ index: this.delivered.get(id)!, data: new TextEncoder().encode(JSON.stringify(this.states.get(id))) }),
      install: (index, data) => this.install(id, index, data),
    };
    if (this.options.wrapStateMachine) stateMachine = this.options.wrapStateMachine(id, stateMachine);
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
      stateMachine,
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
    const state = this.states.get(id)!;
    for (const e of entries) {
      const last = this.delivered.get(id)!;
      if (e.index !== last + 1) this.fail(`voter ${id} delivered ${e.index} after ${last}`);
      this.delivered.set(id, e.index);
      const payload = Buffer.from(e.payload).toString('hex');
      this.record(id, e.index, e.term, payload);
      state.push(`${e.index}/${e.term}/${payload}`);
    }
  }

  /** State machine safety: one entry per index, whoever delivered or snapshotted it. */
  private record(id: number, index: number, term: number, payload: string): void {
    const seen = this.committed.get(index);
    if (seen === undefined) this.committed.set(index, { term, payload });
    else if (seen.term !== term || seen.payload !== payload) {
      this.fail(`index ${index} committed as term ${seen.term} on one voter and term ${term} on voter ${id}`);
    }
  }

  private install(id: number, index: number, data: Uint8Array): void {
    const state = JSON.parse(new TextDecoder().decode(data)) as string[];
    const last = this.delivered.get(id)!;
    if (index <= last) this.fail(`voter ${id} installed a snapshot at ${index} after delivering ${last}`);
    if (state.length !== index) this.fail(`voter ${id}'s snapshot at ${index} holds ${state.length} entries`);
    state.forEach((line, i) => {
      const [at, term, payload] = line.split('/');
      if (Number(at) !== i + 1) this.fail(`voter ${id}'s snapshot at ${index} has entry ${at} in place ${i + 1}`);
      this.record(id, i + 1, Number(term), payload ?? '');
    });
    this.states.set(id, state);
    this.delivered.set(id, index);
    this.installs.get(id)!.push(index);
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
