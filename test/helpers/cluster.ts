/**
 * A cluster of `tidemark node start` processes on one nats-server, for quorum tests and the
 * failover bench: start, kill (-9, TERM, STOP/CONT) and restart nodes on their own data dirs, and
 * observe the cluster from outside, as a client does.
 *
 * Every wait is bounded. Two observers:
 *   - {@link waitForCluster}: polls `admin.describeCluster()` (each call waits ~300 ms for status
 *     replies) until a predicate holds;
 *   - {@link StatusProbe}: publishes `tm.<cluster>.status` requests every few ms and timestamps each
 *     node's reply as it arrives, for measuring how long something takes (a failover, say) more
 *     tightly than describeCluster's 300 ms rounds allow.
 */
import { rm } from 'node:fs/promises';
import type { Admin, ClusterDescription } from '../../src/client/admin.js';
import { nodeStatus, type NodeStatus, type StatusRequest } from '../../src/protocol/controller-messages.js';
import { decodeReply, encodeMessage } from '../../src/protocol/messages.js';
import { Subjects } from '../../src/protocol/subjects.js';
import { connectNats, type NatsTransport } from '../../src/runtime/nats-transport.js';
import { logLine, spawnCli, type CliProcess, type ExitStatus } from './cli.js';
import { tempDir } from './node.js';

/** Which log line `startClusterNode` awaits: "node started" (the process runs) or "node ready" (registered, unfenced). */
export type StartedWhen = 'started' | 'ready';

export interface ClusterNodeOptions {
  nats: string;
  /** Subject prefix: several clusters share one nats-server. */
  cluster: string;
  id: number;
  dataDir: string;
  /** The voters, the same list on every node. */
  controllers: readonly number[];
  /** `--roles`; default: combined (broker,controller). */
  roles?: string;
  /** @default 'ready' */
  waitFor?: StartedWhen;
  /** Bound on reaching the awaited line, ms. @default 20000 */
  timeoutMs?: number;
  /** The node's pino level (at least info: the awaited lines are info). @default 'info' */
  logLevel?: 'info' | 'debug' | 'trace';
  /** More `node start` flags, e.g. `['--retention-check-interval-ms', '200']`. */
  extraArgs?: readonly string[];
}

const START_TIMEOUT_MS = 20_000;

/** True for the pino JSON line with this `msg`. */
export const isLog = (msg: string) => (line: string) => logLine(line)?.msg === msg;

/**
 * Starts `tidemark node start --id N --data-dir DIR --controllers ... --cluster C --nats URL` and
 * resolves once it logged "node started" or "node ready" on stderr. If it does not in time it is
 * SIGKILLed and the promise rejects with its last output.
 */
export async function startClusterNode(options: ClusterNodeOptions): Promise<CliProcess> {
  const args = ['node', 'start', '--id', String(options.id), '--data-dir', options.dataDir, '--controllers', options.controllers.join(',')];
  if (options.roles !== undefined) args.push('--roles', options.roles);
  args.push('--nats', options.nats, '--cluster', options.cluster, ...(options.extraArgs ?? []));
  const node = spawnCli(args, { env: { TIDEMARK_LOG_LEVEL: options.logLevel ?? 'info' } });
  const msg = (options.waitFor ?? 'ready') === 'ready' ? 'node ready' : 'node started';
  try {
    await node.waitForLine('stderr', isLog(msg), options.timeoutMs ?? START_TIMEOUT_MS);
  } catch (error) {
    await node.kill('SIGKILL', 5_000).catch(() => undefined);
    throw error;
  }
  return node;
}

interface Member {
  id: number;
  dataDir: string;
  proc: CliProcess | undefined;
}

export interface ProcessClusterOptions {
  nats: string;
  cluster: string;
  /** Node ids; every one is a combined node and a voter. @default [1, 2, 3] */
  ids?: readonly number[];
  /** @default 'ready' */
  waitFor?: StartedWhen;
  timeoutMs?: number;
  /** @default 'info' */
  logLevel?: 'info' | 'debug' | 'trace';
  /** More `node start` flags for node `id`, on every (re)start, e.g. `['--metrics-port', '0']`. */
  extraArgs?: (id: number) => readonly string[];
}

/** Combined nodes (broker + controller voter), one process each, each on its own temp data dir. */
export class ProcessCluster {
  private readonly members = new Map<number, Member>();

  private constructor(
    readonly nats: string,
    readonly cluster: string,
    readonly ids: readonly number[],
    private readonly logLevel: 'info' | 'debug' | 'trace' = 'info',
    private readonly extraArgs?: (id: number) => readonly string[],
  ) {}

  /** Starts every node at once and waits until each logged the awaited line. */
  static async start(options: ProcessClusterOptions): Promise<ProcessCluster> {
    const ids = options.ids ?? [1, 2, 3];
    const c = new ProcessCluster(options.nats, options.cluster, ids, options.logLevel, options.extraArgs);
    for (const id of ids) c.members.set(id, { id, dataDir: await tempDir(`tm-q${id}-`), proc: undefined });
    try {
      await Promise.all(ids.map((id) => c.start(id, options.waitFor ?? 'ready', options.timeoutMs)));
    } catch (error) {
      await c.destroy();
      throw error;
    }
    return c;
  }

  private member(id: number): Member {
    const m = this.members.get(id);
    if (m === undefined) throw new Error(`no node ${id} in cluster ${this.cluster}`);
    return m;
  }

  /** (Re)starts node `id` on its data dir. */
  async start(id: number, waitFor: StartedWhen = 'ready', timeoutMs?: number): Promise<CliProcess> {
    const m = this.member(id);
    if (m.proc !== undefined && !this.exited(id)) throw new Error(`node ${id} is still running (pid ${m.proc.pid})`);
    m.proc = await startClusterNode({
      nats: this.nats,
      cluster: this.cluster,
      id,
      dataDir: m.dataDir,
      controllers: this.ids,
      waitFor,
      logLevel: this.logLevel,
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(this.extraArgs === undefined ? {} : { extraArgs: this.extraArgs(id) }),
    });
    return m.proc;
  }

  process(id: number): CliProcess {
    const proc = this.member(id).proc;
    if (proc === undefined) throw new Error(`node ${id} was never started`);
    return proc;
  }

  pid(id: number): number {
    return this.process(id).pid;
  }

  exited(id: number): boolean {
    const child = this.process(id).child;
    return child.exitCode !== null || child.signalCode !== null;
  }

  /** SIGKILL / SIGTERM / SIGINT: sends it and waits (bounded) for the exit. */
  async kill(id: number, signal: 'SIGKILL' | 'SIGTERM' | 'SIGINT' = 'SIGKILL', timeoutMs = 15_000): Promise<ExitStatus> {
    return this.process(id).kill(signal, timeoutMs);
  }

  /** SIGSTOP (the process freezes, its sockets stay open) or SIGCONT; returns at once. */
  signal(id: number, signal: 'SIGSTOP' | 'SIGCONT'): void {
    process.kill(this.pid(id), signal);
  }

  /** Lines the node's current process printed on stderr so far. */
  stderr(id: number): readonly string[] {
    return this.member(id).proc?.stderrLines ?? [];
  }

  /** SIGKILLs what still runs (SIGCONT first, in case it is stopped) and removes the data dirs. */
  async destroy(): Promise<void> {
    await Promise.all(
      [...this.members.values()].map(async (m) => {
        if (m.proc !== undefined && m.proc.child.exitCode === null && m.proc.child.signalCode === null) {
          try {
            process.kill(m.proc.pid, 'SIGCONT');
          } catch {
            // already gone
          }
          await m.proc.kill('SIGKILL', 5_000).catch(() => undefined);
        }
      }),
    );
    await Promise.all([...this.members.values()].map((m) => rm(m.dataDir, { recursive: true, force: true })));
  }
}

export interface ClusterWait {
  cluster: ClusterDescription;
  /** From the start of the wait to the end of the describeCluster call that satisfied it, ms. */
  elapsedMs: number;
  /** Calls made. */
  polls: number;
}

/**
 * Polls `admin.describeCluster()` until `done` holds; each call waits ~300 ms for status replies, so
 * there is no sleep. Failed calls are retried until the deadline. Rejects after `timeoutMs` with the
 * last description seen.
 */
export async function waitForCluster(
  admin: Admin,
  what: string,
  done: (c: ClusterDescription) => boolean,
  timeoutMs: number,
  onPoll?: (c: ClusterDescription, endedAtMs: number) => void,
): Promise<ClusterWait> {
  const started = performance.now();
  const deadline = started + timeoutMs;
  let last: ClusterDescription | undefined;
  let lastError: unknown;
  let polls = 0;
  while (performance.now() < deadline) {
    polls++;
    try {
      last = await admin.describeCluster();
      const now = performance.now();
      onPoll?.(last, now);
      if (done(last)) return { cluster: last, elapsedMs: now - started, polls };
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(
    `${what}: not reached within ${timeoutMs} ms (${polls} polls); last: ${JSON.stringify(last)}` +
      (lastError === undefined ? '' : `; last error: ${String(lastError)}`),
  );
}

/** The one voter that is leader, if exactly one is. */
export function soleLeader(c: ClusterDescription): ClusterDescription['voters'][number] | undefined {
  const leaders = c.voters.filter((v) => v.role === 'leader');
  return leaders.length === 1 ? leaders[0] : undefined;
}

export interface ProbeReply {
  status: NodeStatus;
  /** performance.now() when the reply arrived. */
  atMs: number;
  /** Round of the request it answers. */
  round: number;
}

/**
 * Asks every node for its status every `intervalMs` (a publish with a reply subject per round) and
 * keeps the replies as they arrive, so a change is seen within about one interval plus the node's
 * reaction time. Owns its own NATS connection.
 */
export class StatusProbe {
  private round = 0;
  private readonly waiters = new Set<(r: ProbeReply) => void>();
  private readonly timer: NodeJS.Timeout;
  private readonly inbox: string;

  private constructor(
    private readonly transport: NatsTransport,
    cluster: string,
    intervalMs: number,
  ) {
    const subject = new Subjects(cluster).status();
    this.inbox = `_INBOX.tm-probe.${process.pid}.${Math.random().toString(36).slice(2)}`;
    const nc = transport.connection;
    nc.subscribe(`${this.inbox}.*`, {
      callback: (err, msg) => {
        if (err) return;
        const atMs = performance.now();
        let status: NodeStatus;
        try {
          status = decodeReply(msg.data, nodeStatus);
        } catch {
          return;
        }
        const reply = { status, atMs, round: Number(msg.subject.slice(this.inbox.length + 1)) };
        for (const w of this.waiters) w(reply);
      },
    });
    const body = encodeMessage({ timeoutMs: Math.max(1, intervalMs * 4) } satisfies StatusRequest);
    this.timer = setInterval(() => {
      this.round++;
      nc.publish(subject, body, { reply: `${this.inbox}.${this.round}` });
    }, intervalMs);
  }

  static async connect(nats: string, cluster: string, intervalMs = 20): Promise<StatusProbe> {
    const transport = await connectNats({ servers: nats, name: 'tidemark-status-probe' });
    return new StatusProbe(transport, cluster, intervalMs);
  }

  /**
   * The first reply, to a request sent after this call, that satisfies `match`. Rejects after
   * `timeoutMs`.
   */
  waitFor(what: string, match: (s: NodeStatus) => boolean, timeoutMs: number): Promise<ProbeReply> {
    const fromRound = this.round + 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`status probe: ${what} not seen within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (r: ProbeReply) => {
        if (r.round < fromRound || !match(r.status)) return;
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve(r);
      };
      this.waiters.add(waiter);
    });
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.waiters.clear();
    await this.transport.close();
  }
}
