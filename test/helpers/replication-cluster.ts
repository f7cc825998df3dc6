/**
 * A cluster of `tidemark node start` processes for the replication tests: combined nodes
 * (broker + controller voter) started with `startClusterNode`, each on its own data dir, killed
 * (-9, TERM), paused (STOP/CONT) and restarted on the same dir. Unlike ProcessCluster it keeps the
 * output of every process a node ever ran (one "incarnation" per start), so a failure can be
 * explained from the logs of processes that are long gone, and it opens the nodes' RocksDB
 * afterwards to compare the replicas' logs byte for byte.
 *
 * Every wait is bounded; `destroy()` SIGKILLs whatever still runs (SIGCONT first).
 */
import type { Admin, TopicDescription } from '../../src/index.js';
import { createHash } from 'node:crypto';
import { access, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeBatch, readBatchHeader, type StoredRecord } from '../../src/protocol/batch.js';
import { openRocksNodeStorage } from '../../src/storage/rocksdb-storage.js';
import type { EpochEntry } from '../../src/storage/partition-store.js';
import { logLine, type CliProcess, type ExitStatus } from './cli.js';
import { startClusterNode } from './cluster.js';
import { tempDir } from './node.js';

export interface Incarnation {
  id: number;
  /** 1 for the first start of the node, 2 after its first restart, ... */
  n: number;
  proc: CliProcess;
  /** Date.now() when it was spawned. */
  startedAtMs: number;
  /** How the process ended, once it has. */
  exit: ExitStatus | undefined;
}

function nodeLogLevel(): 'info' | 'debug' | 'trace' {
  const level = process.env['TIDEMARK_TEST_NODE_LOG_LEVEL'];
  return level === 'debug' || level === 'trace' ? level : 'info';
}

export class ReplicationCluster {
  readonly incarnations: Incarnation[] = [];
  private readonly current = new Map<number, Incarnation>();

  private constructor(
    readonly nats: string,
    readonly cluster: string,
    readonly ids: readonly number[],
    readonly dataDirs: ReadonlyMap<number, string>,
    private readonly logLevel: 'info' | 'debug' | 'trace',
    /** More `node start` flags for every node. */
    private readonly extraArgs: readonly string[] = [],
  ) {}

  /**
   * Starts every node at once and waits until each logged "node ready" (registered, unfenced).
   * The nodes log at `logLevel` (default: env TIDEMARK_TEST_NODE_LOG_LEVEL, else info).
   */
  static async start(nats: string, cluster: string, ids: readonly number[] = [1, 2, 3], logLevel = nodeLogLevel(), extraArgs: readonly string[] = []): Promise<ReplicationCluster> {
    const dirs = new Map<number, string>();
    for (const id of ids) dirs.set(id, await tempDir(`tm-repl-${cluster}-n${id}-`));
    const c = new ReplicationCluster(nats, cluster, ids, dirs, logLevel, extraArgs);
    try {
      await Promise.all(ids.map((id) => c.startNode(id)));
    } catch (error) {
      await c.destroy(false);
      throw error;
    }
    return c;
  }

  /** (Re)starts node `id` on its data dir; resolves once it logged "node ready". */
  async startNode(id: number, timeoutMs = 30_000): Promise<Incarnation> {
    const running = this.current.get(id);
    if (running !== undefined && running.exit === undefined) throw new Error(`node ${id} still runs (pid ${running.proc.pid})`);
    const startedAtMs = Date.now();
    const proc = await startClusterNode({
      nats: this.nats,
      cluster: this.cluster,
      id,
      dataDir: this.dataDirs.get(id)!,
      controllers: this.ids,
      waitFor: 'ready',
      timeoutMs,
      logLevel: this.logLevel,
      extraArgs: this.extraArgs,
    });
    const inc: Incarnation = { id, n: this.incarnations.filter((i) => i.id === id).length + 1, proc, startedAtMs, exit: undefined };
    void proc.exited.then((s) => (inc.exit = s), () => undefined);
    this.incarnations.push(inc);
    this.current.set(id, inc);
    return inc;
  }

  incarnation(id: number): Incarnation {
    const inc = this.current.get(id);
    if (inc === undefined) throw new Error(`node ${id} was never started`);
    return inc;
  }

  running(id: number): boolean {
    const child = this.incarnation(id).proc.child;
    return child.exitCode === null && child.signalCode === null;
  }

  /** Sends `signal` and waits (bounded) for the exit. */
  async kill(id: number, signal: 'SIGKILL' | 'SIGTERM', timeoutMs = 15_000): Promise<ExitStatus> {
    const inc = this.incarnation(id);
    const status = await inc.proc.kill(signal, timeoutMs);
    inc.exit = status;
    return status;
  }

  /** SIGSTOP / SIGCONT; returns at once. */
  signal(id: number, signal: 'SIGSTOP' | 'SIGCONT'): void {
    process.kill(this.incarnation(id).proc.pid, signal);
  }

  /** SIGTERM to every running node at once; each exit is awaited (bounded, SIGKILL after). */
  async stopAll(timeoutMs = 20_000): Promise<Map<number, ExitStatus | string>> {
    const out = new Map<number, ExitStatus | string>();
    await Promise.all(
      this.ids.map(async (id) => {
        if (!this.running(id)) return void out.set(id, this.incarnation(id).exit ?? 'not running');
        try {
          out.set(id, await this.kill(id, 'SIGTERM', timeoutMs));
        } catch (error) {
          out.set(id, `no clean exit: ${(error as Error).message.split('\n')[0]}`);
        }
      }),
    );
    return out;
  }

  /** Parsed pino lines of every incarnation, oldest first per incarnation, with where they came from. */
  logs(filter: (line: Record<string, unknown>) => boolean = () => true): Array<{ node: number; n: number; line: Record<string, unknown> }> {
    const out: Array<{ node: number; n: number; line: Record<string, unknown> }> = [];
    for (const inc of this.incarnations) {
      for (const raw of inc.proc.stderrLines) {
        const line = logLine(raw);
        if (line !== undefined && filter(line)) out.push({ node: inc.id, n: inc.n, line });
      }
    }
    return out;
  }

  /** Writes every incarnation's stdout and stderr to `dir`/node-<id>.<n>.log; returns the file names. */
  async dumpLogs(dir: string): Promise<string[]> {
    await mkdir(dir, { recursive: true });
    const files: string[] = [];
    for (const inc of this.incarnations) {
      const file = join(dir, `node-${inc.id}.${inc.n}.log`);
      const head = `# node ${inc.id} incarnation ${inc.n}, pid ${inc.proc.pid}, started ${new Date(inc.startedAtMs).toISOString()}, exit ${JSON.stringify(inc.exit ?? 'running')}\n`;
      await writeFile(file, head + [...inc.proc.stderrLines, ...inc.proc.stdoutLines.map((l) => `[stdout] ${l}`)].join('\n') + '\n');
      files.push(file);
    }
    return files;
  }

  /** SIGKILLs what still runs (SIGCONT first, in case it is stopped); removes the data dirs unless `keepData`. */
  async destroy(keepData: boolean): Promise<void> {
    await Promise.all(
      [...this.current.values()].map(async (inc) => {
        const child = inc.proc.child;
        if (child.exitCode !== null || child.signalCode !== null) return;
        try {
          process.kill(inc.proc.pid, 'SIGCONT');
        } catch {
          // already gone
        }
        await inc.proc.kill('SIGKILL', 5_000).catch(() => undefined);
      }),
    );
    if (!keepData) await Promise.all([...this.dataDirs.values()].map((d) => rm(d, { recursive: true, force: true })));
  }
}

/** One partition's replica as stored in a node's RocksDB (read with the node stopped). */
export interface StoredReplica {
  node: number;
  partition: number;
  logStartOffset: number;
  logEndOffset: number;
  epochs: readonly EpochEntry[];
  /** sha256 over the stored batch bytes (offset and leader epoch stamped in their headers) below `upTo`. */
  sha256: string;
  /** Where the hashed batches end: `upTo` unless a batch straddles it. */
  hashedEnd: number;
  /** Batches hashed, and their leader epochs in log order with run lengths ("3x5 4x2"). */
  batches: number;
  epochRuns: string;
  /** The records below `upTo`, by offset (decoded from the same batches); with the batch's epoch. */
  records: Map<number, { record: StoredRecord; leaderEpoch: number }>;
}

const READ_CHUNK_BYTES = 4 << 20;

/**
 * Opens the RocksDB in `dataDir` (the node must not run), reads each partition from its log start up to
 * `upTo[partition]` with `read(offset, maxBytes, endOffset)` and hashes the batches: sha256 over,
 * per batch, its leader epoch (4 bytes BE) and then its bytes as stored.
 */
export async function readReplicas(node: number, dataDir: string, topicId: string, upTo: readonly number[]): Promise<StoredReplica[]> {
  // src/node.ts keeps the node's RocksDB in <data dir>/rocksdb; opening it creates what is missing, so check first.
  const dir = join(dataDir, 'rocksdb');
  await access(join(dir, 'CURRENT'));
  const storage = await openRocksNodeStorage(dir);
  try {
    const out: StoredReplica[] = [];
    for (let partition = 0; partition < upTo.length; partition++) {
      const store = await storage.openPartition({ topicId, partition });
      const end = Math.min(upTo[partition]!, store.logEndOffset());
      const hash = createHash('sha256');
      const records = new Map<number, { record: StoredRecord; leaderEpoch: number }>();
      const runs: Array<[number, number]> = [];
      let offset = store.logStartOffset();
      let hashedEnd = offset;
      let batches = 0;
      while (offset < end) {
        const chunk = await store.read(offset, READ_CHUNK_BYTES, end);
        if (chunk.length === 0) break;
        for (const batch of chunk) {
          const h = readBatchHeader(batch);
          const epoch = Buffer.alloc(4);
          epoch.writeUInt32BE(h.leaderEpoch);
          hash.update(epoch);
          hash.update(batch);
          batches++;
          const last = runs[runs.length - 1];
          if (last !== undefined && last[0] === h.leaderEpoch) last[1]++;
          else runs.push([h.leaderEpoch, 1]);
          for (const record of decodeBatch(batch)) records.set(record.offset, { record, leaderEpoch: h.leaderEpoch });
          hashedEnd = h.baseOffset + h.recordCount;
        }
        offset = hashedEnd;
      }
      out.push({
        node,
        partition,
        logStartOffset: store.logStartOffset(),
        logEndOffset: store.logEndOffset(),
        epochs: [...store.epochs()],
        sha256: hash.digest('hex'),
        hashedEnd,
        batches,
        epochRuns: runs.map(([e, n]) => `${e}x${n}`).join(' '),
        records,
      });
    }
    return out;
  } finally {
    await storage.close();
  }
}

/** Polls describeTopic (every `intervalMs`, each call bounded by the client's retry budget) until `done` holds. */
export async function waitForTopic(
  admin: Admin,
  topic: string,
  what: string,
  done: (d: TopicDescription) => boolean,
  timeoutMs: number,
  intervalMs = 100,
): Promise<{ d: TopicDescription; ms: number }> {
  const started = Date.now();
  let last: TopicDescription | undefined;
  let lastError: unknown;
  while (Date.now() - started < timeoutMs) {
    try {
      last = await admin.describeTopic(topic);
      if (done(last)) return { d: last, ms: Date.now() - started };
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  const brief = last?.partitions.map((p) => `p${p.partition}: leader ${p.leader} epoch ${p.leaderEpoch} isr [${p.isr.join(',')}] hw ${p.highWatermark} leo ${p.logEndOffset}`).join('; ');
  throw new Error(`${what}: not reached within ${timeoutMs} ms; last: ${brief ?? 'none'}${lastError === undefined ? '' : `; last error: ${String(lastError)}`}`);
}

/** Every partition has a leader and all of `ids` in its ISR. */
export function allInSync(d: TopicDescription, partitions: number, ids: readonly number[]): boolean {
  return d.partitions.length === partitions && d.partitions.every((p) => p.leader >= 0 && ids.every((id) => p.isr.includes(id)));
}

/** The partition to hit in `round`: one led by the node whose turn it is, else the round's partition. */
export function roundTarget(d: TopicDescription, round: number, ids: readonly number[]): { partition: number; leader: number } {
  const n = d.partitions.length;
  const wanted = ids[round % ids.length]!;
  for (let i = 0; i < n; i++) {
    const p = d.partitions[(round + i) % n]!;
    if (p.leader === wanted) return { partition: p.partition, leader: p.leader };
  }
  const p = d.partitions[round % n]!;
  return { partition: p.partition, leader: p.leader };
}
