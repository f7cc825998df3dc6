/**
 * The subscription cursor (Pulsar's ManagedCursor): mark-delete plus acknowledged ranges above it,
 * the snapshot bound, and the key hash it is paired with. A randomized run checks the cursor
 * against a plain set of acknowledged offsets.
 */
import test from 'ava';
import { Cursor, CURSOR_ACK_RANGES_MAX } from '../src/actors/subscription/cursor.js';
import { keyHash, murmur3 } from '../src/actors/subscription/key-hash.js';
import { seededRandom } from './helpers/sim-network.js';

test('acks above the mark are kept as ranges; closing the gap moves the mark past them', (t) => {
  const c = new Cursor(10);
  t.true(c.ack(12, 14));
  t.true(c.ack(15, 16));
  t.deepEqual(c.snapshot(), { markDelete: 10, ranges: [12, 14, 15, 16] });
  t.is(c.ackedAbove(), 3);
  t.true(c.ack(14, 15), 'fills the hole between two ranges');
  t.deepEqual(c.snapshot().ranges, [12, 16]);
  t.false(c.ack(13, 15), 'already acknowledged');
  t.false(c.ack(3, 9), 'below the mark');
  t.true(c.ack(10, 12));
  t.is(c.markDelete, 16);
  t.is(c.rangeCount(), 0);
  t.is(c.ackedAbove(), 0);
});

test('a range that spans several merges them all into one', (t) => {
  const c = new Cursor(0, [2, 3, 5, 6, 8, 9, 20, 21]);
  t.true(c.ack(3, 8));
  t.deepEqual(c.snapshot().ranges, [2, 9, 20, 21]);
  t.is(c.ackedAbove(), 8);
});

test('isAcked and nextUnacked skip the acknowledged ranges', (t) => {
  const c = new Cursor(5, [7, 9, 10, 12]);
  t.true(c.isAcked(4));
  t.false(c.isAcked(5));
  t.true(c.isAcked(8));
  t.false(c.isAcked(9));
  t.is(c.nextUnacked(0), 5);
  t.is(c.nextUnacked(7), 9);
  t.is(c.nextUnacked(10), 12);
  t.is(c.nextUnacked(12), 12);
});

test('ackBelow drops the ranges below and swallows one it reaches into', (t) => {
  const c = new Cursor(0, [2, 4, 6, 9, 12, 13]);
  t.true(c.ackBelow(7));
  t.is(c.markDelete, 9, 'the range 6..9 it reached into carries the mark to its end');
  t.deepEqual(c.snapshot().ranges, [12, 13]);
  t.is(c.ackedAbove(), 1);
  t.false(c.ackBelow(5));
  t.true(c.ackBelow(12));
  t.is(c.markDelete, 13);
});

test('resetTo forgets the ranges, backwards too', (t) => {
  const c = new Cursor(100, [105, 110]);
  c.resetTo(40);
  t.deepEqual(c.snapshot(), { markDelete: 40, ranges: [] });
  t.false(c.isAcked(100));
  c.resetTo(500);
  t.is(c.nextUnacked(0), 500);
});

test('a snapshot keeps at most CURSOR_ACK_RANGES_MAX ranges, the lowest ones, and restores them', (t) => {
  const c = new Cursor(0);
  const n = CURSOR_ACK_RANGES_MAX + 25;
  for (let i = n - 1; i >= 0; i--) c.ack(2 * i + 1, 2 * i + 2);
  t.is(c.rangeCount(), n);
  const snap = c.snapshot();
  t.is(snap.ranges.length, 2 * CURSOR_ACK_RANGES_MAX);
  t.deepEqual(snap.ranges.slice(0, 4), [1, 2, 3, 4]);
  t.is(snap.ranges[snap.ranges.length - 1], 2 * CURSOR_ACK_RANGES_MAX);
  const restored = new Cursor(snap.markDelete, snap.ranges);
  t.is(restored.rangeCount(), CURSOR_ACK_RANGES_MAX);
  t.true(restored.isAcked(1));
  t.false(restored.isAcked(2 * CURSOR_ACK_RANGES_MAX + 1), 'a range beyond the bound is delivered again after a failover');
});

test('randomized: the cursor agrees with a plain set of acknowledged offsets', (t) => {
  for (let seed = 1; seed <= 20; seed++) {
    const random = seededRandom(seed);
    const span = 300;
    const acked = new Set<number>();
    const c = new Cursor(0);
    for (let step = 0; step < 400; step++) {
      const roll = random.next();
      if (roll < 0.8) {
        const start = random.int(0, span);
        const end = start + random.int(1, 6);
        c.ack(start, end);
        for (let o = start; o < end; o++) acked.add(o);
      } else if (roll < 0.95) {
        const below = random.int(0, span / 2);
        c.ackBelow(below);
        for (let o = 0; o < below; o++) acked.add(o);
      } else {
        const to = random.int(0, span);
        c.resetTo(to);
        acked.clear();
        for (let o = 0; o < to; o++) acked.add(o);
      }
      let mark = 0;
      while (acked.has(mark)) mark++;
      t.is(c.markDelete, mark, `seed ${seed} step ${step}: mark`);
      let above = 0;
      for (const o of acked) if (o >= mark) above++;
      t.is(c.ackedAbove(), above, `seed ${seed} step ${step}: ackedAbove`);
      const probe = random.int(0, span + 10);
      t.is(c.isAcked(probe), acked.has(probe), `seed ${seed} step ${step}: isAcked(${probe})`);
      let next = probe;
      while (acked.has(next)) next++;
      t.is(c.nextUnacked(probe), next, `seed ${seed} step ${step}: nextUnacked(${probe})`);
      const { ranges } = c.snapshot();
      for (let i = 0; i < ranges.length; i += 2) {
        t.true(ranges[i]! > mark && ranges[i]! < ranges[i + 1]!, 'ranges lie above the mark and are not empty');
        if (i > 0) t.true(ranges[i]! > ranges[i - 1]!, 'ranges are disjoint and never touch');
      }
    }
  }
});

test('keyHash is MurmurHash3 x86_32 (seed 0) mod 65536; a null key hashes like the empty key', (t) => {
  const utf8 = (s: string) => new TextEncoder().encode(s);
  t.is(murmur3(utf8('')), 0);
  t.is(murmur3(utf8('hello')), 0x248bfa47);
  t.is(murmur3(utf8('The quick brown fox jumps over the lazy dog')), 0x2e4ff723);
  t.is(keyHash(utf8('hello')), 0x248bfa47 % 65536);
  t.is(keyHash(null), keyHash(new Uint8Array(0)));
  for (const k of ['a', 'ab', 'abc', 'abcd', 'abcde']) {
    const h = keyHash(utf8(k));
    t.true(h >= 0 && h < 65536);
  }
});
