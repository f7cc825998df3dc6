import { Tidemark } from '../../client/client.js';
import type { TopicDescription } from '../../client/admin.js';
import { TOPIC_CONFIG_KEYS } from '../../metadata/topic-config.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse } from '../args.js';
import { UsageError } from '../cli-error.js';

export const TOPIC_HELP = `Usage:
  tidemark topic create NAME [--partitions P] [--replication-factor R] [--config key=value]...
  tidemark topic list [--json]
      one name per line; --json: one line, a JSON array of names
  tidemark topic describe NAME [--json]
      per partition: leader, leader epoch, replicas, ISR, log start / end offset, high watermark,
      and each replica's log end offset as the leader last saw it (ReplicaLEO: broker=offset)
  tidemark topic delete NAME
  tidemark topic alter NAME [--partitions P] [--config key=value]... [--delete-config key]...
      grow to P partitions (never shrinks: that would delete records); set or delete config keys

Topic config keys: ${TOPIC_CONFIG_KEYS.join(', ')}.
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  partitions: { type: 'string' },
  'replication-factor': { type: 'string' },
  config: { type: 'string', multiple: true },
  json: { type: 'boolean' },
  'delete-config': { type: 'string', multiple: true },
} as const;

function parseConfig(entries: string[] | undefined): Record<string, string> {
  const config: Record<string, string> = {};
  for (const entry of entries ?? []) {
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new UsageError(`--config expects key=value, got "${entry}"`);
    config[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return config;
}

function describeText(d: TopicDescription): string {
  const rf = d.partitions[0]?.replicas.length ?? 0;
  const config = Object.entries(d.config)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  const exclusive = d.exclusiveProducer === undefined ? '-' : `${d.exclusiveProducer.name} (${d.exclusiveProducer.accessMode})`;
  const lines = [
    // Configs stays last (as Kafka's describe has it): scripts match the line up to its end.
    `Topic: ${d.name}\tTopicId: ${d.topicId}\tProducerEpoch: ${d.producerEpoch}\tExclusiveProducer: ${exclusive}` +
      `\tPartitions: ${d.partitions.length}\tReplicationFactor: ${rf}\tConfigs: ${config}`,
  ];
  for (const p of d.partitions) {
    lines.push(
      `\tPartition: ${p.partition}\tLeader: ${p.leader}\tLeaderEpoch: ${p.leaderEpoch}\tReplicas: ${p.replicas.join(',')}\tIsr: ${p.isr.join(',')}` +
        `\tLogStartOffset: ${p.logStartOffset}\tLogEndOffset: ${p.logEndOffset}\tHighWatermark: ${p.highWatermark}` +
        `\tReplicaLEO: ${p.replicaStates.map((r) => `${r.brokerId}=${r.logEndOffset}`).join(',') || '-'}`,
    );
  }
  return lines.join('\n');
}

export async function topicCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${TOPIC_HELP}\n`);
    return sub === undefined ? 2 : 0;
  }
  const positionals = sub === 'list' ? 0 : 1;
  if (!['create', 'list', 'describe', 'delete', 'alter'].includes(sub)) throw new UsageError(`unknown topic command "${sub}"`);
  const { values, positionals: args } = parse(`topic ${sub}`, rest, OPTIONS, positionals);
  if (values.help) {
    process.stdout.write(`${TOPIC_HELP}\n`);
    return 0;
  }
  const name = args[0] ?? '';
  const partitions = intFlag('partitions', values.partitions, 1, 10_000) ?? 1;
  const replicationFactor = intFlag('replication-factor', values['replication-factor'], 1, 16) ?? 1;
  const config = parseConfig(values.config);
  const client = await Tidemark.connect(connection(values));
  try {
    const admin = client.admin();
    switch (sub) {
      case 'create':
        await admin.createTopic({ name, partitions, replicationFactor, config });
        process.stdout.write(`Created topic ${name}.\n`);
        break;
      case 'list': {
        const topics = await admin.listTopics();
        process.stdout.write(values.json ? `${JSON.stringify(topics)}\n` : topics.map((topic) => `${topic}\n`).join(''));
        break;
      }
      case 'describe': {
        const d = await admin.describeTopic(name);
        process.stdout.write(values.json ? `${JSON.stringify(d)}\n` : `${describeText(d)}\n`);
        break;
      }
      case 'delete':
        await admin.deleteTopic(name);
        process.stdout.write(`Deleted topic ${name}.\n`);
        break;
      case 'alter': {
        const deletes = values['delete-config'] ?? [];
        if (values.partitions === undefined && Object.keys(config).length === 0 && deletes.length === 0) {
          throw new UsageError('topic alter needs --partitions, --config or --delete-config');
        }
        if (Object.keys(config).length > 0 || deletes.length > 0) {
          const topic = await admin.alterTopicConfig(name, { set: config, delete: deletes });
          const shown = Object.entries(topic.config).map(([k, v]) => `${k}=${v}`).join(',');
          process.stdout.write(`Topic ${name} config: ${shown || '(defaults)'}\n`);
        }
        if (values.partitions !== undefined) {
          const topic = await admin.createPartitions(name, partitions);
          process.stdout.write(`Topic ${name} has ${topic.partitions.length} partitions.\n`);
        }
        break;
      }
    }
  } finally {
    await client.close();
  }
  return 0;
}
