/** Starts a real nats-server on a free loopback port for one test file. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface NatsServer {
  url: string;
  port: number;
  /** The server's temp dir (its config file, JetStream store); removed by stop(). */
  dir: string;
  stop(): Promise<void>;
}

export interface NatsServerOptions {
  jetstream?: boolean;
  /**
   * nats-server configuration text (accounts, users, permissions, TLS), written to `nats.conf` in
   * the server's temp dir and passed with `-c`; address and port still come from the command line.
   * A function gets that dir first, for files the configuration names (certificates).
   */
  config?: string | ((dir: string) => string | Promise<string>);
  /** Extra environment for nats-server: the configuration's `$VARIABLES` (passwords). */
  env?: Record<string, string>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** nats-server logs "Server is ready" on stderr once it accepts clients: await that line. */
async function waitForReady(child: ChildProcess, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`nats-server not ready within ${timeoutMs} ms: ${seen}`)), timeoutMs);
    child.stderr!.on('data', (chunk: Buffer) => {
      seen = (seen + chunk.toString()).slice(-4000);
      if (seen.includes('Server is ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code}: ${seen}`));
    });
  });
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'tm-nats-'));
  const args = ['-a', '127.0.0.1', '-p', String(port)];
  if (options.jetstream) args.push('-js', '-sd', dir);
  if (options.config !== undefined) {
    const file = join(dir, 'nats.conf');
    await writeFile(file, typeof options.config === 'string' ? options.config : await options.config(dir));
    args.push('-c', file);
  }
  const child = spawn('nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...options.env } });
  await waitForReady(child, 10_000);
  child.stderr!.resume();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    dir,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
