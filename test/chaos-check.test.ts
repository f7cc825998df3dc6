import test from 'ava';
import { AckCheck, CHUNK_SLOTS, PROBLEMS_MAX, recordValue } from '../tools/chaos-check.js';

/** Acknowledges [key, seq, offset] triples on one partition. */
function acks(check: AckCheck, partition: number, list: Array<[number, number, number]>): void {
  for (const [key, seq, offset] of list) check.ack(key, seq, partition, offset);
}

test('a faithful read-back passes', (t) => {
  const check = new AckCheck(2);
  const sent: Array<[number, number, number]> = [[0, 0, 0], [1, 0, 1], [0, 1, 2], [1, 1, 4]];
  acks(check, 0, sent);
  // Offset 3 is a send that failed yet landed: not acknowledged, not checked.
  for (const [key, seq, offset] of sent) check.readBack(0, offset, recordValue(key, seq));
  check.readBack(0, 3, recordValue(0, 7));
  t.is(check.readUntil(0), 5);
  t.deepEqual(check.finish(), { acknowledged: 4, lost: 0, outOfOrder: 0, problems: [] });
});

test('a missing record, a moved record and a pair out of order are each reported', (t) => {
  const check = new AckCheck(3);
  // Partition 0: key 1's first record was acknowledged at 2 but is read back at 7, and offset 6 is
  // not read back at all.
  acks(check, 0, [[0, 0, 0], [0, 1, 1], [1, 0, 2], [0, 2, 3], [0, 3, 4], [1, 1, 5], [1, 2, 6]]);
  const readBack: Array<[number, string]> = [[0, '0:0'], [1, '0:1'], [2, '1:9'], [3, '0:2'], [4, '0:3'], [5, '1:1'], [7, '1:0']];
  for (const [offset, value] of readBack) check.readBack(0, offset, value);
  // Partition 1: key 2's records 1 and 2 were acknowledged at offsets in the wrong order, and are there.
  acks(check, 1, [[2, 0, 0], [2, 2, 1], [2, 1, 2]]);
  for (const [offset, value] of [[0, '2:0'], [1, '2:2'], [2, '2:1']] as const) check.readBack(1, offset, value);

  const r = check.finish();
  t.is(r.acknowledged, 10);
  t.is(r.lost, 2);
  t.is(r.outOfOrder, 1);
  t.deepEqual(
    r.problems.filter((p) => p.kind !== 'out-of-order'),
    [
      { kind: 'replaced', partition: 0, offset: 2, expected: '1:0', found: '1:9' },
      { kind: 'missing', partition: 0, offset: 6, expected: '1:2' },
    ],
  );
  t.deepEqual(
    r.problems.filter((p) => p.kind === 'out-of-order'),
    [{ kind: 'out-of-order', partition: 1, offset: 2, record: '2:1', previousOffset: 1, previous: '2:2' }],
  );
});

test('acknowledgements beyond the read-back, at one offset twice, or nowhere are lost', (t) => {
  const check = new AckCheck(1);
  check.ack(0, 0, 0, 0);
  check.ack(0, 1, 0, 0);
  check.ack(0, 2, 0, -1);
  check.ack(0, 3, 3, 10);
  check.readBack(0, 0, '0:0');
  check.readBack(0, 0, '0:0');
  const r = check.finish();
  t.is(r.acknowledged, 4);
  t.is(r.lost, 3);
  t.deepEqual(
    r.problems.map((p) => p.kind),
    ['same-offset', 'invalid', 'missing'],
  );
});

test('order and presence are checked across chunk boundaries and partitions apart', (t) => {
  const check = new AckCheck(2);
  const base = 3 * CHUNK_SLOTS - 2;
  acks(check, 4, [[0, 0, base], [1, 0, base + 1], [0, 1, base + 2], [1, 1, base + 3]]);
  // Key 0 in another partition starts over; only one partition's order binds a key's records.
  acks(check, 2, [[0, 5, 0]]);
  check.readBack(2, 0, '0:5');
  for (let i = 0; i < 4; i++) check.readBack(4, base + i, recordValue(i % 2, Math.floor(i / 2)));
  t.deepEqual(check.partitionsAcked(), [2, 4]);
  t.is(check.readUntil(4), base + 4);
  t.is(check.readUntil(9), 0);
  t.like(check.finish(), { acknowledged: 5, lost: 0, outOfOrder: 0 });
});

test('the report keeps PROBLEMS_MAX problems and counts on', (t) => {
  const check = new AckCheck(1);
  for (let seq = 0; seq < 100; seq++) check.ack(0, seq, 0, seq);
  const r = check.finish();
  t.is(r.lost, 100);
  t.is(r.problems.length, PROBLEMS_MAX);
});

test('a value that is no record of the load never matches', (t) => {
  const check = new AckCheck(4);
  acks(check, 0, [[1, 2, 0], [3, 0, 1], [0, 0, 2]]);
  check.readBack(0, 0, null);
  check.readBack(0, 1, '7:0');
  check.readBack(0, 2, '0:0 ');
  t.is(check.finish().lost, 3);
});
