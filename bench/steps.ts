/** Small pieces every bench uses: bounded steps, error text, sleeps, a send window, entry-point test. */
import { pathToFileURL } from 'node:url';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** One line of text for an error, with its Tidemark code when it has one. */
export function errorText(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  const text = error instanceof Error ? `${code !== undefined ? `${String(code)}: ` : ''}${error.message}` : String(error);
  return text.replace(/\s+/g, ' ').slice(0, 160);
}

/** Runs `run` and rejects after `ms` unless it settled first; `aborted()` turns true then, so its loops stop. */
export async function bounded<T>(what: string, ms: number, run: (aborted: () => boolean) => Promise<T>): Promise<T> {
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new Error(`${what}: timed out after ${Math.round(ms / 1000)} s`));
    }, ms);
  });
  const running = run(() => timedOut);
  running.catch(() => undefined);
  try {
    return await Promise.race([running, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A counting window: at most `max` holders; waiters are served in order. */
export class Window {
  private inFlight = 0;
  private readonly waiters: Array<() => void> = [];
  private head = 0;
  constructor(private readonly max: number) {}

  /** undefined when a slot was free (take it synchronously), else a promise for the slot. */
  acquire(): Promise<void> | undefined {
    if (this.inFlight < this.max && this.head === this.waiters.length) {
      this.inFlight++;
      return undefined;
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    if (this.head < this.waiters.length) {
      const next = this.waiters[this.head]!;
      this.waiters[this.head++] = undefined as never;
      if (this.head > 4096 && this.head * 2 > this.waiters.length) {
        this.waiters.splice(0, this.head);
        this.head = 0;
      }
      next(); // the slot passes on: inFlight unchanged
    } else {
      this.inFlight--;
    }
  }
}

/** An integer option in min..max, or a clear error naming it. */
export function intOption(name: string, raw: unknown, min: number, max: number): number {
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}, got ${String(raw)}`);
  return n;
}

/** A comma-separated list of integers, each in min..max. */
export function intListOption(name: string, raw: unknown, min: number, max: number): number[] {
  return String(raw)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => intOption(name, s, min, max));
}

/** True when the module at `moduleUrl` is the script node was started with. */
export function isMain(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && moduleUrl === pathToFileURL(process.argv[1]).href;
}

export function fmt(n: number | undefined, digits = 0): string {
  return n !== undefined && Number.isFinite(n) ? n.toFixed(digits) : '-';
}

/**
 * Calls `send(i)` for i = 0..count-1, keeping at most `outstandingMax` unsettled (it waits for the
 * older half when full); throws the first failure, or 'aborted' once `aborted()` says so.
 */
export async function sendBounded(count: number, outstandingMax: number, send: (i: number) => Promise<unknown>, aborted: () => boolean): Promise<void> {
  let failure: unknown;
  const fail = (error: unknown) => {
    failure ??= error;
  };
  let pending: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    pending.push(send(i).catch(fail));
    if (pending.length >= outstandingMax) {
      const half = pending.length / 2;
      await Promise.all(pending.slice(0, half));
      pending = pending.slice(half);
      if (failure !== undefined) throw failure;
      if (aborted()) throw new Error('aborted');
    }
  }
  await Promise.all(pending);
  if (failure !== undefined) throw failure;
}
