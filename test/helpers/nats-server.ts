/** Starts a real nats-server on a free loopback port for one test file. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface NatsServer {
  url: string;
  port: number;
  stop(): Promise<void>;
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

export async function startNatsServer(options: { jetstream?: boolean } = {}): Promise<NatsServer> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'tm-nats-'));
  const args = ['-a', '127.0.0.1', '-p', String(port)];
  if (options.jetstream) args.push('-js', '-sd', dir);
  const child = spawn('nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  await waitForReady(child, 10_000);
  child.stderr!.resume();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
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
