import { startNode } from '../../node.js';
import { createLogger } from '../../runtime/logger.js';
import { parseArgs } from 'node:util';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse } from '../args.js';
import { UsageError } from '../cli-error.js';
import { onShutdownSignal } from '../signals.js';

export const NODE_HELP = `Usage: tidemark node start --id N --data-dir DIR [--nats URL] [--cluster NAME]

Runs one Tidemark node (broker and controller) against an existing NATS server.
SIGINT / SIGTERM stop it cleanly: requests stop, pending writes finish, storage closes.

Options:
  --id N            broker id, unique in the cluster (0..2147483647)
  --data-dir DIR    where the node keeps its RocksDB
  --log-level L     pino level (default info; env TIDEMARK_LOG_LEVEL)
${GLOBAL_HELP}`;

const OPTIONS = { id: { type: 'string' }, 'data-dir': { type: 'string' }, 'log-level': { type: 'string' } } as const;

export async function nodeCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${NODE_HELP}\n`);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'start') throw new UsageError(`unknown node command "${sub}"`);
  const { values } = parse(() => parseArgs({ args: rest, options: { ...GLOBAL_OPTIONS, ...OPTIONS }, allowPositionals: true }), 0);
  if (values.help) {
    process.stdout.write(`${NODE_HELP}\n`);
    return 0;
  }
  const id = intFlag('id', values.id, 0, 2 ** 31 - 1);
  if (id === undefined) throw new UsageError('--id is required');
  const dataDir = values['data-dir'];
  if (dataDir === undefined) throw new UsageError('--data-dir is required');
  const { servers, cluster } = connection(values);
  const logger = createLogger(values['log-level'] === undefined ? {} : { level: values['log-level'] });
  const node = await startNode({ id, dataDir, natsUrl: servers, cluster, logger });
  const stop = onShutdownSignal();
  void node.ready().then(
    () => logger.info('node ready'),
    (error: unknown) => logger.warn({ err: error }, 'node not ready yet'),
  );
  await stop;
  await node.close();
  logger.flush();
  return 0;
}
