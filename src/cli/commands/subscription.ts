import { Tidemark } from '../../client/client.js';
import type { ResetTarget, SubscriptionDescription } from '../../client/admin.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, parse } from '../args.js';
import { UsageError } from '../cli-error.js';

export const SUBSCRIPTION_HELP = `Usage:
  tidemark subscription list TOPIC [--json]
      the topic's subscriptions, one name per line (--json: each described as below)
  tidemark subscription describe TOPIC NAME [--json]
      per partition: committed position (every offset below it is acknowledged), backlog (records
      not acknowledged up to the high watermark), unacked, consumers ('*' marks a Failover
      partition's active one); '-' where the partition leader does not report the subscription
  tidemark subscription create TOPIC NAME [--initial-position earliest|latest]
      register it (idempotent: an existing one is kept as it is); default initial position latest
  tidemark subscription reset TOPIC NAME --to earliest|latest|OFFSET|ISO-TIME
      move the cursor on every partition: to the log start, to the high watermark, to OFFSET on
      every partition, or to the first record at or after a time (e.g. 2026-12-04T10:00:00Z)
  tidemark subscription delete TOPIC NAME
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  json: { type: 'boolean' },
  to: { type: 'string' },
  'initial-position': { type: 'string' },
} as const;

const COMMANDS = ['list', 'describe', 'create', 'reset', 'delete'] as const;
type Command = (typeof COMMANDS)[number];
/** Which subcommands take each flag (beyond the global ones). */
const FLAGS_OF: Record<'json' | 'to' | 'initial-position', readonly Command[]> = {
  json: ['list', 'describe'],
  to: ['reset'],
  'initial-position': ['create'],
};

/** ISO 8601 date or date-time, e.g. 2026-12-04, 2026-12-04T10:00:00Z, 2026-12-04T10:00:00.5+01:00. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/** `--to`: earliest, latest, an offset, or an ISO time; anything else is a usage error. */
export function parseResetTarget(text: string | undefined): ResetTarget {
  if (text === undefined) throw new UsageError('subscription reset needs --to earliest|latest|OFFSET|ISO-TIME');
  if (text === 'earliest' || text === 'latest') return text;
  if (/^[0-9]+$/.test(text)) {
    const offset = Number(text);
    if (!Number.isSafeInteger(offset)) throw new UsageError(`--to offset is too large: "${text}"`);
    return { offset };
  }
  if (ISO_TIME.test(text)) {
    const ms = Date.parse(text);
    if (Number.isNaN(ms)) throw new UsageError(`--to is not a valid time: "${text}"`);
    if (ms < 0) throw new UsageError(`--to must be at or after 1970-01-01: "${text}"`);
    return { timestamp: ms };
  }
  throw new UsageError(`--to must be earliest, latest, an offset or an ISO time (e.g. 2026-12-04T10:00:00Z), got "${text}"`);
}

const known = (n: number) => (n < 0 ? '-' : String(n));

export function describeSubscriptionText(d: SubscriptionDescription): string {
  const backlog = d.backlogComplete ? String(d.backlog) : `${d.backlog}+ (some partitions not reported)`;
  const lines = [
    `Subscription: ${d.name}\tTopic: ${d.topic}\tId: ${d.id}\tInitialPosition: ${d.initialPosition}\tType: ${d.type ?? '-'}` +
      `\tBacklog: ${backlog}\tUnacked: ${d.unacked}\tConsumers: ${d.consumerCount}`,
  ];
  for (const p of d.partitions) {
    const consumers = p.consumers.map((c) => `${c.consumerName}(${c.consumerId})${p.type === 'Failover' && c.active ? '*' : ''}`).join(',') || '-';
    lines.push(
      `\tPartition: ${p.partition}\tLeader: ${p.leader}\tPosition: ${known(p.markDelete)}\tBacklog: ${known(p.backlog)}` +
        `\tUnacked: ${p.reported ? p.unacked : '-'}\tHighWatermark: ${known(p.highWatermark)}\tConsumers: ${consumers}`,
    );
  }
  return lines.join('\n');
}

function describeTarget(to: ResetTarget): string {
  if (typeof to === 'string') return to;
  if ('offset' in to) return `offset ${to.offset}`;
  return new Date(to.timestamp).toISOString();
}

export async function subscriptionCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${SUBSCRIPTION_HELP}\n`);
    return sub === undefined ? 2 : 0;
  }
  if (!(COMMANDS as readonly string[]).includes(sub)) throw new UsageError(`unknown subscription command "${sub}"`);
  const command = sub as Command;
  const { values, positionals: args } = parse(`subscription ${command}`, rest, OPTIONS, command === 'list' ? 1 : 2);
  if (values.help) {
    process.stdout.write(`${SUBSCRIPTION_HELP}\n`);
    return 0;
  }
  for (const [flag, commands] of Object.entries(FLAGS_OF) as Array<[keyof typeof FLAGS_OF, readonly Command[]]>) {
    if (values[flag] !== undefined && !commands.includes(command)) throw new UsageError(`--${flag} is not an option of subscription ${command}`);
  }
  const [topic, name] = [args[0]!, args[1] ?? ''];
  const to = command === 'reset' ? parseResetTarget(values.to) : undefined;
  const initialPosition = values['initial-position'];
  if (initialPosition !== undefined && initialPosition !== 'earliest' && initialPosition !== 'latest') {
    throw new UsageError(`--initial-position must be earliest or latest, got "${initialPosition}"`);
  }
  const client = await Tidemark.connect(connection(values));
  try {
    const admin = client.admin();
    switch (command) {
      case 'list': {
        const list = await admin.listSubscriptions(topic);
        if (values.json) process.stdout.write(`${JSON.stringify(list)}\n`);
        else for (const s of list) process.stdout.write(`${s.name}\n`);
        break;
      }
      case 'describe': {
        const d = await admin.describeSubscription(topic, name);
        process.stdout.write(values.json ? `${JSON.stringify(d)}\n` : `${describeSubscriptionText(d)}\n`);
        break;
      }
      case 'create': {
        const s = await admin.createSubscription({ topic, name, ...(initialPosition === undefined ? {} : { initialPosition }) });
        process.stdout.write(`Subscription ${s.name} on ${topic} (initial position ${s.initialPosition}, id ${s.id}).\n`);
        break;
      }
      case 'reset':
        await admin.resetSubscription(topic, name, to!);
        process.stdout.write(`Reset subscription ${name} on ${topic} to ${describeTarget(to!)}.\n`);
        break;
      case 'delete':
        await admin.deleteSubscription(topic, name);
        process.stdout.write(`Deleted subscription ${name} on ${topic}.\n`);
        break;
    }
  } finally {
    await client.close();
  }
  return 0;
}
