import { startNode, type NodeRole } from '../../node.js';
import { createLogger } from '../../runtime/logger.js';
import { NODE_PROCESS_FLAGS, PRODUCER_SESSION_FLAG_HELP, PRODUCER_SESSION_FLAG_OPTIONS, producerSessionFlags } from '../node-flags.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse, SECURITY_ENV } from '../args.js';
import { UsageError } from '../cli-error.js';
import { onShutdownSignal } from '../signals.js';
import { applyNodeConfig, formatNodeConfig, readNodeConfig, type EffectiveSetting } from '../node-config.js';
import { DEFAULT_PARTITION_LIMITS } from '../../actors/partition/types.js';
import { DEFAULT_RAFT_LIMITS } from '../../quorum/types.js';
import { NODE_TAIL_CACHE_BYTES_MAX } from '../../storage/tail-cache.js';

export const NODE_HELP = `Usage: tidemark node start --id N --data-dir DIR [--roles broker,controller] [--controllers 1,2,3]
       tidemark node start --config FILE [flags that override it] [--print-config]

Runs one Tidemark node against an existing NATS server. By default it is both a broker and a
controller voter (combined mode); --roles broker or --roles controller separate them. The voters
are static configuration, the same list on every node (like KRaft's controller.quorum.voters).
SIGINT / SIGTERM stop it cleanly: requests stop, pending writes finish, storage closes.

Options:
  --config FILE        read settings from FILE: one "key = value" per line, the keys being these
                       options' names without "--" (docs/operations.md); flags override the file,
                       the file overrides environment variables
  --print-config       print the effective settings (as a config file) and exit
  --id N               node id: the broker id and the voter id (0..2147483647)
  --data-dir DIR       where the node keeps its RocksDB
  --roles R            broker, controller, or broker,controller (default)
  --controllers LIST   voter ids, comma-separated (default: this node alone)
  --rack NAME          this broker's rack, for replica placement
  --preferred-election-interval-ms N
                       as the active controller, move leadership back to in-sync preferred
                       replicas every N ms (default 10000; 0 disables)
  --retention-check-interval-ms N
                       how often each partition replica applies its topic's retention
                       (default 300000)
  --raft-append-bytes-max N
                       bytes one controller Raft entry may carry (default 524288); a metadata
                       change larger than that commits as a transaction of several entries
  --tail-cache-bytes-max N
                       bytes of recent batches all partitions keep in memory together, for
                       reads right behind the writers (default 67108864; 0 caches nothing)
${PRODUCER_SESSION_FLAG_HELP}
  --metrics-port N     serve GET /metrics (Prometheus), /healthz and /readyz on this port
                       (default: off; 0 picks a free port, logged as "http server listening")
  --metrics-host H     address for that server (default 127.0.0.1; 0.0.0.0 for a scraper on
                       another host)
  --http-api on|off    also serve the /v1 JSON API on that server (default on; it acts with this
                       node's NATS permissions, docs/http-api.md)
  --metrics-partition-series
                       also export per-partition series for the partitions this node leads
                       (at most 1000; docs/operations.md, "Metrics")
  --log-level L        pino level (default info; env TIDEMARK_LOG_LEVEL)
  --pretty             human-readable logs instead of JSON lines
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  config: { type: 'string' },
  'print-config': { type: 'boolean' },
  id: { type: 'string' },
  'data-dir': { type: 'string' },
  roles: { type: 'string' },
  controllers: { type: 'string' },
  rack: { type: 'string' },
  'preferred-election-interval-ms': { type: 'string' },
  'retention-check-interval-ms': { type: 'string' },
  'tail-cache-bytes-max': { type: 'string' },
  'raft-append-bytes-max': { type: 'string' },
  ...PRODUCER_SESSION_FLAG_OPTIONS,
  'metrics-port': { type: 'string' },
  'metrics-host': { type: 'string' },
  'metrics-partition-series': { type: 'boolean' },
  'http-api': { type: 'string' },
  'log-level': { type: 'string' },
  pretty: { type: 'boolean' },
} as const;

export function parseRoles(text: string | undefined): NodeRole[] {
  if (text === undefined) return ['broker', 'controller'];
  const roles = text.split(',').map((r) => r.trim());
  for (const r of roles) if (r !== 'broker' && r !== 'controller') throw new UsageError(`--roles takes broker and/or controller, got "${r}"`);
  return [...new Set(roles)] as NodeRole[];
}

export function parseIdList(flag: string, text: string): number[] {
  const ids = text.split(',').map((x) => intFlag(flag, x.trim(), 0, 2 ** 31 - 1)!);
  if (ids.length === 0 || new Set(ids).size !== ids.length) throw new UsageError(`--${flag} needs distinct ids, got "${text}"`);
  return ids;
}

export async function nodeCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${NODE_HELP}\n`);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'start') throw new UsageError(`unknown node command "${sub}"`);
  const parsed = parse(`node ${sub}`, rest, OPTIONS, 0).values;
  if (parsed.help) {
    process.stdout.write(`${NODE_HELP}\n`);
    return 0;
  }
  const { values, sources } = applyNodeConfig(parsed, parsed.config === undefined ? {} : await readNodeConfig(parsed.config, OPTIONS));
  const id = intFlag('id', values.id, 0, 2 ** 31 - 1);
  if (id === undefined) throw new UsageError('--id is required');
  const dataDir = values['data-dir'];
  if (dataDir === undefined) throw new UsageError('--data-dir is required');
  const roles = parseRoles(values.roles);
  const controllers = values.controllers === undefined ? [id] : parseIdList('controllers', values.controllers);
  if (roles.includes('controller') && !controllers.includes(id)) throw new UsageError(`--controllers must include this node (${id}) when it has the controller role`);
  const preferredElectionIntervalMs = intFlag('preferred-election-interval-ms', values['preferred-election-interval-ms'], 0, 86_400_000);
  const retentionCheckIntervalMs = intFlag('retention-check-interval-ms', values['retention-check-interval-ms'], 1, 86_400_000);
  const appendBytesMax = intFlag('raft-append-bytes-max', values['raft-append-bytes-max'], 4096, 1024 * 1024);
  const tailCacheBytesMax = intFlag('tail-cache-bytes-max', values['tail-cache-bytes-max'], 0, 2 ** 40);
  const metricsPort = intFlag('metrics-port', values['metrics-port'], 0, 65_535);
  const metricsHost = values['metrics-host'];
  if (metricsHost !== undefined && metricsPort === undefined) throw new UsageError('--metrics-host needs --metrics-port');
  if (values['metrics-partition-series'] === true && metricsPort === undefined) throw new UsageError('--metrics-partition-series needs --metrics-port');
  const httpApi = values['http-api'];
  if (httpApi !== undefined && httpApi !== 'on' && httpApi !== 'off') throw new UsageError(`--http-api takes on or off, got "${httpApi}"`);
  if (httpApi !== undefined && metricsPort === undefined) throw new UsageError('--http-api needs --metrics-port');
  const { servers, cluster, ...natsSecurity } = connection(values);
  if (values['print-config']) {
    process.stdout.write(formatNodeConfig(effectiveSettings(values, sources, id)));
    return 0;
  }
  const logger = createLogger({ pretty: values.pretty ?? false, ...(values['log-level'] === undefined ? {} : { level: values['log-level'] }) });
  const missing = NODE_PROCESS_FLAGS.filter((flag) => !process.execArgv.includes(flag));
  if (missing.length > 0) {
    logger.warn({ missing }, 'node started without its V8 flags: expect much more CPU in garbage collection under load (start it as `tidemark node start`, or `node ' + NODE_PROCESS_FLAGS.join(' ') + ' bin/tidemark.js node start`; docs/operations.md)');
  }
  const node = await startNode({
    id,
    dataDir,
    roles,
    controllers,
    ...(values.rack === undefined ? {} : { rack: values.rack }),
    ...(preferredElectionIntervalMs === undefined ? {} : { preferredElectionIntervalMs }),
    ...(retentionCheckIntervalMs === undefined ? {} : { partitionLimits: { retentionCheckIntervalMs } }),
    ...(tailCacheBytesMax === undefined ? {} : { tailCacheBytesMax }),
    ...(appendBytesMax === undefined ? {} : { raftLimits: { appendBytesMax } }),
    ...producerSessionFlags(values),
    ...(metricsPort === undefined ? {} : { metricsPort, metricsHost: metricsHost ?? '127.0.0.1', metricsPartitionSeries: values['metrics-partition-series'] ?? false, httpApi: httpApi !== 'off' }),
    natsUrl: servers,
    natsSecurity,
    cluster,
    logger,
  });
  // Started by `tidemark dev` with an IPC channel: stop when that parent goes away, however it died.
  const parentGone = new Promise<void>((resolve) => process.once('disconnect', resolve));
  const stop = process.send === undefined ? onShutdownSignal() : Promise.race([onShutdownSignal(), parentGone]);
  void node.ready().then(
    () => logger.info('node ready'),
    (error: unknown) => logger.warn({ err: error }, 'node not ready yet'),
  );
  await stop;
  await node.close();
  logger.flush();
  if (process.connected) process.disconnect();
  return 0;
}

/** Defaults of the node start options that have one, as the file would write them. */
function nodeDefaults(id: number): Record<string, string | boolean> {
  return {
    nats: 'nats://127.0.0.1:4222',
    cluster: 'tidemark',
    roles: 'broker,controller',
    controllers: String(id),
    'preferred-election-interval-ms': '10000',
    'retention-check-interval-ms': String(DEFAULT_PARTITION_LIMITS.retentionCheckIntervalMs),
    'raft-append-bytes-max': String(DEFAULT_RAFT_LIMITS.appendBytesMax),
    'tail-cache-bytes-max': String(NODE_TAIL_CACHE_BYTES_MAX),
    'producer-session-timeout-ms': '10000',
    'metrics-host': '127.0.0.1',
    'metrics-partition-series': false,
    'http-api': 'on',
    'log-level': 'info',
    pretty: false,
  };
}

/** Options read from an environment variable when neither flag nor file sets them. */
const OPTION_ENV: Record<string, string> = { nats: 'TIDEMARK_NATS', cluster: 'TIDEMARK_CLUSTER', 'log-level': 'TIDEMARK_LOG_LEVEL', ...SECURITY_ENV };

function effectiveSettings(values: Record<string, unknown>, sources: Map<string, 'flag' | 'file' | 'env' | 'default'>, id: number): EffectiveSetting[] {
  const defaults = nodeDefaults(id);
  return Object.keys(OPTIONS)
    .filter((key) => key !== 'help' && key !== 'config' && key !== 'print-config')
    .map((key): EffectiveSetting => {
      const given = values[key] as string | boolean | undefined;
      if (given !== undefined) return { key, value: given, source: sources.get(key) ?? 'flag' };
      const env = OPTION_ENV[key];
      if (env !== undefined && process.env[env] !== undefined) return { key, value: process.env[env], source: `env ${env}` };
      return { key, value: defaults[key], source: 'default' };
    });
}
