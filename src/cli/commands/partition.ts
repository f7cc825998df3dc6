import type { ElectLeadersResult } from '../../client/admin.js';
import { Tidemark } from '../../client/client.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse } from '../args.js';
import { UsageError } from '../cli-error.js';

export const PARTITION_HELP = `Usage: tidemark partition elect-leaders [--topic T [--partition P]...] [--preferred | --unclean] [--json]

Asks the active controller to elect leaders, and prints one line per partition considered:
elected (with the new leader), or why not (ELECTION_NOT_NEEDED: it already has that leader;
ELIGIBLE_LEADERS_NOT_AVAILABLE: no replica may lead).

  --preferred        (default) move leadership to each partition's first replica, when that one is
                     alive and in the ISR; the controller also does this by itself every 10 s
  --unclean          give a partition whose leader is gone a leader from any live replica, even
                     one outside the ISR: records only the old ISR had are lost
  --topic T          only this topic (default: every topic)
  --partition P      only these partitions of --topic (repeatable)
  --json             one JSON object per partition instead

Exits 0 when every partition has its leader (elected or already), 1 otherwise.
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  topic: { type: 'string' },
  partition: { type: 'string', multiple: true },
  preferred: { type: 'boolean' },
  unclean: { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

function resultLine(r: ElectLeadersResult): string {
  const outcome = r.error === undefined ? 'elected' : `${r.error.code} (${r.error.message})`;
  return `Topic: ${r.topic}\tPartition: ${r.partition}\tLeader: ${r.leader}\tResult: ${outcome}`;
}

/** A partition that has its leader: elected now, or no election was needed. */
function settled(r: ElectLeadersResult): boolean {
  return r.error === undefined || r.error.code === 'ELECTION_NOT_NEEDED';
}

export async function partitionCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${PARTITION_HELP}\n`);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'elect-leaders') throw new UsageError(`unknown partition command "${sub}"`);
  const { values } = parse(`partition ${sub}`, rest, OPTIONS, 0);
  if (values.help) {
    process.stdout.write(`${PARTITION_HELP}\n`);
    return 0;
  }
  if (values.preferred && values.unclean) throw new UsageError('use --preferred or --unclean, not both');
  const partitions = values.partition?.map((p) => intFlag('partition', p, 0, 9_999)!);
  if (partitions !== undefined && values.topic === undefined) throw new UsageError('--partition needs --topic');
  const type = values.unclean ? 'unclean' : 'preferred';

  const client = await Tidemark.connect(connection(values));
  let results: ElectLeadersResult[];
  try {
    results = await client.admin().electLeaders({
      type,
      ...(values.topic === undefined ? {} : { topic: values.topic }),
      ...(partitions === undefined ? {} : { partitions }),
    });
  } finally {
    await client.close();
  }
  for (const r of results) process.stdout.write(values.json ? `${JSON.stringify(r)}\n` : `${resultLine(r)}\n`);
  const failed = results.filter((r) => !settled(r));
  if (failed.length > 0) {
    const codes = [...new Set(failed.map((r) => r.error!.code))].join(', ');
    process.stderr.write(`tidemark: ${codes}: ${failed.length} of ${results.length} partition(s) failed the ${type} election\n`);
    return 1;
  }
  return 0;
}
