import test from 'ava';
import { checkSequence, PRODUCERS_MAX, rebuildProducerStates, recordAppend, RECENT_BATCHES_MAX, type ProducerStates } from '../src/actors/partition/producer-state.js';
import { encodeBatch, SEQUENCE_MODULO, stampBatch } from '../src/protocol/batch.js';
import { createMemoryNodeStorage } from '../src/storage/memory-storage.js';

const p = (baseSequence: number, producerEpoch = 0, producerId = 1) => ({ producerId, producerEpoch, baseSequence });

test('sequence checks: next, duplicate, ahead, behind, epochs', (t) => {
  let s: ProducerStates = new Map();
  t.deepEqual(checkSequence(s, p(0), 5), { kind: 'append' }, 'an unknown producer starts at 0');
  s = recordAppend(s, p(35), 5, 95);
  s = recordAppend(s, p(40), 5, 100);
  t.deepEqual(checkSequence(s, p(45), 1), { kind: 'append' });
  t.deepEqual(checkSequence(s, p(40), 5), { kind: 'duplicate', baseOffset: 100 });
  t.like(checkSequence(s, p(46), 1), { kind: 'refuse', code: 'OUT_OF_ORDER_SEQUENCE' });
  t.like(checkSequence(s, p(10), 1), { kind: 'refuse', code: 'DUPLICATE_SEQUENCE' });
  t.deepEqual(checkSequence(s, p(0, 1), 1), { kind: 'append' }, 'a new epoch starts over');
  s = recordAppend(s, p(0, 1), 1, 200);
  t.like(checkSequence(s, p(1, 0), 1), { kind: 'refuse', code: 'INVALID_PRODUCER_EPOCH' });
});

test('sequences wrap at 2^31', (t) => {
  let s: ProducerStates = new Map();
  s = recordAppend(s, p(SEQUENCE_MODULO - 2), 4, 0);
  t.deepEqual(checkSequence(s, p(2), 1), { kind: 'append' });
  t.like(checkSequence(s, p(3), 1), { kind: 'refuse', code: 'OUT_OF_ORDER_SEQUENCE' });
  t.like(checkSequence(s, p(SEQUENCE_MODULO - 10), 1), { kind: 'refuse', code: 'DUPLICATE_SEQUENCE' });
});

test('state is bounded: recent batches per producer and producers per partition', (t) => {
  let s: ProducerStates = new Map();
  for (let i = 0; i < 10; i++) s = recordAppend(s, p(i), 1, i);
  t.is(s.get(1)!.recent.length, RECENT_BATCHES_MAX);
  t.like(checkSequence(s, p(0), 1), { kind: 'refuse', code: 'DUPLICATE_SEQUENCE' });
  t.deepEqual(checkSequence(s, p(9), 1), { kind: 'duplicate', baseOffset: 9 });
  for (let id = 2; id < PRODUCERS_MAX + 5; id++) s = recordAppend(s, p(0, 0, id), 1, 0);
  t.is(s.size, PRODUCERS_MAX);
  t.false(s.has(1), 'the least recently seen producer is forgotten first');
});

test('a producer never seen must start at sequence 0, or its lost first batches would be overtaken (sim seed 10)', (t) => {
  const s: ProducerStates = new Map();
  t.like(checkSequence(s, p(9), 2), { kind: 'refuse', code: 'OUT_OF_ORDER_SEQUENCE' }, 'batch 9 arrived, batches 0-8 were lost on the way');
  t.deepEqual(checkSequence(s, p(0), 9), { kind: 'append' });
  const known = recordAppend(s, p(0), 9, 0);
  t.like(checkSequence(known, p(0, 1), 1), { kind: 'append' }, 'a new epoch starts at 0');
  t.like(checkSequence(known, p(5, 1), 1), { kind: 'refuse', code: 'OUT_OF_ORDER_SEQUENCE' }, 'and nowhere else');
});

test('a new leader rebuilds producer states from the tail of its log: retries of batches the old leader wrote are duplicates', async (t) => {
  const storage = createMemoryNodeStorage();
  const store = await storage.openPartition({ topicId: 'ab'.repeat(16), partition: 0 });
  const enc = new TextEncoder();
  let offset = 0;
  for (let i = 0; i < 4; i++) {
    const batch = encodeBatch([{ key: null, value: enc.encode(`v${i}`), headers: {}, timestamp: 1 }, { key: null, value: enc.encode('w'), headers: {}, timestamp: 1 }], p(i * 2, 0, 9));
    stampBatch(batch, offset, 3);
    await store.append([batch]);
    offset += 2;
  }
  const { producers: states, accessEpoch } = await rebuildProducerStates(store);
  t.is(accessEpoch, 0, 'no fence in the log');
  t.deepEqual(checkSequence(states, p(6, 0, 9), 2), { kind: 'duplicate', baseOffset: 6 });
  t.deepEqual(checkSequence(states, p(8, 0, 9), 1), { kind: 'append' });
  t.like(checkSequence(states, p(0, 0, 10), 1), { kind: 'append' }, 'another producer is unknown');
});
