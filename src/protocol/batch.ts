/**
 * The record batch: the unit from producer to disk to follower to consumer. Big-endian throughout.
 *
 *   off size field
 *    0   8   baseOffset      assigned by the leader (0 from the producer)
 *    8   4   batchLength     bytes after this field
 *   12   4   leaderEpoch     assigned by the leader
 *   16   1   magic           = 1
 *   17   4   crc             CRC32C of bytes [21, end): the leader can stamp offset and epoch
 *                            without recomputing it (Kafka's v2 batch does the same)
 *   21   2   attributes      bits 0-2 compression (only 0 = none today); bit 5 control: the
 *                            batch is the broker's own (subscription cursors), never a client's:
 *                            readers skip it and produce refuses it (Kafka's isControl bit)
 *   23   4   recordCount     >= 1
 *   27   8   firstTimestamp  ms; records carry a signed 32-bit delta from it
 *   35   8   maxTimestamp    ms
 *   43   8   producerId      -1 = none (reserved for idempotent producers)
 *   51   2   producerEpoch   -1
 *   53   4   baseSequence    -1
 *   57       records
 *
 * A record: length u32 (bytes after it), timestampDelta i32, keyLength i32 (-1 = null), key,
 * valueLength i32 (-1 = null), value, headerCount u16, then per header: keyLength u16, key (UTF-8),
 * valueLength i32 (-1 = null), value. A record's offset is baseOffset + its index in the batch.
 */
import { crc32c } from './crc32c.js';
import { TidemarkError } from './errors.js';

export const BATCH_HEADER_BYTES = 57;
export const BATCH_MAGIC = 1;
/** Records per batch, upper bound; keeps offset arithmetic and framing walks bounded. */
export const BATCH_RECORDS_MAX = 1_000_000;
const CRC_START = 21;
/** Attributes bit of a control batch (Kafka's isControlBatch). */
export const CONTROL_ATTRIBUTE = 0x20;
const NO_PRODUCER = -1;

export interface RecordHeaders {
  [key: string]: Uint8Array | null;
}

export interface BatchRecord {
  key: Uint8Array | null;
  value: Uint8Array | null;
  headers: RecordHeaders;
  /** ms since the epoch */
  timestamp: number;
}

export interface BatchHeader {
  baseOffset: number;
  batchBytes: number;
  leaderEpoch: number;
  recordCount: number;
  firstTimestamp: number;
  maxTimestamp: number;
  producerId: number;
  producerEpoch: number;
  baseSequence: number;
  crc: number;
}

/** A decoded record with its offset. */
export interface StoredRecord extends BatchRecord {
  offset: number;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function getInt64(dv: DataView, at: number): number {
  return dv.getInt32(at) * 0x1_0000_0000 + dv.getUint32(at + 4);
}

function setInt64(dv: DataView, at: number, value: number): void {
  dv.setInt32(at, Math.floor(value / 0x1_0000_0000));
  dv.setUint32(at + 4, value >>> 0);
}

/** Bytes one record takes inside a batch. */
export function recordBytes(record: BatchRecord): number {
  let n = 4 + 4 + 4 + (record.key?.length ?? 0) + 4 + (record.value?.length ?? 0) + 2;
  for (const [k, v] of Object.entries(record.headers)) n += 2 + textEncoder.encode(k).length + 4 + (v?.length ?? 0);
  return n;
}

/** Idempotent-producer fields of a batch; -1 everywhere means "no producer sequence". */
export interface ProducerSequence {
  producerId: number;
  producerEpoch: number;
  baseSequence: number;
}

export const NO_PRODUCER_SEQUENCE: ProducerSequence = { producerId: NO_PRODUCER, producerEpoch: NO_PRODUCER, baseSequence: NO_PRODUCER };

/** Sequences wrap at 2^31, as in Kafka. */
export const SEQUENCE_MODULO = 2 ** 31;

/** Builds a batch from records (the producer's side). Offsets and leader epoch are left at 0. */
export function encodeBatch(records: readonly BatchRecord[], producer: ProducerSequence = NO_PRODUCER_SEQUENCE, attributes = 0): Uint8Array {
  if (records.length === 0 || records.length > BATCH_RECORDS_MAX) {
    throw new TidemarkError('INVALID_REQUEST', `a batch holds 1..${BATCH_RECORDS_MAX} records`);
  }
  let first = Infinity;
  let max = -Infinity;
  let size = BATCH_HEADER_BYTES;
  const encodedHeaders: Array<Array<[Uint8Array, Uint8Array | null]>> = [];
  for (const r of records) {
    if (r.timestamp < first) first = r.timestamp;
    if (r.timestamp > max) max = r.timestamp;
    const hs: Array<[Uint8Array, Uint8Array | null]> = [];
    let hb = 0;
    for (const [k, v] of Object.entries(r.headers)) {
      const kb = textEncoder.encode(k);
      if (kb.length > 0xffff) throw new TidemarkError('INVALID_REQUEST', 'header key over 65535 bytes');
      hs.push([kb, v]);
      hb += 2 + kb.length + 4 + (v?.length ?? 0);
    }
    if (hs.length > 0xffff) throw new TidemarkError('INVALID_REQUEST', 'over 65535 headers in a record');
    encodedHeaders.push(hs);
    size += 4 + 4 + 4 + (r.key?.length ?? 0) + 4 + (r.value?.length ?? 0) + 2 + hb;
  }
  if (max - first > 0x7fff_ffff) {
    throw new TidemarkError('INVALID_REQUEST', 'record timestamps in one batch span more than 2^31 ms');
  }
  const out = new Uint8Array(size);
  const dv = view(out);
  dv.setUint32(8, size - 12);
  out[16] = BATCH_MAGIC;
  dv.setUint16(21, attributes);
  dv.setUint32(23, records.length);
  setInt64(dv, 27, first);
  setInt64(dv, 35, max);
  setInt64(dv, 43, producer.producerId);
  dv.setInt16(51, producer.producerEpoch);
  dv.setInt32(53, producer.baseSequence);
  let at = BATCH_HEADER_BYTES;
  records.forEach((r, i) => {
    const start = at;
    at += 4;
    dv.setInt32(at, r.timestamp - first);
    at += 4;
    at = writeBytes(out, dv, at, r.key);
    at = writeBytes(out, dv, at, r.value);
    const hs = encodedHeaders[i]!;
    dv.setUint16(at, hs.length);
    at += 2;
    for (const [kb, v] of hs) {
      dv.setUint16(at, kb.length);
      out.set(kb, at + 2);
      at = writeBytes(out, dv, at + 2 + kb.length, v);
    }
    dv.setUint32(start, at - start - 4);
  });
  dv.setUint32(17, crc32c(out, CRC_START));
  return out;
}

function writeBytes(out: Uint8Array, dv: DataView, at: number, bytes: Uint8Array | null): number {
  if (bytes === null) {
    dv.setInt32(at, -1);
    return at + 4;
  }
  dv.setInt32(at, bytes.length);
  out.set(bytes, at + 4);
  return at + 4 + bytes.length;
}

/** Reads the header without checking anything; for bytes this process wrote or already checked. */
export function readBatchHeader(buf: Uint8Array, at = 0): BatchHeader {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, buf.byteLength - at);
  return {
    baseOffset: getInt64(dv, 0),
    batchBytes: dv.getUint32(8) + 12,
    leaderEpoch: dv.getInt32(12),
    crc: dv.getUint32(17),
    recordCount: dv.getUint32(23),
    firstTimestamp: getInt64(dv, 27),
    maxTimestamp: getInt64(dv, 35),
    producerId: getInt64(dv, 43),
    producerEpoch: dv.getInt16(51),
    baseSequence: dv.getInt32(53),
  };
}

/**
 * Checks a batch that arrived from outside: header bounds, magic, CRC32C and the record framing
 * (lengths only: nothing is copied or decoded). Throws CORRUPT_MESSAGE or INVALID_REQUEST.
 */
export function verifyBatch(buf: Uint8Array): BatchHeader {
  if (buf.length < BATCH_HEADER_BYTES) throw new TidemarkError('CORRUPT_MESSAGE', 'batch shorter than its header');
  const dv = view(buf);
  if (dv.getUint32(8) + 12 !== buf.length) throw new TidemarkError('CORRUPT_MESSAGE', 'batch length does not match its bytes');
  if (buf[16] !== BATCH_MAGIC) throw new TidemarkError('CORRUPT_MESSAGE', `unsupported batch magic ${buf[16]}`);
  if (crc32c(buf, CRC_START) !== dv.getUint32(17)) throw new TidemarkError('CORRUPT_MESSAGE', 'batch CRC32C mismatch');
  if ((dv.getUint16(21) & 0x7) !== 0) throw new TidemarkError('CORRUPT_MESSAGE', 'compressed batches are not supported yet');
  const header = readBatchHeader(buf);
  if (header.recordCount < 1 || header.recordCount > BATCH_RECORDS_MAX) {
    throw new TidemarkError('CORRUPT_MESSAGE', `record count ${header.recordCount} out of 1..${BATCH_RECORDS_MAX}`);
  }
  if (header.maxTimestamp < header.firstTimestamp) throw new TidemarkError('CORRUPT_MESSAGE', 'maxTimestamp before firstTimestamp');
  verifyFraming(buf, dv, header.recordCount);
  return header;
}

function verifyFraming(buf: Uint8Array, dv: DataView, count: number): void {
  const corrupt = (why: string) => new TidemarkError('CORRUPT_MESSAGE', `record framing: ${why}`);
  let at = BATCH_HEADER_BYTES;
  const end = buf.length;
  const need = (n: number) => {
    if (at + n > end) throw corrupt('runs past the end of the batch');
  };
  const skipBytes = () => {
    need(4);
    const n = dv.getInt32(at);
    at += 4;
    if (n < -1) throw corrupt('negative length');
    if (n > 0) {
      need(n);
      at += n;
    }
  };
  for (let i = 0; i < count; i++) {
    need(4);
    const recordEnd = at + 4 + dv.getUint32(at);
    at += 8; // length + timestampDelta
    need(0);
    skipBytes();
    skipBytes();
    need(2);
    const headers = dv.getUint16(at);
    at += 2;
    for (let h = 0; h < headers; h++) {
      need(2);
      const kl = dv.getUint16(at);
      need(2 + kl);
      at += 2 + kl;
      skipBytes();
    }
    if (at !== recordEnd) throw corrupt('record length does not match its fields');
  }
  if (at !== end) throw corrupt('bytes left after the last record');
}

/** Whether the batch at `at` is a control batch (the broker's own records; see CONTROL_ATTRIBUTE). */
export function isControlBatch(buf: Uint8Array, at = 0): boolean {
  return (buf[at + 22]! & CONTROL_ATTRIBUTE) !== 0;
}

/**
 * Calls `visit` with each record's offset and key (a view, null for a null key), without decoding
 * values or headers: what a Key_Shared dispatcher needs of a batch.
 */
export function forEachRecordKey(buf: Uint8Array, visit: (offset: number, key: Uint8Array | null) => void): void {
  const header = readBatchHeader(buf);
  const dv = view(buf);
  let at = BATCH_HEADER_BYTES;
  for (let i = 0; i < header.recordCount; i++) {
    const recordEnd = at + 4 + dv.getUint32(at);
    const keyLength = dv.getInt32(at + 8);
    visit(header.baseOffset + i, keyLength < 0 ? null : buf.subarray(at + 12, at + 12 + keyLength));
    at = recordEnd;
  }
}

/** Stamps the leader-assigned base offset and leader epoch in place (outside the CRC). */
export function stampBatch(buf: Uint8Array, baseOffset: number, leaderEpoch: number): void {
  const dv = view(buf);
  setInt64(dv, 0, baseOffset);
  dv.setInt32(12, leaderEpoch);
}

/** Splits concatenated batches (a fetch reply) into views, without copying. */
export function splitBatches(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  while (at + 12 <= buf.length) {
    const size = view(buf).getUint32(at + 8) + 12;
    if (at + size > buf.length) throw new TidemarkError('CORRUPT_MESSAGE', 'truncated batch in fetch reply');
    out.push(buf.subarray(at, at + size));
    at += size;
  }
  if (at !== buf.length) throw new TidemarkError('CORRUPT_MESSAGE', 'trailing bytes in fetch reply');
  return out;
}

/** Decodes every record of a batch (the consumer's side). */
export function decodeBatch(buf: Uint8Array): StoredRecord[] {
  const header = readBatchHeader(buf);
  const dv = view(buf);
  const out: StoredRecord[] = [];
  let at = BATCH_HEADER_BYTES;
  const readBytes = (): Uint8Array | null => {
    const n = dv.getInt32(at);
    at += 4;
    if (n < 0) return null;
    const b = buf.subarray(at, at + n);
    at += n;
    return b;
  };
  for (let i = 0; i < header.recordCount; i++) {
    at += 4;
    const timestamp = header.firstTimestamp + dv.getInt32(at);
    at += 4;
    const key = readBytes();
    const value = readBytes();
    const headerCount = dv.getUint16(at);
    at += 2;
    const headers: RecordHeaders = {};
    for (let h = 0; h < headerCount; h++) {
      const kl = dv.getUint16(at);
      const k = textDecoder.decode(buf.subarray(at + 2, at + 2 + kl));
      at += 2 + kl;
      headers[k] = readBytes();
    }
    out.push({ offset: header.baseOffset + i, timestamp, key, value, headers });
  }
  return out;
}
