/**
 * Controlled shutdown (Kafka's): before a broker stops, the controller moves every leadership it
 * holds to another in-sync replica and takes it out of the ISRs, so a rolling restart never leaves
 * a partition without a leader. One answer settles it (partitions no other replica can lead stay:
 * asking again would not change that); a failed request is retried with the shared backoff
 * (runtime/retry.ts) within the budget. Then it waits, on the metadata view's subscribe and within
 * the same budget, until this broker's metadata shows the moves, so its leader actors are stopping
 * before the broker stops the rest.
 */
import { fromPromise } from 'xstate';
import type { MetadataView } from '../../metadata/metadata-store.js';
import { controlledShutdownReply, type ControlledShutdownRequest } from '../../protocol/controller-messages.js';
import { decodeReply, encodeMessage } from '../../protocol/messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Random, Transport } from '../../runtime/ports.js';
import { retry, type BackoffPolicy } from '../../runtime/retry.js';

export interface ControlledShutdownInput {
  brokerId: number;
  brokerEpoch: number;
  subjects: Subjects;
  transport: Transport;
  view: MetadataView;
  clock: Clock;
  random: Random;
  logger: Logger;
  /** Whole budget, ms: the request with its retries, then the wait for metadata. */
  budgetMs: number;
  /** Waits between attempts: drawn by backoffMs from it. */
  backoff: BackoffPolicy;
}

/** Budget of one attempt, ms (less when the whole budget has less left). */
const ATTEMPT_MS_MAX = 1_000;
/** Attempts at most; the budget ends them first unless they fail at once. */
const ATTEMPTS_MAX = 100;

export const controlledShutdown = fromPromise<{ remainingLeaders: number }, ControlledShutdownInput>(async ({ input, signal }) => {
  const { clock, logger, view } = input;
  const startedAtMs = clock.now();
  let remaining = -1;
  try {
    const reply = await retry(
      async (remainingMs) => {
        const timeoutMs = Math.max(1, Math.min(ATTEMPT_MS_MAX, remainingMs));
        const request: ControlledShutdownRequest = { timeoutMs, brokerId: input.brokerId, brokerEpoch: input.brokerEpoch };
        return decodeReply(await input.transport.request(input.subjects.controller('shutdown'), encodeMessage(request), timeoutMs), controlledShutdownReply);
      },
      {
        policy: { ...input.backoff, attemptsMax: ATTEMPTS_MAX, totalMsMax: input.budgetMs },
        clock,
        random: input.random,
        signal,
        startedAtMs,
        // Every failure, as before: a controller not yet active, or deposed and answering from a
        // stale image, may refuse now and answer a moment later.
        retryIf: () => true,
        onRetry: (error) => logger.debug({ err: error }, 'controlled shutdown request failed; retrying'),
      },
    );
    remaining = reply.remainingLeaders;
    const reached = await viewReaches(view, reply.metadataOffset, clock, startedAtMs + input.budgetMs - clock.now(), signal);
    if (!reached) logger.warn({ metadataOffset: reply.metadataOffset, at: view.image().offset }, 'controlled shutdown: metadata did not show the moves in time');
  } catch (error) {
    if (!signal.aborted) logger.warn({ err: error }, 'controlled shutdown: no answer from the controller in time');
  }
  logger.info({ remainingLeaders: remaining }, remaining === 0 ? 'controlled shutdown: leadership moved' : 'controlled shutdown: some leaderships stay');
  return { remainingLeaders: remaining };
});

/** Resolves true once the view's image reaches `offset`; false after `timeoutMs` or an abort. */
export function viewReaches(view: MetadataView, offset: number, clock: Clock, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  if (view.image().offset >= offset) return Promise.resolve(true);
  if (timeoutMs <= 0 || signal?.aborted === true) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const finish = (reached: boolean) => {
      unsubscribe();
      clock.clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(reached);
    };
    const onAbort = () => finish(false);
    const unsubscribe = view.subscribe((image) => {
      if (image.offset >= offset) finish(true);
    });
    const timer = clock.setTimeout(() => finish(false), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
