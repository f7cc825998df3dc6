/**
 * A nats-server cluster on loopback for benches: N servers (default 3), each with JetStream on its
 * own store dir under one temp dir, full-mesh cluster routes between them. Works with nats-server
 * 2.9 (no 2.10+ config keys). Every wait is bounded; `stop()` (idempotent) SIGTERMs the servers,
 * SIGKILLs any that linger, and removes the temp dir, also after a failed start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { freePort } from '../test/helpers/nats-server.js';

export interface NatsClusterServer {
  /** server_name, e.g. "n1". */
  name: string;
  url: string;
  port: number;
  child: ChildProcess;
}

export interface NatsCluster {
  servers: NatsClusterServer[];
  /** Temp dir holding configs and JetStream store dirs. */
  dir: string;
  /** The client URL of the server with this server_name. */
  urlOf(name: string): string;
  stop(): Promise<void>;
}

export interface NatsClusterOptions {
  /** @default 3 */
  size?: number;
  /** The cluster's name (`cluster { name }`). @default 'bench' */
  name?: string;
  /** Bound on every server logging "Server is ready" and JetStream answering, ms. @default 30000 */
  timeoutMs?: number;
}

const STOP_GRACE_MS = 5_000;

function waitForLine(child: ChildProcess, text: string, timeoutMs: number, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => done(new Error(`${what}: "${text}" not logged within ${timeoutMs} ms: ${seen.slice(-2000)}`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      seen = (seen + chunk.toString()).slice(-8000);
      if (seen.includes(text)) done();
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => done(new Error(`${what} exited (${code ?? signal}): ${seen.slice(-2000)}`));
    const done = (error?: Error) => {
      clearTimeout(timer);
      child.stderr!.off('data', onData);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve();
    };
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), STOP_GRACE_MS)));
  if ((await Promise.race([exited, late])) === 'late') {
    child.kill('SIGKILL');
    await exited;
  }
  clearTimeout(timer);
}

/**
 * Waits until the JetStream meta group has a leader (account info answers without error) as seen
 * from every server, so streams can be created.
 */
async function waitForJetStream(urls: string[], deadline: number): Promise<void> {
  for (const url of urls) {
    let lastError: unknown;
    let nc: NatsConnection | undefined;
    try {
      nc = await connect({ servers: url, name: 'bench-js-probe', timeout: 2000 });
      for (;;) {
        if (Date.now() > deadline) throw new Error(`JetStream not available at ${url}: ${String(lastError)}`);
        try {
          const jsm = await jetstreamManager(nc, { timeout: 2000 });
          await jsm.getAccountInfo();
          break;
        } catch (error) {
          lastError = error;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    } finally {
      await nc?.close();
    }
  }
}

export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const size = options.size ?? 3;
  const clusterName = options.name ?? 'bench';
  const timeoutMs = options.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  const dir = await mkdtemp(join(tmpdir(), 'tm-bench-natsc-'));
  const servers: NatsClusterServer[] = [];
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      await Promise.all(servers.map((s) => stopChild(s.child)));
      await rm(dir, { recursive: true, force: true });
    })());
  try {
    const ports: Array<{ client: number; route: number }> = [];
    for (let i = 0; i < size; i++) ports.push({ client: await freePort(), route: await freePort() });
    for (let i = 0; i < size; i++) {
      const name = `n${i + 1}`;
      const store = join(dir, name);
      await mkdir(store);
      const routes = ports.filter((_, j) => j !== i).map((p) => `nats-route://127.0.0.1:${p.route}`);
      const config = [
        `server_name: ${name}`,
        `listen: 127.0.0.1:${ports[i]!.client}`,
        `jetstream {`,
        `  store_dir: ${JSON.stringify(store)}`,
        `}`,
        `cluster {`,
        `  name: ${clusterName}`,
        `  listen: 127.0.0.1:${ports[i]!.route}`,
        `  routes: [${routes.map((r) => JSON.stringify(r)).join(', ')}]`,
        `}`,
        '',
      ].join('\n');
      const file = join(dir, `${name}.conf`);
      await writeFile(file, config);
      const child = spawn('nats-server', ['-c', file], { stdio: ['ignore', 'ignore', 'pipe'] });
      child.once('error', () => undefined);
      servers.push({ name, url: `nats://127.0.0.1:${ports[i]!.client}`, port: ports[i]!.client, child });
    }
    await Promise.all(servers.map((s) => waitForLine(s.child, 'Server is ready', Math.max(1, deadline - Date.now()), `nats-server ${s.name}`)));
    for (const s of servers) s.child.stderr!.resume();
    await waitForJetStream(
      servers.map((s) => s.url),
      deadline,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    servers,
    dir,
    urlOf(name: string) {
      const s = servers.find((x) => x.name === name);
      if (s === undefined) throw new Error(`no nats-server named ${name}`);
      return s.url;
    },
    stop,
  };
}
