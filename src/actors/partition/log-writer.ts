/**
 * The partition's only writer. Appends arrive already offset-assigned by the machine; whatever
 * queued while a write was running goes down together in the next RocksDB write (group commit),
 * in order. Reports WRITTEN once a group is in the log (readable by followers), then APPENDED once
 * it is durable: at once under flush.mode=replicated, after the node's shared fsync under
 * flush.mode=fsync (the next group is written while it runs).
 */
import { fromCallback } from 'xstate';
import { readBatchHeader, stampBatch } from '../../protocol/batch.js';
import type { NodeMetrics } from '../../metrics/port.js';
import type { Clock } from '../../runtime/ports.js';
import type { PartitionStore } from '../../storage/partition-store.js';
import type { PartitionEvent, WriterEvent } from './types.js';

export interface WriterInput {
  store: PartitionStore;
  clock: Clock;
  groupCommitBatchesMax: number;
  /** The partition's topic, for the metrics. */
  topic: string;
  metrics: NodeMetrics;
}

export const logWriter = fromCallback<WriterEvent, WriterInput>(({ input, receive, sendBack }) => {
  const { store, clock } = input;
  const appends: Array<Extract<WriterEvent, { type: 'APPEND' }>> = [];
  let retain: Extract<WriterEvent, { type: 'RETAIN' }> | undefined;
  let busy = false;
  let stopped = false;
  const report = (event: PartitionEvent) => {
    if (!stopped) sendBack(event);
  };

  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      while (appends.length > 0 || retain !== undefined) {
        if (appends.length > 0) {
          const group = appends.splice(0, input.groupCommitBatchesMax);
          for (const a of group) stampBatch(a.batch, a.baseOffset, a.leaderEpoch);
          await store.append(group.map((a) => a.batch));
          const last = group[group.length - 1]!;
          const logEndOffset = last.baseOffset + readBatchHeader(last.batch).recordCount;
          input.metrics.appended(input.topic, logEndOffset - group[0]!.baseOffset);
          // Written: followers may fetch it now, while the fsync runs.
          report({ type: 'WRITTEN', logEndOffset });
          if (!group.some((a) => a.sync)) {
            report({ type: 'APPENDED', logEndOffset });
            continue;
          }
          // The fsync is shared node-wide (an empty synced append is a flush); the next group is
          // written meanwhile. Flushes resolve in call order.
          store.append([], { sync: true }).then(
            () => report({ type: 'APPENDED', logEndOffset }),
            (error: unknown) => report({ type: 'APPEND_FAILED', message: (error as Error).message }),
          );
        } else if (retain !== undefined) {
          const policy = retain;
          retain = undefined;
          await store.applyRetention({ ...policy, nowMs: clock.now() });
          report({ type: 'RETAINED', logStartOffset: store.logStartOffset() });
        }
      }
    } catch (error) {
      appends.length = 0;
      report({ type: 'APPEND_FAILED', message: (error as Error).message });
    } finally {
      busy = false;
    }
  };

  receive((event) => {
    if (event.type === 'APPEND') appends.push(event);
    else retain = event;
    void pump();
  });
  return () => {
    stopped = true;
  };
});
