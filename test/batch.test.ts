import test from 'ava';
import { BATCH_HEADER_BYTES, decodeBatch, encodeBatch, readBatchHeader, splitBatches, stampBatch, verifyBatch, type BatchRecord } from '../src/protocol/batch.js';
import { crc32c } from '../src/protocol/crc32c.js';
import { TidemarkError } from '../src/protocol/errors.js';

const enc = new TextEncoder();
const records: BatchRecord[] = [
  { key: enc.encode('k1'), value: enc.encode('v1'), headers: { h: enc.encode('x'), n: null }, timestamp: 1_700_000_000_000 },
  { key: null, value: null, headers: {}, timestamp: 1_700_000_000_005 },
  { key: enc.encode(''), value: new Uint8Array(1024).fill(7), headers: {}, timestamp: 1_699_999_999_990 },
];

const code = (fn: () => unknown) => (t: { throws: (f: () => unknown, e: object) => unknown }) =>
  (t.throws(fn, { instanceOf: TidemarkError }) as TidemarkError).code;

test('crc32c matches the published check value', (t) => {
  t.is(crc32c(enc.encode('123456789')), 0xe3069283);
});

test('a batch round-trips keys, values, null, headers and timestamps', (t) => {
  const batch = encodeBatch(records);
  stampBatch(batch, 42, 3);
  const header = verifyBatch(batch);
  t.is(header.baseOffset, 42);
  t.is(header.leaderEpoch, 3);
  t.is(header.recordCount, 3);
  t.is(header.firstTimestamp, 1_699_999_999_990);
  t.is(header.maxTimestamp, 1_700_000_000_005);
  t.is(header.producerId, -1);
  const out = decodeBatch(batch);
  t.deepEqual(
    out.map((r) => r.offset),
    [42, 43, 44],
  );
  t.deepEqual(out[0]!.key, enc.encode('k1'));
  t.deepEqual(out[0]!.headers, { h: enc.encode('x'), n: null });
  t.is(out[1]!.key, null);
  t.is(out[1]!.value, null);
  t.is(out[2]!.value!.length, 1024);
  t.deepEqual(
    out.map((r) => r.timestamp),
    records.map((r) => r.timestamp),
  );
});

test('stamping offset and epoch keeps the CRC valid (they sit outside it)', (t) => {
  const batch = encodeBatch(records);
  const before = readBatchHeader(batch).crc;
  stampBatch(batch, 2 ** 40, 7);
  t.is(readBatchHeader(batch).crc, before);
  t.notThrows(() => verifyBatch(batch));
  t.is(readBatchHeader(batch).baseOffset, 2 ** 40);
});

test('any flipped payload byte fails the CRC', (t) => {
  const batch = encodeBatch(records);
  for (const at of [21, 30, BATCH_HEADER_BYTES + 5, batch.length - 1]) {
    const bad = batch.slice();
    bad[at]! ^= 0x40;
    t.is(code(() => verifyBatch(bad))(t), 'CORRUPT_MESSAGE', `byte ${at}`);
  }
});

test('wrong length, magic, truncation and bad framing are refused', (t) => {
  const batch = encodeBatch(records);
  t.is(code(() => verifyBatch(batch.subarray(0, 20)))(t), 'CORRUPT_MESSAGE');
  t.is(code(() => verifyBatch(batch.subarray(0, batch.length - 1)))(t), 'CORRUPT_MESSAGE');
  const magic = batch.slice();
  magic[16] = 9;
  t.is(code(() => verifyBatch(magic))(t), 'CORRUPT_MESSAGE');
  // A record length that lies, with a CRC recomputed over the lie: framing must catch it.
  const lie = batch.slice();
  const dv = new DataView(lie.buffer);
  dv.setUint32(BATCH_HEADER_BYTES, dv.getUint32(BATCH_HEADER_BYTES) + 3);
  dv.setUint32(17, crc32c(lie, 21));
  t.is(code(() => verifyBatch(lie))(t), 'CORRUPT_MESSAGE');
  // A record count above what the bytes hold.
  const count = batch.slice();
  const cdv = new DataView(count.buffer);
  cdv.setUint32(23, 4);
  cdv.setUint32(17, crc32c(count, 21));
  t.is(code(() => verifyBatch(count))(t), 'CORRUPT_MESSAGE');
});

test('splitBatches cuts concatenated batches and refuses a truncated tail', (t) => {
  const a = encodeBatch(records.slice(0, 1));
  const b = encodeBatch(records.slice(1));
  const both = new Uint8Array(a.length + b.length);
  both.set(a);
  both.set(b, a.length);
  t.deepEqual(
    splitBatches(both).map((x) => x.length),
    [a.length, b.length],
  );
  t.deepEqual(splitBatches(new Uint8Array(0)), []);
  t.throws(() => splitBatches(both.subarray(0, both.length - 2)), { instanceOf: TidemarkError });
});

test('encodeBatch refuses an empty batch', (t) => {
  t.throws(() => encodeBatch([]), { instanceOf: TidemarkError });
});
