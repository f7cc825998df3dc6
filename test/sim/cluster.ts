/**
 * A whole Tidemark cluster in one process: N nodes built by `composeNode` on simulated ports (a
 * connection to the in-memory NATS, a memory store over a MemoryDisk that outlives every
 * incarnation, a NodeClock, a seeded Random, a silent logger).
 *
 * - crash: the process dies: its clock stops (no timer of it fires again), its connection drops,
 *   its queued storage writes are lost; close() is never called. With `powerLoss`, the disk also
 *   loses every write that was not synced or written back yet (MemoryDisk.powerLoss()).
 * - restart: composeNode again on the same MemoryDisk, as a new incarnation.
 * - shutdown: the controlled path, node.close(); the node is down once it resolves.
 * - pause / resume: SIGSTOP / SIGCONT; no timer of the node fires and nothing is delivered to it
 *   while paused (held, in order, until resume). Promise continuations already queued still run.
 * Every node's OS writes its dirty pages back every `flushEveryMs` (a timer on simulated time that
 * runs whatever state the process is in).
 */
import { pino, type Logger } from 'pino';
import { composeNode, type NodeParts, type NodeRole, type NodeTestSeam, type TidemarkNode } from '../../src/node.js';
import type { RaftTimeouts } from '../../src/quorum/types.js';
import { MemoryDisk, type LostAppend } from '../../src/storage/memory-storage.js';
import { NodeClock, type SimTime } from './clock.js';
import { SimStorage, type DiskLatency } from './disk.js';
import type { SimConnection, SimNats } from './network.js';
import type { Rng } from './random.js';
import type { Trace } from './trace.js';
import { MetricsTally } from './metrics.js';

export const CLUSTER_NAME = 'sim';

export interface ClusterConfig {
  /** Node ids 1..nodes. */
  nodes: number;
  /** Ids with the controller role (the Raft voters). */
  voters: readonly number[];
  /** Ids with the broker role. */
  brokers: readonly number[];
  disk: DiskLatency;
  /** Between two write-backs of a node's unsynced writes, ms (min, max). */
  flushEveryMs: readonly [number, number];
  raftTimeouts: RaftTimeouts;
  snapshotEveryEntries: number;
  /** Raft entry payload bound, bytes (absent: the default). */
  appendBytesMax?: number;
  /** Machines to run instead of the product's (injected bugs). */
  machines?: NodeTestSeam['machines'];
}

export type NodeState = 'up' | 'stopping' | 'down';

/** What the checkers learn from the cluster as it happens. */
export interface ClusterObserver {
  /** A new incarnation's parts, before its actors start. */
  started(node: SimNode, parts: NodeParts): void;
  /** A power loss took these unsynced appends off the node's disk. */
  powerLost(node: SimNode, lost: readonly LostAppend[]): void;
  /** The node truncated a partition's log at `offset`, removing these batches. */
  truncated(node: SimNode, partition: string, offset: number, removed: readonly Uint8Array[]): void;
  /** The product logged something that only a bug causes (an actor crashed). */
  bug?(message: string): void;
}

/** Error logs that only a bug produces: the run fails on them. */
const BUG_MESSAGES = new Set(['partition actor crashed']);

export class SimNode {
  readonly endpoint: string;
  readonly disk = new MemoryDisk();
  state: NodeState = 'down';
  incarnation = 0;
  parts: NodeParts = {};
  clock: NodeClock | undefined;
  conn: SimConnection | undefined;
  storage: SimStorage | undefined;
  node: TidemarkNode | undefined;

  constructor(
    readonly id: number,
    readonly roles: readonly NodeRole[],
  ) {
    this.endpoint = `n${id}`;
  }

  get paused(): boolean {
    return this.clock?.isPaused ?? false;
  }
}

export class SimCluster {
  readonly nodes: SimNode[];
  /** What the nodes' metrics ports counted (metrics.ts). */
  readonly metrics = new MetricsTally();
  private readonly logger: Logger;

  constructor(
    readonly config: ClusterConfig,
    private readonly time: SimTime,
    private readonly net: SimNats,
    private readonly rng: Rng,
    private readonly trace: Trace,
    private readonly observer: ClusterObserver,
  ) {
    // At least errors are logged (to nowhere unless SIM_LOG is set), so a crash that only shows in
    // the log fails the run.
    const level = process.env['SIM_LOG'] ?? 'error';
    const quiet = process.env['SIM_LOG'] === undefined;
    this.logger = pino(
      {
        level,
        timestamp: () => `,"simMs":${time.elapsed()}`,
        hooks: {
          logMethod(args, method, levelValue) {
            const message = args.find((a): a is string => typeof a === 'string');
            if (levelValue >= 50 && message !== undefined && BUG_MESSAGES.has(message)) {
              const err = (args[0] as { err?: { message?: string } } | undefined)?.err?.message;
              observer.bug?.(`${message}${err === undefined ? '' : `: ${err}`}`);
            }
            method.apply(this, args);
          },
        },
      },
      quiet ? { write: () => undefined } : process.stdout,
    );
    this.nodes = Array.from({ length: config.nodes }, (_, i) => {
      const id = i + 1;
      const roles: NodeRole[] = [];
      if (config.brokers.includes(id)) roles.push('broker');
      if (config.voters.includes(id)) roles.push('controller');
      return new SimNode(id, roles);
    });
    for (const n of this.nodes) this.scheduleFlush(n);
  }

  node(id: number): SimNode {
    return this.nodes[id - 1]!;
  }

  up(): SimNode[] {
    return this.nodes.filter((n) => n.state === 'up');
  }

  start(id: number): void {
    const n = this.node(id);
    if (n.state !== 'down') return;
    n.incarnation++;
    n.clock = new NodeClock(this.time);
    n.conn = this.net.connect(n.endpoint, n.clock);
    n.storage = new SimStorage(n.disk, n.clock, this.rng.fork(`disk-${id}-${n.incarnation}`), this.config.disk, (pid, offset, removed) =>
      this.observer.truncated(n, pid, offset, removed),
    );
    n.state = 'up';
    n.parts = {};
    const incarnation = n.incarnation;
    const seam: NodeTestSeam = {
      ...(this.config.machines === undefined ? {} : { machines: this.config.machines }),
      observe: (parts) => {
        n.parts = parts;
        this.observer.started(n, parts);
      },
    };
    const ports = { transport: n.conn, storage: n.storage, clock: n.clock, random: this.rng.fork(`node-${id}-${incarnation}`), logger: this.logger, metrics: this.metrics.port() };
    const options = { id, roles: n.roles, controllers: this.config.voters, cluster: CLUSTER_NAME, raftTimeouts: this.config.raftTimeouts, raftLimits: { snapshotEveryEntries: this.config.snapshotEveryEntries, ...(this.config.appendBytesMax === undefined ? {} : { appendBytesMax: this.config.appendBytesMax }) } };
    composeNode(ports, options, seam).then(
      (node) => {
        if (n.incarnation === incarnation) n.node = node;
      },
      (error: unknown) => this.trace.event('error', `n${id} did not start: ${String(error)}`),
    );
    this.trace.event('start', `n${id} incarnation ${incarnation} (${n.roles.join('+')})`);
  }

  /** kill -9, or a power loss with `powerLoss`. */
  crash(id: number, powerLoss: boolean): void {
    const n = this.node(id);
    if (n.state === 'down') return;
    this.drop(n);
    this.trace.event('crash', `n${id}${powerLoss ? ' with power loss' : ''}`);
    if (powerLoss) {
      const lost = n.disk.powerLoss();
      const records = lost.reduce((sum, l) => sum + l.batches.length, 0);
      this.trace.event('powerloss', `n${id} lost ${records} unsynced batch(es) in ${new Set(lost.map((l) => l.partition)).size} partition(s)`);
      this.observer.powerLost(n, lost);
    }
  }

  /** The controlled path: close(), then the process exits. */
  shutdown(id: number): void {
    const n = this.node(id);
    if (n.state !== 'up' || n.node === undefined) return;
    n.state = 'stopping';
    const incarnation = n.incarnation;
    this.trace.event('shutdown', `n${id} closing`);
    n.node
      .close()
      .then(() => n.storage?.close())
      .then(
      () => {
        if (n.incarnation !== incarnation || n.state !== 'stopping') return;
        this.drop(n);
        this.trace.event('shutdown', `n${id} closed`);
      },
      (error: unknown) => this.trace.event('error', `n${id} close failed: ${String(error)}`),
    );
  }

  pause(id: number): void {
    const n = this.node(id);
    if (n.state === 'down' || n.paused) return;
    n.clock!.pause();
    this.net.pause(n.endpoint);
    this.trace.event('pause', `n${id}`);
  }

  resume(id: number): void {
    const n = this.node(id);
    if (!n.paused) return;
    this.trace.event('resume', `n${id}`);
    n.clock!.resume();
    this.net.resume(n.endpoint, n.conn === undefined ? [] : [n.conn]);
  }

  private drop(n: SimNode): void {
    n.clock?.kill();
    n.conn?.close();
    n.storage?.kill();
    this.net.resume(n.endpoint, []);
    n.state = 'down';
    n.node = undefined;
    n.parts = {};
  }

  private scheduleFlush(n: SimNode): void {
    const [min, max] = this.config.flushEveryMs;
    this.time.setTimeout(() => {
      n.disk.flush();
      this.scheduleFlush(n);
    }, this.rng.int(min, max));
  }
}
