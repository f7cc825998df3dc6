/**
 * One contract, two stores: every case runs against the memory store and against RocksDB in a
 * fresh temp dir. "Reopen" is close() then open on the same MemoryDisk / directory.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeBatch, encodeBatch, readBatchHeader, stampBatch, verifyBatch } from '../src/protocol/batch.js';
import { TidemarkError, type ErrorCode } from '../src/protocol/errors.js';
import { createMemoryNodeStorage, MemoryDisk } from '../src/storage/memory-storage.js';
import type { NodeStorage, PartitionKey, PartitionStore } from '../src/storage/partition-store.js';
import { openRocksNodeStorage } from '../src/storage/rocksdb-storage.js';
import { TailCache, TailCacheBudget } from '../src/storage/tail-cache.js';

interface Env {
  storage: NodeStorage;
  /** Closes the current storage and opens the same data again. */
  reopen(): Promise<NodeStorage>;
}

interface Backend {
  name: string;
  setup(): Promise<{ env: Env; teardown(): Promise<void> }>;
}

const backends: Backend[] = [
  {
    name: 'memory',
    async setup() {
      const disk = new MemoryDisk();
      const env: Env = {
        storage: createMemoryNodeStorage(disk),
        async reopen() {
          await env.storage.close();
          env.storage = createMemoryNodeStorage(disk);
          return env.storage;
        },
      };
      return { env, teardown: () => env.storage.close() };
    },
  },
  {
    name: 'rocksdb',
    async setup() {
      const dir = await mkdtemp(join(tmpdir(), 'tidemark-storage-'));
      const env: Env = {
        storage: await openRocksNodeStorage(dir),
        async reopen() {
          await env.storage.close();
          env.storage = await openRocksNodeStorage(dir);
          return env.storage;
        },
      };
      return {
        env,
        async teardown() {
          await env.storage.close();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },
];

function contract(title: string, body: (t: ExecutionContext, env: Env) => Promise<void>): void {
  for (const backend of backends) {
    test(`${backend.name}: ${title}`, async (t) => {
      const { env, teardown } = await backend.setup();
      try {
        await body(t, env);
      } finally {
        await teardown();
      }
    });
  }
}

const A: PartitionKey = { topicId: '0123456789abcdef0123456789abcdef', partition: 0 };
const A1: PartitionKey = { ...A, partition: 1 };
const B: PartitionKey = { topicId: 'fedcba9876543210fedcba9876543210', partition: 0 };

/** A stamped batch whose record values name their own offsets, so misplaced bytes show. */
function batch(base: number, count: number, epoch = 0, timestamp = 1_000): Uint8Array {
  const records = Array.from({ length: count }, (_, i) => ({
    key: null,
    value: new TextEncoder().encode(`offset-${base + i}`),
    headers: {},
    timestamp,
  }));
  const b = encodeBatch(records);
  stampBatch(b, base, epoch);
  return b;
}

/** Appends one batch per entry of `counts` at the log end; returns them. */
async function fill(store: PartitionStore, counts: number[], epoch = 0, timestamp = 1_000): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (const count of counts) {
    const b = batch(store.logEndOffset(), count, epoch, timestamp);
    await store.append([b]);
    out.push(b);
  }
  return out;
}

const bases = (batches: Uint8Array[]) => batches.map((b) => readBatchHeader(b).baseOffset);
const total = (batches: Uint8Array[]) => batches.reduce((n, b) => n + b.length, 0);
const ALL = Number.MAX_SAFE_INTEGER;

async function rejectsWith(t: ExecutionContext, promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  const error = await t.throwsAsync(promise, { instanceOf: TidemarkError });
  t.is(error?.code, code);
}

contract('append then read from the start returns the same bytes', async (t, env) => {
  const store = await env.storage.openPartition(A);
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes()], [0, 0, 0]);
  const written = await fill(store, [3, 2, 4]);
  t.is(store.logEndOffset(), 9);
  t.is(store.sizeBytes(), total(written));
  const read = await store.read(0, ALL, ALL);
  t.deepEqual(read.map((b) => Buffer.from(b)), written.map((b) => Buffer.from(b)));
  for (const b of read) verifyBatch(b);
  t.deepEqual(decodeBatch(read[2]!).map((r) => new TextDecoder().decode(r.value!)), ['offset-5', 'offset-6', 'offset-7', 'offset-8']);
});

contract('a mid-batch read starts with the batch containing the offset', async (t, env) => {
  const store = await env.storage.openPartition(A);
  await fill(store, [3, 2, 4]);
  t.deepEqual(bases(await store.read(4, ALL, ALL)), [3, 5]);
  t.deepEqual(bases(await store.read(8, ALL, ALL)), [5]);
  t.deepEqual(bases(await store.read(3, ALL, ALL)), [3, 5]);
});

contract('maxBytes bounds a read but the first batch always comes back', async (t, env) => {
  const store = await env.storage.openPartition(A);
  const [b0, b1] = await fill(store, [3, 2, 4]);
  t.deepEqual(bases(await store.read(0, 1, ALL)), [0]);
  t.deepEqual(bases(await store.read(0, 0, ALL)), [0]);
  t.deepEqual(bases(await store.read(0, b0!.length + b1!.length - 1, ALL)), [0]);
  t.deepEqual(bases(await store.read(0, b0!.length + b1!.length, ALL)), [0, 3]);
  t.deepEqual(bases(await store.read(4, b1!.length, ALL)), [3]);
});

contract('endOffset stops before batches based at or past it, and at the log end', async (t, env) => {
  const store = await env.storage.openPartition(A);
  await fill(store, [3, 2, 4]);
  t.deepEqual(bases(await store.read(0, ALL, 5)), [0, 3]);
  t.deepEqual(bases(await store.read(0, ALL, 4)), [0, 3]);
  t.deepEqual(bases(await store.read(0, ALL, 3)), [0]);
  t.deepEqual(await store.read(4, ALL, 4), []);
  t.deepEqual(await store.read(9, ALL, ALL), []);
  await rejectsWith(t, store.read(10, ALL, ALL), 'OFFSET_OUT_OF_RANGE');
});

contract('log start, end, size and epochs survive a reopen', async (t, env) => {
  let store = await env.storage.openPartition(A);
  const [first] = await fill(store, [3, 2], 1);
  await fill(store, [4], 2);
  await store.applyRetention({ retentionMs: -1, retentionBytes: store.sizeBytes() - first!.length, nowMs: 0 });
  const before = [store.logStartOffset(), store.logEndOffset(), store.sizeBytes()];
  t.deepEqual(before.slice(0, 2), [3, 9]);
  const storage = await env.reopen();
  store = await storage.openPartition(A);
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes()], before);
  t.deepEqual(store.epochs(), [
    { epoch: 1, startOffset: 3 },
    { epoch: 2, startOffset: 5 },
  ]);
  t.deepEqual(bases(await store.read(3, ALL, ALL)), [3, 5]);
  await fill(store, [1], 2);
  t.is(store.logEndOffset(), 10);
});

contract('the log end survives a reopen after retention deleted every batch', async (t, env) => {
  let store = await env.storage.openPartition(A);
  const written = await fill(store, [3, 2], 0, 1_000);
  const result = await store.applyRetention({ retentionMs: 10, retentionBytes: -1, nowMs: 1_000_000 });
  t.deepEqual(result, { deletedBatches: 2, deletedBytes: total(written) });
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes()], [5, 5, 0]);
  store = await (await env.reopen()).openPartition(A);
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes()], [5, 5, 0]);
  t.deepEqual(await store.read(5, ALL, ALL), []);
  await rejectsWith(t, store.read(0, ALL, ALL), 'OFFSET_OUT_OF_RANGE');
  await fill(store, [2]);
  t.deepEqual(bases(await store.read(5, ALL, ALL)), [5]);
});

contract('truncateTo cuts at batch boundaries and trims the epoch cache', async (t, env) => {
  const store = await env.storage.openPartition(A);
  const written = [...(await fill(store, [3], 1)), ...(await fill(store, [2], 2)), ...(await fill(store, [4], 3))];
  await store.truncateTo(9);
  await store.truncateTo(100);
  t.is(store.logEndOffset(), 9);
  await store.truncateTo(5);
  t.deepEqual([store.logEndOffset(), store.sizeBytes()], [5, written[0]!.length + written[1]!.length]);
  t.deepEqual(store.epochs(), [
    { epoch: 1, startOffset: 0 },
    { epoch: 2, startOffset: 3 },
  ]);
  // Mid-batch: the straddling batch [3, 5) goes whole.
  await store.truncateTo(4);
  t.deepEqual([store.logEndOffset(), store.sizeBytes()], [3, written[0]!.length]);
  t.deepEqual(store.epochs(), [{ epoch: 1, startOffset: 0 }]);
  t.deepEqual(await store.read(3, ALL, ALL), []);
  await fill(store, [2], 4);
  t.deepEqual(store.epochs(), [
    { epoch: 1, startOffset: 0 },
    { epoch: 4, startOffset: 3 },
  ]);
  const reopened = await (await env.reopen()).openPartition(A);
  t.deepEqual([reopened.logEndOffset(), reopened.epochs().length], [5, 2]);
  t.deepEqual(bases(await reopened.read(0, ALL, ALL)), [0, 3]);
  await reopened.truncateTo(0);
  t.deepEqual([reopened.logStartOffset(), reopened.logEndOffset(), reopened.sizeBytes(), reopened.epochs().length], [0, 0, 0, 0]);
});

contract('truncateTo below the log start restarts the log there', async (t, env) => {
  const store = await env.storage.openPartition(A);
  await fill(store, [3, 2, 4]);
  await store.applyRetention({ retentionMs: -1, retentionBytes: 1, nowMs: 0 });
  t.deepEqual([store.logStartOffset(), store.logEndOffset()], [5, 9]);
  await store.truncateTo(2);
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes()], [2, 2, 0]);
  await fill(store, [1]);
  t.deepEqual(bases(await store.read(2, ALL, ALL)), [2]);
});

contract('truncateFullyAndStartAt empties the log and restarts it at the offset, above or below its end, durably', async (t, env) => {
  let store = await env.storage.openPartition(A);
  await fill(store, [3, 2], 1);
  await fill(store, [4], 2);
  // A follower 9 records in whose leader's log now starts at 20.
  await store.truncateFullyAndStartAt(20);
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes(), store.epochs()], [20, 20, 0, []]);
  t.deepEqual(store.endOffsetForEpoch(2), { epoch: -1, endOffset: -1 });
  await rejectsWith(t, store.read(9, ALL, ALL), 'OFFSET_OUT_OF_RANGE');
  t.deepEqual(await store.read(20, ALL, ALL), []);
  await rejectsWith(t, store.append([batch(9, 1, 3)]), 'INVALID_REQUEST');
  const [appended] = await fill(store, [2], 3);
  t.deepEqual(store.epochs(), [{ epoch: 3, startOffset: 20 }]);
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes()], [20, 22, appended!.length]);

  store = await (await env.reopen()).openPartition(A);
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes(), store.epochs()], [20, 22, appended!.length, [{ epoch: 3, startOffset: 20 }]]);
  t.deepEqual(bases(await store.read(20, ALL, ALL)), [20], 'nothing of the old log came back');
  await rejectsWith(t, store.read(19, ALL, ALL), 'OFFSET_OUT_OF_RANGE');

  // Below the end works too (the whole log goes), and an empty log restarts where asked.
  await store.truncateFullyAndStartAt(5);
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes(), store.epochs().length], [5, 5, 0, 0]);
  await store.truncateFullyAndStartAt(7);
  await fill(store, [1], 4);
  store = await (await env.reopen()).openPartition(A);
  t.deepEqual([store.logStartOffset(), store.logEndOffset()], [7, 8]);
  t.deepEqual(bases(await store.read(7, ALL, ALL)), [7]);
  await rejectsWith(t, store.truncateFullyAndStartAt(-1), 'INVALID_REQUEST');
});

contract('time retention deletes whole batches older than the cutoff from the front', async (t, env) => {
  const store = await env.storage.openPartition(A);
  const old = [...(await fill(store, [3], 0, 1_000)), ...(await fill(store, [2], 0, 2_000))];
  await fill(store, [4], 0, 3_000);
  await fill(store, [1], 0, 1_000); // old, but behind a fresh batch: retention only eats the front
  const none = await store.applyRetention({ retentionMs: -1, retentionBytes: -1, nowMs: 1e12 });
  t.deepEqual(none, { deletedBatches: 0, deletedBytes: 0 });
  const result = await store.applyRetention({ retentionMs: 1_000, retentionBytes: -1, nowMs: 3_001 });
  t.deepEqual(result, { deletedBatches: 2, deletedBytes: total(old) });
  t.deepEqual([store.logStartOffset(), store.logEndOffset()], [5, 10]);
  t.deepEqual(bases(await store.read(5, ALL, ALL)), [5, 9]);
  await rejectsWith(t, store.read(4, ALL, ALL), 'OFFSET_OUT_OF_RANGE');
  const all = await store.applyRetention({ retentionMs: 0, retentionBytes: -1, nowMs: 1e12 });
  t.is(all.deletedBatches, 2);
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes()], [10, 10, 0]);
});

contract('size retention deletes from the front while the rest stays at or above the limit', async (t, env) => {
  const store = await env.storage.openPartition(A);
  const [b0, b1, b2] = await fill(store, [3, 2, 4]);
  const size = store.sizeBytes();
  t.deepEqual(await store.applyRetention({ retentionMs: -1, retentionBytes: size, nowMs: 0 }), { deletedBatches: 0, deletedBytes: 0 });
  const one = await store.applyRetention({ retentionMs: -1, retentionBytes: b1!.length + b2!.length, nowMs: 0 });
  t.deepEqual(one, { deletedBatches: 1, deletedBytes: b0!.length });
  const more = await store.applyRetention({ retentionMs: -1, retentionBytes: b2!.length, nowMs: 0 });
  t.deepEqual(more, { deletedBatches: 1, deletedBytes: b1!.length });
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes()], [5, 9, b2!.length]);
  await store.applyRetention({ retentionMs: -1, retentionBytes: 0, nowMs: 0 });
  t.deepEqual([store.logStartOffset(), store.logEndOffset(), store.sizeBytes()], [9, 9, 0]);
});

contract('the epoch cache follows appends and answers endOffsetForEpoch like Kafka', async (t, env) => {
  const store = await env.storage.openPartition(A);
  t.deepEqual(store.endOffsetForEpoch(0), { epoch: -1, endOffset: -1 });
  await fill(store, [3, 2], 0);
  await fill(store, [2], 2);
  await fill(store, [1], 1); // an older epoch after a newer one opens nothing
  await fill(store, [3], 5);
  t.deepEqual(store.epochs(), [
    { epoch: 0, startOffset: 0 },
    { epoch: 2, startOffset: 5 },
    { epoch: 5, startOffset: 8 },
  ]);
  const ask = (e: number) => store.endOffsetForEpoch(e);
  t.deepEqual([ask(0), ask(1), ask(2), ask(4), ask(5)], [
    { epoch: 0, endOffset: 5 },
    { epoch: 0, endOffset: 5 },
    { epoch: 2, endOffset: 8 },
    { epoch: 2, endOffset: 8 },
    { epoch: 5, endOffset: 11 },
  ]);
  t.deepEqual(ask(6), { epoch: -1, endOffset: -1 });
  t.deepEqual(ask(-1), { epoch: -1, endOffset: -1 });
  // Retention down to the last batch: only epoch 5 still has records.
  const last = (await store.read(8, ALL, ALL))[0]!;
  await store.applyRetention({ retentionMs: -1, retentionBytes: last.length, nowMs: 0 });
  t.is(store.logStartOffset(), 8);
  t.deepEqual(store.epochs(), [{ epoch: 5, startOffset: 8 }]);
  t.deepEqual(ask(2), { epoch: 2, endOffset: 8 });
  const reopened = await (await env.reopen()).openPartition(A);
  t.deepEqual(reopened.epochs(), [{ epoch: 5, startOffset: 8 }]);
});

contract('retention moves a straddling epoch to the new log start', async (t, env) => {
  const store = await env.storage.openPartition(A);
  await fill(store, [3], 1);
  await fill(store, [2, 2], 2);
  const last = (await store.read(5, ALL, ALL))[0]!;
  await store.applyRetention({ retentionMs: -1, retentionBytes: last.length, nowMs: 0 });
  t.is(store.logStartOffset(), 5);
  t.deepEqual(store.epochs(), [{ epoch: 2, startOffset: 5 }]);
  t.deepEqual(store.endOffsetForEpoch(1), { epoch: 1, endOffset: 5 });
  const reopened = await (await env.reopen()).openPartition(A);
  t.deepEqual(reopened.epochs(), [{ epoch: 2, startOffset: 5 }]);
});

contract('an append that does not continue the log is rejected and writes nothing', async (t, env) => {
  const store = await env.storage.openPartition(A);
  await fill(store, [3]);
  await rejectsWith(t, store.append([batch(4, 1)]), 'INVALID_REQUEST');
  await rejectsWith(t, store.append([batch(3, 2), batch(6, 1)]), 'INVALID_REQUEST');
  t.deepEqual([store.logEndOffset(), (await store.read(0, ALL, ALL)).length], [3, 1]);
  await store.append([batch(3, 2), batch(5, 1)]);
  t.is(store.logEndOffset(), 6);
});

contract('appends issued without awaiting apply in order, reads never see half of one', async (t, env) => {
  const store = await env.storage.openPartition(A);
  const pending: Array<Promise<void>> = [];
  const reads: Array<Promise<Uint8Array[]>> = [];
  for (let i = 0; i < 50; i++) {
    // Each append is two batches of 2: a read that saw half of one would end on an odd batch count.
    pending.push(store.append([batch(i * 4, 2), batch(i * 4 + 2, 2)]));
    reads.push(store.read(0, ALL, ALL));
  }
  await Promise.all(pending);
  t.is(store.logEndOffset(), 200);
  for (const r of await Promise.all(reads)) t.is(r.length % 2, 0);
  t.deepEqual(bases(await store.read(0, ALL, ALL)), Array.from({ length: 100 }, (_, i) => i * 2));
});

contract('a batch that is a small view of a larger buffer is stored apart from that buffer', async (t, env) => {
  // The caller hands its batches over (it never writes to them again), but a batch read out of a
  // larger buffer (one of several in a fetch reply, a message inside a socket read) must not keep
  // the rest of that buffer alive, nor change when the buffer is reused.
  const store = await env.storage.openPartition(A);
  const b = batch(0, 2);
  const big = new Uint8Array(b.length * 10);
  big.set(b, 3);
  const view = big.subarray(3, 3 + b.length);
  await store.append([view]);
  big.fill(0);
  t.deepEqual(Buffer.from((await store.read(0, ALL, ALL))[0]!), Buffer.from(b));
});

contract('deletePartition removes one partition and leaves the others alone', async (t, env) => {
  const a0 = await env.storage.openPartition(A);
  const a1 = await env.storage.openPartition(A1);
  const b0 = await env.storage.openPartition(B);
  t.is(await env.storage.openPartition(A), a0);
  await fill(a0, [3, 2], 1);
  await fill(a1, [4], 1);
  await fill(b0, [1, 1, 1], 1);
  await env.storage.deletePartition(A);
  await rejectsWith(t, a0.append([batch(5, 1)]), 'UNKNOWN_TOPIC');
  await rejectsWith(t, a0.read(0, ALL, ALL), 'UNKNOWN_TOPIC');
  const fresh = await env.storage.openPartition(A);
  t.not(fresh, a0);
  t.deepEqual([fresh.logStartOffset(), fresh.logEndOffset(), fresh.sizeBytes(), fresh.epochs().length], [0, 0, 0, 0]);
  t.deepEqual(await fresh.read(0, ALL, ALL), []);
  await fill(fresh, [1], 7);
  t.deepEqual(bases(await a1.read(0, ALL, ALL)), [0]);
  t.deepEqual(bases(await b0.read(0, ALL, ALL)), [0, 1, 2]);
  const storage = await env.reopen();
  const [ra, ra1, rb] = await Promise.all([storage.openPartition(A), storage.openPartition(A1), storage.openPartition(B)]);
  // Nothing of the old incarnation (batches up to offset 5) may leak into the new one.
  t.deepEqual([ra.logEndOffset(), ra.sizeBytes(), ra.epochs()], [1, fresh.sizeBytes(), [{ epoch: 7, startOffset: 0 }]]);
  t.deepEqual(bases(await ra.read(0, ALL, ALL)), [0]);
  t.deepEqual([ra1.logEndOffset(), rb.logEndOffset()], [4, 3]);
  t.deepEqual(decodeBatch((await ra1.read(0, ALL, ALL))[0]!).map((r) => r.offset), [0, 1, 2, 3]);
});

contract('a closed storage rejects calls', async (t, env) => {
  const store = await env.storage.openPartition(A);
  const queued = store.append([batch(0, 1)]);
  await env.storage.close();
  await queued;
  await rejectsWith(t, store.append([batch(1, 1)]), 'SHUTTING_DOWN');
  await rejectsWith(t, store.read(0, ALL, ALL), 'SHUTTING_DOWN');
  await rejectsWith(t, env.storage.openPartition(B), 'SHUTTING_DOWN');
  const reopened = await (await env.reopen()).openPartition(A);
  t.is(reopened.logEndOffset(), 1);
});

test('rocksdb: synced appends rely on the WAL being *.log files in the database directory, and share fsyncs', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-wal-'));
  try {
    const storage = await openRocksNodeStorage(dir);
    const stores = await Promise.all([0, 1, 2].map((partition) => storage.openPartition({ topicId: 'cd'.repeat(16), partition })));
    const appends = stores.flatMap((store) =>
      [0, 1, 2, 3].map((i) => {
        const b = encodeBatch([{ key: null, value: new TextEncoder().encode(`r${i}`), headers: {}, timestamp: 1 }]);
        stampBatch(b, i, 0);
        return store.append([b], { sync: true });
      }),
    );
    await Promise.all(appends);
    t.deepEqual(stores.map((s) => s.logEndOffset()), [4, 4, 4]);
    const logs = (await readdir(dir)).filter((n) => n.endsWith('.log'));
    t.true(logs.length >= 1, `WAL files in ${dir}: ${logs.join(', ')}`);
    await storage.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('rocksdb: reads behind the writer come from the tail cache and match what RocksDB holds, across truncation and reopen', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-tail-'));
  try {
    const key = { topicId: 'ef'.repeat(16), partition: 0 };
    let storage = await openRocksNodeStorage(dir);
    let store = await storage.openPartition(key);
    // 48 batches of 64 KiB: 3 MiB, more than the cache keeps.
    for (let i = 0; i < 48; i++) {
      const b = encodeBatch([{ key: null, value: new Uint8Array(64 * 1024).fill(i), headers: {}, timestamp: 1 }]);
      stampBatch(b, i, 0);
      await store.append([b]);
    }
    const before = [await store.read(0, 1 << 20, 48), await store.read(45, 1 << 20, 48), await store.read(47, 1, 48)];
    await store.truncateTo(46);
    const afterTruncate = await store.read(44, 1 << 20, 48);
    t.deepEqual(afterTruncate.map((b) => readBatchHeader(b).baseOffset), [44, 45]);
    await storage.close();
    storage = await openRocksNodeStorage(dir);
    store = await storage.openPartition(key);
    const fresh = [await store.read(0, 1 << 20, 46), await store.read(45, 1 << 20, 46)];
    t.deepEqual(fresh[0]!.map((b) => Buffer.from(b)), before[0]!.map((b) => Buffer.from(b)));
    t.deepEqual(fresh[1]!.map((b) => Buffer.from(b)), before[1]!.slice(0, 1).map((b) => Buffer.from(b)));
    t.is(before[2]!.length, 1, 'the first batch comes back even over maxBytes');
    await storage.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A stamped batch of `bytes` value bytes, filled with `fill`. */
function bigBatch(base: number, bytes: number, fill: number): Uint8Array {
  const b = encodeBatch([{ key: null, value: new Uint8Array(bytes).fill(fill), headers: {}, timestamp: 1 }]);
  stampBatch(b, base, 0);
  return b;
}

test('tail cache: partitions share the node budget; a full budget costs a partition its own oldest batches, or the caching, never another\'s', (t) => {
  const budget = new TailCacheBudget(300);
  const a = new TailCache(budget, 250);
  const b = new TailCache(budget, 250);
  const bytes = (n: number) => new Uint8Array(n).fill(n % 251);
  const held = () => [a.bytesHeld, b.bytesHeld, budget.bytesUsed];
  a.push(0, 1, bytes(100));
  a.push(1, 2, bytes(100));
  a.push(2, 3, bytes(100));
  t.deepEqual(held(), [200, 0, 200], 'a keeps under its own 250 bytes: its oldest went');
  b.push(0, 1, bytes(100));
  t.deepEqual(held(), [200, 100, 300]);
  // The budget is full: b's next batch pushes out b's own oldest, not a's.
  b.push(1, 2, bytes(90));
  t.deepEqual(held(), [200, 90, 290]);
  t.is(b.read(0, 1000, 2), undefined, 'b no longer reaches back to 0: the store reads RocksDB');
  t.deepEqual(b.read(1, 1000, 2)?.map((x) => x.length), [90]);
  // Nothing of b's own left to give and still no room: b does not cache, and holds nothing.
  b.push(2, 3, bytes(120));
  t.deepEqual(held(), [200, 0, 200]);
  t.is(b.read(2, 1000, 3), undefined);
  // Room again (a truncated): b caches from its next batch on, a contiguous run to its log end.
  a.truncate(2);
  t.deepEqual(held(), [100, 0, 100]);
  b.push(3, 4, bytes(50));
  t.deepEqual(b.read(3, 1000, 4)?.map((x) => x.length), [50]);
  t.is(b.read(2, 1000, 4), undefined);
  a.dropBefore(2);
  t.deepEqual(held(), [0, 50, 50]);
  b.clear();
  t.deepEqual(held(), [0, 0, 0]);
  // A budget of 0 caches nothing at all.
  const none = new TailCache(new TailCacheBudget(0));
  none.push(0, 1, bytes(1));
  t.is(none.read(0, 10, 1), undefined);
});

test('rocksdb: the tail caches of a node share tailCacheBytesMax, reads stay exact, and the budget is given back exactly under truncation, retention, restart, delete and close', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-tail-budget-'));
  try {
    const sample = bigBatch(0, 64 * 1024, 0).length;
    // Room for three such batches on the whole node.
    const storage = await openRocksNodeStorage(dir, { tailCacheBytesMax: 3 * sample + 100 });
    const a = await storage.openPartition({ topicId: 'a1'.repeat(16), partition: 0 });
    const b = await storage.openPartition({ topicId: 'b2'.repeat(16), partition: 0 });
    const written: Uint8Array[] = [];
    for (let i = 0; i < 5; i++) {
      written.push(bigBatch(i, 64 * 1024, i));
      await a.append([written[i]!]);
    }
    t.is(storage.tailCache.bytesUsed, 3 * sample, 'a holds its newest three: the node budget, not its own 2 MiB, bounds it');
    const b0 = bigBatch(0, 64 * 1024, 100);
    await b.append([b0]);
    t.is(storage.tailCache.bytesUsed, 3 * sample, 'b finds no room and caches nothing');
    t.deepEqual((await b.read(0, ALL, 1)).map((x) => Buffer.from(x)), [Buffer.from(b0)], 'read from RocksDB instead');
    t.deepEqual((await a.read(0, ALL, 5)).map((x) => Buffer.from(x)), written.map((x) => Buffer.from(x)));

    await a.truncateTo(4);
    t.is(storage.tailCache.bytesUsed, 2 * sample);
    const b1 = bigBatch(1, 64 * 1024, 101);
    await b.append([b1]);
    t.is(storage.tailCache.bytesUsed, 3 * sample, 'room again: b caches its next batch');
    t.deepEqual((await b.read(0, ALL, 2)).map((x) => Buffer.from(x)), [Buffer.from(b0), Buffer.from(b1)]);

    await a.applyRetention({ retentionMs: -1, retentionBytes: sample, nowMs: 0 });
    t.is(a.logStartOffset(), 3);
    t.is(storage.tailCache.bytesUsed, 2 * sample, 'retention dropped a cached batch, and its bytes');
    await a.truncateFullyAndStartAt(100);
    t.is(storage.tailCache.bytesUsed, sample);
    await storage.deletePartition(b.key);
    t.is(storage.tailCache.bytesUsed, 0);
    await a.append([bigBatch(100, 1024, 7)]);
    t.true(storage.tailCache.bytesUsed > 0);
    await storage.close();
    t.is(storage.tailCache.bytesUsed, 0, 'close gives everything back');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

contract('retention bounded by offsetEnd (the leader passes its HW) deletes only batches that end at or before it', async (t, env) => {
  const store = await env.storage.openPartition(A);
  await fill(store, [3, 2, 4]);
  // Batches end at 3, 5 and 9; with the HW at 4, only the first may go, whatever the limits say.
  const result = await store.applyRetention({ retentionMs: 0, retentionBytes: 0, nowMs: 1e12, offsetEnd: 4 });
  t.is(result.deletedBatches, 1);
  t.deepEqual([store.logStartOffset(), store.logEndOffset()], [3, 9]);
  t.is((await store.applyRetention({ retentionMs: 0, retentionBytes: 0, nowMs: 1e12, offsetEnd: 9 })).deletedBatches, 2);
});

test('a data directory another node holds is refused with RocksDB\'s reason, not "Database is not open"', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tm-storage-lock-'));
  const first = await openRocksNodeStorage(dir);
  try {
    const error = await t.throwsAsync(openRocksNodeStorage(dir), { instanceOf: TidemarkError });
    t.regex(error!.message, /cannot open the node's storage in .*: .*lock.*\(is another node running on this data directory\?\)/i);
  } finally {
    await first.close();
    await rm(dir, { recursive: true, force: true });
  }
});
