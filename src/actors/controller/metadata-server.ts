/**
 * Serves brokers' metadata fetches on the active controller: the committed entries after the
 * broker's offset, or a snapshot of the image when those are no longer kept; a broker that is up
 * to date is held (long poll) until the next commit or its maxWaitMs, bounded by `waitersMax`.
 */
import { fromCallback } from 'xstate';
import { imageRecords } from '../../metadata/image.js';
import type { QuorumMetadataStore } from '../../metadata/metadata-store.js';
import { encodeEntry } from '../../metadata/records.js';
import { groupRecords } from '../../metadata/transactions.js';
import { metadataFetchRequest, SNAPSHOT_CHUNKS_MAX, type MetadataFetchReply, type MetadataFetchRequest } from '../../protocol/controller-messages.js';
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
/** Room in a reply for its envelope (offsets, field names), bytes. */
const REPLY_ENVELOPE_BYTES = 16 * 1024;

/** The one snapshot kept for brokers reading it chunk by chunk: the image's records at `offset`. */
interface ChunkedSnapshot {
  offset: number;
  chunks: Uint8Array[];
}

interface Waiter {
  replyTo: string;
  fromOffset: number;
  timer: unknown;
}

export const metadataServer = fromCallback<{ type: 'NONE' }, MetadataServerInput>(({ input }) => {
  const { subjects, transport, metadata, clock, logger } = input;
  const waiters = new Set<Waiter>();

  /** Payload bytes per reply: entries up to it (at least one), snapshot chunks within it. */
  const replyBytesMax = transport.maxPayloadBytes - REPLY_ENVELOPE_BYTES;
  let cached: ChunkedSnapshot | undefined;

  const snapshotChunks = (): ChunkedSnapshot => {
    const image = metadata.image();
    if (cached?.offset !== image.offset) {
      // Chunks of at most one entry's size (small in the simulator, so chunking runs there often).
      const chunks = groupRecords(imageRecords(image), Math.min(replyBytesMax, metadata.entryBytesMax) - 64).map((group) => encodeEntry(group));
      // A programmer's limit: SNAPSHOT_CHUNKS_MAX chunks of ~1 MiB are far beyond any bounded image.
      if (chunks.length > SNAPSHOT_CHUNKS_MAX) throw new TidemarkError('INTERNAL', `metadata snapshot needs ${chunks.length} chunks`);
      cached = { offset: image.offset, chunks: chunks.length === 0 ? [encodeEntry([])] : chunks };
    }
    return cached;
  };

  const body = (fromOffset: number, wanted: MetadataFetchRequest['snapshot']): MetadataFetchReply => {
    // A broker reading a snapshot goes on with it while this controller still has it.
    if (wanted !== undefined && cached?.offset === wanted.offset && wanted.chunk < cached.chunks.length) {
      return { offset: cached.offset, snapshot: true, entries: [{ offset: cached.offset, payload: cached.chunks[wanted.chunk]! }], chunk: { index: wanted.chunk, count: cached.chunks.length } };
    }
    const entries = wanted === undefined ? metadata.entriesAfter(fromOffset, ENTRIES_PER_REPLY_MAX) : undefined;
    if (entries === undefined) {
      const snap = snapshotChunks();
      return { offset: snap.offset, snapshot: true, entries: [{ offset: snap.offset, payload: snap.chunks[0]! }], chunk: { index: 0, count: snap.chunks.length } };
    }
    let bytes = 0;
    let count = 0;
    while (count < entries.length && (count === 0 || bytes + entries[count]!.payload.length <= replyBytesMax)) bytes += entries[count++]!.payload.length;
    return { offset: metadata.lastOffset(), snapshot: false, entries: entries.slice(0, count).map((e) => ({ offset: e.index, payload: e.payload })) };
  };

  const reply = (replyTo: string, fromOffset: number, wanted?: MetadataFetchRequest['snapshot']) => {
    try {
      transport.publish(replyTo, encodeMessage(body(fromOffset, wanted)));
    } catch (error) {
      logger.warn({ err: error }, 'metadata reply dropped');
    }
  };

  /**
   * Barrier entries for `barrier` fetches, single flight: one committing and one queued behind it
   * (it starts after it, so every caller's barrier began after its request arrived); at most
   * `waitersMax` fetches wait on them.
   */
  let barrierRunning: Promise<unknown> | undefined;
  let barrierQueued: Promise<unknown> | undefined;
  let barrierWaiters = 0;
  const startBarrier = (): Promise<unknown> => {
    const run = metadata.propose([]);
    barrierRunning = run;
    const clear = () => {
      if (barrierRunning === run) barrierRunning = undefined;
    };
    run.then(clear, clear);
    return run;
  };
  const barrier = (): Promise<unknown> => {
    if (barrierRunning === undefined) return startBarrier();
    barrierQueued ??= barrierRunning.then(
      () => ((barrierQueued = undefined), startBarrier()),
      () => ((barrierQueued = undefined), startBarrier()),
    );
    return barrierQueued;
  };
  const replyError = (replyTo: string, error: unknown) => {
    const err = error instanceof TidemarkError ? error : new TidemarkError('NOT_CONTROLLER', 'the barrier did not commit', { cause: error });
    try {
      transport.publish(replyTo, encodeError(err.toWire()));
    } catch (e) {
      logger.warn({ err: e }, 'metadata reply dropped');
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
        if (request.barrier === true) {
          if (barrierWaiters >= input.waitersMax) throw new TidemarkError('BUSY', 'too many metadata fetches wait for a barrier');
          barrierWaiters++;
          barrier().then(
            () => {
              barrierWaiters--;
              reply(replyTo, request.fromOffset);
            },
            (error: unknown) => {
              barrierWaiters--;
              replyError(replyTo, error);
            },
          );
          return;
        }
        if (request.snapshot !== undefined || request.fromOffset < metadata.lastOffset() || request.maxWaitMs === 0 || waiters.size >= input.waitersMax) {
          reply(replyTo, request.fromOffset, request.snapshot);
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
