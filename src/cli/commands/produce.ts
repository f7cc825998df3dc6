import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Tidemark } from '../../client/client.js';
import { codecs } from '../../client/codecs.js';
import type { Acks } from '../../client/producer.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse } from '../args.js';
import { UsageError } from '../cli-error.js';


/** Sends the CLI leaves unsettled before it reads more input (below the producer's sendsWaitingMax). */
const SENDS_OUTSTANDING_MAX = 4_096;
export const PRODUCE_HELP = `Usage: tidemark produce TOPIC [--key K | --key-separator SEP] [--partition P] [--acks 0|1|all]

Reads records from stdin, one per line (the value is the line, UTF-8), and sends them in order,
batched. Exits 0 once every record is acknowledged.

Options:
  --key K              the same key for every record
  --key-separator SEP  split each line at the first SEP into key and value
  --partition P        send to this partition (default: by key hash, round-robin without a key)
  --acks A             0, 1 or all (default all)
  --linger-ms N        batching delay (default 5)
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  key: { type: 'string' },
  'key-separator': { type: 'string' },
  partition: { type: 'string' },
  acks: { type: 'string' },
  'linger-ms': { type: 'string' },
} as const;

function parseAcks(text: string | undefined): Acks {
  if (text === undefined || text === 'all' || text === '-1') return 'all';
  if (text === '0') return 0;
  if (text === '1') return 1;
  throw new UsageError(`--acks must be 0, 1 or all, got "${text}"`);
}

export async function produceCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(() => parseArgs({ args: argv, options: OPTIONS, allowPositionals: true }), 1);
  if (values.help) {
    process.stdout.write(`${PRODUCE_HELP}\n`);
    return 0;
  }
  const topic = positionals[0]!;
  if (values.key !== undefined && values['key-separator'] !== undefined) throw new UsageError('use --key or --key-separator, not both');
  if (values['key-separator'] === '') throw new UsageError('--key-separator must not be empty');
  const partition = intFlag('partition', values.partition, 0, 9_999);
  const lingerMs = intFlag('linger-ms', values['linger-ms'], 0, 60_000) ?? 5;
  const acks = parseAcks(values.acks);
  const separator = values['key-separator'];

  const client = await Tidemark.connect(connection(values));
  try {
    const producer = client.producer({ topic, codec: codecs.string(), acks, lingerMs });
    let failure: unknown;
    let outstanding = 0;
    let wakeReader: (() => void) | undefined;
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of lines) {
      if (failure !== undefined) break;
      let key: string | null = values.key ?? null;
      let value = line;
      if (separator !== undefined) {
        const at = line.indexOf(separator);
        if (at >= 0) {
          key = line.slice(0, at);
          value = line.slice(at + separator.length);
        }
      }
      // Acknowledgements are collected as they come; at most SENDS_OUTSTANDING_MAX sends are left
      // unsettled (the producer refuses more than its sendsWaitingMax waiting with BUSY), so a large
      // input waits here, reading no further, while the cluster catches up.
      outstanding++;
      producer
        .send({ key, value, ...(partition === undefined ? {} : { partition }) })
        .catch((error: unknown) => {
          failure ??= error;
        })
        .finally(() => {
          outstanding--;
          if (outstanding <= SENDS_OUTSTANDING_MAX / 2) wakeReader?.();
        });
      if (outstanding >= SENDS_OUTSTANDING_MAX) await new Promise<void>((resolve) => (wakeReader = resolve));
      wakeReader = undefined;
    }
    await producer.flush();
    if (failure !== undefined) throw failure;
  } finally {
    await client.close();
  }
  return 0;
}
