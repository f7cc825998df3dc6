/** The chaos run's check (tools/chaos-check.ts) reports what it must: lost, moved, changed, reordered. */
import test from 'ava';
import { AckLog } from '../tools/chaos-check.js';

async function* records(list: Array<[number, string]>) {
  for (const [offset, value] of list) yield { offset, value };
}

test('a clean partition passes; acknowledgements may arrive in any order', async (t) => {
  const log = new AckLog();
  log.add(0, 2, 1, 1);
  log.add(0, 0, 1, 0);
  log.add(0, 1, 2, 0);
  t.deepEqual(await log.checkPartition(0, records([[0, '1:0'], [1, '2:0'], [2, '1:1'], [3, 'unacknowledged']])), { lost: 0, disordered: 0 });
});

test('missing, moved and changed records are lost; a key whose offsets go back is out of order', async (t) => {
  const log = new AckLog();
  log.add(0, 0, 1, 0); // present
  log.add(0, 1, 1, 1); // missing: the log ends early
  log.add(0, 5, 2, 0); // moved: offset 5 holds another value
  log.add(3, 0, 4, 0); // a partition whose read-back is empty
  t.deepEqual(await log.checkPartition(0, records([[0, '1:0'], [5, '2:9']])), { lost: 2, disordered: 0 });
  t.deepEqual(await log.checkPartition(3, records([])), { lost: 1, disordered: 0 });
  const reordered = new AckLog();
  reordered.add(1, 10, 7, 1);
  reordered.add(1, 11, 7, 0); // sent first, written after
  t.deepEqual(await reordered.checkPartition(1, records([[10, '7:1'], [11, '7:0']])), { lost: 0, disordered: 1 });
});

test('grows past its first chunk without losing acknowledgements', async (t) => {
  const log = new AckLog();
  const n = 5000;
  for (let i = n - 1; i >= 0; i--) log.add(0, i, i % 32, Math.floor(i / 32));
  const all = Array.from({ length: n }, (_, i) => [i, `${i % 32}:${Math.floor(i / 32)}`] as [number, string]);
  t.deepEqual(await log.checkPartition(0, records(all)), { lost: 0, disordered: 0 });
  t.is(log.count, n);
});
