/**
 * The Raft store contract against both implementations (NodeStorage.raftLog in memory and in
 * RocksDB, "reopen" = close and open the same data), a kill-free RocksDB voter that restarts from
 * disk, and the wire codec of Raft messages.
 */
import { encode } from '@msgpack/msgpack';
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { TidemarkError } from '../src/protocol/errors.js';
import { systemClock } from '../src/runtime/ports.js';
import { APPEND_ENTRIES_WIRE_MAX, decodeRaftMessage, encodeRaftMessage, type RaftMessage } from '../src/quorum/messages.js';
import { startRaftNode } from '../src/quorum/raft-node.js';
import type { LogEntry, RaftStore, WithRaftLog } from '../src/quorum/raft-store.js';
import { raftSubject } from '../src/protocol/subjects.js';
import { createMemoryNodeStorage, MemoryDisk } from '../src/storage/memory-storage.js';
import type { NodeStorage } from '../src/storage/partition-store.js';
import { openRocksNodeStorage } from '../src/storage/rocksdb-storage.js';
import { bytes } from './helpers/sim-cluster.js';
import { seededRandom, SimClock, SimNetwork } from './helpers/sim-network.js';

type Storage = NodeStorage & WithRaftLog;

interface Env {
  storage: Storage;
  reopen(): Promise<Storage>;
}

const backends = [
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
      const dir = await mkdtemp(join(tmpdir(), 'tidemark-raft-'));
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

const entry = (index: number, term: number, text = `e${index}`): LogEntry => ({ index, term, payload: bytes(text) });
const brief = (entries: readonly LogEntry[]) => entries.map((e) => `${e.index}/${e.term}/${new TextDecoder().decode(e.payload)}`);

contract('a new store is empty: term 0, no vote, index 0 has term 0', async (t, { storage }) => {
  const log = storage.raftLog;
  t.deepEqual(log.loadState(), { term: 0, votedFor: null });
  t.is(log.lastIndex(), 0);
  t.is(log.termAt(0), 0);
  t.is(log.termAt(1), undefined);
  t.deepEqual(await log.entries(1, 10), []);
});

contract('state, entries and term starts survive a reopen', async (t, env) => {
  let log: RaftStore = env.storage.raftLog;
  await log.saveState({ term: 3, votedFor: 2 }, { sync: true });
  await log.append([entry(1, 1), entry(2, 1), entry(3, 3)], { sync: true });
  await log.append([entry(4, 3, ''), entry(5, 4)], { sync: true });
  log = (await env.reopen()).raftLog;
  t.deepEqual(log.loadState(), { term: 3, votedFor: 2 });
  t.is(log.lastIndex(), 5);
  t.deepEqual(log.view().starts, [
    { term: 1, index: 1 },
    { term: 3, index: 3 },
    { term: 4, index: 5 },
  ]);
  t.deepEqual([1, 2, 3, 4, 5].map((i) => log.termAt(i)), [1, 1, 3, 3, 4]);
  t.deepEqual(brief(await log.entries(2, 3)), ['2/1/e2', '3/3/e3', '4/3/']);
  await log.saveState({ term: 5, votedFor: null }, { sync: true });
  t.deepEqual((await env.reopen()).raftLog.loadState(), { term: 5, votedFor: null });
});

contract('entries() is bounded by count and bytes, but always returns the first entry', async (t, { storage }) => {
  const log = storage.raftLog;
  await log.append([entry(1, 1, 'aaaa'), entry(2, 1, 'bbbb'), entry(3, 1, 'cccc')]);
  t.deepEqual(brief(await log.entries(1, 2)), ['1/1/aaaa', '2/1/bbbb']);
  t.deepEqual(brief(await log.entries(1, 10, 8)), ['1/1/aaaa', '2/1/bbbb']);
  t.deepEqual(brief(await log.entries(2, 10, 1)), ['2/1/bbbb']);
  t.deepEqual(await log.entries(4, 10), []);
});

contract('truncateFrom() removes the suffix and its term starts, durably', async (t, env) => {
  let log = env.storage.raftLog;
  await log.append([entry(1, 1), entry(2, 2), entry(3, 2), entry(4, 3)]);
  await log.truncateFrom(3);
  t.is(log.lastIndex(), 2);
  t.is(log.termAt(3), undefined);
  await log.truncateFrom(9);
  await log.append([entry(3, 4, 'new')]);
  log = (await env.reopen()).raftLog;
  t.deepEqual(brief(await log.entries(1, 10)), ['1/1/e1', '2/2/e2', '3/4/new']);
  t.deepEqual(log.view().starts, [
    { term: 1, index: 1 },
    { term: 2, index: 2 },
    { term: 4, index: 3 },
  ]);
});

contract('an append that does not continue the log, or lowers the term, is refused and writes nothing', async (t, env) => {
  const log = env.storage.raftLog;
  await log.append([entry(1, 2)]);
  await t.throwsAsync(log.append([entry(3, 2)]));
  await t.throwsAsync(log.append([entry(2, 1)]));
  await t.throwsAsync(log.append([entry(2, 0)]));
  t.is(log.lastIndex(), 1);
  t.is((await env.reopen()).raftLog.lastIndex(), 1);
});

contract('after close() every call rejects SHUTTING_DOWN', async (t, env) => {
  const log = env.storage.raftLog;
  await env.storage.close();
  await t.throwsAsync(log.append([entry(1, 1)]), { instanceOf: TidemarkError, message: /closed/ });
  await t.throwsAsync(log.saveState({ term: 1, votedFor: 1 }), { instanceOf: TidemarkError });
  env.storage = await env.reopen();
});

test('a single voter on RocksDB commits, restarts from disk and delivers its log again (real clock)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-raft-node-'));
  const net = new SimNetwork(new SimClock(), seededRandom(1));
  const start = (storage: Storage, seen: LogEntry[]) =>
    startRaftNode({
      voterId: 1,
      voters: [1],
      subjectPrefix: 'tm.disk',
      transport: net.transport(1),
      store: storage.raftLog,
      clock: systemClock,
      random: seededRandom(2),
      logger: pino({ level: 'silent' }),
      onCommit: (entries) => seen.push(...entries),
    });
  try {
    let storage: Storage = await openRocksNodeStorage(dir);
    let seen: LogEntry[] = [];
    let node = start(storage, seen);
    t.is(await node.waitForLeader(), 1);
    t.deepEqual(await node.propose([bytes('x'), bytes('y')]), { index: 3, term: 1 });
    await node.stop();
    await storage.close();

    storage = await openRocksNodeStorage(dir);
    t.deepEqual(storage.raftLog.loadState(), { term: 1, votedFor: 1 });
    seen = [];
    node = start(storage, seen);
    await node.waitForLeader();
    t.deepEqual(await node.propose([bytes('z')]), { index: 5, term: 2 });
    t.deepEqual(brief(seen), ['1/1/', '2/1/x', '3/1/y', '4/2/', '5/2/z']);
    await node.stop();
    await storage.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('raft messages round-trip through msgpack', (t) => {
  const messages: RaftMessage[] = [
    { type: 'preVote', from: 1, term: 4, lastLogIndex: 9, lastLogTerm: 3 },
    { type: 'preVoteReply', from: 2, term: 4, granted: true },
    { type: 'vote', from: 1, term: 4, lastLogIndex: 9, lastLogTerm: 3 },
    { type: 'voteReply', from: 2, term: 4, granted: false },
    { type: 'append', from: 1, term: 4, prevLogIndex: 9, prevLogTerm: 3, entries: [{ term: 4, payload: bytes('p') }], leaderCommit: 8 },
    { type: 'appendReply', from: 2, term: 4, success: false, matchIndex: 0, hintIndex: 7 },
  ];
  for (const m of messages) t.deepEqual(decodeRaftMessage(encodeRaftMessage(m)), m);
  t.is(raftSubject('tm.prod', 3), 'tm.prod.raft.3');
});

test('malformed raft messages are refused with INVALID_REQUEST before they reach a voter', (t) => {
  const base = { type: 'append', from: 1, term: 4, prevLogIndex: 2, prevLogTerm: 3, entries: [], leaderCommit: 0 };
  const bad: unknown[] = [
    { ...base, type: 'installSnapshot' },
    { ...base, term: -1 },
    { ...base, from: 2 ** 31 },
    { ...base, prevLogTerm: 5 },
    { ...base, prevLogIndex: 0 },
    { ...base, entries: [{ term: 2, payload: bytes('older than prevLogTerm') }] },
    { ...base, entries: [{ term: 5, payload: bytes('newer than the leader') }] },
    { ...base, entries: [{ term: 4, payload: 'not binary' }] },
    { ...base, entries: Array.from({ length: APPEND_ENTRIES_WIRE_MAX + 1 }, () => ({ term: 4, payload: bytes('') })) },
    { type: 'voteReply', from: 1, term: 1 },
    [1, 2, 3],
  ];
  for (const value of bad) t.throws(() => decodeRaftMessage(encode(value)), { instanceOf: TidemarkError, message: /./ }, JSON.stringify(value).slice(0, 80));
  t.throws(() => decodeRaftMessage(new Uint8Array([0xc1])), { instanceOf: TidemarkError });
});
