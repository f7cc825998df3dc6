/**
 * Kill -9 a process that is appending to RocksDB storage as fast as it can, then reopen the
 * directory here: every acknowledged append must be there, whole, and nothing torn or out of
 * place after it. Several rounds continue the same directory, so recovery from a recovered store
 * is covered too. No sleeps: every wait is on an event, bounded by a timeout.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeBatch, verifyBatch } from '../src/protocol/batch.js';
import { openRocksNodeStorage } from '../src/storage/rocksdb-storage.js';

const WRITER = fileURLToPath(new URL('./fixtures/storage-writer.js', import.meta.url));
// Must match test/fixtures/storage-writer.ts.
const PARTITION = { topicId: 'c0ffee00c0ffee00c0ffee00c0ffee00', partition: 3 };
const EPOCH = 7;
const ROUNDS = 5;
const ACKS_BEFORE_KILL = 400;
const WAIT_MS = 20_000;

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

interface Writer {
  child: ChildProcess;
  /** Resolves with the LEO the writer opened with. */
  ready: Promise<number>;
  /** Resolves once `n` appends were acknowledged. */
  acked(n: number): Promise<void>;
  lastAck(): number;
  exited: Promise<void>;
  stderr(): string;
}

function startWriter(dir: string): Writer {
  const child = spawn(process.execPath, [WRITER, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let pending = '';
  let errors = '';
  let acks = 0;
  let last = -1;
  let waiter: { n: number; resolve: () => void } | undefined;
  let onReady: (leo: number) => void = () => {};
  const ready = new Promise<number>((resolve) => (onReady = resolve));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stderr!.on('data', (chunk: Buffer) => (errors = (errors + chunk.toString()).slice(-4000)));
  child.stdout!.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      const [kind, value] = line.split(' ');
      if (kind === 'ready') onReady(Number(value));
      if (kind !== 'ack') continue;
      acks++;
      last = Number(value);
      if (waiter !== undefined && acks >= waiter.n) waiter.resolve();
    }
  });
  return {
    child,
    ready,
    exited,
    lastAck: () => last,
    stderr: () => errors,
    acked: (n) =>
      new Promise<void>((resolve, reject) => {
        if (acks >= n) return resolve();
        waiter = { n, resolve };
        void exited.then(() => reject(new Error(`writer exited after ${acks} acks: ${errors}`)));
      }),
  };
}

test('acknowledged appends survive kill -9, whole and in order, round after round', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-crash-'));
  let writer: Writer | undefined;
  try {
    let verifiedEnd = 0;
    for (let round = 0; round < ROUNDS; round++) {
      writer = startWriter(dir);
      const openedAt = await withTimeout(writer.ready, WAIT_MS, `writer ready (round ${round})`);
      t.is(openedAt, verifiedEnd, 'the writer reopens where the last check ended');
      await withTimeout(writer.acked(ACKS_BEFORE_KILL), WAIT_MS, `${ACKS_BEFORE_KILL} acks (round ${round})`);
      writer.child.kill('SIGKILL');
      await withTimeout(writer.exited, WAIT_MS, 'the writer to die');
      t.is(writer.child.signalCode, 'SIGKILL', writer.stderr());
      const acked = writer.lastAck();
      writer = undefined;

      const storage = await openRocksNodeStorage(dir);
      try {
        t.true(storage.uncleanShutdown, 'a killed process leaves its storage marked open (KIP-966 unclean shutdown)');
        storage.uncleanShutdownReported(); // as a broker does once its registration says so
        const store = await storage.openPartition(PARTITION);
        const end = store.logEndOffset();
        t.true(end >= acked, `round ${round}: log end ${end} lost acknowledged appends up to ${acked}`);
        t.is(store.logStartOffset(), 0);
        t.deepEqual(store.epochs(), [{ epoch: EPOCH, startOffset: 0 }]);
        let expected = 0;
        let bytes = 0;
        let bad = 0;
        while (expected < end) {
          const batches = await store.read(expected, 1 << 20, end);
          if (batches.length === 0) break;
          for (const batch of batches) {
            const header = verifyBatch(batch); // CRC and framing: no torn batch
            if (header.baseOffset !== expected || header.leaderEpoch !== EPOCH) bad++;
            for (const r of decodeBatch(batch)) {
              if (!Buffer.from(r.value!).toString().startsWith(`${r.offset}:`)) bad++;
            }
            expected = header.baseOffset + header.recordCount;
            bytes += batch.length;
          }
        }
        t.is(bad, 0, `round ${round}: batches or records out of place`);
        t.is(expected, end, `round ${round}: offsets are contiguous from 0 to the log end`);
        t.is(store.sizeBytes(), bytes);
        verifiedEnd = end;
      } finally {
        await storage.close();
      }
    }
    t.true(verifiedEnd >= ROUNDS * ACKS_BEFORE_KILL);
    const reopened = await openRocksNodeStorage(dir);
    t.false(reopened.uncleanShutdown, 'closed cleanly by the last check');
    await reopened.close();
  } finally {
    if (writer !== undefined && writer.child.exitCode === null && writer.child.signalCode === null) writer.child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});
