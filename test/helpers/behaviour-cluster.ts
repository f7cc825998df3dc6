/**
 * The replication behaviour tests' cluster: `tidemark node start` processes (started with
 * {@link startClusterNode}) on one nats-server, each on its own data dir, that a test kills (-9),
 * stops (SIGTERM), pauses (SIGSTOP) and restarts on the same dir. It keeps the stderr (pino JSON
 * lines) of every process a node ever ran, so a failure can be explained from the logs of
 * processes long gone ({@link BehaviourCluster.dumpLogs}).
 *
 * Besides processes, a raw NATS connection for what the SDK does not show: the leader's view of
 * every replica's log end (the offsets reply's `replicas`), raw fetches of a leader's log, and a
 * stopped node's partition log read straight from its RocksDB.
 *
 * Every wait is bounded. `destroy()` SIGKILLs whatever still runs (SIGCONT first) and removes the
 * data dirs.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readBatchHeader, splitBatches } from '../../src/protocol/batch.js';
import { TidemarkError } from '../../src/protocol/errors.js';
import {
  decodeReply,
  encodeMessage,
  fetchReply,
  offsetsReply,
  produceResponse,
  type FetchRequest,
  type OffsetsRequest,
  type PartitionOffsets,
  type ProduceReply,
  type ProduceRequest,
} from '../../src/protocol/messages.js';
import { Subjects } from '../../src/protocol/subjects.js';
import { connectNats, type NatsTransport } from '../../src/runtime/nats-transport.js';
import { openRocksNodeStorage } from '../../src/storage/rocksdb-storage.js';
import { logLine, type CliProcess, type ExitStatus } from './cli.js';
import { startClusterNode, type StartedWhen } from './cluster.js';
import { tempDir } from './node.js';

/** One process a node ran. */

/** One batch for one partition, as rawProduce sends it. */
export interface RawProduce {
  timeoutMs: number;
  acks: 0 | 1 | -1;
  batch: Uint8Array;
  leaderEpoch?: number;
}
export interface Incarnation {
  id: number;
  /** 1 for the node's first start, 2 after its first restart, ... */
  n: number;
  roles: string;
  proc: CliProcess;
  /** Date.now() at spawn. */
  startedAtMs: number;
  exit: ExitStatus | undefined;
}

export interface NodeSpec {
  id: number;
  /** `--roles`; default combined (broker,controller). */
  roles?: string;
  /** More `node start` flags, kept for the node's restarts. */
  extraArgs?: readonly string[];
}

/** A batch as stored: where it sits, in which leader epoch it was written, and its CRC32C. */
export interface BatchSummary {
  baseOffset: number;
  recordCount: number;
  leaderEpoch: number;
  crc: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Reads a state with `read` every `intervalMs` until `done` holds for it; rejects after `timeoutMs`
 * with the last state or error seen. The interval only paces the polling (each read is a request
 * to the cluster); nothing waits blindly for an event.
 */
export async function pollUntil<S>(
  what: string,
  read: () => Promise<S>,
  done: (s: S) => boolean,
  timeoutMs: number,
  intervalMs = 100,
): Promise<{ value: S; elapsedMs: number; polls: number }> {
  const started = performance.now();
  let last: { value: S } | undefined;
  let lastError: unknown;
  let polls = 0;
  for (;;) {
    polls++;
    try {
      const value = await read();
      last = { value };
      if (done(value)) return { value, elapsedMs: performance.now() - started, polls };
    } catch (error) {
      lastError = error;
    }
    if (performance.now() - started >= timeoutMs) {
      throw new Error(
        `${what}: not reached within ${timeoutMs} ms (${polls} polls)` +
          (last === undefined ? '' : `; last: ${JSON.stringify(last.value)}`) +
          (lastError === undefined ? '' : `; last error: ${String(lastError)}`),
      );
    }
    await sleep(intervalMs);
  }
}

export class BehaviourCluster {
  readonly incarnations: Incarnation[] = [];
  private readonly current = new Map<number, Incarnation>();
  private readonly dataDirs = new Map<number, string>();
  private readonly roles = new Map<number, string>();
  private readonly extraArgs = new Map<number, readonly string[]>();
  readonly subjects: Subjects;

  private constructor(
    readonly nats: string,
    readonly cluster: string,
    /** The controller voters, the same list on every node. */
    readonly controllers: readonly number[],
    private readonly raw: NatsTransport,
  ) {
    this.subjects = new Subjects(cluster);
  }

  /** Starts the given nodes at once and waits until each logged "node ready". */
  static async start(nats: string, cluster: string, nodes: readonly NodeSpec[], controllers: readonly number[]): Promise<BehaviourCluster> {
    const raw = await connectNats({ servers: nats, name: `behaviour-raw-${cluster}` });
    const c = new BehaviourCluster(nats, cluster, controllers, raw);
    try {
      await Promise.all(nodes.map((n) => c.startNode(n.id, { ...(n.roles === undefined ? {} : { roles: n.roles }), ...(n.extraArgs === undefined ? {} : { extraArgs: n.extraArgs }) })));
    } catch (error) {
      await c.destroy();
      throw error;
    }
    return c;
  }

  /** (Re)starts node `id` on its data dir (a new one on its first start). */
  async startNode(id: number, options: { roles?: string; extraArgs?: readonly string[]; waitFor?: StartedWhen; timeoutMs?: number } = {}): Promise<Incarnation> {
    const running = this.current.get(id);
    if (running !== undefined && running.exit === undefined) throw new Error(`node ${id} still runs (pid ${running.proc.pid})`);
    let dataDir = this.dataDirs.get(id);
    if (dataDir === undefined) {
      dataDir = await tempDir(`tm-beh-${this.cluster}-n${id}-`);
      this.dataDirs.set(id, dataDir);
    }
    if (options.roles !== undefined) this.roles.set(id, options.roles);
    if (options.extraArgs !== undefined) this.extraArgs.set(id, options.extraArgs);
    const roles = this.roles.get(id);
    const extraArgs = this.extraArgs.get(id);
    const startedAtMs = Date.now();
    const proc = await startClusterNode({
      nats: this.nats,
      cluster: this.cluster,
      id,
      dataDir,
      controllers: this.controllers,
      ...(roles === undefined ? {} : { roles }),
      ...(extraArgs === undefined ? {} : { extraArgs }),
      waitFor: options.waitFor ?? 'ready',
      timeoutMs: options.timeoutMs ?? 30_000,
    });
    const inc: Incarnation = { id, n: this.incarnations.filter((i) => i.id === id).length + 1, roles: roles ?? 'broker,controller', proc, startedAtMs, exit: undefined };
    void proc.exited.then((status) => (inc.exit = status)).catch(() => undefined);
    this.incarnations.push(inc);
    this.current.set(id, inc);
    return inc;
  }

  ids(): number[] {
    return [...this.dataDirs.keys()].sort((a, b) => a - b);
  }

  dataDir(id: number): string {
    const dir = this.dataDirs.get(id);
    if (dir === undefined) throw new Error(`node ${id} was never started`);
    return dir;
  }

  /** The node's current (or last) process. */
  incarnation(id: number): Incarnation {
    const inc = this.current.get(id);
    if (inc === undefined) throw new Error(`node ${id} was never started`);
    return inc;
  }

  running(id: number): boolean {
    const inc = this.current.get(id);
    if (inc === undefined) return false;
    const child = inc.proc.child;
    return child.exitCode === null && child.signalCode === null;
  }

  /** Sends `signal` and waits (bounded) for the exit. */
  async kill(id: number, signal: 'SIGKILL' | 'SIGTERM', timeoutMs = 20_000): Promise<ExitStatus> {
    const inc = this.incarnation(id);
    if (signal === 'SIGKILL' && this.running(id)) {
      try {
        process.kill(inc.proc.pid, 'SIGCONT'); // a stopped process dies of SIGKILL too, but say it anyway
      } catch {
        // gone
      }
    }
    const status = await inc.proc.kill(signal, timeoutMs);
    inc.exit = status;
    return status;
  }

  /** SIGSTOP (frozen, its sockets stay open) or SIGCONT; returns at once. */
  signal(id: number, signal: 'SIGSTOP' | 'SIGCONT'): void {
    process.kill(this.incarnation(id).proc.pid, signal);
  }

  /** Parsed pino lines of node `id`'s current process whose `msg` is `msg`. */
  logs(id: number, msg: string): Array<Record<string, unknown>> {
    return this.incarnation(id)
      .proc.stderrLines.map((l) => logLine(l))
      .filter((l): l is Record<string, unknown> => l !== undefined && l.msg === msg);
  }

  /** Lines at pino level error or above from every process so far, prefixed with the node and run. */
  errorLines(): string[] {
    return this.incarnations.flatMap((inc) =>
      inc.proc.stderrLines
        .filter((l) => {
          const level = logLine(l)?.level;
          return typeof level === 'number' && level >= 50;
        })
        .map((l) => `node ${inc.id} run ${inc.n}: ${l}`),
    );
  }

  /** Every incarnation's stderr, one file per incarnation, into `dir`; returns the file names. */
  async dumpLogs(dir: string): Promise<string[]> {
    await mkdir(dir, { recursive: true });
    const files: string[] = [];
    for (const inc of this.incarnations) {
      const name = `node-${inc.id}-run-${inc.n}.log`;
      const exit = inc.exit === undefined ? 'still running' : `exit code ${inc.exit.code}, signal ${inc.exit.signal}`;
      const head = `# node ${inc.id} run ${inc.n} (${inc.roles}), pid ${inc.proc.pid}, started ${new Date(inc.startedAtMs).toISOString()}, ${exit}\n`;
      await writeFile(join(dir, name), head + inc.proc.stderrLines.join('\n') + '\n');
      files.push(name);
    }
    return files;
  }

  /**
   * Asks broker `brokerId` for the offsets of partitions it leads, with its view of every replica
   * (log end as of the replica's last fetch). The SDK's describeTopic drops the replica part.
   */
  async leaderOffsets(brokerId: number, topic: string, partitions: readonly number[], timeoutMs = 2_000): Promise<PartitionOffsets[]> {
    const request: OffsetsRequest = { timeoutMs, partitions: partitions.map((partition) => ({ topic, partition })) };
    const reply = decodeReply(await this.raw.request(this.subjects.offsets(brokerId), encodeMessage(request), timeoutMs), offsetsReply);
    for (const p of reply.partitions) if (p.error !== undefined) throw TidemarkError.fromWire(p.error, { topic, partition: p.partition, brokerId });
    return reply.partitions;
  }

  /**
   * One produce request straight over NATS: no SDK retry, and a NATS wait (`replyWaitMs`) of the
   * test's choosing, apart from the request's own `timeoutMs`, so a reply that comes before it is
   * the broker's. Throws the TidemarkError of an error reply, or TIMEOUT when nothing came.
   */
  async rawProduce(leader: number, topic: string, partition: number, request: RawProduce, replyWaitMs: number): Promise<ProduceReply> {
    const { batch, leaderEpoch, ...rest } = request;
    const body: ProduceRequest = { ...rest, partitions: [leaderEpoch === undefined ? { partition, batch } : { partition, batch, leaderEpoch }] };
    const data = await this.raw.request(this.subjects.produce(leader, topic), encodeMessage(body), replyWaitMs);
    const outcome = decodeReply(data, produceResponse).partitions[0]!;
    if (outcome.error !== undefined) throw TidemarkError.fromWire(outcome.error, { topic, partition, brokerId: leader });
    return outcome;
  }

  /** The leader's log of one partition from `from` to its high watermark, as batch summaries, read with raw fetches. */
  async leaderBatches(leader: number, topic: string, partition: number, from: number, to: number, timeoutMs = 30_000): Promise<BatchSummary[]> {
    const out: BatchSummary[] = [];
    const deadline = performance.now() + timeoutMs;
    let offset = from;
    while (offset < to) {
      if (performance.now() > deadline) throw new Error(`leaderBatches: at ${offset} of ${to} after ${timeoutMs} ms`);
      const request: FetchRequest = { timeoutMs: 5_000, offset, maxBytes: 1 << 19, maxWaitMs: 0 };
      const data = await this.raw.request(this.subjects.partition('fetch', leader, topic, partition), encodeMessage(request), 5_000);
      const reply = decodeReply(data, fetchReply);
      const batches = splitBatches(reply.records);
      if (batches.length === 0) throw new Error(`leaderBatches: empty fetch at ${offset} (high watermark ${reply.highWatermark}, wanted up to ${to})`);
      for (const b of batches) {
        const h = readBatchHeader(b);
        if (h.baseOffset + h.recordCount <= offset) continue;
        out.push({ baseOffset: h.baseOffset, recordCount: h.recordCount, leaderEpoch: h.leaderEpoch, crc: h.crc });
        offset = h.baseOffset + h.recordCount;
      }
    }
    return out;
  }

  /**
   * A stopped node's log of one partition, read from its RocksDB: batch summaries and the log's
   * start and end. The node must not run (RocksDB holds a lock).
   */
  async storedBatches(id: number, topicId: string, partition: number): Promise<{ logStartOffset: number; logEndOffset: number; batches: BatchSummary[] }> {
    if (this.running(id)) throw new Error(`node ${id} still runs; stop it before opening its RocksDB`);
    const storage = await openRocksNodeStorage(join(this.dataDir(id), 'rocksdb'));
    try {
      const store = await storage.openPartition({ topicId, partition });
      const logStartOffset = store.logStartOffset();
      const logEndOffset = store.logEndOffset();
      const batches: BatchSummary[] = [];
      let offset = logStartOffset;
      while (offset < logEndOffset) {
        const read = await store.read(offset, 1 << 20, logEndOffset);
        if (read.length === 0) throw new Error(`storedBatches: empty read at ${offset} of ${logEndOffset}`);
        for (const b of read) {
          const h = readBatchHeader(b);
          if (h.baseOffset + h.recordCount <= offset) continue;
          batches.push({ baseOffset: h.baseOffset, recordCount: h.recordCount, leaderEpoch: h.leaderEpoch, crc: h.crc });
          offset = h.baseOffset + h.recordCount;
        }
      }
      return { logStartOffset, logEndOffset, batches };
    } finally {
      await storage.close();
    }
  }

  /** SIGKILLs what still runs (SIGCONT first), closes the raw connection, removes the data dirs. */
  async destroy(): Promise<void> {
    await Promise.all(
      [...this.current.values()].map(async (inc) => {
        const child = inc.proc.child;
        if (child.exitCode !== null || child.signalCode !== null) return;
        try {
          process.kill(inc.proc.pid, 'SIGCONT');
        } catch {
          // gone
        }
        await inc.proc.kill('SIGKILL', 5_000).catch(() => undefined);
      }),
    );
    await this.raw.close().catch(() => undefined);
    await Promise.all([...this.dataDirs.values()].map((d) => rm(d, { recursive: true, force: true })));
  }
}
