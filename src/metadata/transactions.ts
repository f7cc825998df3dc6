/**
 * Metadata transactions (Kafka KIP-868), shared by the controllers' store and the brokers'
 * fetcher so both follow one rule: the records of a transaction reach the image only when its last
 * part is applied, in one step, at that part's offset; until then the image (and its offset, so
 * any snapshot) stays before the transaction. Anything else arriving while one is open aborts it:
 * the leader that wrote it appends its parts back to back, so a gap means it lost leadership (the
 * new leader's no-op comes next) and the rest will never come.
 */
import { encode } from '@msgpack/msgpack';
import { applyRecords, type MetadataImage } from './image.js';
import { decodeEntry, encodeEntry, TRANSACTION_PARTS_MAX, type MetadataRecord } from './records.js';

/** Room kept in every entry for the array header and a transaction marker, bytes. */
const ENTRY_OVERHEAD_BYTES = 64;

/**
 * Splits records into payloads of at most `entryBytesMax` bytes each: one plain entry when they fit,
 * else a transaction. Throws when a single record cannot fit or more than TRANSACTION_PARTS_MAX
 * parts would be needed (a programmer's limit: planners bound their changes well below it).
 */
export function entryPayloads(records: readonly MetadataRecord[], entryBytesMax: number): Uint8Array[] {
  const single = encodeEntry(records);
  if (single.length <= entryBytesMax) return [single];
  const groups = groupRecords(records, entryBytesMax - ENTRY_OVERHEAD_BYTES);
  if (groups.length > TRANSACTION_PARTS_MAX) throw new Error(`metadata change needs ${groups.length} entries; at most ${TRANSACTION_PARTS_MAX}`);
  return groups.map((group, part) =>
    encodeEntry([part === 0 ? { type: 'BeginTransaction', parts: groups.length } : { type: 'TransactionPart', part }, ...group]),
  );
}

/** Records in consecutive groups whose encodings stay within `bytesMax` (each group non-empty). */
export function groupRecords(records: readonly MetadataRecord[], bytesMax: number): MetadataRecord[][] {
  const groups: MetadataRecord[][] = [];
  let group: MetadataRecord[] = [];
  let bytes = 0;
  for (const record of records) {
    const size = encode(record).length;
    if (size > bytesMax) throw new Error(`metadata record of ${size} bytes exceeds the ${bytesMax}-byte entry budget`);
    if (group.length > 0 && bytes + size > bytesMax) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(record);
    bytes += size;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

interface OpenTransaction {
  readonly parts: number;
  readonly nextPart: number;
  readonly records: MetadataRecord[];
}

/** What a follower of the metadata log holds: the image and the transaction it is inside, if any. */
export interface FollowState {
  readonly image: MetadataImage;
  /** Offset of the last entry applied (past `image.offset` while a transaction is open). */
  readonly lastOffset: number;
  readonly open: OpenTransaction | undefined;
}

export function followState(image: MetadataImage): FollowState {
  return { image, lastOffset: image.offset, open: undefined };
}

/**
 * Applies one committed entry. `applied` is the records that reached the image (undefined when the
 * entry only extended an open transaction). An empty payload is a Raft no-op.
 */
export function applyEntry(state: FollowState, offset: number, payload: Uint8Array): { state: FollowState; applied: MetadataRecord[] | undefined } {
  const records = payload.length === 0 ? [] : decodeEntry(payload);
  const first = records[0];
  if (first?.type === 'BeginTransaction') {
    // An earlier open transaction, if any, was cut off: this begins another.
    return { state: { image: state.image, lastOffset: offset, open: { parts: first.parts, nextPart: 1, records: records.slice(1) } }, applied: undefined };
  }
  if (first?.type === 'TransactionPart') {
    const open = state.open;
    if (open === undefined || first.part !== open.nextPart || first.part >= open.parts) {
      // A part of a transaction already aborted (or out of order): it never applies.
      return { state: { image: state.image, lastOffset: offset, open: undefined }, applied: undefined };
    }
    const all = [...open.records, ...records.slice(1)];
    if (first.part < open.parts - 1) {
      return { state: { image: state.image, lastOffset: offset, open: { parts: open.parts, nextPart: first.part + 1, records: all } }, applied: undefined };
    }
    return { state: { image: applyRecords(state.image, all, offset), lastOffset: offset, open: undefined }, applied: all };
  }
  // An ordinary entry or a no-op: any open transaction is aborted.
  return { state: { image: applyRecords(state.image, records, offset), lastOffset: offset, open: undefined }, applied: records };
}
