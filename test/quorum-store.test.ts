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

contract('saveSnapshot drops the entries it covers and keeps the ones after it; snapshot, base and tail survive a reopen', async (t, env) => {
  let log = env.storage.raftLog;
  t.is(log.loadSnapshot(), undefined);
  await log.append([entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2), entry(5, 3), entry(6, 3)], { sync: true });
  const data = bytes('state after 4');
  await log.saveSnapshot({ index: 4, term: 2, data }, { sync: true });
  data.fill(0);
  const check = async (label: string) => {
    const snapshot = log.loadSnapshot();
    t.deepEqual(snapshot && { ...snapshot, data: new TextDecoder().decode(snapshot.data) }, { index: 4, term: 2, data: 'state after 4' }, label);
    t.deepEqual(log.view(), { lastIndex: 6, starts: [{ term: 3, index: 5 }], snapshotIndex: 4, snapshotTerm: 2 }, label);
    t.deepEqual([3, 4, 5, 6].map((i) => log.termAt(i)), [undefined, 2, 3, 3], label);
    t.deepEqual(await log.entries(1, 10), [], `${label}: nothing at or below the snapshot`);
    t.deepEqual(await log.entries(4, 10), [], label);
    t.deepEqual(brief(await log.entries(5, 10)), ['5/3/e5', '6/3/e6'], label);
  };
  await check('live');
  log = (await env.reopen()).raftLog;
  await check('reopened');
  // The log goes on after it: truncation above the base, appends, a later snapshot of the whole log.
  await log.truncateFrom(6);
  await log.append([entry(6, 4), entry(7, 4)], { sync: true });
  await log.saveSnapshot({ index: 7, term: 4, data: bytes('state after 7') }, { sync: true });
  log = (await env.reopen()).raftLog;
  t.deepEqual(log.view(), { lastIndex: 7, starts: [], snapshotIndex: 7, snapshotTerm: 4 });
  t.is(new TextDecoder().decode(log.loadSnapshot()!.data), 'state after 7');
  await log.append([entry(8, 4), entry(9, 5)]);
  log = (await env.reopen()).raftLog;
  t.deepEqual(log.view(), { lastIndex: 9, starts: [{ term: 5, index: 9 }], snapshotIndex: 7, snapshotTerm: 4 });
  t.deepEqual(brief(await log.entries(8, 10)), ['8/4/e8', '9/5/e9']);
});

contract('a snapshot the log does not hold (another term there, or past its end) replaces the whole log; an older one is ignored', async (t, env) => {
  let log = env.storage.raftLog;
  await log.append([entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)], { sync: true });
  await log.saveSnapshot({ index: 3, term: 3, data: bytes('leader says 3/3') }, { sync: true });
  t.deepEqual(log.view(), { lastIndex: 3, starts: [], snapshotIndex: 3, snapshotTerm: 3 });
  t.deepEqual(await log.entries(4, 10), [], 'the conflicting suffix is gone too');
  await log.saveSnapshot({ index: 10, term: 5, data: bytes('far ahead') }, { sync: true });
  await log.saveSnapshot({ index: 8, term: 5, data: bytes('older') }, { sync: true });
  log = (await env.reopen()).raftLog;
  t.deepEqual(log.view(), { lastIndex: 10, starts: [], snapshotIndex: 10, snapshotTerm: 5 });
  t.is(new TextDecoder().decode(log.loadSnapshot()!.data), 'far ahead');
  await t.throwsAsync(log.append([entry(10, 5)]), undefined, 'appends continue after the snapshot');
  await log.append([entry(11, 6)]);
  t.is((await env.reopen()).raftLog.termAt(11), 6);
});

contract('after close() every call rejects SHUTTING_DOWN', async (t, env) => {
  const log = env.storage.raftLog;
  await env.storage.close();
  await t.throwsAsync(log.append([entry(1, 1)]), { instanceOf: TidemarkError, message: /closed/ });
  await t.throwsAsync(log.saveState({ term: 1, votedFor: 1 }), { instanceOf: TidemarkError });
  await t.throwsAsync(log.saveSnapshot({ index: 1, term: 1, data: bytes('s') }), { instanceOf: TidemarkError });
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

test('a single voter on RocksDB with a state machine compacts its log and restarts from snapshot + tail (real clock)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-raft-snap-'));
  const net = new SimNetwork(new SimClock(), seededRandom(1));
  /** The state machine: every entry applied, as `index/payload`. */
  const start = (storage: Storage, state: string[], installs: number[]) =>
    startRaftNode({
      voterId: 1,
      voters: [1],
      subjectPrefix: 'tm.disk',
      transport: net.transport(1),
      store: storage.raftLog,
      clock: systemClock,
      random: seededRandom(2),
      logger: pino({ level: 'silent' }),
      limits: { snapshotEveryEntries: 5 },
      onCommit: (entries) => state.push(...entries.map((e) => `${e.index}/${new TextDecoder().decode(e.payload)}`)),
      stateMachine: {
        snapshot: () => ({ index: state.length, data: bytes(JSON.stringify(state)) }),
        install: (index, data) => {
          installs.push(index);
          state.splice(0, state.length, ...(JSON.parse(new TextDecoder().decode(data)) as string[]));
        },
      },
    });
  const until = async (done: () => boolean) => {
    for (let i = 0; i < 200 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  };
  try {
    let storage: Storage = await openRocksNodeStorage(dir);
    const before: string[] = [];
    let node = start(storage, before, []);
    await node.waitForLeader();
    for (let i = 0; i < 12; i++) await node.propose([bytes(`p${i}`)]);
    const log = storage.raftLog;
    await until(() => log.view().snapshotIndex === 10);
    t.is(log.view().snapshotIndex, 10, 'snapshots at 5 and 10 applied entries');
    t.deepEqual(brief(await log.entries(1, 100)), [], 'the entries they cover are gone');
    t.deepEqual(brief(await log.entries(11, 100)), ['11/1/p9', '12/1/p10', '13/1/p11']);
    await node.stop();
    await storage.close();

    storage = await openRocksNodeStorage(dir);
    const after: string[] = [];
    const installs: number[] = [];
    node = start(storage, after, installs);
    t.deepEqual(installs, [10], 'the stored snapshot is installed before anything else');
    t.deepEqual(after, before.slice(0, 10));
    await node.waitForLeader();
    t.deepEqual(await node.propose([bytes('z')]), { index: 15, term: 2 });
    t.deepEqual(after, [...before, '14/', '15/z'], 'snapshot + the log after it = the state before the restart');
    t.is(node.status().snapshotIndex, 10);
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
    { type: 'installSnapshot', from: 1, term: 4, lastIncludedIndex: 900, lastIncludedTerm: 3, offset: 512, data: bytes('chunk'), done: false },
    { type: 'snapshotReply', from: 2, term: 4, lastIncludedIndex: 900, offset: 517 },
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
    { type: 'installSnapshot', from: 1, term: 4, lastIncludedIndex: 9, lastIncludedTerm: 5, offset: 0, data: bytes(''), done: true },
    { type: 'installSnapshot', from: 1, term: 4, lastIncludedIndex: 0, lastIncludedTerm: 0, offset: 0, data: bytes(''), done: true },
    { type: 'installSnapshot', from: 1, term: 4, lastIncludedIndex: 9, lastIncludedTerm: 3, offset: -1, data: bytes(''), done: true },
    { type: 'installSnapshot', from: 1, term: 4, lastIncludedIndex: 9, lastIncludedTerm: 3, offset: 0, data: 'text', done: true },
    { type: 'snapshotReply', from: 2, term: 4, lastIncludedIndex: 9 },
    [1, 2, 3],
  ];
  for (const value of bad) t.throws(() => decodeRaftMessage(encode(value)), { instanceOf: TidemarkError, message: /./ }, JSON.stringify(value).slice(0, 80));
  t.throws(() => decodeRaftMessage(new Uint8Array([0xc1])), { instanceOf: TidemarkError });
});
