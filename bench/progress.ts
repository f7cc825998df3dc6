/**
 * Progress on stderr: one line per finished step, with the elapsed time and an estimate of the time
 * left. Every bench states up front how long its steps should take (`plan`), then reports each
 * step with its share of that plan (`step`); time left is the planned seconds not yet done, scaled
 * by how fast the done steps went against their plan.
 */

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export class Progress {
  private plannedS = 0;
  private doneS = 0;
  private readonly began = performance.now();

  constructor(private readonly write: (line: string) => void = (line) => process.stderr.write(`${line}\n`)) {}

  /** Adds `seconds` to the plan (a bench's estimate of all its steps). */
  plan(seconds: number): void {
    this.plannedS += seconds;
  }

  elapsedS(): number {
    return (performance.now() - this.began) / 1000;
  }

  /** Logs a finished step that was planned to take `plannedS` seconds. */
  step(line: string, plannedS: number): void {
    this.doneS = Math.min(this.plannedS, this.doneS + plannedS);
    const elapsed = this.elapsedS();
    const speed = this.doneS > 0 ? Math.min(4, Math.max(0.25, elapsed / this.doneS)) : 1;
    const left = (this.plannedS - this.doneS) * speed;
    this.write(`[${clock(elapsed)} elapsed, ~${clock(left)} left] ${line}`);
  }

  /** A line that is not a step (a note, a warning). */
  note(line: string): void {
    this.write(`[${clock(this.elapsedS())} elapsed] ${line}`);
  }
}
