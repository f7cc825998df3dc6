/**
 * Push or pull replication over NATS, measured side by side (docs/decisions.md, "Replication:
 * pull"). Both modes copy 1 KiB batches from a leader to two followers through a real nats-server
 * and append them to real RocksDB (fsynced: flush.mode=fsync); the leader's "high watermark" is the
 * smallest follower log end it has been told. What differs is only the messaging pattern:
 *
 * - pull: each follower long-polls `fetch` with its log end; the leader answers with everything
 *   past it (up to 1 MiB) as soon as it has some, or parks the request; the next fetch acknowledges.
 * - push: the leader publishes each batch to the followers as it is appended; a follower appends
 *   what arrived (group commit), fsyncs, and publishes its log end back.
 *
 * Followers run in child processes (one per follower) so the leader, the followers and the
 * nats-server compete for the CPU as a cluster does. Reported: commit latency (append -> HW passes
 * it) at a fixed offered load, and throughput with a bounded window of uncommitted batches.
 *
 *   npm run bench:replication-modes -- [--rate 2000] [--seconds 4] [--records 50000] [--rounds 3]
 */
import { decode, encode } from '@msgpack/msgpack';
import { fork } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { encodeBatch, readBatchHeader, stampBatch } from '../src/protocol/batch.js';
import { connectNats, type NatsTransport } from '../src/runtime/nats-transport.js';
import { openRocksNodeStorage } from '../src/storage/rocksdb-storage.js';
import { median, startNatsServer, table } from './harness.js';
import { Histogram } from './hdr.js';

type Mode = 'pull' | 'push';
const FOLLOWERS = 2;
/** A fetch reply stays under NATS max_payload (1 MiB) with room for its envelope. */
const FETCH_BYTES_MAX = 1024 * 1024 - 64 * 1024;
const FETCH_WAIT_MS = 500;
/** Uncommitted batches the throughput run allows at once. */
const WINDOW = 2000;

// ---- follower (child process) -------------------------------------------------------------------

async function follower(mode: Mode, url: string, id: number, dataDir: string): Promise<void> {
  const nats = await connectNats({ servers: url, name: `follower-${id}` });
  const storage = await openRocksNodeStorage(dataDir);
  const store = await storage.openPartition({ topicId: 'ab'.repeat(16), partition: 0 });
  let stopped = false;
  process.on('message', async () => {
    stopped = true;
    await storage.close();
    await nats.close();
    process.exit(0);
  });
  const appendAll = async (batches: Uint8Array[]) => {
    await store.append(batches);
    await store.append([], { sync: true });
  };
  if (mode === 'pull') {
    while (!stopped) {
      try {
        const reply = decode(await nats.request('m.fetch', encode({ id, offset: store.logEndOffset() }), FETCH_WAIT_MS + 2000)) as { batches: Uint8Array[] };
        if (reply.batches.length > 0) await appendAll(reply.batches);
      } catch {
        if (stopped) return;
      }
    }
    return;
  }
  // push: batches arrive in order on one subject; whatever queued during a write goes in the next.
  let queue: Uint8Array[] = [];
  let writing = false;
  const pump = async () => {
    if (writing) return;
    writing = true;
    while (queue.length > 0) {
      const group = queue;
      queue = [];
      const next = store.logEndOffset();
      const fresh = group.filter((b) => readBatchHeader(b).baseOffset >= next);
      if (fresh.length > 0 && readBatchHeader(fresh[0]!).baseOffset === next) await appendAll(fresh);
      nats.publish('m.ack', encode({ id, end: store.logEndOffset() }));
    }
    writing = false;
  };
  nats.subscribe('m.data', (msg) => {
    queue.push(msg.data);
    void pump();
  });
  nats.publish('m.ack', encode({ id, end: store.logEndOffset() }));
}

// ---- leader (this process) ----------------------------------------------------------------------

interface Leader {
  append(batch: Uint8Array): Promise<void>;
  /** Every follower has reported once (push: subscribed; pull: fetching). */
  ready(): boolean;
  close(): void;
}

function leader(mode: Mode, nats: NatsTransport): Leader {
  const log: Uint8Array[] = [];
  const ends = new Map<number, number>();
  const commits: Array<{ end: number; resolve: () => void }> = [];
  let parked: Array<{ offset: number; respond: (data: Uint8Array) => void }> = [];
  const advance = () => {
    if (ends.size < FOLLOWERS) return;
    const hw = Math.min(...ends.values());
    while (commits.length > 0 && commits[0]!.end <= hw) commits.shift()!.resolve();
  };
  const answer = (offset: number, respond: (data: Uint8Array) => void) => {
    const batches: Uint8Array[] = [];
    let bytes = 0;
    for (let i = offset; i < log.length && (batches.length === 0 || bytes + log[i]!.length <= FETCH_BYTES_MAX); i++) {
      batches.push(log[i]!);
      bytes += log[i]!.length;
    }
    respond(encode({ batches }));
  };
  const subs =
    mode === 'pull'
      ? [
          nats.subscribe('m.fetch', (msg) => {
            const { id, offset } = decode(msg.data) as { id: number; offset: number };
            ends.set(id, offset);
            advance();
            if (offset < log.length) answer(offset, (d) => msg.respond(d));
            else parked.push({ offset, respond: (d) => msg.respond(d) });
          }),
        ]
      : [
          nats.subscribe('m.ack', (msg) => {
            const { id, end } = decode(msg.data) as { id: number; end: number };
            ends.set(id, Math.max(end, ends.get(id) ?? 0));
            advance();
          }),
        ];
  return {
    append(batch) {
      const offset = log.length;
      stampBatch(batch, offset, 0);
      log.push(batch);
      const committed = new Promise<void>((resolve) => commits.push({ end: offset + 1, resolve }));
      if (mode === 'push') nats.publish('m.data', batch);
      else {
        const waiting = parked;
        parked = [];
        for (const p of waiting) answer(p.offset, p.respond);
      }
      return committed;
    },
    ready: () => ends.size === FOLLOWERS,
    close() {
      for (const s of subs) s.unsubscribe();
    },
  };
}

async function runMode(mode: Mode, url: string, options: { rate: number; seconds: number; records: number }) {
  const dirs = await Promise.all(Array.from({ length: FOLLOWERS }, () => mkdtemp(join(tmpdir(), 'tm-modes-'))));
  const children = dirs.map((dir, i) => fork(new URL(import.meta.url).pathname, ['--follower', mode, url, String(i + 1), dir], { stdio: 'inherit' }));
  const nats = await connectNats({ servers: url, name: 'leader' });
  const l = leader(mode, nats);
  try {
    const value = new Uint8Array(1024);
    const batch = () => encodeBatch([{ key: null, value, headers: {}, timestamp: 1 }]);
    // Both followers subscribed (push loses what is published before; pull would just wait), then warm up.
    for (let i = 0; i < 500 && !l.ready(); i++) await new Promise((r) => setTimeout(r, 20));
    if (!l.ready()) throw new Error(`${mode}: followers did not report within 10 s`);
    for (let i = 0; i < 200; i++) await l.append(batch());
    // Latency at a fixed offered load.
    const lat = new Histogram();
    const pending: Promise<void>[] = [];
    const total = options.rate * options.seconds;
    const t0 = performance.now();
    for (let i = 0; i < total; i++) {
      const due = t0 + (i * 1000) / options.rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const s = performance.now();
      pending.push(l.append(batch()).then(() => lat.recordMs(performance.now() - s)));
    }
    await Promise.all(pending);
    // Throughput with a window of uncommitted batches.
    const start = performance.now();
    const inflight = new Set<Promise<void>>();
    for (let i = 0; i < options.records; i++) {
      if (inflight.size >= WINDOW) await Promise.race(inflight);
      const p = l.append(batch()).then(() => void inflight.delete(p));
      inflight.add(p);
    }
    await Promise.all(inflight);
    const perSecond = options.records / ((performance.now() - start) / 1000);
    return { p50: lat.percentileMs(50), p99: lat.percentileMs(99), perSecond };
  } finally {
    l.close();
    await nats.close();
    await Promise.all(children.map((c) => new Promise((r) => { c.once('exit', r); c.send('stop'); })));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  }
}

async function main(): Promise<void> {
  if (process.argv[2] === '--follower') {
    const [, , , mode, url, id, dir] = process.argv;
    await follower(mode as Mode, url!, Number(id), dir!);
    return;
  }
  const { values } = parseArgs({
    options: { rate: { type: 'string', default: '2000' }, seconds: { type: 'string', default: '4' }, records: { type: 'string', default: '50000' }, rounds: { type: 'string', default: '3' } },
  });
  const options = { rate: Number(values.rate), seconds: Number(values.seconds), records: Number(values.records) };
  const nats = await startNatsServer();
  const results: Record<Mode, Array<{ p50: number; p99: number; perSecond: number }>> = { pull: [], push: [] };
  try {
    for (let round = 1; round <= Number(values.rounds); round++) {
      for (const mode of ['pull', 'push'] as const) {
        const r = await runMode(mode, nats.url, options);
        results[mode].push(r);
        console.error(`round ${round} ${mode}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms @${options.rate}/s; ${r.perSecond.toFixed(0)} batches/s`);
      }
    }
  } finally {
    await nats.stop();
  }
  console.log(
    table(
      (['pull', 'push'] as const).map((mode) => ({
        mode,
        [`p50 ms @${options.rate}/s`]: median(results[mode].map((r) => r.p50)).toFixed(2),
        [`p99 ms @${options.rate}/s`]: median(results[mode].map((r) => r.p99)).toFixed(2),
        'batches/s (1 KiB, window 2000)': median(results[mode].map((r) => r.perSecond)).toFixed(0),
      })),
    ),
  );
}

await main();
