/**
 * THE retry helper, of the SDK and the server alike (KafkaJS's `src/retry`): exponential backoff
 * with full jitter on the injected Clock and Random, bounded by attempts and by total time. Nothing
 * else waits-and-tries-again, and nothing here touches real time or randomness (the tidy test).
 *
 * Exactly one layer retries on each call path; everything below it makes single attempts
 * (client/rpc.ts never retries, and the metadata cache never retries its own refresh).
 *
 * SDK (src/client):
 *   - producer send path: the partition pipeline (pipeline.ts) retries whole batches, with
 *     {@link backoffMs} per failed round and a per-batch deadline (deliveryTimeoutMs);
 *   - producer admission (metadata needed to pick a partition): producer.ts, via {@link retry};
 *   - reader: each fetch and the start-offset lookup, in reader.ts via {@link retry};
 *   - admin: each call, in admin.ts via {@link retry}.
 *
 * Server (src/actors), where loops run as long as their actor does, so only the wait is shared:
 *   - follower fetch (partition/follower.ts): the `backoff` delay is {@link backoffMs} of the
 *     consecutive failed steps, from `replicaFetchBackoffMs` up to 2 s;
 *   - AlterPartition resend (partition/machine.ts): the `alterRetry` delay is {@link backoffMs}
 *     under a quarter of `alterPartitionTimeoutMs` (the leader keeps no attempt count: no growth);
 *   - metadata fetch (broker/metadata-fetcher.ts): {@link backoffMs} of the consecutive failed
 *     fetches, from the heartbeat interval up to 4 times it;
 *   - controlled shutdown (broker/controlled-shutdown.ts): the request via {@link retry} within
 *     half the shutdown budget; then it waits on the metadata view's subscribe for the change, with
 *     the same deadline, instead of polling.
 * xstate delays compute their wait from context (`backoffMs(failures, policy, context.random)`),
 * with the node's Random port, which the composition root (node.ts) hands every actor.
 */
import { assert, TidemarkError } from '../protocol/errors.js';
import type { Clock, Random } from './ports.js';

/** How hard one call path tries before it gives up. */
export type RetryOptions = {
  /**
   * Attempts in total, the first included.
   * @default 25
   */
  attemptsMax?: number;
  /**
   * Backoff ceiling before the first retry, ms; doubles per retry up to backoffMsMax. The wait is
   * drawn uniformly from [0, ceiling) ("full jitter").
   * @default 100
   */
  backoffMsInitial?: number;
  /**
   * Largest backoff ceiling, ms.
   * @default 2000
   */
  backoffMsMax?: number;
  /**
   * Total time one call may take across all its attempts and waits, ms. The producer uses its
   * `deliveryTimeoutMs` instead.
   * @default 30000
   */
  totalMsMax?: number;
};

export type RetryPolicy = Required<RetryOptions>;

/** What a wait needs of a policy: loops that retry for as long as their actor runs use only this. */
export type BackoffPolicy = Pick<RetryPolicy, 'backoffMsInitial' | 'backoffMsMax'>;

/** Hard upper bound on attempts, whatever the options say. */
export const RETRY_ATTEMPTS_MAX = 1000;

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  attemptsMax: 25,
  backoffMsInitial: 100,
  backoffMsMax: 2000,
  totalMsMax: 30_000,
};

export function retryPolicy(options: RetryOptions | undefined, base: RetryPolicy = DEFAULT_RETRY_POLICY): RetryPolicy {
  const policy: RetryPolicy = { ...base, ...stripUndefined(options ?? {}) };
  checkPositiveInt('attemptsMax', policy.attemptsMax, RETRY_ATTEMPTS_MAX);
  checkPositiveInt('backoffMsInitial', policy.backoffMsInitial, 3_600_000);
  checkPositiveInt('backoffMsMax', policy.backoffMsMax, 3_600_000);
  checkPositiveInt('totalMsMax', policy.totalMsMax, 24 * 3_600_000);
  return policy;
}

function stripUndefined(options: RetryOptions): RetryOptions {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
}

function checkPositiveInt(name: string, value: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new TidemarkError('INVALID_REQUEST', `retry.${name} must be an integer within 1..${max}, got ${value}`);
  }
}

/** Whether the error table says a failure may be retried. Errors that are not TidemarkErrors are bugs or caller faults: never. */
export function isRetriable(error: unknown): boolean {
  return error instanceof TidemarkError && error.retriable;
}

/** Wait before retry number `retry` (1 = first retry): uniform in [0, min(max, initial * 2^(retry-1))). */
export function backoffMs(retry: number, policy: BackoffPolicy, random: Random): number {
  assert(retry >= 1, 'retry numbers start at 1');
  const ceiling = Math.min(policy.backoffMsMax, policy.backoffMsInitial * 2 ** Math.min(retry - 1, 30));
  return Math.floor(random.next() * ceiling);
}

/** Tracks one call's attempts against its policy and deadline. */
export class RetryBudget {
  private attemptsMade = 0;
  readonly deadlineMs: number;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly clock: Clock,
    private readonly random: Random,
    startedAtMs: number = clock.now(),
    totalMs: number = policy.totalMsMax,
  ) {
    this.deadlineMs = startedAtMs + totalMs;
  }

  get attempts(): number {
    return this.attemptsMade;
  }

  remainingMs(): number {
    return this.deadlineMs - this.clock.now();
  }

  /** Count an attempt that is about to start. */
  started(): void {
    this.attemptsMade++;
  }

  /**
   * After a failed attempt: how long to wait before the next one, or undefined to give up (the
   * error is not retriable, the attempts are used up, or the wait would cross the deadline).
   */
  nextDelayMs(error: unknown, retryIf: (error: unknown) => boolean = isRetriable): number | undefined {
    if (!retryIf(error) || this.attemptsMade >= this.policy.attemptsMax) return undefined;
    const delay = backoffMs(this.attemptsMade, this.policy, this.random);
    if (delay >= this.remainingMs()) return undefined;
    return delay;
  }
}

/** Resolves after `ms` on the clock; rejects with CLOSED if the signal aborts first. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(closedError());
      return;
    }
    const onAbort = () => {
      clock.clearTimeout(timer);
      reject(closedError());
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Settles like `promise`, or rejects with CLOSED as soon as the signal aborts. */
export function abortable<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(closedError());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(closedError());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function closedError(): TidemarkError {
  return new TidemarkError('CLOSED', 'closed while waiting');
}

export type RetryContext = {
  policy: RetryPolicy;
  clock: Clock;
  random: Random;
  /** Aborting stops the retries (and the pending attempt, from the caller's view) with CLOSED. */
  signal?: AbortSignal;
  /** Total budget, ms, if not policy.totalMsMax. */
  totalMs?: number;
  /** When this call started, ms on the clock (for budgets that began earlier). @default clock.now() */
  startedAtMs?: number;
  /** Which failures to retry. @default isRetriable */
  retryIf?: (error: unknown) => boolean;
  /** Told about each failure that will be retried, before the wait (e.g. to drop stale metadata). */
  onRetry?: (error: unknown) => void;
};

/**
 * Runs `attempt` until it succeeds, a failure is not retriable, or the budget runs out; then
 * throws the last error. `attempt` receives the time left in the budget, ms, to size its request.
 */
export async function retry<T>(attempt: (remainingMs: number) => Promise<T>, ctx: RetryContext): Promise<T> {
  const budget = new RetryBudget(ctx.policy, ctx.clock, ctx.random, ctx.startedAtMs ?? ctx.clock.now(), ctx.totalMs ?? ctx.policy.totalMsMax);
  for (;;) {
    assert(budget.attempts < RETRY_ATTEMPTS_MAX, 'retry loop is bounded by attemptsMax');
    budget.started();
    try {
      return await abortable(attempt(Math.max(1, budget.remainingMs())), ctx.signal);
    } catch (error) {
      if (ctx.signal?.aborted) throw error;
      const delay = budget.nextDelayMs(error, ctx.retryIf);
      if (delay === undefined) throw error;
      ctx.onRetry?.(error);
      await sleep(ctx.clock, delay, ctx.signal);
    }
  }
}
