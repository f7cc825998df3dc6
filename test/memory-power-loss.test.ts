/**
 * The memory store's model of fsync, which the simulator's power-loss crashes rely on: unsynced
 * writes survive a process restart but not a power loss until flushed; a synced write (Raft's, a
 * truncation, a delete) flushes every write before it, as RocksDB's one WAL does.
 */
import test from 'ava';
import { encodeBatch, NO_PRODUCER_SEQUENCE, stampBatch } from '../src/protocol/batch.js';
import { createMemoryNodeStorage, MemoryDisk } from '../src/storage/memory-storage.js';

const key = { topicId: 'ab'.repeat(16), partition: 0 };
const batchAt = (offset: number, value: string) => {
  const b = encodeBatch([{ key: null, value: new TextEncoder().encode(value), headers: {}, timestamp: 1 }], NO_PRODUCER_SEQUENCE);
  stampBatch(b, offset, 0);
  return b;
};

test('a power loss takes back unsynced appends, newest first, and says which', async (t) => {
  const disk = new MemoryDisk();
  const p = await createMemoryNodeStorage(disk).openPartition(key);
  await p.append([batchAt(0, 'a')], { sync: true });
  await p.append([batchAt(1, 'b')]);
  await p.append([batchAt(2, 'c')]);
  t.is(disk.unsyncedWrites, 2);
  const lost = disk.powerLoss();
  t.deepEqual(lost.map((l) => l.batches.length), [1, 1]);
  t.is(lost[0]!.partition, `${key.topicId}/0`);
  const after = await createMemoryNodeStorage(disk).openPartition(key);
  t.is(after.logEndOffset(), 1);
  t.is((await after.read(0, 1 << 20, 10)).length, 1);
  await after.append([batchAt(1, 'd')]);
  t.is(after.logEndOffset(), 2, 'the log continues where the power loss left it');
});

test('a process restart keeps unsynced appends; a flush or a later synced write makes them durable', async (t) => {
  const disk = new MemoryDisk();
  const storage = createMemoryNodeStorage(disk);
  const p = await storage.openPartition(key);
  await p.append([batchAt(0, 'a')]);
  await storage.close();
  t.is((await createMemoryNodeStorage(disk).openPartition(key)).logEndOffset(), 1, 'a process crash keeps what the OS holds');
  disk.flush();
  t.deepEqual(disk.powerLoss(), []);
  const again = createMemoryNodeStorage(disk);
  const q = await again.openPartition(key);
  await q.append([batchAt(1, 'b')]);
  await again.raftLog.saveState({ term: 2, votedFor: 1 }, { sync: true });
  t.deepEqual(disk.powerLoss(), [], "Raft's synced write flushed the append before it");
  t.is((await createMemoryNodeStorage(disk).openPartition(key)).logEndOffset(), 2);
  t.deepEqual(disk.raft.state, { term: 2, votedFor: 1 });
});

test('unsynced Raft writes and retention are undone too', async (t) => {
  const disk = new MemoryDisk();
  const storage = createMemoryNodeStorage(disk);
  await storage.raftLog.saveState({ term: 1, votedFor: null }, { sync: true });
  await storage.raftLog.append([{ index: 1, term: 1, payload: new Uint8Array([1]) }], { sync: true });
  const p = await storage.openPartition(key);
  await p.append([batchAt(0, 'a'), batchAt(1, 'b')], { sync: true });
  await storage.raftLog.saveState({ term: 3, votedFor: 2 });
  await storage.raftLog.append([{ index: 2, term: 3, payload: new Uint8Array([2]) }]);
  await p.applyRetention({ retentionMs: -1, retentionBytes: 1, nowMs: 0 });
  t.is(p.logStartOffset(), 1);
  disk.powerLoss();
  const reopened = createMemoryNodeStorage(disk);
  t.deepEqual(reopened.raftLog.loadState(), { term: 1, votedFor: null });
  t.is(reopened.raftLog.lastIndex(), 1);
  t.is((await reopened.openPartition(key)).logStartOffset(), 0, 'the deleted batch came back');
});

test('the memory store says whether the last storage on its disk was closed (NodeStorage.uncleanShutdown)', async (t) => {
  const disk = new MemoryDisk();
  const first = createMemoryNodeStorage(disk);
  t.false(first.uncleanShutdown, 'a new disk');
  await first.close();
  const second = createMemoryNodeStorage(disk);
  t.false(second.uncleanShutdown, 'closed cleanly');
  // The process dies without closing `second`.
  const third = createMemoryNodeStorage(disk);
  t.true(third.uncleanShutdown);
  // It closes cleanly before its broker could report the unclean shutdown: the next one must.
  await third.close();
  const fourth = createMemoryNodeStorage(disk);
  t.true(fourth.uncleanShutdown, 'not reported yet');
  fourth.uncleanShutdownReported();
  await fourth.close();
  t.false(createMemoryNodeStorage(disk).uncleanShutdown, 'reported, then closed cleanly');
});
