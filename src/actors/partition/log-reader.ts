/**
 * Serves reads from storage and answers the fetch directly. The machine decides what may be read
 * (up to the high watermark); this actor bounds how many reads run and wait.
 */
import { fromCallback } from 'xstate';
import { TidemarkError } from '../../protocol/errors.js';
import { encodeError, encodeMessage, type FetchReply } from '../../protocol/messages.js';
import type { NodeMetrics } from '../../metrics/port.js';
import type { Logger, Transport } from '../../runtime/ports.js';
import type { PartitionStore } from '../../storage/partition-store.js';
import type { ReaderEvent } from './types.js';

export interface ReaderInput {
  store: PartitionStore;
  transport: Transport;
  logger: Logger;
  readsInFlightMax: number;
  readQueueMax: number;
  /** The partition's topic, for the metrics. */
  topic: string;
  metrics: NodeMetrics;
}

/** Room left in a NATS message for the fetch reply's envelope around the records, bytes. */
export const FETCH_REPLY_ENVELOPE_BYTES = 1024;

export const logReader = fromCallback<ReaderEvent, ReaderInput>(({ input, receive }) => {
  const { store, transport, logger } = input;
  const queue: ReaderEvent[] = [];
  let running = 0;
  let stopped = false;

  /** Replies are dropped once the partition closed (the connection may be closing too). */
  const publish = (replyTo: string, data: Uint8Array) => {
    if (stopped) return;
    try {
      transport.publish(replyTo, data);
    } catch (error) {
      logger.warn({ err: error, replyTo }, 'fetch reply dropped');
    }
  };

  const serve = async (read: ReaderEvent): Promise<void> => {
    const maxBytes = Math.min(read.maxBytes, transport.maxPayloadBytes - FETCH_REPLY_ENVELOPE_BYTES);
    try {
      const batches = await store.read(read.offset, maxBytes, read.endOffset);
      // Followers use logEndOffset (ReplicaFetchReply); consumers ignore it.
      const reply: FetchReply & { logEndOffset: number } = {
        highWatermark: read.highWatermark,
        logStartOffset: read.logStartOffset,
        logEndOffset: read.logEndOffset,
        records: batches.length === 1 ? batches[0]! : Buffer.concat(batches),
      };
      publish(read.replyTo, encodeMessage(reply));
      if (read.replica !== true) input.metrics.fetchAnswered(input.topic, reply.records.length);
    } catch (error) {
      // A read racing retention or truncation fails with the store's typed error; pass it on.
      const typed = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'read failed');
      if (typed.code === 'INTERNAL' && !stopped) logger.error({ err: error, offset: read.offset }, 'read failed');
      publish(read.replyTo, encodeError(typed.toWire()));
    }
  };

  const pump = () => {
    while (!stopped && running < input.readsInFlightMax && queue.length > 0) {
      const next = queue.shift()!;
      running++;
      void serve(next).finally(() => {
        running--;
        pump();
      });
    }
  };

  receive((event) => {
    if (queue.length >= input.readQueueMax) {
      publish(event.replyTo, encodeError(new TidemarkError('BUSY', 'too many reads queued on this partition').toWire()));
      return;
    }
    queue.push(event);
    pump();
  });
  return () => {
    stopped = true;
    queue.length = 0;
  };
});
