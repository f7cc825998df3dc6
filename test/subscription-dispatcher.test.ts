/**
 * The subscription dispatcher as a pure object: attach rules per type, who gets what (Shared
 * disjoint, Exclusive and Failover in order, Key_Shared per key with PIP-379's no-overtaking rule),
 * redelivery (nack delay, ack timeout, session expiry, failover handover) with growing counts, the
 * bounds, and a seeded randomized run checking the invariants over many operations.
 */
import test from 'ava';
import { Cursor } from '../src/actors/subscription/cursor.js';
import { HashRing, ringPoints } from '../src/actors/subscription/hash-ring.js';
import { DEFAULT_DISPATCH_LIMITS, Dispatcher, type AttachRequest, type Delivery, type DispatchLimits, type Entry } from '../src/actors/subscription/dispatcher.js';
import type { SubscriptionType } from '../src/protocol/subscription-messages.js';
import { seededRandom } from './helpers/sim-network.js';

const SESSION_MS = 10_000;

function consumer(id: string, type: SubscriptionType, more: Partial<AttachRequest> = {}): AttachRequest {
  return { consumerId: id, consumerName: id, priorityLevel: 0, type, sessionTimeoutMs: SESSION_MS, ackTimeoutMs: 0, ...more };
}

function dispatcher(partition = 0, limits: Partial<DispatchLimits> = {}, markDelete = 0): Dispatcher {
  return new Dispatcher(partition, new Cursor(markDelete), { ...DEFAULT_DISPATCH_LIMITS, ...limits });
}

/** Offers entries up to `to` (exclusive), hashes from `hashOf`. */
function fill(d: Dispatcher, to: number, hashOf: (offset: number) => number = () => 0): void {
  const entries: Entry[] = [];
  for (let o = d.readPosition; o < to; o++) entries.push({ offset: o, hash: hashOf(o) });
  d.offer(entries, to);
}

const offsets = (ds: readonly Delivery[]) => ds.map((d) => d.offset);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const ackAll = (d: Dispatcher, ds: readonly Delivery[]) => d.ack(ds.flatMap((x) => [x.offset, x.offset + 1]));

test('two Shared consumers get disjoint offsets whose union is everything', (t) => {
  const d = dispatcher();
  t.is(d.attach(consumer('a', 'Shared'), 0), undefined);
  t.is(d.attach(consumer('b', 'Shared'), 0), undefined);
  fill(d, 1_000);
  const got = { a: [] as number[], b: [] as number[] };
  for (let round = 0; got.a.length + got.b.length < 1_000; round++) {
    const who = round % 3 === 0 ? 'b' : 'a';
    const ds = d.assign(who, 7, round);
    got[who].push(...offsets(ds));
    if (round % 2 === 0) ackAll(d, ds);
  }
  const a = new Set(got.a);
  t.true(got.b.every((o) => !a.has(o)), 'disjoint');
  t.deepEqual([...got.a, ...got.b].sort((x, y) => x - y), range(0, 1_000));
  t.true(got.a.length > 0 && got.b.length > 0);
  t.is(d.unackedCount(), d.consumers(0).reduce((n, c) => n + c.unacked, 0));
});

test('Exclusive refuses a second consumer; the same consumer polls again freely; after it leaves another joins', (t) => {
  const d = dispatcher();
  t.is(d.attach(consumer('a', 'Exclusive'), 0), undefined);
  t.is(d.attach(consumer('a', 'Exclusive'), 5), undefined);
  const refused = d.attach(consumer('b', 'Exclusive'), 6);
  t.is(refused?.code, 'CONSUMER_BUSY');
  t.false(d.isActive('b'));
  d.detach('a');
  t.is(d.type, undefined);
  t.is(d.attach(consumer('b', 'Exclusive'), 7), undefined);
  t.true(d.isActive('b'));
});

test('a consumer of another type is refused; the type is free again once nobody is attached', (t) => {
  const d = dispatcher();
  d.attach(consumer('a', 'Shared'), 0);
  d.attach(consumer('b', 'Shared'), 0);
  const refused = d.attach(consumer('c', 'Failover'), 0);
  t.deepEqual(refused, { code: 'CONSUMER_BUSY', message: 'subscription is Shared; a Failover consumer cannot join' });
  t.is(d.attach(consumer('a', 'Key_Shared'), 0)?.code, 'CONSUMER_BUSY', 'an attached consumer cannot switch while others are there');
  d.detach('a');
  d.detach('b');
  t.is(d.attach(consumer('c', 'Failover'), 0), undefined);
  t.is(d.type, 'Failover');
  fill(d, 3);
  t.is(d.assign('c', 3, 0).length, 3);
  t.is(d.attach(consumer('c', 'Shared'), 1), undefined, 'alone, a consumer may come back with another type');
  t.is(d.type, 'Shared');
  t.deepEqual(d.assign('c', 3, 1), [0, 1, 2].map((offset) => ({ offset, redeliveryCount: 1 })), 'what it had out comes again');
});

test('beyond consumersMax a consumer is refused with BUSY', (t) => {
  const d = dispatcher(0, { consumersMax: 2 });
  d.attach(consumer('a', 'Shared'), 0);
  d.attach(consumer('b', 'Shared'), 0);
  t.is(d.attach(consumer('c', 'Shared'), 0)?.code, 'BUSY');
  t.is(d.attach(consumer('b', 'Shared'), 1), undefined, 'an attached one still polls');
});

test('Failover: active is the consumer at partition mod n in (priority, name, id) order; only it gets messages', (t) => {
  const d = dispatcher(5);
  d.attach(consumer('id-z', 'Failover', { consumerName: 'zed', priorityLevel: 0 }), 0);
  d.attach(consumer('id-a', 'Failover', { consumerName: 'amy', priorityLevel: 1 }), 0);
  d.attach(consumer('id-m', 'Failover', { consumerName: 'max', priorityLevel: 0 }), 0);
  d.attach(consumer('id-m2', 'Failover', { consumerName: 'max', priorityLevel: 0 }), 0);
  // Order: max/id-m, max/id-m2, zed/id-z (priority 0), amy/id-a (priority 1); 5 % 4 = 1.
  t.true(d.isActive('id-m2'));
  t.deepEqual(
    d.consumers(0).filter((c) => c.active).map((c) => c.consumerId),
    ['id-m2'],
  );
  fill(d, 10);
  t.deepEqual(d.assign('id-m', 10, 1), []);
  t.false(d.hasWork('id-z', 1));
  t.true(d.hasWork('id-m2', 1));
  t.deepEqual(offsets(d.assign('id-m2', 4, 1)), [0, 1, 2, 3]);
  d.detach('id-a');
  // 5 % 3 = 2: zed.
  t.true(d.isActive('id-z'));
});

test('Failover handover: the old active one\'s unacknowledged messages go first to the new one, count + 1, in order', (t) => {
  const d = dispatcher(1);
  d.attach(consumer('b', 'Failover'), 0);
  fill(d, 10);
  const first = d.assign('b', 5, 0);
  t.deepEqual(offsets(first), [0, 1, 2, 3, 4]);
  d.ack([1, 2, 3, 4]);
  // a joins and sorts first: [a, b], partition 1 % 2 = 1 -> b stays active.
  d.attach(consumer('a', 'Failover'), 1);
  t.true(d.isActive('b'));
  // b leaves: [a], a takes over with 0, 2, 4 redelivered first.
  d.detach('b');
  t.true(d.isActive('a'));
  t.deepEqual(d.assign('a', 5, 2), [
    { offset: 0, redeliveryCount: 1 },
    { offset: 2, redeliveryCount: 1 },
    { offset: 4, redeliveryCount: 1 },
    { offset: 5, redeliveryCount: 0 },
    { offset: 6, redeliveryCount: 0 },
  ]);
  // z joins and sorts after a: [a, z], 1 % 2 = 1 -> z takes over while a is still attached.
  d.attach(consumer('z', 'Failover'), 3);
  t.true(d.isActive('z'));
  t.false(d.isActive('a'));
  t.deepEqual(d.assign('a', 5, 3), [], 'the old active one gets nothing more');
  t.deepEqual(offsets(d.assign('z', 3, 3)), [0, 2, 4]);
  t.deepEqual(d.consumers(3).find((c) => c.consumerId === 'a')?.unacked, 0);
});

test('Exclusive delivers due redeliveries (ascending) before new entries', (t) => {
  const d = dispatcher();
  d.attach(consumer('a', 'Exclusive'), 0);
  fill(d, 20);
  t.deepEqual(offsets(d.assign('a', 10, 0)), range(0, 10));
  d.nack('a', [7, 3, 5], 0, 1);
  t.deepEqual(d.assign('a', 5, 1), [
    { offset: 3, redeliveryCount: 1 },
    { offset: 5, redeliveryCount: 1 },
    { offset: 7, redeliveryCount: 1 },
    { offset: 10, redeliveryCount: 0 },
    { offset: 11, redeliveryCount: 0 },
  ]);
});

test('a nack waits its delay and redelivers with a growing count; nacks for others\' messages are ignored', (t) => {
  const d = dispatcher();
  d.attach(consumer('a', 'Shared'), 0);
  d.attach(consumer('b', 'Shared'), 0);
  fill(d, 2);
  t.deepEqual(offsets(d.assign('a', 1, 0)), [0]);
  t.deepEqual(offsets(d.assign('b', 1, 0)), [1]);
  d.nack('b', [0], 0, 0);
  t.is(d.consumers(0).find((c) => c.consumerId === 'a')?.unacked, 1, 'b cannot nack what a holds');
  d.nack('a', [0], 1_000, 100);
  t.is(d.nextDueMs(), 1_100);
  t.false(d.hasWork('a', 1_099));
  t.deepEqual(d.assign('a', 5, 1_099), []);
  t.true(d.hasWork('a', 1_100));
  t.deepEqual(d.assign('a', 5, 1_100), [{ offset: 0, redeliveryCount: 1 }]);
  d.nack('a', [0], 0, 1_200);
  t.deepEqual(d.assign('b', 5, 1_200), [{ offset: 0, redeliveryCount: 2 }]);
  d.ack([0, 1]);
  t.is(d.unackedCount(), 1);
  d.nack('b', [1], 0, 1_300);
  t.deepEqual(d.assign('b', 5, 1_300), [{ offset: 1, redeliveryCount: 1 }]);
  t.true(d.ack([1, 2]));
  t.is(d.cursor.markDelete, 2);
  t.is(d.unackedCount(), 0);
});

test('ack timeout sends a message back with a growing count', (t) => {
  const d = dispatcher();
  d.attach(consumer('a', 'Shared', { ackTimeoutMs: 1_000 }), 0);
  fill(d, 3);
  t.deepEqual(offsets(d.assign('a', 2, 0)), [0, 1]);
  t.deepEqual(offsets(d.assign('a', 1, 500)), [2]);
  t.is(d.nextDueMs(), 1_001);
  d.attach(consumer('a', 'Shared', { ackTimeoutMs: 1_000 }), 1_001);
  t.deepEqual(d.expire(1_001), []);
  t.is(d.unackedCount(), 1, 'only the two sent at 0 timed out');
  t.deepEqual(d.assign('a', 5, 1_001), [
    { offset: 0, redeliveryCount: 1 },
    { offset: 1, redeliveryCount: 1 },
  ]);
  d.attach(consumer('a', 'Shared', { ackTimeoutMs: 1_000 }), 2_002);
  d.expire(2_002);
  t.deepEqual(d.assign('a', 5, 2_002), [
    { offset: 0, redeliveryCount: 2 },
    { offset: 1, redeliveryCount: 2 },
    { offset: 2, redeliveryCount: 1 },
  ]);
});

test('a consumer silent past its session timeout is detached and its messages go to the others', (t) => {
  const d = dispatcher();
  d.attach(consumer('a', 'Shared'), 0);
  d.attach(consumer('b', 'Shared'), 0);
  fill(d, 4);
  t.deepEqual(offsets(d.assign('a', 2, 0)), [0, 1]);
  d.attach(consumer('b', 'Shared'), 5_000);
  t.is(d.nextDueMs(), SESSION_MS + 1);
  t.deepEqual(d.expire(SESSION_MS), [], 'exactly at the timeout it is still there');
  t.deepEqual(d.expire(SESSION_MS + 1), ['a']);
  t.false(d.isActive('a'));
  t.deepEqual(d.assign('b', 10, SESSION_MS + 1), [
    { offset: 0, redeliveryCount: 1 },
    { offset: 1, redeliveryCount: 1 },
    { offset: 2, redeliveryCount: 0 },
    { offset: 3, redeliveryCount: 0 },
  ]);
  t.deepEqual(d.assign('a', 10, SESSION_MS + 1), [], 'a detached consumer gets nothing until it attaches again');
});

test('unassign takes messages back without counting a redelivery; they go out first', (t) => {
  const d = dispatcher();
  d.attach(consumer('a', 'Shared'), 0);
  fill(d, 6);
  t.deepEqual(offsets(d.assign('a', 4, 0)), [0, 1, 2, 3]);
  d.unassign('a', [2, 3]);
  t.is(d.unackedCount(), 2);
  t.deepEqual(d.assign('a', 3, 1), [
    { offset: 2, redeliveryCount: 0 },
    { offset: 3, redeliveryCount: 0 },
    { offset: 4, redeliveryCount: 0 },
  ]);
});

test('per-consumer and per-subscription unacked bounds stop dispatch; look-ahead room follows', (t) => {
  const d = dispatcher(0, { unackedPerConsumerMax: 3, unackedPerSubscriptionMax: 5, lookAheadMax: 8 });
  d.attach(consumer('a', 'Shared'), 0);
  d.attach(consumer('b', 'Shared'), 0);
  t.is(d.lookAheadRoom(), 8);
  fill(d, 8);
  t.is(d.lookAheadRoom(), 0);
  t.is(d.assign('a', 10, 0).length, 3);
  t.false(d.hasWork('a', 0));
  t.is(d.assign('b', 10, 0).length, 2, 'the subscription bound (5) stops b at 2');
  t.false(d.hasWork('b', 0));
  t.is(d.lookAheadRoom(), 0);
  d.ack([0, 1]);
  t.is(d.lookAheadRoom(), 5);
  t.is(d.assign('b', 10, 1).length, 1, 'b is at its own bound of 3');
});

test('offer drops what the cursor already acknowledges and moves readPosition past gaps', (t) => {
  const d = dispatcher(0, {}, 0);
  d.cursor.ack(2, 4);
  d.attach(consumer('a', 'Exclusive'), 0);
  d.offer([0, 1, 2, 3, 4, 6].map((offset) => ({ offset, hash: 0 })), 9);
  t.is(d.readPosition, 9);
  t.is(d.lookAheadSize(), 4);
  t.true(d.takeCursorChanged(), 'the gaps 5 and 7..8 are acknowledged');
  t.false(d.takeCursorChanged());
  t.deepEqual(offsets(d.assign('a', 10, 0)), [0, 1, 4, 6]);
  d.ack([0, 2, 4, 5, 6, 7]);
  t.is(d.cursor.markDelete, 9, 'the mark passes the offsets that were not entries');
  t.true(d.takeCursorChanged());
});

test('a large ack range and a cumulative ack clear everything they cover', (t) => {
  const d = dispatcher();
  d.attach(consumer('a', 'Failover'), 0);
  fill(d, 100);
  d.assign('a', 30, 0);
  d.nack('a', [3, 4], 0, 0);
  d.ack([0, 1_000_000]);
  t.is(d.unackedCount(), 0);
  t.is(d.lookAheadSize(), 0);
  t.is(d.redeliveryCount(), 0);
  t.is(d.cursor.markDelete, 1_000_000);
  const e = dispatcher();
  e.attach(consumer('a', 'Exclusive'), 0);
  fill(e, 50);
  e.assign('a', 20, 0);
  e.nack('a', [5, 15], 10, 0);
  t.true(e.ackCumulative(10));
  t.is(e.unackedCount(), 9);
  t.is(e.redeliveryCount(), 1);
  t.is(e.cursor.markDelete, 10);
  t.deepEqual(offsets(e.assign('a', 3, 100)), [15, 20, 21]);
});

test('reset drops everything in flight and reads again from the new position', (t) => {
  const d = dispatcher();
  d.attach(consumer('a', 'Shared'), 0);
  fill(d, 50);
  d.assign('a', 20, 0);
  d.nack('a', [1], 5_000, 0);
  d.cursor.resetTo(7);
  d.reset(7);
  t.is(d.unackedCount(), 0);
  t.is(d.lookAheadSize(), 0);
  t.is(d.redeliveryCount(), 0);
  t.is(d.readPosition, 7);
  t.is(d.nextDueMs(), SESSION_MS + 1, 'only the session remains due');
  fill(d, 10);
  t.deepEqual(d.assign('a', 10, 1), [7, 8, 9].map((offset) => ({ offset, redeliveryCount: 0 })));
});

test('the Key_Shared ring: a join takes hashes only for the newcomer, about 1/n of them; a leave gives back only its own', (t) => {
  const member = (id: string, name = id, nameIndex = 0) => ({ consumerId: id, points: ringPoints(name, nameIndex) });
  const four = ['a', 'b', 'c', 'd'].map((id) => member(id));
  const before = new HashRing(four);
  const after = new HashRing([...four, member('e')]);
  let moved = 0;
  const share = new Map<string, number>();
  for (let h = 0; h < 65_536; h++) {
    const was = before.owner(h)!;
    const is = after.owner(h)!;
    share.set(is, (share.get(is) ?? 0) + 1);
    if (was !== is) {
      moved++;
      t.is(is, 'e', 'hashes move only to the newcomer');
    }
  }
  t.is(moved, share.get('e') ?? 0);
  t.true(moved > 65_536 / 5 / 2 && moved < (65_536 / 5) * 2, `about a fifth moved (${moved})`);
  for (const [id, n] of share) t.true(n > 65_536 / 5 / 2.5, `${id} has a fair share (${n})`);
  // Same name: the name index keeps them apart; a lone consumer owns everything.
  const twins = new HashRing([member('x1', 'same', 0), member('x2', 'same', 1)]);
  const owners = new Set<string>();
  for (let h = 0; h < 65_536; h += 97) owners.add(twins.owner(h)!);
  t.deepEqual([...owners].sort(), ['x1', 'x2']);
  t.is(new HashRing([member('solo')]).owner(12_345), 'solo');
  t.is(new HashRing([]).owner(1), undefined);
});

test('Key_Shared: each key goes to one consumer, spread over several', (t) => {
  const d = dispatcher();
  for (const id of ['a', 'b', 'c']) d.attach(consumer(id, 'Key_Shared'), 0);
  const hashOf = (o: number) => (o * 2_654_435_761) % 65_536;
  const keys = 200;
  fill(d, 2_000, (o) => hashOf(o % keys));
  const ownerOf = new Map<number, string>();
  for (let round = 0; round < 200; round++) {
    for (const id of ['a', 'b', 'c']) {
      const ds = d.assign(id, 10, round);
      for (const x of ds) {
        const key = x.offset % keys;
        t.is(ownerOf.get(key) ?? id, id, `key ${key} stays with one consumer`);
        ownerOf.set(key, id);
      }
      ackAll(d, ds);
    }
  }
  t.is(d.cursor.markDelete, 2_000);
  const perConsumer = new Map<string, number>();
  for (const id of ownerOf.values()) perConsumer.set(id, (perConsumer.get(id) ?? 0) + 1);
  t.is(perConsumer.size, 3, 'all three own keys');
});

test('Key_Shared (PIP-379): a new owner waits until the old one acknowledges what it has out of the key', (t) => {
  const d = dispatcher();
  d.attach(consumer('a', 'Key_Shared'), 0);
  const keys = 64;
  const hashOf = (o: number) => ((o % keys) * 1_021) % 65_536;
  fill(d, keys, hashOf);
  const first = d.assign('a', keys, 0);
  t.is(first.length, keys, 'alone, a owns every key');
  d.attach(consumer('b', 'Key_Shared'), 1);
  fill(d, 2 * keys, hashOf);
  t.deepEqual(d.assign('b', keys, 1), [], 'every key is still out at a');
  t.false(d.hasWork('b', 1));
  const aSecond = d.assign('a', keys, 1);
  t.true(aSecond.length > 0 && aSecond.length < keys, 'a keeps only its own keys');
  ackAll(d, first);
  const bGets = d.assign('b', keys, 2);
  t.is(aSecond.length + bGets.length, keys, 'once acknowledged, b takes the keys that moved to it');
});

test('Key_Shared keeps per-key order across joins and leaves', (t) => {
  const random = seededRandom(7);
  const d = dispatcher();
  const keys = 40;
  const hashOf = (o: number) => ((o % keys) * 40_503) % 65_536;
  const lastFirst = new Map<number, number>();
  const outAt = new Map<number, string>();
  const hashOut = new Map<number, Map<string, number>>();
  let attached = ['c0', 'c1'];
  let next = 2;
  for (const id of attached) d.attach(consumer(id, 'Key_Shared'), 0);
  const seen = new Set<number>();
  for (let step = 0; step < 2_000; step++) {
    const now = step;
    if (d.readPosition < 3_000) fill(d, Math.min(3_000, d.readPosition + random.int(0, 20)), hashOf);
    const roll = random.next();
    if (roll < 0.02 && attached.length < 5) {
      const id = `c${next++}`;
      attached.push(id);
      d.attach(consumer(id, 'Key_Shared'), now);
    } else if (roll < 0.04 && attached.length > 1) {
      const id = attached[random.int(0, attached.length - 1)]!;
      attached = attached.filter((x) => x !== id);
      d.detach(id);
      for (const [o, who] of outAt) if (who === id) forget(o);
    } else if (roll < 0.6) {
      const id = attached[random.int(0, attached.length - 1)]!;
      d.attach(consumer(id, 'Key_Shared'), now);
      for (const x of d.assign(id, random.int(1, 15), now)) {
        const h = hashOf(x.offset);
        const holders = hashOut.get(h);
        t.true(holders === undefined || (holders.size === 1 && holders.has(id)), `hash ${h} is out at one consumer only`);
        if (!seen.has(x.offset)) {
          t.true((lastFirst.get(h) ?? -1) < x.offset, `key of ${x.offset} delivered in order`);
          lastFirst.set(h, x.offset);
          seen.add(x.offset);
        }
        outAt.set(x.offset, id);
        const m = hashOut.get(h) ?? new Map<string, number>();
        m.set(id, (m.get(id) ?? 0) + 1);
        hashOut.set(h, m);
      }
    } else {
      const out = [...outAt.keys()];
      for (const o of out) {
        if (!random.chance(0.3)) continue;
        if (random.chance(0.8)) d.ack([o, o + 1]);
        else d.nack(outAt.get(o)!, [o], 0, now);
        forget(o);
      }
    }
  }
  // Drain: everything gets acknowledged in the end.
  for (let round = 0; round < 10_000 && d.cursor.markDelete < 3_000; round++) {
    if (d.readPosition < 3_000) fill(d, 3_000, hashOf);
    for (const id of attached) ackAll(d, d.assign(id, 100, 10_000));
    for (const o of [...outAt.keys()]) {
      d.ack([o, o + 1]);
      forget(o);
    }
  }
  t.is(d.cursor.markDelete, 3_000);

  function forget(o: number): void {
    const who = outAt.get(o)!;
    outAt.delete(o);
    const m = hashOut.get(hashOf(o))!;
    const n = m.get(who)! - 1;
    if (n === 0) m.delete(who);
    else m.set(who, n);
    if (m.size === 0) hashOut.delete(hashOf(o));
  }
});

/**
 * Random operations against a model of what is out where: attach (sometimes refused), polls,
 * detach, assign (with a cut tail handed back), acks (single and ranges), nacks with delays, ack
 * timeouts, session expiry, log reads with gaps. After every step: nothing out twice, counts as
 * the model says, bounds held, Failover/Exclusive only to the active consumer, first deliveries in
 * order (per key for Key_Shared, overall otherwise), no Key_Shared hash out at two consumers. At
 * the end, with every consumer acknowledging, the whole log is consumed.
 */
test('randomized: invariants hold over many operations for every type', (t) => {
  const LOG_END = 400;
  const limits = { unackedPerConsumerMax: 8, unackedPerSubscriptionMax: 20, lookAheadMax: 15, consumersMax: 4 };
  const keys = 12;
  const hashOf = (o: number) => ((o % keys) * 5_449) % 65_536;
  const isEntry = (o: number) => o % 17 !== 16;
  let checks = 0;
  const stats = { delivered: 0, redelivered: 0, refused: 0, expired: 0, cut: 0 };
  for (const type of ['Shared', 'Key_Shared', 'Failover', 'Exclusive'] as const) {
    for (let seed = 1; seed <= 25; seed++) {
      const random = seededRandom(seed * 31 + type.length);
      const label = `${type} seed ${seed}`;
      const d = new Dispatcher(random.int(0, 7), new Cursor(0), { ...DEFAULT_DISPATCH_LIMITS, ...limits });
      const requests = new Map<string, AttachRequest>();
      const out = new Map<number, { id: string; sentMs: number }>();
      const count = new Map<number, number>();
      const acked = new Set<number>();
      const firstOf = new Map<number, number>();
      const seen = new Set<number>();
      let now = 0;
      let nextId = 0;

      const giveBack = (o: number, increment: boolean) => {
        out.delete(o);
        if (increment) count.set(o, (count.get(o) ?? 0) + 1);
      };
      const giveBackAll = (id: string) => {
        for (const [o, x] of [...out]) if (x.id === id) giveBack(o, true);
      };
      const activeId = () => d.consumers(now).find((c) => c.active && (type === 'Failover' || type === 'Exclusive'))?.consumerId;
      /** A membership change in Failover hands the old active one's messages on. */
      const withHandover = (change: () => void) => {
        const before = activeId();
        change();
        const after = activeId();
        if (before !== undefined && before !== after && requests.has(before)) giveBackAll(before);
      };
      const ackOffsets = (list: number[]) => {
        d.ack(list.flatMap((o) => [o, o + 1]));
        for (const o of list) {
          acked.add(o);
          out.delete(o);
          count.delete(o);
        }
      };

      for (let step = 0; step < 600; step++) {
        now += random.int(0, 400);
        const roll = random.next();
        const ids = [...requests.keys()];
        if (d.readPosition < LOG_END && d.lookAheadRoom() > 0) {
          const to = Math.min(LOG_END, d.readPosition + random.int(1, d.lookAheadRoom() + 2));
          const entries: Entry[] = [];
          for (let o = d.readPosition; o < to && entries.length < d.lookAheadRoom(); o++) if (isEntry(o)) entries.push({ offset: o, hash: hashOf(o) });
          const upTo = entries.length > 0 && entries.length === d.lookAheadRoom() ? entries[entries.length - 1]!.offset + 1 : to;
          d.offer(entries, upTo);
        }
        if (roll < 0.08) {
          const id = `c${nextId++}`;
          const wrongType = ids.length > 0 && random.chance(0.2);
          const request = consumer(id, wrongType ? (type === 'Shared' ? 'Failover' : 'Shared') : type, {
            consumerName: `n${random.int(0, 3)}`,
            priorityLevel: random.int(0, 2),
            ackTimeoutMs: random.chance(0.3) ? 3_000 : 0,
            sessionTimeoutMs: random.int(1_000, 5_000),
          });
          let refused: ReturnType<Dispatcher['attach']>;
          withHandover(() => (refused = d.attach(request, now)));
          if (refused !== undefined) stats.refused++;
          if (wrongType) t.is(refused?.code, 'CONSUMER_BUSY', label);
          else if (ids.length >= limits.consumersMax) t.is(refused?.code, 'BUSY', label);
          else if (type === 'Exclusive' && ids.length > 0) t.is(refused?.code, 'CONSUMER_BUSY', label);
          else {
            t.is(refused, undefined, label);
            requests.set(id, request);
          }
        } else if (roll < 0.12 && ids.length > 0) {
          const id = ids[random.int(0, ids.length - 1)]!;
          withHandover(() => {
            giveBackAll(id);
            requests.delete(id);
            d.detach(id);
          });
        } else if (roll < 0.2) {
          withHandover(() => {
            // Ack timeouts first (the model knows the send times), then the sessions.
            const gone = new Set(d.expire(now));
            stats.expired += gone.size;
            for (const id of gone) {
              t.true(requests.has(id), `${label}: ${id} was attached`);
              giveBackAll(id);
              requests.delete(id);
            }
            for (const [o, x] of [...out]) {
              const r = requests.get(x.id)!;
              if (r.ackTimeoutMs > 0 && now - x.sentMs > r.ackTimeoutMs) giveBack(o, true);
            }
          });
        } else if (roll < 0.6 && ids.length > 0) {
          const id = ids[random.int(0, ids.length - 1)]!;
          t.is(d.attach(requests.get(id)!, now), undefined, label);
          const hasWork = d.hasWork(id, now);
          const got = d.assign(id, random.int(0, 10), now);
          if (got.length > 0) t.true(hasWork, `${label}: hasWork foresaw the delivery`);
          if (type === 'Failover' || type === 'Exclusive') t.true(got.length === 0 || d.isActive(id), `${label}: only the active consumer`);
          let previous = -1;
          for (const x of got) {
            t.true(x.offset > previous, `${label}: ascending`);
            previous = x.offset;
            t.false(out.has(x.offset), `${label}: ${x.offset} is not out twice`);
            t.false(acked.has(x.offset), `${label}: ${x.offset} is not acknowledged`);
            t.true(isEntry(x.offset), label);
            t.is(x.redeliveryCount, count.get(x.offset) ?? 0, `${label}: count of ${x.offset}`);
            if (type === 'Key_Shared') {
              for (const [o, y] of out) if (hashOf(o) === hashOf(x.offset)) t.is(y.id, id, `${label}: hash of ${x.offset} out at one consumer`);
            }
            out.set(x.offset, { id, sentMs: now });
            stats.delivered++;
            if (x.redeliveryCount > 0) stats.redelivered++;
          }
          // The host may cut the reply: the tail goes back uncounted.
          const cut = random.chance(0.15) ? random.int(0, got.length) : got.length;
          const back = got.slice(cut).map((x) => x.offset);
          d.unassign(id, back);
          stats.cut += back.length;
          for (const o of back) giveBack(o, false);
          for (const x of got.slice(0, cut)) {
            if (seen.has(x.offset)) continue;
            seen.add(x.offset);
            const key = type === 'Key_Shared' ? hashOf(x.offset) : -1;
            t.true((firstOf.get(key) ?? -1) < x.offset, `${label}: first delivery of ${x.offset} in order`);
            firstOf.set(key, x.offset);
          }
        } else if (roll < 0.85) {
          ackOffsets([...out.keys()].filter(() => random.chance(0.4)));
        } else if (roll < 0.95 && ids.length > 0) {
          const id = ids[random.int(0, ids.length - 1)]!;
          const mine = [...out].filter(([, x]) => x.id === id && random.chance(0.5)).map(([o]) => o);
          const others = [...out].filter(([, x]) => x.id !== id).map(([o]) => o).slice(0, 2);
          d.nack(id, [...mine, ...others], random.chance(0.5) ? 0 : random.int(1, 2_000), now);
          for (const o of mine) giveBack(o, true);
        } else {
          // A range ack over what has not even been delivered yet.
          const start = d.cursor.markDelete + random.int(0, 10);
          const end = start + random.int(1, 5);
          ackOffsets(range(start, end));
        }

        t.is(d.unackedCount(), out.size, `${label} step ${step}: unacked`);
        t.true(d.unackedCount() + d.redeliveryCount() <= limits.unackedPerSubscriptionMax, `${label}: subscription bound`);
        t.true(d.lookAheadSize() <= limits.lookAheadMax, `${label}: look-ahead bound`);
        for (const c of d.consumers(now)) {
          t.is(c.unacked, [...out.values()].filter((x) => x.id === c.consumerId).length, `${label}: per consumer`);
          t.true(c.unacked <= limits.unackedPerConsumerMax, label);
        }
        t.deepEqual(new Set(d.consumers(now).map((c) => c.consumerId)), new Set(requests.keys()), `${label}: membership`);
        const due = d.nextDueMs();
        t.true(requests.size === 0 ? due === undefined || due > 0 : due !== undefined, label);
        checks++;
      }

      // Liveness: keep one consumer polling and acknowledging everything; the log drains.
      now += 10_000_000;
      for (const id of [...requests.keys()]) {
        requests.delete(id);
        d.detach(id);
      }
      t.is(d.attach(consumer('drain', type), now), undefined, label);
      for (let round = 0; round < 1_000 && d.cursor.markDelete < LOG_END; round++) {
        if (d.readPosition < LOG_END && d.lookAheadRoom() > 0) {
          const to = Math.min(LOG_END, d.readPosition + d.lookAheadRoom());
          d.offer(range(d.readPosition, to).filter(isEntry).map((offset) => ({ offset, hash: hashOf(offset) })), to);
        }
        const got = d.assign('drain', 100, now);
        d.ack(got.flatMap((x) => [x.offset, x.offset + 1]));
      }
      t.true(d.cursor.markDelete >= LOG_END, `${label}: drained`);
      t.is(d.redeliveryCount() + d.unackedCount() + d.lookAheadSize(), 0, `${label}: nothing left`);
    }
  }
  t.true(checks > 0);
  t.true(stats.delivered > 10_000 && stats.redelivered > 1_000 && stats.refused > 50 && stats.expired > 20 && stats.cut > 100, 'the run exercised every path');
});
