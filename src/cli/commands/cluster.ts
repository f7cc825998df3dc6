import type { ClusterDescription } from '../../client/admin.js';
import { Tidemark } from '../../client/client.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, parse } from '../args.js';
import { UsageError } from '../cli-error.js';

export const CLUSTER_HELP = `Usage: tidemark cluster status [--json]

Shows the controller voters (role, term, last log index, commit index), the active controller, and
the brokers (epoch, fenced or not, rack, metadata offset, partitions led). Nodes that do not answer
within a short wait are shown as unreachable: a voter with what the active controller last knew of it
(when it last heard from it, its matchIndex); in --json such a voter has "reachable": false, role
"unreachable", -1 for what only it could tell, and matchIndex / heardMsAgo when the controller knows.
${GLOBAL_HELP}`;

const OPTIONS = { ...GLOBAL_OPTIONS, json: { type: 'boolean' } } as const;
/** Per-request timeout of `cluster status`, ms (see clusterCommand). */
const STATUS_REQUEST_TIMEOUT_MS = 1_500;

function text(c: ClusterDescription): string {
  const lines = [`Controller: ${c.controllerId < 0 ? 'none (no quorum, or an election is running)' : c.controllerId}`, 'Voters:'];
  for (const v of c.voters) {
    if (!v.reachable) {
      const known =
        v.heardMsAgo === undefined
          ? c.controllerId < 0
            ? 'no active controller answered, nothing more known'
            : 'the active controller has no record of it'
          : `last heard ${(v.heardMsAgo / 1000).toFixed(1)} s ago by the leader, matchIndex ${v.matchIndex}`;
      lines.push(`\t${v.id}\tunreachable (${known})`);
      continue;
    }
    lines.push(`\t${v.id}\t${v.role}\tterm ${v.term}\tlastIndex ${v.lastIndex}\tcommitIndex ${v.commitIndex}\tleader ${v.leaderId < 0 ? '-' : v.leaderId}`);
  }
  lines.push('Brokers:');
  for (const b of c.brokers) {
    lines.push(
      `\t${b.id}\tepoch ${b.epoch}\t${b.fenced ? 'fenced' : 'unfenced'}\track ${b.rack || '-'}\t` +
        (b.reachable ? `metadataOffset ${b.metadataOffset}\tpartitions ${b.partitionsLed}` : 'unreachable'),
    );
  }
  lines.push(`Metadata offset: ${c.metadataOffset}`);
  return lines.join('\n');
}

export async function clusterCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${CLUSTER_HELP}\n`);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'status') throw new UsageError(`unknown cluster command "${sub}"`);
  const { values } = parse(`cluster ${sub}`, rest, OPTIONS, 0);
  if (values.help) {
    process.stdout.write(`${CLUSTER_HELP}\n`);
    return 0;
  }
  // A short request timeout: a node that is frozen (SIGSTOP, a long pause) still holds its NATS
  // subscriptions, so the metadata request may land on it; retry on another soon instead of waiting.
  const client = await Tidemark.connect({ ...connection(values), requestTimeoutMs: STATUS_REQUEST_TIMEOUT_MS });
  try {
    const c = await client.admin().describeCluster();
    process.stdout.write(values.json ? `${JSON.stringify(c)}\n` : `${text(c)}\n`);
  } finally {
    await client.close();
  }
  return 0;
}
