/**
 * One nats-server, one `tidemark node start` process and one SDK client for a CLI test file, with
 * the hooks every such file needs: start before, everything stopped after (CLI children included).
 */
import type { TestFn } from 'ava';
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { Tidemark } from '../../src/client/client.js';
import { killAllCliProcesses, runCli, startNodeProcess, TIDEMARK_BIN, type CliOptions, type CliProcess, type CliResult } from './cli.js';
import { startNatsServer, type NatsServer } from './nats-server.js';
import { tempDir } from './node.js';

export interface CliNodeFixture {
  readonly nats: NatsServer;
  readonly client: Tidemark;
  /** `tidemark ARGS` against this file's node (TIDEMARK_NATS set). */
  tidemark(args: string[], options?: CliOptions): Promise<CliResult>;
  /** The same, keeping stdout as bytes (runCli decodes UTF-8, which would hide a mangled byte). */
  tidemarkBytes(args: string[], timeoutMs?: number): Promise<{ code: number | null; stdout: Buffer; stderr: string }>;
}

/** `setup` runs once the node and client are up (ava runs a file's before hooks concurrently). */
export function cliNodeFixture(test: TestFn, dataDirPrefix: string, setup?: (client: Tidemark) => Promise<unknown>): CliNodeFixture {
  const parts: Partial<{ nats: NatsServer; dataDir: string; node: CliProcess; client: Tidemark }> = {};
  test.before(async () => {
    parts.nats = await startNatsServer();
    parts.dataDir = await tempDir(dataDirPrefix);
    parts.node = await startNodeProcess({ nats: parts.nats.url, dataDir: parts.dataDir });
    parts.client = await Tidemark.connect({ servers: parts.nats.url, cluster: 'tidemark' });
    await setup?.(parts.client);
  });
  test.after.always(async () => {
    await parts.client?.close();
    await parts.node?.kill('SIGTERM').catch(() => {});
    await killAllCliProcesses();
    await parts.nats?.stop();
    if (parts.dataDir !== undefined) await rm(parts.dataDir, { recursive: true, force: true });
  });
  return {
    get nats() {
      return parts.nats!;
    },
    get client() {
      return parts.client!;
    },
    tidemark: (args, options = {}) => runCli(args, { nats: parts.nats!.url, ...options }),
    tidemarkBytes(args, timeoutMs = 20_000) {
      const env: NodeJS.ProcessEnv = { ...process.env, TIDEMARK_NATS: parts.nats!.url };
      delete env['TIDEMARK_CLUSTER'];
      delete env['NODE_OPTIONS'];
      const child = spawn(process.execPath, [TIDEMARK_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`tidemark ${args.join(' ')} did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
        }, timeoutMs);
        child.once('error', reject);
        child.once('close', (code) => {
          clearTimeout(timer);
          resolve({ code, stdout: Buffer.concat(out), stderr });
        });
      });
    },
  };
}
