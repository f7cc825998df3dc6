/**
 * The run's trace: readable events (faults, workload steps, what the checkers saw change) kept in a
 * ring of the last `TRACE_TAIL_MAX`, plus a hash over every event and every network delivery, so
 * two runs of one seed can be compared exactly without keeping everything.
 */

/** Events printed when a seed fails (SIM_TRACE=n keeps more, for digging into a replay). */
export const TRACE_TAIL_MAX = Math.max(1, Number(process.env['SIM_TRACE'] ?? 50) || 50);

export class Trace {
  private readonly tail: string[] = [];
  private hash = 0x811c9dc5;
  /** Events recorded (deliveries excluded). */
  events = 0;

  constructor(private readonly now: () => number) {}

  /** A readable event at the current simulated time. */
  event(kind: string, detail: string): void {
    const line = `${String(this.now()).padStart(8)} ms  ${kind.padEnd(10)} ${detail}`;
    this.events++;
    this.mixString(line);
    this.tail.push(line);
    if (this.tail.length > TRACE_TAIL_MAX) this.tail.shift();
  }

  /** Folds a value into the hash without keeping it (network deliveries). */
  mixString(text: string): void {
    let h = this.hash;
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
    this.hash = h >>> 0;
  }

  mixNumber(n: number): void {
    this.hash = Math.imul(this.hash ^ (n | 0), 0x01000193) >>> 0;
  }

  get digest(): string {
    return this.hash.toString(16).padStart(8, '0');
  }

  lines(): string[] {
    return [...this.tail];
  }
}
