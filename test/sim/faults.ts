/**
 * The fault half of the workload: crashes (kill -9, and power loss where enabled), restarts,
 * controlled shutdowns, pauses, and network cuts (a node cut off from everyone, from some peers,
 * or one direction between two endpoints), and healing. Each is drawn from the run's seed.
 */
import type { SimTime } from './clock.js';
import type { SimCluster } from './cluster.js';
import type { SimNats } from './network.js';
import type { Rng } from './random.js';
import type { Trace } from './trace.js';

export interface FaultProfile {
  /** Scales every fault's weight (0: no faults at all). */
  rate: number;
  /** Whether crashes may also lose unsynced writes. */
  powerLoss: boolean;
}

/** A pause lasts this long at most, ms (a GC pause, a SIGSTOP, a VM migration). */
export const PAUSE_MS_MAX = 4000;

export type FaultKind = 'crash' | 'powerloss' | 'restart' | 'shutdown' | 'pause' | 'isolate' | 'cut-some' | 'cut-oneway' | 'heal';

export class FaultInjector {
  readonly counts: Record<FaultKind, number> = { crash: 0, powerloss: 0, restart: 0, shutdown: 0, pause: 0, isolate: 0, 'cut-some': 0, 'cut-oneway': 0, heal: 0 };

  constructor(
    private readonly cluster: SimCluster,
    private readonly net: SimNats,
    private readonly time: SimTime,
    private readonly rng: Rng,
    private readonly trace: Trace,
    private readonly profile: FaultProfile,
    private readonly clients: readonly string[],
  ) {}

  /** Weights of the faults possible now, by kind. */
  weights(): Array<[FaultKind, number]> {
    const f = this.profile.rate;
    const nodes = this.cluster.nodes;
    const down = nodes.filter((n) => n.state === 'down').length;
    // Keep one node running, so that runs mostly make progress between faults.
    const mayCrash = nodes.length - down > 1;
    // Against the workload's ~55 of data weight: at rate 1, about one fault every 1.5 simulated s.
    return [
      ['crash', mayCrash ? 1 * f : 0],
      ['powerloss', mayCrash && this.profile.powerLoss ? 0.5 * f : 0],
      ['restart', down > 0 ? 2 : 0],
      ['shutdown', mayCrash ? 0.3 * f : 0],
      ['pause', 0.8 * f],
      ['isolate', 0.6 * f],
      ['cut-some', 0.6 * f],
      ['cut-oneway', 0.4 * f],
      ['heal', this.net.cuts > 0 ? 1 : 0],
    ];
  }

  /** Half the time the Raft leader (the active controller), when there is one: elections are where quorum bugs live. */
  private victim(candidates: readonly number[]): number | undefined {
    const leader = candidates.find((id) => this.cluster.node(id).parts.raft?.status().role === 'leader');
    return leader !== undefined && this.rng.chance(0.5) ? leader : this.rng.pick(candidates);
  }

  apply(kind: FaultKind): void {
    this.counts[kind]++;
    const up = this.cluster.up();
    const upIds = up.map((n) => n.id);
    switch (kind) {
      case 'crash':
      case 'powerloss': {
        const victim = this.victim(upIds);
        if (victim !== undefined) this.cluster.crash(victim, kind === 'powerloss');
        return;
      }
      case 'restart': {
        const down = this.cluster.nodes.filter((n) => n.state === 'down').map((n) => n.id);
        const id = this.rng.pick(down);
        if (id !== undefined) this.cluster.start(id);
        return;
      }
      case 'shutdown': {
        const id = this.rng.pick(upIds);
        if (id !== undefined) this.cluster.shutdown(id);
        return;
      }
      case 'pause': {
        const id = this.victim(this.cluster.nodes.filter((n) => n.state !== 'down' && !n.paused).map((n) => n.id));
        if (id === undefined) return;
        const node = this.cluster.node(id);
        const incarnation = node.incarnation;
        this.cluster.pause(id);
        this.time.setTimeout(() => {
          if (node.incarnation === incarnation) this.cluster.resume(id);
        }, this.rng.int(50, PAUSE_MS_MAX));
        return;
      }
      case 'isolate': {
        const id = this.victim(this.cluster.nodes.map((n) => n.id));
        if (id === undefined) return;
        const node = this.cluster.node(id);
        const everyone = [...this.cluster.nodes.map((n) => n.endpoint), ...this.clients].filter((e) => e !== node.endpoint);
        this.net.isolate(node.endpoint, everyone);
        this.trace.event('cut', `${node.endpoint} from everyone`);
        return;
      }
      case 'cut-some': {
        const node = this.rng.pick(this.cluster.nodes);
        if (node === undefined) return;
        const others = [...this.cluster.nodes.map((n) => n.endpoint), ...this.clients].filter((e) => e !== node.endpoint);
        const some = others.filter(() => this.rng.chance(0.5));
        if (some.length === 0) some.push(this.rng.pick(others)!);
        this.net.isolate(node.endpoint, some);
        this.trace.event('cut', `${node.endpoint} from ${some.join(',')}`);
        return;
      }
      case 'cut-oneway': {
        const endpoints = [...this.cluster.nodes.map((n) => n.endpoint), ...this.clients];
        const from = this.rng.pick(endpoints)!;
        const to = this.rng.pick(endpoints.filter((e) => e !== from))!;
        this.net.cut(from, to);
        this.trace.event('cut', `${from} -> ${to} only`);
        return;
      }
      case 'heal':
        this.net.heal();
        this.trace.event('heal', 'every cut');
        return;
    }
  }

  /** The liveness phase: no cut, no pause, every node running (restarted when it is down). */
  healAll(): void {
    this.net.heal();
    for (const n of this.cluster.nodes) {
      if (n.paused) this.cluster.resume(n.id);
      if (n.state === 'down') this.cluster.start(n.id);
    }
  }
}
