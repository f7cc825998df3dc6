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
import { metadataFetchReply, type MetadataFetchRequest } from '../../protocol/controller-messages.js';
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

export const metadataFetcher = fromCallback<{ type: 'NONE' }, MetadataFetcherInput>(({ input }) => {
  const { subjects, transport, view, clock, logger } = input;
  let stopped = false;
  let timer: unknown;
  /** Consecutive failed fetches. */
  let failures = 0;

  const fetchOnce = async (): Promise<void> => {
    const request: MetadataFetchRequest = {
      timeoutMs: input.fetchWaitMs + 1000,
      brokerId: input.brokerId,
      fromOffset: view.image().offset,
      maxWaitMs: input.fetchWaitMs,
    };
    const reply = decodeReply(await transport.request(subjects.controller('metadata-fetch'), encodeMessage(request), request.timeoutMs), metadataFetchReply);
    if (stopped) return;
    // A deposed controller that has not noticed yet may answer with an older image: never go back.
    if (reply.offset < view.image().offset) return;
    let image = reply.snapshot ? emptyImage : view.image();
    const applied: MetadataRecord[] = [];
    for (const entry of reply.entries) {
      if (!reply.snapshot && entry.offset <= image.offset) continue; // a duplicate or late reply
      const records = entry.payload.length === 0 ? [] : decodeEntry(entry.payload);
      image = applyRecords(image, records, entry.offset);
      applied.push(...records);
    }
    if (reply.snapshot || applied.length > 0 || image.offset !== view.image().offset) view.replace(image, applied);
  };

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
    if (timer !== undefined) clock.clearTimeout(timer);
  };
});
