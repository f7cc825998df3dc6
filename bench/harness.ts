/** Shared bench plumbing: a nats-server and a Tidemark node as child processes, medians of rounds, tables. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NODE_PROCESS_FLAGS } from '../src/cli/node-flags.js';
import { freePort, startNatsServer, type NatsServer } from '../test/helpers/nats-server.js';

export { freePort, startNatsServer, type NatsServer };

export interface NodeProcess {
  child: ChildProcess;
  dataDir: string;
  stop(): Promise<void>;
}

const BIN = new URL('../../bin/tidemark.js', import.meta.url).pathname;
const READY_TIMEOUT_MS = 15_000;

/** Starts `tidemark node start` in its own process; resolves once it logs "node ready". */
export async function startNodeProcess(natsUrl: string, id = 1): Promise<NodeProcess> {
  const dataDir = await mkdtemp(join(tmpdir(), 'tm-bench-'));
  // BENCH_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the node process.
  const nodeArgs = (process.env['BENCH_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
  // BENCH_TIDEMARK_ARGS (e.g. "--metrics-port 0") adds `tidemark node start` flags, to measure what they cost.
  const tidemarkArgs = (process.env['BENCH_TIDEMARK_ARGS'] ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...NODE_PROCESS_FLAGS, ...nodeArgs, BIN, 'node', 'start', '--id', String(id), '--data-dir', dataDir, '--nats', natsUrl, '--log-level', 'info', ...tidemarkArgs], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`node not ready: ${seen}`)), READY_TIMEOUT_MS);
    child.stderr!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.includes('"node ready"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`node exited with ${code}: ${seen}`)));
  });
  child.stderr!.resume();
  return {
    child,
    dataDir,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The median of a few values (rounds); latencies go into hdr.ts's Histogram instead. NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function table(rows: Array<Record<string, string | number>>): string {
  const cols = Object.keys(rows[0] ?? {});
  const width = (c: string) => Math.max(c.length, ...rows.map((r) => String(r[c]).length));
  const line = (cells: string[]) => `| ${cells.map((x, i) => x.padEnd(width(cols[i]!))).join(' | ')} |`;
  return [line(cols), line(cols.map((c) => '-'.repeat(width(c)))), ...rows.map((r) => line(cols.map((c) => String(r[c]))))].join('\n');
}
