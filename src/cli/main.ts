/** The `tidemark` command: dispatches to a command; user mistakes print one line, never a stack. */
import { readFileSync } from 'node:fs';
import { TidemarkError } from '../protocol/errors.js';
import { GLOBAL_HELP } from './args.js';
import { UsageError } from './cli-error.js';
import { aclCommand } from './commands/acl.js';
import { clusterCommand } from './commands/cluster.js';
import { consumeCommand } from './commands/consume.js';
import { devCommand } from './commands/dev.js';
import { httpCommand } from './commands/http.js';
import { nodeCommand } from './commands/node.js';
import { partitionCommand } from './commands/partition.js';
import { produceCommand } from './commands/produce.js';
import { subscriptionCommand } from './commands/subscription.js';
import { topicCommand } from './commands/topic.js';

const HELP = `Usage: tidemark <command> [options]
       tidemark --version

Commands:
  dev [--nodes N] [--restart] run a local Tidemark cluster (and nats-server if none answers)
  dev stop|start|restart N    stop, start or restart one node of the running tidemark dev
  node start                  run one node against an existing NATS server
  cluster status              controller voters, active controller, brokers
  topic create|list|describe|delete|alter
  partition elect-leaders     preferred or unclean leader election
  produce TOPIC               records from stdin, one per line (or --delimiter), bytes unchanged
  consume TOPIC               print records, one value per line (or --format '%k %v\\n', --json)
  subscription list|describe|create|reset|delete
  http [--listen HOST:PORT]   serve the JSON API (/v1: lookup, admin, produce) over HTTP
  acl print --user NAME ...   the nats-server permissions for a client (--produce, --consume, ...)
  version                     print the version (also --version)

Run "tidemark <command> --help" for a command's options.
${GLOBAL_HELP}`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  dev: devCommand,
  cluster: clusterCommand,
  node: nodeCommand,
  topic: topicCommand,
  partition: partitionCommand,
  produce: produceCommand,
  consume: consumeCommand,
  subscription: subscriptionCommand,
  http: httpCommand,
  acl: aclCommand,
};

/** package.json's version, read from the package root (dist/src/cli/main.js is three levels down). */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return String(pkg.version);
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${HELP}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === 'version') {
    if (rest.length > 0) throw new UsageError(`unexpected argument "${rest[0]}"`);
    process.stdout.write(`tidemark ${version()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) throw new UsageError(`unknown command "${name}"`);
  return command(rest);
}

// A reader that goes away (`tidemark consume t | head -2`) ends the command quietly, as with any
// Unix filter, instead of crashing on EPIPE.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  process.stderr.write(`tidemark: cannot write output: ${error.message}\n`);
  process.exit(1);
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`tidemark: ${error.message} (see tidemark --help)\n`);
      process.exitCode = 2;
    } else if (error instanceof TidemarkError) {
      process.stderr.write(`tidemark: ${error.code}: ${error.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`tidemark: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = 1;
    }
  },
);
