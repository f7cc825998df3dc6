import { parseArgs } from 'node:util';
import { Tidemark } from '../../client/client.js';
import { codecs } from '../../client/codecs.js';
import type { Reader, ReaderRecord, StartFrom } from '../../client/reader.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse } from '../args.js';
import { UsageError } from '../cli-error.js';
import { onShutdownSignal } from '../signals.js';
import { writeOut } from '../stdout.js';

export const CONSUME_HELP = `Usage: tidemark consume TOPIC [--from-beginning] [--partition P [--offset O]] [--max-messages N] [--json]

Prints records as they arrive, one value per line (as kcat does); order is kept per partition.
Runs until --max-messages records were printed or Ctrl-C.

Options:
  --from-beginning   start at each partition's log start (default: only new records)
  --partition P      read only this partition
  --offset O         start at this offset (needs --partition)
  --max-messages N   exit after N records
  --json             one JSON object per record: topic, partition, offset, key, value, headers, timestamp
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  'from-beginning': { type: 'boolean' },
  partition: { type: 'string' },
  offset: { type: 'string' },
  'max-messages': { type: 'string' },
  json: { type: 'boolean' },
} as const;

function format(record: ReaderRecord<string>, json: boolean): string {
  if (!json) return `${record.value ?? ''}\n`;
  const headers = Object.fromEntries(Object.keys(record.headers).map((k) => [k, record.headerString(k)]));
  return `${JSON.stringify({
    topic: record.topic,
    partition: record.partition,
    offset: record.offset,
    key: record.keyString,
    value: record.value,
    headers,
    timestamp: record.timestamp,
  })}\n`;
}

export async function consumeCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(() => parseArgs({ args: argv, options: OPTIONS, allowPositionals: true }), 1);
  if (values.help) {
    process.stdout.write(`${CONSUME_HELP}\n`);
    return 0;
  }
  const topic = positionals[0]!;
  const partition = intFlag('partition', values.partition, 0, 9_999);
  const offset = intFlag('offset', values.offset, 0, Number.MAX_SAFE_INTEGER);
  const maxMessages = intFlag('max-messages', values['max-messages'], 1, Number.MAX_SAFE_INTEGER);
  if (offset !== undefined && partition === undefined) throw new UsageError('--offset needs --partition');
  if (offset !== undefined && values['from-beginning']) throw new UsageError('use --offset or --from-beginning, not both');
  const from: StartFrom = offset !== undefined ? { offset } : values['from-beginning'] ? 'earliest' : 'latest';
  const json = values.json ?? false;

  const client = await Tidemark.connect(connection(values));
  try {
    const partitions =
      partition !== undefined ? [partition] : (await client.admin().describeTopic(topic)).partitions.map((p) => p.partition);
    const readers: Reader<string>[] = partitions.map((p) => client.reader({ topic, partition: p, from, codec: codecs.string() }));
    let printed = 0;
    const stop = () => Promise.all(readers.map((r) => r.close()));
    const pump = async (reader: Reader<string>) => {
      for await (const record of reader) {
        if (maxMessages !== undefined && printed >= maxMessages) break;
        printed++;
        await writeOut(format(record, json));
        if (maxMessages !== undefined && printed >= maxMessages) await stop();
      }
    };
    void onShutdownSignal().then(stop);
    await Promise.all(readers.map(pump));
  } finally {
    await client.close();
  }
  return 0;
}
