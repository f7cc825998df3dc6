/**
 * Simulated time for a whole cluster. `SimTime` is one clock with a binary heap of timers (due
 * time, then creation order, so timers due together fire first-come first-served); the run loop
 * fires them one at a time and lets promises settle in between, as Node's event loop would.
 * xstate's SimulatedClock sorts every timer on each step and orders equal due times arbitrarily;
 * this one is O(log n) and FIFO.
 *
 * `NodeClock` is one process's view of it: a crash kills every timer the process set (and any it
 * sets afterwards), and a pause holds the timers that come due until it resumes (SIGSTOP), so a
 * paused node neither sends, times out nor writes.
 */
import type { Clock } from '../../src/runtime/ports.js';

interface Timer {
  readonly id: number;
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** Simulated epoch of every run: timestamps look like real ones (retention, logs). */
export const SIM_EPOCH_MS = 1_767_225_600_000;

export class SimTime implements Clock {
  private nowMs = SIM_EPOCH_MS;
  private readonly heap: Timer[] = [];
  /** Timers not yet fired or cancelled, by id (the heap drops cancelled ones lazily). */
  private readonly live = new Map<number, Timer>();
  private nextId = 1;

  now(): number {
    return this.nowMs;
  }

  /** Simulated ms since the run started. */
  elapsed(): number {
    return this.nowMs - SIM_EPOCH_MS;
  }

  setTimeout(fn: (...args: unknown[]) => void, timeoutMs: number): number {
    const delay = Number.isFinite(timeoutMs) && timeoutMs > 0 ? timeoutMs : 0;
    const timer: Timer = { id: this.nextId, at: this.nowMs + delay, seq: this.nextId, fn: () => fn() };
    this.nextId++;
    this.live.set(timer.id, timer);
    this.push(timer);
    return timer.id;
  }

  clearTimeout(id: unknown): void {
    if (typeof id === 'number') this.live.delete(id);
  }

  /** Timers pending. */
  get pending(): number {
    return this.live.size;
  }

  /** When the next live timer is due, if any. */
  nextDue(): number | undefined {
    this.dropCancelled();
    return this.heap[0]?.at;
  }

  /** Fires the next timer if it is due at or before `limit` (moving time to it); false if none is. */
  fireNext(limit: number): boolean {
    this.dropCancelled();
    const top = this.heap[0];
    if (top === undefined || top.at > limit) return false;
    this.pop();
    this.live.delete(top.id);
    if (top.at > this.nowMs) this.nowMs = top.at;
    top.fn();
    return true;
  }

  /** Moves time forward without firing anything (the caller fired what was due). */
  advanceTo(ms: number): void {
    if (ms > this.nowMs) this.nowMs = ms;
  }

  private dropCancelled(): void {
    while (this.heap.length > 0 && !this.live.has(this.heap[0]!.id)) this.pop();
  }

  private before(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(timer: Timer): void {
    const h = this.heap;
    h.push(timer);
    for (let i = h.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!this.before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if (l < h.length && this.before(h[l]!, h[min]!)) min = l;
      if (r < h.length && this.before(h[r]!, h[min]!)) min = r;
      if (min === i) break;
      [h[i], h[min]] = [h[min]!, h[i]!];
      i = min;
    }
  }
}

/** One process's timers on the shared simulated time: killed with it, held while it is paused. */
export class NodeClock implements Clock {
  /** Logical timer id -> the SimTime timer behind it. */
  private readonly timers = new Map<number, number>();
  /** Timers that came due while paused, in the order they came due. */
  private readonly held = new Map<number, () => void>();
  private nextId = 1;
  private paused = false;
  private dead = false;

  constructor(private readonly time: SimTime) {}

  now(): number {
    return this.time.now();
  }

  setTimeout(fn: (...args: unknown[]) => void, timeoutMs: number): number {
    const id = this.nextId++;
    if (!this.dead) this.arm(id, () => fn(), timeoutMs);
    return id;
  }

  clearTimeout(id: unknown): void {
    if (typeof id !== 'number') return;
    const inner = this.timers.get(id);
    if (inner !== undefined) this.time.clearTimeout(inner);
    this.timers.delete(id);
    this.held.delete(id);
  }

  /** Resolves after `ms` of this process's time (never, once it is dead). */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(() => resolve(), ms));
  }

  get isPaused(): boolean {
    return this.paused;
  }

  pause(): void {
    this.paused = true;
  }

  /** Fires what came due while paused, in order, as soon as the loop runs (each its own step). */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    const held = [...this.held];
    this.held.clear();
    for (const [id, fn] of held) this.arm(id, fn, 0);
  }

  /** The process died: no timer of it fires again. */
  kill(): void {
    this.dead = true;
    for (const inner of this.timers.values()) this.time.clearTimeout(inner);
    this.timers.clear();
    this.held.clear();
  }

  private arm(id: number, fn: () => void, timeoutMs: number): void {
    const inner = this.time.setTimeout(() => {
      this.timers.delete(id);
      if (this.paused) this.held.set(id, fn);
      else fn();
    }, timeoutMs);
    this.timers.set(id, inner);
  }
}
