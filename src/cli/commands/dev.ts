import { join, resolve } from 'node:path';
import { startNode } from '../../node.js';
import { createLogger } from '../../runtime/logger.js';
import { parseArgs } from 'node:util';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, parse } from '../args.js';
import { ensureNats } from '../embedded-nats.js';
import { onShutdownSignal } from '../signals.js';

export const DEV_HELP = `Usage: tidemark dev [--data-dir DIR] [--nats URL] [--cluster NAME]

Starts a local Tidemark for development: uses the NATS server at --nats if one answers there,
otherwise runs nats-server (from PATH) itself on that port and stops it on exit. Then starts
node 1 with its data in DIR/node-1. Ctrl-C stops everything cleanly; data stays for the next run.

Options:
  --data-dir DIR    default .tidemark/dev
  --log-level L     pino level (default info)
${GLOBAL_HELP}`;

const OPTIONS = { 'data-dir': { type: 'string' }, 'log-level': { type: 'string' } } as const;

export async function devCommand(argv: string[]): Promise<number> {
  const { values } = parse(() => parseArgs({ args: argv, options: { ...GLOBAL_OPTIONS, ...OPTIONS }, allowPositionals: true }), 0);
  if (values.help) {
    process.stdout.write(`${DEV_HELP}\n`);
    return 0;
  }
  const dataDir = resolve(values['data-dir'] ?? '.tidemark/dev');
  const { servers, cluster } = connection(values);
  const nats = await ensureNats(servers, join(dataDir, 'nats'));
  const logger = createLogger({ pretty: true, level: values['log-level'] ?? 'info' });
  let node;
  try {
    node = await startNode({ id: 1, dataDir: join(dataDir, 'node-1'), natsUrl: nats.url, cluster, logger });
  } catch (error) {
    await nats.stop();
    throw error;
  }
  await node.ready();
  const hint = nats.url === servers ? '' : `\n  NATS is on ${nats.url} (port taken); in other terminals: export TIDEMARK_NATS=${nats.url}`;
  process.stdout.write(
    `Tidemark dev is running: cluster "${cluster}", NATS ${nats.url} (${nats.owned ? 'started by tidemark dev' : 'existing server'}), data in ${dataDir}${hint}
  Try, in another terminal:
    npx tidemark topic create orders --partitions 3
    seq 1 1000 | npx tidemark produce orders
    npx tidemark consume orders --from-beginning --max-messages 1000
    npx tidemark topic describe orders
  Ctrl-C to stop.
`,
  );
  await onShutdownSignal();
  process.stdout.write('stopping...\n');
  await node.close();
  await nats.stop();
  logger.flush();
  return 0;
}
