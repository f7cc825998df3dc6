/** A real node on a temp data dir, for integration tests. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startNode, type NodeOptions, type TidemarkNode } from '../../src/node.js';

export interface TestNode extends TidemarkNode {
  dataDir: string;
  /** Closes the node and removes its data dir. */
  destroy(): Promise<void>;
}

export async function tempDir(prefix = 'tm-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function startTestNode(natsUrl: string, options: Partial<NodeOptions> = {}): Promise<TestNode> {
  const dataDir = options.dataDir ?? (await tempDir());
  const node = await startNode({ id: 1, natsUrl, logger: pino({ level: process.env['TIDEMARK_LOG_LEVEL'] ?? 'silent' }), ...options, dataDir });
  await node.ready();
  return Object.assign(Object.create(node) as TidemarkNode, {
    id: node.id,
    cluster: node.cluster,
    ready: (timeoutMs?: number) => node.ready(timeoutMs),
    close: () => node.close(),
    dataDir,
    async destroy() {
      await node.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  });
}
