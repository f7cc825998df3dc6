/**
 * What the bytes alone cost on this machine: the floor under each hop of a batch's path, in CPU ms
 * per MB (the process's user + system time, background threads included). The produce path of a
 * 1 MiB batch is: SDK encode (copy + CRC) -> NATS publish -> nats-server -> NATS receive -> leader
 * verify (CRC) -> storage append (+ shared fsync) -> follower fetch reply (publish) -> follower
 * receive + verify + append. Each step below measures one of those operations in isolation, so the
 * budget in docs/bench/budget.md can say how far each hop is from its floor.
 *
 *   npm run bench:hops            # about 30 s
 *
 * Runs in this process against a nats-server it starts, and RocksDB / plain files in temp dirs.
 */
import { open as openFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encode } from '@msgpack/msgpack';
import { connect } from '@nats-io/transport-node';
import { encodeBatch, stampBatch, verifyBatch, type BatchRecord } from '../src/protocol/batch.js';
import { crc32c } from '../src/protocol/crc32c.js';
import { openRocksNodeStorage } from '../src/storage/rocksdb-storage.js';
import { startNatsServer } from '../test/helpers/nats-server.js';

const MB = 1e6;
const BATCH_RECORDS = 1000;
const RECORD_BYTES = 1024;
const TOTAL_MB = Number(process.env['HOPS_MB'] ?? 200);

interface Row {
  step: string;
  msPerMb: number;
  mbPerS: number;
}

async function measure(step: string, bytesPerRound: number, rounds: number, fn: (i: number) => unknown): Promise<Row> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) await fn(i);
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const mb = (bytesPerRound * rounds) / MB;
  return { step, msPerMb: (cpu.user + cpu.system) / 1000 / mb, mbPerS: mb / (wall / 1000) };
}

function sampleBatch(): Uint8Array {
  const records: BatchRecord[] = Array.from({ length: BATCH_RECORDS }, (_, i) => ({
    key: null,
    value: new Uint8Array(RECORD_BYTES).fill(i & 0xff),
    headers: {},
    timestamp: 1_700_000_000_000 + i,
  }));
  return encodeBatch(records);
}

async function main(): Promise<void> {
  const batch = sampleBatch();
  const rounds = Math.ceil((TOTAL_MB * MB) / batch.length);
  const rows: Row[] = [];
  const records: BatchRecord[] = Array.from({ length: BATCH_RECORDS }, (_, i) => ({ key: null, value: new Uint8Array(RECORD_BYTES).fill(i & 0xff), headers: {}, timestamp: 1_700_000_000_000 + i }));

  rows.push(await measure('memcpy (Uint8Array.slice)', batch.length, rounds, () => batch.slice()));
  rows.push(await measure('CRC32C (pure JS, slicing-by-8)', batch.length, rounds, () => crc32c(batch, 21)));
  rows.push(await measure('encode a batch of 1000 x 1 KiB records (SDK)', batch.length, rounds, () => encodeBatch(records)));
  rows.push(await measure('verify a batch (header, framing, CRC)', batch.length, rounds, () => verifyBatch(batch)));
  rows.push(await measure('msgpack envelope around a batch', batch.length, rounds, () => encode({ timeoutMs: 1000, acks: 1, partitions: [{ partition: 0, batch }] })));

  const nats = await startNatsServer();
  try {
    const pub = await connect({ servers: nats.url });
    const sub = await connect({ servers: nats.url });
    let received = 0;
    let wake: (() => void) | undefined;
    sub.subscribe('hop', {
      callback: () => {
        received++;
        wake?.();
      },
    });
    await sub.flush();
    // Both ends are in this process: publish + server round + receive, with at most 8 in flight.
    rows.push(
      await measure('NATS publish -> nats-server -> subscriber (both ends)', batch.length, rounds, async (i) => {
        pub.publish('hop', batch);
        if (i - received >= 8) await new Promise<void>((r) => (wake = r));
      }),
    );
    while (received < rounds) await new Promise<void>((r) => (wake = r));
    await pub.close();
    await sub.close();
  } finally {
    await nats.stop();
  }

  const dir = await mkdtemp(join(tmpdir(), 'tm-hops-'));
  try {
    const storage = await openRocksNodeStorage(join(dir, 'rocks'));
    const p = await storage.openPartition({ topicId: '0'.repeat(32), partition: 0 });
    rows.push(
      await measure('RocksDB append + shared WAL fsync (tidemark storage)', batch.length, rounds, async (i) => {
        const b = batch.slice();
        stampBatch(b, i * BATCH_RECORDS, 1);
        await p.append([b], { sync: true });
      }),
    );
    // Background flush and compaction of what was just written run on RocksDB's threads: give them
    // time and count them (process CPU covers every thread).
    const cpu0 = process.cpuUsage();
    await new Promise((r) => setTimeout(r, 3000));
    const after = process.cpuUsage(cpu0);
    rows.push({ step: '  + RocksDB background work in the 3 s after', msPerMb: (after.user + after.system) / 1000 / ((batch.length * rounds) / MB), mbPerS: Number.NaN });
    await storage.close();

    const file = await openFile(join(dir, 'segment.log'), 'a');
    rows.push(
      await measure('plain file append + fdatasync (a segment file)', batch.length, rounds, async () => {
        await file.write(batch);
        await file.datasync();
      }),
    );
    await file.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  process.stdout.write(`hop costs: ${rounds} batches of ${batch.length} B (${TOTAL_MB} MB) per step\n\n`);
  process.stdout.write('| step | CPU ms per MB | MB/s (one core, wall) |\n| --- | --- | --- |\n');
  for (const r of rows) process.stdout.write(`| ${r.step} | ${r.msPerMb.toFixed(2)} | ${Number.isNaN(r.mbPerS) ? '-' : r.mbPerS.toFixed(0)} |\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
