/**
 * The partition's only writer. Appends arrive already offset-assigned by the machine; whatever
 * queued while a write was running goes down together in the next RocksDB write (group commit),
 * in order, fsynced when any of them asks for it (flush.mode=fsync), so one fsync covers the group.
 * Reports the new log end offset back to the machine.
 */
import { fromCallback } from 'xstate';
import { readBatchHeader, stampBatch } from '../../protocol/batch.js';
import type { Clock } from '../../runtime/ports.js';
import type { PartitionStore } from '../../storage/partition-store.js';
import type { PartitionEvent, WriterEvent } from './types.js';

export interface WriterInput {
  store: PartitionStore;
  clock: Clock;
  groupCommitBatchesMax: number;
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
          await store.append(group.map((a) => a.batch), { sync: group.some((a) => a.sync) });
          const last = group[group.length - 1]!;
          report({ type: 'APPENDED', logEndOffset: last.baseOffset + readBatchHeader(last.batch).recordCount });
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
