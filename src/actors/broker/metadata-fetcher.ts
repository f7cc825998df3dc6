/**
 * Follows committed metadata from the active controller: long-polls `controller.metadata-fetch`
 * from the last offset it has, applies the entries (or a snapshot when it is too far behind) and
 * installs the new image in the broker's view. A lost or late reply only costs a retry: offsets
 * make every fetch idempotent. Failed fetches (no controller yet, say) are retried after the
 * shared backoff (runtime/retry.ts), growing with the consecutive failures, with jitter.
 */
import { fromCallback } from 'xstate';
import type { FollowedView } from '../../metadata/followed-view.js';
import { applyRecords, emptyImage } from '../../metadata/image.js';
import { decodeEntry, type MetadataRecord } from '../../metadata/records.js';
import { applyEntry, followState, type FollowState } from '../../metadata/transactions.js';
import { metadataFetchReply, type MetadataFetchReply, type MetadataFetchRequest } from '../../protocol/controller-messages.js';
import { decodeReply, encodeMessage } from '../../protocol/messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Random, Transport } from '../../runtime/ports.js';
import { backoffMs, type BackoffPolicy } from '../../runtime/retry.js';

export interface MetadataFetcherInput {
  brokerId: number;
  subjects: Subjects;
  transport: Transport;
  view: FollowedView;
  clock: Clock;
  random: Random;
  logger: Logger;
  /** Long-poll length, ms. */
  fetchWaitMs: number;
  /** Pause after consecutive failed fetches: drawn by backoffMs from it. */
  backoff: BackoffPolicy;
}

export const metadataFetcher = fromCallback<{ type: 'NONE' }, MetadataFetcherInput>(({ input }) => followMetadata(input));

/** The fetcher's loop (and its one-shot sync for confirms); returns its stop function. */
export function followMetadata(input: MetadataFetcherInput): () => void {
  const { subjects, transport, view, clock, logger } = input;
  let stopped = false;
  let timer: unknown;
  /** Consecutive failed fetches. */
  let failures = 0;
  /** The next chunk wanted of the snapshot being read. */
  let readingNext = 0;

  /** Where the broker is in the log: its view's image plus a transaction it is inside, if any. */
  let follow: FollowState = followState(view.image());
  /** A chunked snapshot being read: its offset, the records of the chunks so far (bounded by one image). */
  let reading: { offset: number; count: number; records: MetadataRecord[] } | undefined;

  const fetchOnce = async (): Promise<void> => {
    if (follow.image !== view.image()) follow = followState(view.image());
    const request: MetadataFetchRequest = {
      timeoutMs: input.fetchWaitMs + 1000,
      brokerId: input.brokerId,
      fromOffset: follow.lastOffset,
      maxWaitMs: input.fetchWaitMs,
      ...(reading === undefined || readingNext === 0 ? {} : { snapshot: { offset: reading.offset, chunk: readingNext } }),
    };
    const reply = decodeReply(await transport.request(subjects.controller('metadata-fetch'), encodeMessage(request), request.timeoutMs), metadataFetchReply);
    if (stopped) return;
    if (reply.snapshot) {
      const chunk = reply.chunk ?? { index: 0, count: 1 };
      const entry = reply.entries[0];
      if (entry === undefined || chunk.index >= chunk.count) return;
      if (chunk.index === 0) {
        reading = { offset: reply.offset, count: chunk.count, records: [] };
        readingNext = 0;
      }
      // A chunk of another snapshot than the one being read, or out of order: ask again.
      if (reading === undefined || reading.offset !== reply.offset || reading.count !== chunk.count || chunk.index !== readingNext) return;
      reading.records.push(...decodeEntry(entry.payload));
      readingNext++;
      if (readingNext < reading.count) return;
      const done = reading;
      reading = undefined;
      readingNext = 0;
      // A deposed controller that has not noticed yet may send an older image: never go back.
      if (done.offset < view.image().offset) return;
      follow = followState(applyRecords(emptyImage, done.records, done.offset));
      view.replace(follow.image, done.records);
      return;
    }
    reading = undefined;
    applyEntries(reply);
  };

  /**
   * Applies a non-snapshot reply's entries; returns whether the broker now has the answering
   * controller's last committed offset (the reply's offset) with no transaction open.
   */
  const applyEntries = (reply: MetadataFetchReply): boolean => {
    // A deposed controller that has not noticed yet may answer with an older image: never go back.
    if (reply.offset < follow.lastOffset) return false;
    const applied: MetadataRecord[] = [];
    let state = follow;
    for (const entry of reply.entries) {
      if (entry.offset <= state.lastOffset) continue; // a duplicate or late reply
      const step = applyEntry(state, entry.offset, entry.payload);
      state = step.state;
      if (step.applied !== undefined) applied.push(...step.applied);
    }
    const changed = state.image !== follow.image;
    follow = state;
    if (changed) view.replace(state.image, applied);
    return follow.open === undefined && follow.lastOffset >= reply.offset;
  };

  /**
   * One fetch that does not wait (a client asked to confirm that something is missing), answered
   * after a barrier commits: resolves true once the broker has everything committed before it. A snapshot
   * reply (too far behind) is left to the loop and answers false.
   */
  const syncOnce = async (timeoutMs: number): Promise<boolean> => {
    if (follow.image !== view.image()) follow = followState(view.image());
    // The barrier: a deposed controller (paused, cut off, not yet aware) cannot answer it.
    const request: MetadataFetchRequest = { timeoutMs, brokerId: input.brokerId, fromOffset: follow.lastOffset, maxWaitMs: 0, barrier: true };
    const reply = decodeReply(await transport.request(subjects.controller('metadata-fetch'), encodeMessage(request), timeoutMs), metadataFetchReply);
    if (stopped || reply.snapshot) return false;
    return applyEntries(reply);
  };
  view.setSyncer(syncOnce);

  const loop = () => {
    if (stopped) return;
    fetchOnce().then(
      () => {
        failures = 0;
        loop();
      },
      (error: unknown) => {
        if (stopped) return;
        failures++;
        logger.debug({ err: error, failures }, 'metadata fetch failed; retrying');
        timer = clock.setTimeout(loop, backoffMs(failures, input.backoff, input.random));
      },
    );
  };
  loop();
  return () => {
    stopped = true;
    view.setSyncer(undefined);
    if (timer !== undefined) clock.clearTimeout(timer);
  };
}
