/**
 * Every random choice of a run comes from one seed: the run's Rng forks a stream per purpose
 * (network, workload, each node incarnation, each client), so adding a draw in one place does not
 * shift every other stream, and a failing seed replays exactly.
 */
import type { Random } from '../../src/runtime/ports.js';
import { seededRandom } from '../helpers/sim-network.js';

export class Rng implements Random {
  private readonly source: Random;

  constructor(readonly seed: number) {
    this.source = seededRandom(seed);
  }

  next(): number {
    return this.source.next();
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** A float in [min, max). */
  between(min: number, max: number): number {
    return min + this.next() * (max - min);
  }

  chance(p: number): boolean {
    return p > 0 && this.next() < p;
  }

  pick<T>(items: readonly T[]): T | undefined {
    return items.length === 0 ? undefined : items[Math.floor(this.next() * items.length)];
  }

  /** Index chosen with probability proportional to its weight; -1 when every weight is 0. */
  weighted(weights: readonly number[]): number {
    const total = weights.reduce((a, b) => a + Math.max(0, b), 0);
    if (total <= 0) return -1;
    let x = this.next() * total;
    for (let i = 0; i < weights.length; i++) {
      x -= Math.max(0, weights[i]!);
      if (x < 0) return i;
    }
    return weights.length - 1;
  }

  /** An independent stream for one purpose, named so that streams do not collide. */
  fork(purpose: string): Rng {
    let h = this.seed >>> 0;
    for (let i = 0; i < purpose.length; i++) h = Math.imul(h ^ purpose.charCodeAt(i), 0x01000193) >>> 0;
    return new Rng(h);
  }
}
