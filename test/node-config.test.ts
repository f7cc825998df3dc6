/**
 * `tidemark node start --config FILE` / `--print-config`: the file's format and its refusals (unit),
 * the precedence flag > file > environment > default and the round trip of a printed config (CLI
 * process), and a real node started from a file alone, serving a produce.
 */
import test from 'ava';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tidemark } from '../src/client/client.js';
import { codecs } from '../src/client/codecs.js';
import { parseNodeConfig } from '../src/cli/node-config.js';
import { UsageError } from '../src/cli/cli-error.js';
import { killAllCliProcesses, logLine, runCli, spawnCli } from './helpers/cli.js';
import { startNatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';

const OPTIONS = { id: { type: 'string' }, 'data-dir': { type: 'string' }, pretty: { type: 'boolean' }, help: { type: 'boolean' }, config: { type: 'string' } } as const;

test('the format: comments, blank lines, quotes, booleans; every mistake names its line', (t) => {
  t.deepEqual(parseNodeConfig('# a node\n\nid = 7\r\ndata-dir = "/var/lib/tm x"\npretty=true\n', OPTIONS, 'f'), { id: '7', 'data-dir': '/var/lib/tm x', pretty: true });
  const refused = (text: string) => t.throws(() => parseNodeConfig(text, OPTIONS, 'node.conf'), { instanceOf: UsageError })!.message;
  t.is(refused('id = 1\nrack = a\n'), 'node.conf:2: unknown setting "rack" (the keys are the long options of "tidemark node start")');
  t.is(refused('id = 1\nid = 2\n'), 'node.conf:2: "id" is set twice');
  t.is(refused('\n\nid 1\n'), 'node.conf:3: expected "key = value", got "id 1"');
  t.is(refused('pretty = yes\n'), 'node.conf:1: "pretty" takes true or false, got "yes"');
  t.is(refused('id =\n'), 'node.conf:1: "id" needs a value');
  // The command's own switches cannot hide in the file.
  t.regex(refused('config = other.conf\n'), /unknown setting "config"/);
  t.regex(refused('help = true\n'), /unknown setting "help"/);
});

const dirs: string[] = [];
test.after.always(async () => {
  await killAllCliProcesses();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function configFile(text: string): Promise<string> {
  const dir = await tempDir('tm-config-');
  dirs.push(dir);
  const path = join(dir, 'node.conf');
  await writeFile(path, text);
  return path;
}

test('--print-config: flag over file over environment over default, secrets never shown, and the output reads back the same', async (t) => {
  const path = await configFile('id = 3\ndata-dir = /srv/tm\ncontrollers = 1,2,3\nrack = file-rack\ncluster = from-file\n');
  const env = { TIDEMARK_CLUSTER: 'from-env', TIDEMARK_NATS: 'nats://10.1.1.1:4222', TIDEMARK_LOG_LEVEL: 'warn' };
  const printed = await runCli(['node', 'start', '--config', path, '--rack', 'flag-rack', '--print-config'], { env });
  t.is(printed.code, 0, printed.stderr);
  const settings = (out: string) =>
    Object.fromEntries(
      out
        .split('\n')
        .filter((l) => l !== '' && !l.startsWith('#'))
        .map((l) => l.split('=').map((x) => x.trim())),
    );
  t.like(settings(printed.stdout), {
    rack: 'flag-rack', // the flag beats the file
    cluster: 'from-file', // the file beats the environment
    nats: 'nats://10.1.1.1:4222', // the environment beats the default
    id: '3',
    'data-dir': '/srv/tm',
  });
  t.regex(printed.stdout, /# from the environment \(TIDEMARK_NATS\)\nnats +=/);
  t.regex(printed.stdout, /# defaults\n(# .*\n)*# roles +\= broker,controller\n/);

  // What it printed, given back as the file (without the environment), prints the same settings.
  const again = await configFile(printed.stdout);
  const reread = await runCli(['node', 'start', '--config', again, '--print-config'], { env: { TIDEMARK_LOG_LEVEL: 'warn' } });
  t.is(reread.code, 0, reread.stderr);
  t.deepEqual(settings(reread.stdout), settings(printed.stdout));

  // A secret from the file is used but never printed.
  const secret = await configFile('id = 1\ndata-dir = /srv/tm\nnats-password = hunter2\n');
  const withSecret = await runCli(['node', 'start', '--config', secret, '--print-config'], { env: { TIDEMARK_NATS_USER: 'alice' } });
  t.is(withSecret.code, 0, withSecret.stderr);
  t.notRegex(withSecret.stdout, /hunter2/);
  t.regex(withSecret.stdout, /# nats-password +\= \(set, not shown\)/);
  t.regex(withSecret.stdout, /# from the environment \(TIDEMARK_NATS_USER\)\nnats-user +\= alice/);
});

test('--config: a bad file is refused before anything starts, with its line', async (t) => {
  const path = await configFile('id = 1\ndata-dir = /tmp/never\npreferred-election-interval-ms = soon\n');
  const r = await runCli(['node', 'start', '--config', path]);
  t.is(r.code, 2);
  t.regex(r.stderr, /--preferred-election-interval-ms must be an integer/);
  const missing = await runCli(['node', 'start', '--config', join(path, 'nope.conf')]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /cannot read --config .*nope\.conf: ENOTDIR/);
});

test('a node started from a config file alone serves', async (t) => {
  const nats = await startNatsServer();
  const dataDir = await tempDir('tm-config-node-');
  dirs.push(dataDir);
  const path = await configFile(`# one node\nid = 5\ndata-dir = ${dataDir}\nnats = ${nats.url}\ncluster = configured\n`);
  const node = spawnCli(['node', 'start', '--config', path], { env: { TIDEMARK_LOG_LEVEL: 'info' } });
  let client: Tidemark | undefined;
  try {
    await node.waitForLine('stderr', (line) => logLine(line)?.msg === 'node ready', 20_000);
    client = await Tidemark.connect({ servers: nats.url, cluster: 'configured' });
    await client.admin().createTopic({ name: 'from-config', partitions: 1, replicationFactor: 1 });
    const producer = client.producer({ topic: 'from-config', codec: codecs.string() });
    const sent = await producer.send({ value: 'hello' });
    t.is(sent.offset, 0);
    const cluster = await client.admin().describeCluster();
    t.deepEqual(
      cluster.brokers.map((b) => b.id),
      [5],
    );
  } finally {
    await client?.close();
    await node.kill('SIGTERM').catch(() => {});
    await nats.stop();
  }
});
