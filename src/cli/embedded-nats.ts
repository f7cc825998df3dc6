/**
 * `tidemark dev` needs a NATS server: use the given URL if something answers there, otherwise run
 * nats-server from PATH as a child process on that URL's port (or a free one if it is taken), with
 * its own data dir, and stop it on exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect as tcpConnect } from 'node:net';

export interface EmbeddedNats {
  url: string;
  /** True when this process started it (and will stop it). */
  owned: boolean;
  stop(): Promise<void>;
}

/** Time to wait for the child nats-server to say it is ready, ms. */
const NATS_READY_TIMEOUT_MS = 10_000;
const PROBE_TIMEOUT_MS = 500;

/** Does a NATS server answer at host:port? (It sends INFO first on connect.) */
export function natsAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done(false));
    socket.once('data', (chunk) => done(chunk.toString('utf8', 0, 4) === 'INFO'));
    socket.once('error', () => done(false));
  });
}

function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const address = srv.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function waitReady(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`nats-server did not start within ${NATS_READY_TIMEOUT_MS} ms: ${seen.trim()}`)), NATS_READY_TIMEOUT_MS);
    child.stderr!.on('data', (chunk: Buffer) => {
      seen = (seen + chunk.toString()).slice(-4096);
      if (seen.includes('Server is ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot run nats-server (${error.message}); run scripts/ensure-nats-server.sh`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with code ${code}: ${seen.trim()}`));
    });
  });
}

export async function ensureNats(url: string, dataDir: string): Promise<EmbeddedNats> {
  const parsed = new URL(url);
  const host = parsed.hostname || '127.0.0.1';
  const port = Number(parsed.port || 4222);
  if (await natsAnswers(host, port)) return { url, owned: false, stop: async () => {} };

  const loopback = '127.0.0.1';
  const chosen = (await portFree(loopback, port)) ? port : await freePort(loopback);
  const child = spawn('nats-server', ['-a', loopback, '-p', String(chosen), '-sd', dataDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  await waitReady(child);
  child.stderr!.resume();
  return {
    url: `nats://${loopback}:${chosen}`,
    owned: true,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
