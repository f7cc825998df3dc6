/**
 * Compares the two RocksDB bindings on Tidemark's storage key layout (see docs/storage.md):
 * appends of 100 x 1 KiB-record batches, each one WriteBatch of {batch value, partition meta},
 * then a sequential read of the partition after a reopen. Median of RUNS runs, bindings
 * interleaved (and alternating which goes first) so machine noise hits both.
 *
 * Each run is its own child process: the two addons each bundle RocksDB and its compression
 * libraries, and loading both into one process corrupted ZSTD blocks / segfaulted when tried.
 *
 * Only one binding is a dependency; the other is measured when present, e.g. after
 * `npm install --no-save rocksdb`. A binding that is not installed is reported and skipped.
 *
 *   npx tsc -p . && node dist/bench/storage-bindings.js [batches-per-run]
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeBatch, stampBatch, type BatchRecord } from '../src/protocol/batch.js';

const RUNS = 5;
const RECORDS_PER_BATCH = 100;
const RECORD_BYTES = 1024;
const BATCHES = Number(process.argv[process.argv[2] === '--child' ? 4 : 2] ?? 400);
const SYNC_BATCHES = Math.max(20, Math.floor(BATCHES / 10));
const READ_AHEAD_BYTES = 1 << 20;
const CONCURRENT_PARTITIONS = 8;

type Op = { type: 'put'; key: Buffer; value: Buffer };

/** The least both bindings have in common, promise-shaped. */
interface BenchDb {
  write(ops: Op[], sync: boolean): Promise<void>;
  /** Visits every value in [gte, lt) in key order; returns how many bytes were read. */
  scan(gte: Buffer, lt: Buffer): Promise<number>;
  close(): Promise<void>;
}

interface Binding {
  open(dir: string): Promise<BenchDb>;
}

type Cb = (err?: Error | null) => void;
interface LevelDown {
  open(options: { createIfMissing: boolean }, cb: Cb): void;
  close(cb: Cb): void;
  batch(ops: Op[], options: { sync: boolean }, cb: Cb): void;
  iterator(options: { gte: Buffer; lt: Buffer; keys: boolean; highWaterMark: number }): {
    next(cb: (err: Error | null | undefined, key?: Buffer, value?: Buffer) => void): void;
    end(cb: Cb): void;
  };
}

interface RocksLevelLike {
  open(options?: { walCompression?: boolean }): Promise<void>;
  close(): Promise<void>;
  batch(ops: Op[], options: { sync: boolean }): Promise<void>;
  iterator(options: { gte: Buffer; lt: Buffer; keys: boolean; highWaterMarkBytes: number }): {
    nextv(n: number): Promise<Array<[Buffer | undefined, Buffer]>>;
    close(): Promise<void>;
  };
}

const require = createRequire(import.meta.url);

function tryRequire(name: string): unknown {
  try {
    const mod: unknown = require(name);
    return mod;
  } catch {
    return undefined;
  }
}

function cbPromise(fn: (cb: Cb) => void): Promise<void> {
  return new Promise((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));
}

function levelBinding(): Binding | undefined {
  const factory = tryRequire('rocksdb') as ((location: string) => LevelDown) | undefined;
  if (factory === undefined) return undefined;
  return {
    async open(dir) {
      const db = factory(dir);
      await cbPromise((cb) => db.open({ createIfMissing: true }, cb));
      return {
        write: (ops, sync) => cbPromise((cb) => db.batch(ops, { sync }, cb)),
        async scan(gte, lt) {
          const it = db.iterator({ gte, lt, keys: false, highWaterMark: READ_AHEAD_BYTES });
          let bytes = 0;
          for (;;) {
            const value = await new Promise<Buffer | undefined>((resolve, reject) =>
              it.next((err, _key, v) => (err ? reject(err) : resolve(v))),
            );
            if (value === undefined) break;
            bytes += value.length;
          }
          await cbPromise((cb) => it.end(cb));
          return bytes;
        },
        close: () => cbPromise((cb) => db.close(cb)),
      };
    },
  };
}

function nxteditionBinding(walCompression: boolean): Binding | undefined {
  const mod = tryRequire('@nxtedition/rocksdb') as
    | { RocksLevel: new (location: string, options: { keyEncoding: 'buffer'; valueEncoding: 'buffer' }) => RocksLevelLike }
    | undefined;
  if (mod === undefined) return undefined;
  return {
    async open(dir) {
      const db = new mod.RocksLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      await db.open({ walCompression });
      return {
        write: (ops, sync) => db.batch(ops, { sync }),
        async scan(gte, lt) {
          const it = db.iterator({ gte, lt, keys: false, highWaterMarkBytes: READ_AHEAD_BYTES });
          let bytes = 0;
          for (;;) {
            const rows = await it.nextv(1000);
            if (rows.length === 0) break;
            for (const [, v] of rows) bytes += v.length;
          }
          await it.close();
          return bytes;
        },
        close: () => db.close(),
      };
    },
  };
}

// The storage layout: tag, topicId (16 bytes), partition u32 BE, then base offset u64 BE for batches.
const TOPIC_ID = randomBytes(16);
function batchKey(partition: number, offset: number): Buffer {
  const k = Buffer.alloc(29);
  k[0] = 0x01;
  TOPIC_ID.copy(k, 1);
  k.writeUInt32BE(partition, 17);
  k.writeBigUInt64BE(BigInt(offset), 21);
  return k;
}
function metaKey(partition: number): Buffer {
  const k = Buffer.alloc(21);
  k[0] = 0x03;
  TOPIC_ID.copy(k, 1);
  k.writeUInt32BE(partition, 17);
  return k;
}

// Distinct random payloads so neither compression nor the block cache flatters anyone.
const TEMPLATES = Array.from({ length: 16 }, () => {
  const records: BatchRecord[] = Array.from({ length: RECORDS_PER_BATCH }, (_, i) => ({
    key: null,
    value: randomBytes(RECORD_BYTES),
    headers: {},
    timestamp: 1_700_000_000_000 + i,
  }));
  return encodeBatch(records);
});

interface Sample {
  appendRecordsPerSec: number;
  appendMBPerSec: number;
  appendBlockedUs: number;
  syncAppendsPerSec: number;
  concurrentSyncAppendsPerSec: number;
  readRecordsPerSec: number;
  readMBPerSec: number;
}

async function appendPhase(db: BenchDb, partition: number, batches: number, sync: boolean, firstOffset: number) {
  let bytes = 0;
  let offset = firstOffset;
  let size = 0;
  // Time spent inside the write call itself is time the event loop cannot serve anyone else.
  let blockedNs = 0n;
  const start = process.hrtime.bigint();
  for (let i = 0; i < batches; i++) {
    const value = Buffer.from(TEMPLATES[i % TEMPLATES.length]!);
    stampBatch(value, offset, 1);
    size += value.length;
    const meta = Buffer.alloc(16);
    meta.writeBigUInt64BE(0n, 0);
    meta.writeBigUInt64BE(BigInt(size), 8);
    const t0 = process.hrtime.bigint();
    const written = db.write(
      [
        { type: 'put', key: batchKey(partition, offset), value },
        { type: 'put', key: metaKey(partition), value: meta },
      ],
      sync,
    );
    blockedNs += process.hrtime.bigint() - t0;
    await written;
    bytes += value.length;
    offset += RECORDS_PER_BATCH;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { seconds, bytes, offset, blockedUsPerAppend: Number(blockedNs) / 1e3 / batches };
}

async function runOnce(binding: Binding): Promise<Sample> {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-'));
  try {
    let db = await binding.open(dir);
    const append = await appendPhase(db, 0, BATCHES, false, 0);
    const synced = await appendPhase(db, 0, SYNC_BATCHES, true, append.offset);
    // Partitions append independently; a binding that writes off the JS thread lets RocksDB
    // group-commit their WAL syncs.
    const t0 = process.hrtime.bigint();
    const perPartition = Math.ceil(SYNC_BATCHES / CONCURRENT_PARTITIONS) * 2;
    await Promise.all(
      Array.from({ length: CONCURRENT_PARTITIONS }, (_, i) => appendPhase(db, i + 1, perPartition, true, 0)),
    );
    const concurrentSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    await db.close();
    db = await binding.open(dir);
    const start = process.hrtime.bigint();
    const readBytes = await db.scan(batchKey(0, 0), batchKey(0, Number.MAX_SAFE_INTEGER));
    const readSeconds = Number(process.hrtime.bigint() - start) / 1e9;
    await db.close();
    const records = BATCHES * RECORDS_PER_BATCH;
    const totalRecords = records + SYNC_BATCHES * RECORDS_PER_BATCH;
    return {
      appendRecordsPerSec: records / append.seconds,
      appendMBPerSec: append.bytes / 1e6 / append.seconds,
      appendBlockedUs: append.blockedUsPerAppend,
      syncAppendsPerSec: SYNC_BATCHES / synced.seconds,
      concurrentSyncAppendsPerSec: (perPartition * CONCURRENT_PARTITIONS) / concurrentSeconds,
      readRecordsPerSec: totalRecords / readSeconds,
      readMBPerSec: readBytes / 1e6 / readSeconds,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

// Variant ids are `package` or `package#tweak`.
const BINDINGS: Record<string, () => Binding | undefined> = {
  rocksdb: levelBinding,
  '@nxtedition/rocksdb': () => nxteditionBinding(true),
  '@nxtedition/rocksdb#nowalzstd': () => nxteditionBinding(false),
};
const NAMES: Record<string, string> = {
  rocksdb: 'rocksdb 5.2.1 (RocksDB 6.17), defaults',
  '@nxtedition/rocksdb': '@nxtedition/rocksdb 12 (RocksDB 9), defaults (WAL zstd)',
  '@nxtedition/rocksdb#nowalzstd': '@nxtedition/rocksdb 12 (RocksDB 9), walCompression: false',
};

function runChild(pkg: string): Promise<Sample> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [fileURLToPath(import.meta.url), '--child', pkg, String(BATCHES)],
      { maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${pkg} run failed: ${err.message}\n${stderr}`));
        else resolve(JSON.parse(stdout.trim().split('\n').at(-1)!) as Sample);
      },
    );
  });
}

function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const pkgs = Object.keys(BINDINGS).filter((pkg) => {
    if (installed(pkg.split('#')[0]!)) return true;
    console.log(`(${pkg} is not installed: skipped; npm install --no-save ${pkg} to compare)`);
    return false;
  });
  const samples = new Map<string, Sample[]>(pkgs.map((p) => [p, []]));
  for (let run = 0; run < RUNS; run++) {
    const order = run % 2 === 0 ? pkgs : [...pkgs].reverse();
    for (const p of order) samples.get(p)!.push(await runChild(p));
  }
  console.log(
    `${BATCHES} appends of ${RECORDS_PER_BATCH} x ${RECORD_BYTES} B records (+${SYNC_BATCHES} with sync: true), ` +
      `median of ${RUNS} interleaved runs, node ${process.version}, ${process.platform}/${process.arch}`,
  );
  const rows: string[][] = [
    ['binding', 'append rec/s', 'append MB/s', 'JS-thread µs/append', 'sync appends/s', `sync appends/s, ${CONCURRENT_PARTITIONS} partitions`, 'read rec/s', 'read MB/s'],
  ];
  for (const p of pkgs) {
    const s = samples.get(p)!;
    const m = (f: (x: Sample) => number, digits = 0) => median(s.map(f)).toFixed(digits);
    rows.push([
      NAMES[p]!,
      m((x) => x.appendRecordsPerSec),
      m((x) => x.appendMBPerSec, 1),
      m((x) => x.appendBlockedUs),
      m((x) => x.syncAppendsPerSec),
      m((x) => x.concurrentSyncAppendsPerSec),
      m((x) => x.readRecordsPerSec),
      m((x) => x.readMBPerSec, 1),
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => `| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |`;
  console.log(line(rows[0]!));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of rows.slice(1)) console.log(line(r));
}

if (process.argv[2] === '--child') {
  const binding = BINDINGS[process.argv[3] ?? '']?.();
  if (binding === undefined) throw new Error(`unknown or missing binding ${process.argv[3]}`);
  console.log(JSON.stringify(await runOnce(binding)));
} else {
  await main();
}
