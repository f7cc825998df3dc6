import { createInterface } from 'node:readline';
import { Tidemark } from '../../client/client.js';
import { codecs } from '../../client/codecs.js';
import type { Acks } from '../../client/producer.js';
import type { AccessMode } from '../../client/producer-access.js';
import { isValidProducerName } from '../../protocol/producer-messages.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse } from '../args.js';
import { UsageError } from '../cli-error.js';


/** Sends the CLI leaves unsettled before it reads more input (below the producer's sendsWaitingMax). */
const SENDS_OUTSTANDING_MAX = 4_096;
export const PRODUCE_HELP = `Usage: tidemark produce TOPIC [--key K | --key-separator SEP] [--partition P] [--acks 0|1|all]
                        [--access-mode MODE] [--producer-name NAME]

Reads records from stdin, one per line (the value is the line, UTF-8), and sends them in order,
batched. Exits 0 once every record is acknowledged. A producer refused its access mode, or fenced
by a newer exclusive producer, exits 1 with the code (PRODUCER_BUSY, PRODUCER_FENCED) and reads
no further.

Options:
  --key K              the same key for every record
  --key-separator SEP  split each line at the first SEP into key and value
  --partition P        send to this partition (default: by key hash, round-robin without a key)
  --acks A             0, 1 or all (default all)
  --linger-ms N        batching delay (default 5)
  --access-mode MODE   shared (default: any number of producers), exclusive (the only producer;
                       refused if another is attached), exclusive-with-fencing (the only producer;
                       fences every other), wait-for-exclusive (waits its turn to be the only one)
  --producer-name NAME shown by 'topic describe' while exclusive (default: random)
  --wait-timeout-ms N  how long to attach, or wait for exclusive access, ms (default 30000)
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  key: { type: 'string' },
  'key-separator': { type: 'string' },
  partition: { type: 'string' },
  acks: { type: 'string' },
  'linger-ms': { type: 'string' },
  'access-mode': { type: 'string' },
  'producer-name': { type: 'string' },
  'wait-timeout-ms': { type: 'string' },
} as const;

const ACCESS_MODE_FLAGS: Record<string, AccessMode> = {
  shared: 'Shared',
  exclusive: 'Exclusive',
  'exclusive-with-fencing': 'ExclusiveWithFencing',
  'wait-for-exclusive': 'WaitForExclusive',
};

function parseAccessMode(text: string | undefined): AccessMode {
  if (text === undefined) return 'Shared';
  const mode = ACCESS_MODE_FLAGS[text];
  if (mode === undefined) throw new UsageError(`--access-mode must be one of ${Object.keys(ACCESS_MODE_FLAGS).join(', ')}, got "${text}"`);
  return mode;
}

function parseAcks(text: string | undefined): Acks {
  if (text === undefined || text === 'all' || text === '-1') return 'all';
  if (text === '0') return 0;
  if (text === '1') return 1;
  throw new UsageError(`--acks must be 0, 1 or all, got "${text}"`);
}

export async function produceCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse('produce', argv, OPTIONS, 1);
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
  const accessMode = parseAccessMode(values['access-mode']);
  const producerName = values['producer-name'];
  if (producerName !== undefined && !isValidProducerName(producerName)) throw new UsageError(`--producer-name must be 1-128 of [A-Za-z0-9._-], got "${producerName}"`);
  const waitTimeoutMs = intFlag('wait-timeout-ms', values['wait-timeout-ms'], 1, 24 * 3_600_000) ?? 30_000;

  const client = await Tidemark.connect(connection(values));
  try {
    const producer = await client.createProducer({
      topic,
      codec: codecs.string(),
      acks,
      lingerMs,
      accessMode,
      ...(producerName === undefined ? {} : { producerName }),
      timeoutMs: waitTimeoutMs,
    });
    let failure: unknown;
    let outstanding = 0;
    let wakeReader: (() => void) | undefined;
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of lines) {
      // Fenced or refused: nothing read after it is sent.
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
          // Fenced, refused or failed: read no further, even if stdin stays open.
          lines.close();
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
