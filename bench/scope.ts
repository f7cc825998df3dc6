/**
 * Cleanup for benches: a Scope collects undo steps (stop a process, remove a dir) and runs them in
 * reverse, each bounded, once. Scopes nest: a bench opens a child scope, closes it when done, and a
 * signal on the root closes every scope still open. `runMain` wires SIGINT / SIGTERM to the root.
 */
import { killAllCliProcesses } from '../test/helpers/cli.js';
import { bounded, errorText } from './steps.js';

const CLEANUP_STEP_MS = 20_000;
/** Cleanup steps slower than this are logged (they add to every run's wall time). */
const SLOW_STEP_MS = 3_000;

export class Scope {
  private readonly undo: Array<() => Promise<unknown>> = [];
  private readonly children = new Set<Scope>();
  private closing: Promise<void> | undefined;

  constructor(
    private readonly log: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
    private readonly parent?: Scope,
  ) {}

  /** True once close() began: loops should stop starting work. */
  get closed(): boolean {
    return this.closing !== undefined || (this.parent?.closed ?? false);
  }

  /** Registers an undo step; it runs at close(), after the ones registered later. */
  defer(step: () => Promise<unknown>): void {
    this.undo.push(step);
  }

  child(): Scope {
    const scope = new Scope(this.log, this);
    this.children.add(scope);
    return scope;
  }

  /** Closes open child scopes, then runs this scope's undo steps, newest first; never rejects. */
  close(): Promise<void> {
    return (this.closing ??= (async () => {
      for (const c of [...this.children].reverse()) await c.close();
      for (const step of this.undo.reverse()) {
        const t0 = performance.now();
        try {
          await bounded('cleanup step', CLEANUP_STEP_MS, () => step());
          const ms = performance.now() - t0;
          if (ms > SLOW_STEP_MS) this.log(`cleanup: a step took ${(ms / 1000).toFixed(1)} s`);
        } catch (error) {
          this.log(`cleanup: ${errorText(error)}`);
        }
      }
      this.parent?.children.delete(this);
    })());
  }
}

/**
 * Runs a bench's entry point: a root scope closed at the end, on failure and on SIGINT / SIGTERM
 * (exit 130); exit code 1 on failure. A second signal during that cleanup SIGKILLs the Tidemark
 * node processes (they lead their own process groups, so a terminal's signal misses them) and
 * exits at once, rather than dying with them left running.
 */
export function runMain(main: (root: Scope) => Promise<void>): void {
  const root = new Scope();
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      process.stderr.write(`${signal} again: killing node processes and exiting\n`);
      void killAllCliProcesses().finally(() => process.exit(130));
      return;
    }
    process.stderr.write(`${signal}: cleaning up (again to kill at once)\n`);
    void root.close().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  main(root)
    .then(
      () => 0,
      (error: unknown) => {
        process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
        return 1;
      },
    )
    .then(async (code) => {
      await root.close();
      process.exit(code);
    });
}
