/**
 * Where subscription cursors live: control records in the partition's own replicated log. One
 * record per subscription holds its whole state (mark-delete position and acknowledged ranges), so
 * the newest record of a subscription is all a new leader needs. They are replicated, committed,
 * truncated and fenced by leader epoch exactly like the records they describe, and no other store
 * or protocol is involved. Readers skip control batches (batch.ts CONTROL_ATTRIBUTE).
 */
import { decode, encode } from '@msgpack/msgpack';
import { CONTROL_ATTRIBUTE, decodeBatch, encodeBatch, NO_PRODUCER_SEQUENCE } from '../../protocol/batch.js';
import type { CursorSnapshot } from './cursor.js';

/** The key of every cursor record. */
const CURSOR_KEY = new TextEncoder().encode('tm.cursor');

export interface CursorRecord extends CursorSnapshot {
  /** The subscription's name and its id (the metadata offset of its creation). */
  name: string;
  id: number;
}

export function encodeCursorBatch(records: readonly CursorRecord[], nowMs: number): Uint8Array {
  return encodeBatch(
    records.map((r) => ({ key: CURSOR_KEY, value: encode({ v: 1, name: r.name, id: r.id, markDelete: r.markDelete, ranges: r.ranges }), headers: {}, timestamp: nowMs })),
    NO_PRODUCER_SEQUENCE,
    CONTROL_ATTRIBUTE,
  );
}

/** The cursor records of a control batch; anything that does not parse as one is skipped. */
export function decodeCursorBatch(batch: Uint8Array): CursorRecord[] {
  const out: CursorRecord[] = [];
  for (const record of decodeBatch(batch)) {
    if (record.value === null || !sameBytes(record.key, CURSOR_KEY)) continue;
    try {
      const v = decode(record.value) as Partial<CursorRecord> & { v?: number };
      if (v.v !== 1 || typeof v.name !== 'string' || !Number.isSafeInteger(v.id) || !Number.isSafeInteger(v.markDelete) || !Array.isArray(v.ranges)) continue;
      if (!v.ranges.every((x) => Number.isSafeInteger(x))) continue;
      out.push({ name: v.name, id: v.id!, markDelete: v.markDelete!, ranges: v.ranges });
    } catch {
      continue;
    }
  }
  return out;
}

function sameBytes(a: Uint8Array | null, b: Uint8Array): boolean {
  if (a === null || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
