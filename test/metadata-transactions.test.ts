import test from 'ava';
import { topicByName } from '../src/metadata/image.js';
import { createMemoryMetadataStore, createQuorumMetadataStore, type CommittedEntry } from '../src/metadata/metadata-store.js';
import { planCreateTopic } from '../src/metadata/planner.js';
import { decodeEntry, encodeEntry, type MetadataRecord } from '../src/metadata/records.js';
import { applyEntry, entryPayloads, followState } from '../src/metadata/transactions.js';

const ENTRY_BYTES = 2048;

function brokers(n: number): MetadataRecord[] {
  return Array.from({ length: n }, (_, i) => ({ type: 'RegisterBroker', brokerId: i + 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'x' }) as const);
}

/** A store whose proposals are captured instead of committed, to replay them with faults. */
function capturing() {
  const proposed: Uint8Array[] = [];
  const store = createQuorumMetadataStore(async (payloads) => {
    proposed.push(...payloads);
  }, ENTRY_BYTES);
  return { store, proposed };
}

function createRecords(partitions: number): MetadataRecord[] {
  const base = createMemoryMetadataStore(ENTRY_BYTES);
  void base.propose(brokers(3));
  return planCreateTopic(base.image(), { name: 'big', partitions, replicationFactor: 3, config: {} }, 'f'.repeat(32), 0);
}

test('a change within one entry stays one plain entry; a larger one becomes a transaction of bounded parts', (t) => {
  t.is(entryPayloads(brokers(2), ENTRY_BYTES).length, 1);
  t.deepEqual(decodeEntry(entryPayloads(brokers(2), ENTRY_BYTES)[0]!), brokers(2));
  const payloads = entryPayloads(createRecords(200), ENTRY_BYTES);
  t.true(payloads.length > 2);
  for (const p of payloads) t.true(p.length <= ENTRY_BYTES);
  t.like(decodeEntry(payloads[0]!)[0], { type: 'BeginTransaction', parts: payloads.length });
  payloads.slice(1).forEach((p, i) => t.like(decodeEntry(p)[0], { type: 'TransactionPart', part: i + 1 }));
});

test('a transaction is committed atomically: the image shows nothing until its last part, then all', async (t) => {
  const store = createMemoryMetadataStore(ENTRY_BYTES);
  await store.propose(brokers(3));
  const before = store.image().offset;
  const heard: number[] = [];
  store.subscribe((_image, records) => heard.push(records.length));
  const next = await store.propose(createRecords(200).map((r) => r));
  const topic = topicByName(next, 'big');
  t.is(topic?.partitions.length, 200);
  t.true(next.offset > before + 1, 'several entries');
  t.is(store.lastOffset(), next.offset);
  t.deepEqual(heard, [201], 'listeners hear once, with every record');
});

test('parts applied one by one: the image and its snapshot stay before the transaction until it ends', (t) => {
  const { store: writer, proposed } = capturing();
  void writer.propose(createRecords(200));
  const reader = createQuorumMetadataStore(async () => undefined, ENTRY_BYTES);
  reader.apply([{ index: 1, payload: encodeEntry(brokers(3)) }]);
  proposed.forEach((payload, i) => {
    reader.apply([{ index: 2 + i, payload }]);
    if (i < proposed.length - 1) {
      t.is(reader.image().offset, 1);
      t.is(topicByName(reader.image(), 'big'), undefined);
      t.is(reader.snapshot().index, 1, 'no snapshot inside an open transaction');
      t.is(reader.lastOffset(), 2 + i);
      t.deepEqual(reader.entriesAfter(1, 1000)?.map((e) => e.index), Array.from({ length: i + 1 }, (_, k) => 2 + k), 'brokers get the parts');
    }
  });
  t.is(topicByName(reader.image(), 'big')?.partitions.length, 200);
  t.is(reader.image().offset, 1 + proposed.length);
});

test('a transaction cut off by a leader change (the new leader\'s no-op) is dropped, and its late parts never apply', (t) => {
  const { store: writer, proposed } = capturing();
  void writer.propose(createRecords(200));
  t.true(proposed.length >= 3);
  const reader = createQuorumMetadataStore(async () => undefined, ENTRY_BYTES);
  const entries: CommittedEntry[] = [
    { index: 1, payload: encodeEntry(brokers(3)) },
    { index: 2, payload: proposed[0]! },
    { index: 3, payload: proposed[1]! },
    { index: 4, payload: new Uint8Array(0) }, // the new leader's no-op
    ...proposed.slice(2).map((payload, i) => ({ index: 5 + i, payload })), // a retry in the new term, after the no-op
  ];
  const heard: number[] = [];
  reader.subscribe((image) => heard.push(image.offset));
  reader.apply(entries);
  t.is(topicByName(reader.image(), 'big'), undefined);
  t.is(reader.image().offset, 4, 'the no-op applied; the orphan parts after it move nothing');
  t.is(reader.lastOffset(), entries.at(-1)!.index);
  t.deepEqual(heard, [1, 4]);
  // An ordinary entry inside a transaction aborts it too, and still applies.
  let state = followState(reader.image());
  state = applyEntry(state, 100, proposed[0]!).state;
  const step = applyEntry(state, 101, encodeEntry([{ type: 'UnfenceBroker', brokerId: 1, brokerEpoch: 1 }]));
  t.is(step.applied?.length, 1);
  t.is(step.state.open, undefined);
  t.is(applyEntry(step.state, 102, proposed[1]!).applied, undefined);
});

test('a snapshot installed over an open transaction drops it; the parts after the snapshot rebuild it', (t) => {
  const { store: writer, proposed } = capturing();
  void writer.propose(createRecords(200));
  const a = createQuorumMetadataStore(async () => undefined, ENTRY_BYTES);
  a.apply([{ index: 1, payload: encodeEntry(brokers(3)) }, { index: 2, payload: proposed[0]! }]);
  const snap = a.snapshot();
  t.is(snap.index, 1);
  const b = createQuorumMetadataStore(async () => undefined, ENTRY_BYTES);
  b.install(snap.index, snap.data);
  // After a restart, Raft replays the log after the snapshot: the transaction's parts are all there.
  b.apply(proposed.map((payload, i) => ({ index: 2 + i, payload })));
  t.is(topicByName(b.image(), 'big')?.partitions.length, 200);
});

test('transaction markers are validated like every record', (t) => {
  t.throws(() => decodeEntry(encodeEntry([{ type: 'BeginTransaction', parts: 1 } as MetadataRecord])));
  t.throws(() => decodeEntry(encodeEntry([{ type: 'TransactionPart', part: 0 } as MetadataRecord])));
  t.throws(() => decodeEntry(encodeEntry([{ type: 'BeginTransaction', parts: 100_000 } as MetadataRecord])));
});
