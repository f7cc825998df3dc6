/**
 * Serves brokers' metadata fetches on the active controller: the committed entries after the
 * broker's offset, or a snapshot of the image when those are no longer kept; a broker that is up
 * to date is held (long poll) until the next commit or its maxWaitMs, bounded by `waitersMax`.
 */
import { fromCallback } from 'xstate';
import { imageRecords } from '../../metadata/image.js';
import type { QuorumMetadataStore } from '../../metadata/metadata-store.js';
import { encodeEntry } from '../../metadata/records.js';
import { metadataFetchRequest, type MetadataFetchReply } from '../../protocol/controller-messages.js';
import { TidemarkError } from '../../protocol/errors.js';
import { decodeRequest, encodeError, encodeMessage } from '../../protocol/messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Transport } from '../../runtime/ports.js';

export interface MetadataServerInput {
  subjects: Subjects;
  transport: Transport;
  metadata: QuorumMetadataStore;
  clock: Clock;
  logger: Logger;
  /** Fetches held at once. Beyond it a fetch is answered at once (empty). */
  waitersMax: number;
}

/** Entries per reply. */
const ENTRIES_PER_REPLY_MAX = 500;

interface Waiter {
  replyTo: string;
  fromOffset: number;
  timer: unknown;
}

export const metadataServer = fromCallback<{ type: 'NONE' }, MetadataServerInput>(({ input }) => {
  const { subjects, transport, metadata, clock, logger } = input;
  const waiters = new Set<Waiter>();

  const reply = (replyTo: string, fromOffset: number) => {
    const entries = metadata.entriesAfter(fromOffset, ENTRIES_PER_REPLY_MAX);
    const image = metadata.image();
    const body: MetadataFetchReply =
      entries === undefined
        ? { offset: image.offset, snapshot: true, entries: [{ offset: image.offset, payload: encodeEntry(imageRecords(image)) }] }
        : { offset: image.offset, snapshot: false, entries: entries.map((e) => ({ offset: e.index, payload: e.payload })) };
    try {
      transport.publish(replyTo, encodeMessage(body));
    } catch (error) {
      logger.warn({ err: error }, 'metadata reply dropped');
    }
  };

  const unsubscribeCommits = metadata.subscribe(() => {
    for (const w of waiters) {
      clock.clearTimeout(w.timer);
      reply(w.replyTo, w.fromOffset);
    }
    waiters.clear();
  });

  const sub = transport.subscribe(
    subjects.controller('metadata-fetch'),
    (msg) => {
      try {
        if (msg.reply === undefined) throw new TidemarkError('INVALID_REQUEST', 'metadata fetch needs a reply subject');
        const request = decodeRequest(msg.data, metadataFetchRequest);
        const replyTo = msg.reply;
        if (request.fromOffset < metadata.image().offset || request.maxWaitMs === 0 || waiters.size >= input.waitersMax) {
          reply(replyTo, request.fromOffset);
          return;
        }
        const waiter: Waiter = {
          replyTo,
          fromOffset: request.fromOffset,
          timer: clock.setTimeout(() => {
            waiters.delete(waiter);
            reply(replyTo, request.fromOffset);
          }, Math.min(request.maxWaitMs, request.timeoutMs)),
        };
        waiters.add(waiter);
      } catch (error) {
        const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', undefined, { cause: error });
        if (msg.reply !== undefined) msg.respond(encodeError(err.toWire()));
      }
    },
  );
  return () => {
    sub.unsubscribe();
    unsubscribeCommits();
    for (const w of waiters) clock.clearTimeout(w.timer);
    waiters.clear();
  };
});
