/** `tidemark acl print`: the nats-server permissions block for one client (or the nodes). */
import { clientPermissions, clientServices, inboxPrefixFor, nodePermissions, renderExports, renderImports, renderPermissions, type ClientGrant } from '../../protocol/permissions.js';
import { Subjects } from '../../protocol/subjects.js';
import { TidemarkError } from '../../protocol/errors.js';
import { GLOBAL_OPTIONS, parse } from '../args.js';
import { UsageError } from '../cli-error.js';

export const ACL_HELP = `Usage: tidemark acl print --user NAME [--produce TOPIC]... [--consume TOPIC:SUB]...
                          [--read TOPIC]... [--admin TOPIC]... [--cluster-admin]
       tidemark acl print --node
       tidemark acl print --exports | --imports ACCOUNT

Prints the "permissions" block of a nats-server user (configuration syntax) that lets a client do
what the flags say and nothing else: the publish allow list (metadata and status for every client,
then the subjects of each grant, on any broker) and the subscribe allow list (its own reply inbox,
_INBOX_NAME.>). The client must connect with that inbox prefix (--nats-inbox-prefix _INBOX_NAME,
or the SDK's inboxPrefix). Paste the block into the user's entry (docs/security.md). Flags repeat;
"*" as a topic or subscription means any.

Options:
  --user NAME          the client; names its reply inbox (1-64 of [A-Za-z0-9_-])
  --produce TOPIC      produce to TOPIC, in any access mode
  --consume TOPIC:SUB  consume subscription SUB of TOPIC (created on first use)
  --read TOPIC         read TOPIC with a plain reader (fetch by offset)
  --admin TOPIC        create, delete, grow, configure TOPIC, and manage its subscriptions
  --cluster-admin      leader elections (any topic)
  --node               the block for the nodes' user instead: the cluster's subjects, the
                       default inbox, and answers to clients' requests
  --exports            nodes and clients in two accounts: the nodes' account's exports, the
                       subjects clients may use as services (no node-to-node subject)
  --imports ACCOUNT    the clients' account's imports of those services from ACCOUNT
  --cluster NAME       cluster name, the subject prefix (env TIDEMARK_CLUSTER; default tidemark)
  -h, --help           this help`;

const OPTIONS = {
  cluster: GLOBAL_OPTIONS.cluster,
  help: GLOBAL_OPTIONS.help,
  user: { type: 'string' },
  produce: { type: 'string', multiple: true },
  consume: { type: 'string', multiple: true },
  read: { type: 'string', multiple: true },
  admin: { type: 'string', multiple: true },
  'cluster-admin': { type: 'boolean' },
  node: { type: 'boolean' },
  exports: { type: 'boolean' },
  imports: { type: 'string' },
} as const;

export async function aclCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(`${ACL_HELP}\n`);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'print') throw new UsageError(`unknown acl command "${sub}"`);
  const { values } = parse(`acl ${sub}`, rest, OPTIONS, 0);
  if (values.help) {
    process.stdout.write(`${ACL_HELP}\n`);
    return 0;
  }
  const subjects = new Subjects(values.cluster ?? process.env['TIDEMARK_CLUSTER'] ?? 'tidemark');
  const command = ['tidemark', 'acl', 'print', ...rest].map((a) => (/^[\w./:=-]+$/.test(a) ? a : `'${a}'`)).join(' ');
  const clientFlags = values.user !== undefined || values.produce || values.consume || values.read || values.admin || values['cluster-admin'];
  if (values.exports || values.imports !== undefined) {
    if (clientFlags || values.node || (values.exports && values.imports !== undefined)) throw new UsageError('--exports and --imports stand alone');
    const services = clientServices(subjects);
    if (values.exports) {
      process.stdout.write(`# ${command}\n# the nodes' account exports what clients may use, as services (no node-to-node subject)\n${renderExports(services)}\n`);
    } else {
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(values.imports!)) throw new UsageError(`--imports takes the nodes' account name (1-64 of [A-Za-z0-9_-]), got "${values.imports}"`);
      process.stdout.write(`# ${command}\n# the clients' account imports them from ${values.imports}; each user's permissions narrow them\n${renderImports(values.imports!, services)}\n`);
    }
    return 0;
  }
  if (values.node) {
    if (values.user !== undefined || values.produce || values.consume || values.read || values.admin || values['cluster-admin']) {
      throw new UsageError('--node takes no client grants');
    }
    process.stdout.write(`# ${command}\n# the nodes' NATS user: every subject of cluster "${subjects.cluster}"\n${renderPermissions(nodePermissions(subjects))}\n`);
    return 0;
  }
  if (values.user === undefined) throw new UsageError('--user NAME is required (or --node)');
  const grant: ClientGrant = {
    produce: values.produce ?? [],
    consume: (values.consume ?? []).map(parseConsume),
    read: values.read ?? [],
    admin: values.admin ?? [],
    clusterAdmin: values['cluster-admin'] === true,
  };
  let block: string;
  let inbox: string;
  try {
    inbox = inboxPrefixFor(values.user);
    block = renderPermissions(clientPermissions(subjects, inbox, grant));
  } catch (error) {
    if (error instanceof TidemarkError) throw new UsageError(error.message);
    throw error;
  }
  process.stdout.write(`# ${command}\n# ${values.user} must connect with the inbox prefix ${inbox} (--nats-inbox-prefix ${inbox}, SDK inboxPrefix)\n${block}\n`);
  return 0;
}

function parseConsume(text: string): { topic: string; subscription: string } {
  const colon = text.lastIndexOf(':');
  if (colon <= 0 || colon === text.length - 1) throw new UsageError(`--consume takes TOPIC:SUBSCRIPTION, got "${text}"`);
  return { topic: text.slice(0, colon), subscription: text.slice(colon + 1) };
}
