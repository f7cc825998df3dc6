/**
 * Fence records (issue 12, producer access modes): a new exclusive producer has each partition
 * leader append one control record holding the topic's new producer epoch (producer-messages.ts,
 * fenceRequest). Being in the log, the fence is replicated, committed and truncated like the records
 * it guards, so a leader elected after a failover learns the epoch from its log tail
 * (producer-state.ts, rebuildProducerStates) even when its metadata is behind. Readers skip control
 * batches (batch.ts CONTROL_ATTRIBUTE); cursor records are told apart by key (cursor-records.ts).
 */
import { decode, encode } from '@msgpack/msgpack';
import { CONTROL_ATTRIBUTE, decodeBatch, encodeBatch, isControlBatch, NO_PRODUCER_SEQUENCE } from '../../protocol/batch.js';
import { PRODUCER_EPOCH_MAX } from '../../protocol/producer-messages.js';

/** The key of every fence record. */
export const FENCE_KEY = 'tm.fence';
const FENCE_KEY_BYTES = new TextEncoder().encode(FENCE_KEY);
const keyText = new TextDecoder();

/** A control batch of one fence record at producer epoch `epoch`. */
export function encodeFenceBatch(epoch: number, nowMs: number): Uint8Array {
  return encodeBatch([{ key: FENCE_KEY_BYTES, value: encode({ v: 1, epoch }), headers: {}, timestamp: nowMs }], NO_PRODUCER_SEQUENCE, CONTROL_ATTRIBUTE);
}

/**
 * The highest fence epoch in a batch; undefined when it holds none (not a control batch, other
 * control records, or nothing that parses as a fence: a log is read back, never trusted to be ours).
 */
export function fenceEpochOf(batch: Uint8Array): number | undefined {
  let highest: number | undefined;
  try {
    if (!isControlBatch(batch)) return undefined;
    for (const record of decodeBatch(batch)) {
      if (record.value === null || record.key === null || keyText.decode(record.key) !== FENCE_KEY) continue;
      try {
        const v = decode(record.value) as { v?: unknown; epoch?: unknown } | null;
        if (v === null || typeof v !== 'object' || v.v !== 1) continue;
        const epoch = v.epoch;
        if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0 || epoch > PRODUCER_EPOCH_MAX) continue;
        if (highest === undefined || epoch > highest) highest = epoch;
      } catch {
        continue;
      }
    }
  } catch {
    // A batch whose framing does not parse holds no fence we can trust; keep what was found.
  }
  return highest;
}
