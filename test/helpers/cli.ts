/**
 * Runs the real CLI (`node bin/tidemark.js ...`) as child processes, for end-to-end tests.
 *
 * Every wait is bounded: a command that outlives its timeout is killed with SIGKILL and the promise
 * rejects (failing the test) with what the child printed so far. Long-running children (`node start`,
 * `dev`) are tracked so a test file can kill whatever is left in `test.after.always`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { NODE_PROCESS_FLAGS } from '../../src/cli/node-flags.js';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** bin/tidemark.js, from dist/test/helpers/cli.js. */
export const TIDEMARK_BIN = fileURLToPath(new URL('../../../bin/tidemark.js', import.meta.url));

export interface CliOptions {
  /** Sets TIDEMARK_NATS for the child. */
  nats?: string;
  /** Text or bytes written to the child's stdin (then closed); without it stdin is empty. */
  stdin?: string | Uint8Array;
  /** spawnCli only: leave the child's stdin open after writing `stdin` (write more via child.stdin). */
  keepStdinOpen?: boolean;
  /** Kill the child and fail after this long, ms. @default 20000 */
  timeoutMs?: number;
  /** Extra environment for the child. */
  env?: Record<string, string>;
}

export interface CliResult {
  /** Exit code, or null when the child died of a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit, ms. */
  ms: number;
}

const DEFAULT_TIMEOUT_MS = 20_000;

/** The child's environment: the parent's, minus settings that would change what the CLI does. */
function childEnv(options: CliOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['TIDEMARK_NATS'];
  delete env['TIDEMARK_CLUSTER'];
  delete env['TIDEMARK_LOG_LEVEL'];
  delete env['NODE_OPTIONS'];
  for (const name of Object.keys(env)) if (name.startsWith('TIDEMARK_NATS_')) delete env[name];
  if (options.nats !== undefined) env['TIDEMARK_NATS'] = options.nats;
  return { ...env, ...options.env };
}

/** `detached` makes the child a process-group leader, so its own children (dev's nats-server) can be killed with it. */
function spawnTidemark(args: string[], options: CliOptions, detached = false): ChildProcess {
  // A node process gets the flags every node is started with; TM_NODE_ARGS adds more (e.g. --cpu-prof).
  const flags = args[0] === 'node' && args[1] === 'start' ? NODE_PROCESS_FLAGS : [];
  const extra = (process.env['TM_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
  return spawn(process.execPath, [...flags, ...extra, TIDEMARK_BIN, ...args], { env: childEnv(options), stdio: ['pipe', 'pipe', 'pipe'], detached });
}

function describe(args: string[]): string {
  return `tidemark ${args.map((a) => (/^[\w./:=-]+$/.test(a) ? a : JSON.stringify(a))).join(' ')}`;
}

/** Runs `tidemark ...args` to completion and collects its output. Rejects only on timeout or spawn failure. */
export function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const started = performance.now();
  const child = spawnTidemark(args, options);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  // The child may exit before reading all of stdin (e.g. a usage error): that is not a test failure.
  child.stdin!.on('error', () => {});
  child.stdin!.end(options.stdin ?? '');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${describe(args)} did not exit within ${timeoutMs} ms (killed)\nstdout: ${stdout.slice(-2000)}\nstderr: ${stderr.slice(-2000)}`));
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    // 'close' (not 'exit'): stdout and stderr are fully read by then.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A long-running `tidemark` child whose output lines can be awaited. */
export interface CliProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Lines printed so far. */
  readonly stdoutLines: string[];
  readonly stderrLines: string[];
  /** Settles when the child has exited and its output is read. */
  readonly exited: Promise<ExitStatus>;
  /**
   * Resolves with the first line (already printed or still to come) on `stream` that matches;
   * rejects if the child exits first or after `timeoutMs`.
   */
  waitForLine(stream: 'stdout' | 'stderr', match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Sends `signal` and waits (bounded) for the exit; rejects on timeout after a SIGKILL. */
  kill(signal: NodeJS.Signals, timeoutMs?: number): Promise<ExitStatus>;
}

/** Long-running children still running; each leads its own process group (see spawnCli). */
const running = new Set<ChildProcess>();

/** SIGKILLs the child's process group: the child and anything it started (dev's nats-server). */
function killGroup(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

process.once('exit', () => {
  for (const child of running) killGroup(child);
});

/**
 * SIGKILLs every long-running child started by this process that is still running, with its process
 * group; for `after.always`.
 */
export async function killAllCliProcesses(): Promise<void> {
  await Promise.all(
    [...running].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          killGroup(child);
        }),
    ),
  );
}

/** Starts `tidemark ...args` and returns at once; see CliProcess. */
export function spawnCli(args: string[], options: CliOptions = {}): CliProcess {
  const child = spawnTidemark(args, options, true);
  child.stdin!.on('error', () => {});
  if (options.keepStdinOpen) {
    if (options.stdin !== undefined) child.stdin!.write(options.stdin);
  } else {
    child.stdin!.end(options.stdin ?? '');
  }
  running.add(child);
  const lines = { stdout: [] as string[], stderr: [] as string[] };
  const watchers = new Set<() => void>();
  const streamsDone = (['stdout', 'stderr'] as const).map(
    (name) =>
      new Promise<void>((resolve) => {
        const rl = createInterface({ input: child[name]!, crlfDelay: Infinity });
        rl.on('line', (line) => {
          lines[name].push(line);
          for (const w of watchers) w();
        });
        rl.once('close', resolve);
        child[name]!.once('close', resolve); // also when the test destroyed the stream (no 'end')
      }),
  );
  let status: ExitStatus | undefined;
  const exited = new Promise<ExitStatus>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      running.delete(child);
      void Promise.all(streamsDone).then(() => {
        status = { code, signal };
        for (const w of watchers) w();
        resolve(status);
      });
    });
  });
  exited.catch(() => {});
  const name = describe(args);
  const tail = () => `\nstdout: ${lines.stdout.slice(-20).join('\n')}\nstderr: ${lines.stderr.slice(-20).join('\n')}`;

  return {
    child,
    pid: child.pid!,
    stdoutLines: lines.stdout,
    stderrLines: lines.stderr,
    exited,
    waitForLine(stream, match, timeoutMs = DEFAULT_TIMEOUT_MS) {
      return new Promise((resolve, reject) => {
        let checked = 0;
        const check = () => {
          for (; checked < lines[stream].length; checked++) {
            const line = lines[stream][checked]!;
            if (match(line)) return finish(() => resolve(line));
          }
          if (status !== undefined) {
            finish(() => reject(new Error(`${name} exited (code ${status!.code}, signal ${status!.signal}) before printing the awaited line${tail()}`)));
          }
        };
        const timer = setTimeout(
          () => finish(() => reject(new Error(`${name}: awaited line not printed within ${timeoutMs} ms${tail()}`))),
          timeoutMs,
        );
        const finish = (settle: () => void) => {
          clearTimeout(timer);
          watchers.delete(check);
          settle();
        };
        watchers.add(check);
        check();
      });
    },
    async kill(signal, timeoutMs = DEFAULT_TIMEOUT_MS) {
      if (status !== undefined) return status;
      child.kill(signal);
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          killGroup(child);
          reject(new Error(`${name} did not exit within ${timeoutMs} ms of ${signal} (killed)${tail()}`));
        }, timeoutMs);
      });
      try {
        return await Promise.race([exited, expired]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** Parses a pino JSON log line; undefined for anything else. */
export function logLine(line: string): { msg?: unknown; level?: unknown; [key: string]: unknown } | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const parsed: unknown = JSON.parse(line);
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export interface NodeProcessOptions {
  nats: string;
  dataDir: string;
  /** @default 1 */
  id?: number;
  /** Bound on reaching "node ready", ms. @default 20000 */
  readyTimeoutMs?: number;
  /** More arguments for `node start` (e.g. `--nats-user NAME`). */
  args?: string[];
  /** More environment for the node (e.g. `TIDEMARK_NATS_PASSWORD`: credentials stay out of argv). */
  env?: Record<string, string>;
}

/**
 * Starts `tidemark node start --id N --data-dir DIR --nats URL` and resolves once the node logged
 * its "node ready" JSON line on stderr (pino, level info). If it is not ready in time it is killed.
 */
export async function startNodeProcess(options: NodeProcessOptions): Promise<CliProcess> {
  const node = spawnCli(['node', 'start', '--id', String(options.id ?? 1), '--data-dir', options.dataDir, '--nats', options.nats, ...(options.args ?? [])], {
    env: { TIDEMARK_LOG_LEVEL: 'info', ...options.env },
  });
  try {
    await node.waitForLine('stderr', (line) => logLine(line)?.msg === 'node ready', options.readyTimeoutMs ?? DEFAULT_TIMEOUT_MS);
  } catch (error) {
    killGroup(node.child);
    await node.exited.catch(() => {});
    throw error;
  }
  return node;
}
