/**
 * What access control costs: produce throughput through the two documented nats-server
 * configurations of docs/security.md (two accounts, clients reaching the nodes through service
 * imports; one account with per-user allow lists), side by side in interleaved rounds, and without
 * any authorization as the baseline. One node process, the SDK as client `bob`.
 * Usage: npm run bench:accounts [-- --records N --rounds R --value-bytes B]
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { codecs, Tidemark } from '../src/index.js';
import { describeEnvironment, environment } from './environment.js';
import { median, startNatsServer, startNodeProcess, table } from './harness.js';
import { runMain } from './scope.js';
import { bounded, intOption } from './steps.js';

const PASSWORDS = { TIDEMARK_NODE_PASSWORD: 'bench-node', ALICE_PASSWORD: 'bench-alice', BOB_PASSWORD: 'bench-bob' };
/** Sends a round keeps waiting at once (the producer's own bound is larger). */
const WINDOW = 5000;

type Setup = 'two accounts' | 'one account' | 'no auth';

async function documentedConfigs(): Promise<string[]> {
  const doc = await readFile(new URL('../../docs/security.md', import.meta.url), 'utf8');
  return [...doc.matchAll(/```conf\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

async function round(setup: Setup, config: string | undefined, records: number, valueBytes: number): Promise<number> {
  const nats = await startNatsServer(config === undefined ? {} : { config, env: PASSWORDS });
  const secured = config !== undefined;
  // The node process inherits its credentials from the environment (as docs/security.md runs it).
  if (secured) Object.assign(process.env, { TIDEMARK_NATS_USER: 'node', TIDEMARK_NATS_PASSWORD: PASSWORDS.TIDEMARK_NODE_PASSWORD });
  const node = await startNodeProcess(nats.url).finally(() => {
    delete process.env['TIDEMARK_NATS_USER'];
    delete process.env['TIDEMARK_NATS_PASSWORD'];
  });
  const client = await Tidemark.connect({
    servers: nats.url,
    ...(secured ? { user: 'bob', password: PASSWORDS.BOB_PASSWORD, inboxPrefix: '_INBOX_bob' } : {}),
  });
  try {
    await client.admin().createTopic({ name: 'payments', partitions: 3 });
    const producer = client.producer({ topic: 'payments', codec: codecs.string(), acks: 1 });
    const value = 'x'.repeat(valueBytes);
    const started = performance.now();
    await bounded(`${setup} round`, 120_000, async () => {
      for (let sent = 0; sent < records; sent += WINDOW) {
        await Promise.all(Array.from({ length: Math.min(WINDOW, records - sent) }, () => producer.send({ value })));
      }
    });
    const rate = records / ((performance.now() - started) / 1000);
    await producer.close();
    return rate;
  } finally {
    await client.close();
    await node.stop();
    await nats.stop();
  }
}

runMain(async () => {
  const { values } = parseArgs({ options: { records: { type: 'string' }, rounds: { type: 'string' }, 'value-bytes': { type: 'string' } } });
  const records = intOption('records', values.records ?? 200_000, 1000, 10_000_000);
  const rounds = intOption('rounds', values.rounds ?? 3, 1, 20);
  const valueBytes = intOption('value-bytes', values['value-bytes'] ?? 100, 1, 100_000);
  const [twoAccounts, oneAccount] = await documentedConfigs();
  const setups: Array<[Setup, string | undefined]> = [
    ['two accounts', twoAccounts],
    ['one account', oneAccount],
    ['no auth', undefined],
  ];
  const rates = new Map<Setup, number[]>(setups.map(([s]) => [s, []]));
  for (let r = 0; r < rounds; r++) {
    for (const [setup, config] of setups) {
      const rate = await round(setup, config, records, valueBytes);
      rates.get(setup)!.push(rate);
      process.stderr.write(`round ${r + 1} ${setup}: ${Math.round(rate)} records/s\n`);
    }
  }
  const base = median(rates.get('no auth')!);
  process.stdout.write(`${describeEnvironment(environment())}\n`);
  process.stdout.write(`Produce through the documented NATS configurations: ${records} x ${valueBytes} B, acks=1, 3 partitions, one node, ${rounds} interleaved rounds\n`);
  process.stdout.write(
    `${table(
      setups.map(([setup]) => {
        const list = rates.get(setup)!;
        return { setup, 'records/s (median)': Math.round(median(list)), 'vs no auth': (median(list) / base).toFixed(2), rounds: list.map((x) => Math.round(x)).join(' / ') };
      }),
    )}\n`,
  );
});
