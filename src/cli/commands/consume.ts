import { setTimeout as delay } from 'node:timers/promises';
import { Tidemark } from '../../client/client.js';
import { codecs } from '../../client/codecs.js';
import type { ConsumerMessage, InitialPosition, SubscriptionType } from '../../client/consumer.js';
import type { Reader, StartFrom } from '../../client/reader.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse } from '../args.js';
import { UsageError } from '../cli-error.js';
import { compileFormat, jsonLine, valueLine, type RecordFormatter } from '../record-format.js';
import { onShutdownSignal } from '../signals.js';
import { writeOut } from '../stdout.js';

export const CONSUME_HELP = `Usage: tidemark consume TOPIC [--from-beginning] [--partition P [--offset O]] [--max-messages N]
                        [--exit-at-end] [--format FMT | --json]
       tidemark consume TOPIC --subscription NAME [--type exclusive|failover|shared|key-shared]
                        [--initial-position earliest|latest] [--max-messages N] [--exit-at-end]
                        [--format FMT | --json]

Prints records as they arrive, one value per line (as kcat does); order is kept per partition.
Values (and keys, with --format) are written as the bytes that were produced, unchanged.
Runs until --max-messages records were printed, --exit-at-end finds the end, or Ctrl-C.

With --subscription, consumes through a named durable subscription (created if missing) and
acknowledges each record once it is written to stdout; it waits for the last acknowledgement to
be durable before exiting. A second consumer of an Exclusive subscription exits 1 naming
CONSUMER_BUSY.

Options:
  --from-beginning   start at each partition's log start (default: only new records)
  --partition P      read only this partition
  --offset O         start at this offset (needs --partition)
  --max-messages N   exit after N records
  --exit-at-end      exit 0 once every partition read is at its end (kcat -e): the high watermark
                     it last heard of; an empty topic exits at once. With --subscription: once the
                     subscription has no backlog on any partition
  -f, --format FMT   print each record by a template (kcat -f); a newline after each record unless FMT has \\n:
                       %t topic  %p partition  %o offset  %T timestamp (ms)
                       %k key  %K key length (-1: none)  %s or %v value  %S value length (-1: null)
                       %h headers as k=v,k2=v2  %r redelivery count (--subscription)  %% a %
                       escapes \\n \\r \\t \\\\
                     e.g. --format '%p:%o %k=%v\\n'
  --json             one JSON object per record: topic, partition, offset, key, value, headers, timestamp
                     (and redeliveryCount with --subscription); key, value and headers as UTF-8 text

Subscription options:
  --subscription NAME         consume through this subscription
  --type T                    exclusive (default), failover, shared or key-shared
  --initial-position P        where a new subscription starts: latest (default) or earliest
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  'from-beginning': { type: 'boolean' },
  partition: { type: 'string' },
  offset: { type: 'string' },
  'max-messages': { type: 'string' },
  json: { type: 'boolean' },
  format: { type: 'string', short: 'f' },
  subscription: { type: 'string' },
  type: { type: 'string' },
  'initial-position': { type: 'string' },
  'exit-at-end': { type: 'boolean' },
} as const;

const TYPES: Record<string, SubscriptionType> = { exclusive: 'Exclusive', failover: 'Failover', shared: 'Shared', 'key-shared': 'Key_Shared' };

/** How often --exit-at-end looks whether the readers or the subscription are caught up, ms. */
const END_CHECK_MS = 50;

const TICK: unique symbol = Symbol('tick');

/** One timer at a time for every waiter of the next end check (not one per record). */
class EndCheck {
  private pending: Promise<typeof TICK> | undefined;

  next(): Promise<typeof TICK> {
    this.pending ??= delay<typeof TICK>(END_CHECK_MS, TICK, { ref: false }).then((tick) => {
      this.pending = undefined;
      return tick;
    });
    return this.pending;
  }
}

/** --format or --json or the default value line, checked before anything connects. */
function formatter(values: { format?: string | undefined; json?: boolean | undefined }, subscription: boolean): RecordFormatter {
  if (values.format !== undefined && values.json) throw new UsageError('use --format or --json, not both');
  if (values.format !== undefined) return compileFormat(values.format, subscription);
  return values.json ? jsonLine : valueLine;
}

interface SubscriptionFlags {
  topic: string;
  subscription: string;
  type: SubscriptionType;
  initialPosition: InitialPosition;
  maxMessages: number | undefined;
  exitAtEnd: boolean;
  format: RecordFormatter;
}

/** The --subscription flags, checked before anything connects. */
function subscriptionFlags(topic: string, values: Record<string, string | boolean | undefined>): SubscriptionFlags | undefined {
  const subscription = values['subscription'] as string | undefined;
  if (subscription === undefined) {
    for (const flag of ['type', 'initial-position']) {
      if (values[flag] !== undefined) throw new UsageError(`--${flag} needs --subscription`);
    }
    return undefined;
  }
  for (const flag of ['from-beginning', 'partition', 'offset']) {
    if (values[flag] !== undefined) {
      throw new UsageError(`--${flag} does not apply with --subscription${flag === 'from-beginning' ? ' (use --initial-position earliest)' : ''}`);
    }
  }
  const typeText = ((values['type'] as string | undefined) ?? 'exclusive').toLowerCase().replaceAll('_', '-');
  const type = TYPES[typeText];
  if (type === undefined) throw new UsageError(`--type must be exclusive, failover, shared or key-shared, got "${String(values['type'])}"`);
  const position = (values['initial-position'] as string | undefined) ?? 'latest';
  if (position !== 'earliest' && position !== 'latest') throw new UsageError(`--initial-position must be earliest or latest, got "${position}"`);
  return {
    topic,
    subscription,
    type,
    initialPosition: position,
    maxMessages: intFlag('max-messages', values['max-messages'] as string | undefined, 1, Number.MAX_SAFE_INTEGER),
    exitAtEnd: values['exit-at-end'] === true,
    format: formatter({ format: values['format'] as string | undefined, json: values['json'] === true }, true),
  };
}

/**
 * Prints and acknowledges each message after it is written; exits after --max-messages, at the end
 * of the backlog (--exit-at-end), or on Ctrl-C, once every acknowledgement is durable.
 */
async function consumeSubscription(client: Tidemark, flags: SubscriptionFlags): Promise<void> {
  const consumer = await client.consumer<Uint8Array>({
    topic: flags.topic,
    subscription: flags.subscription,
    type: flags.type,
    initialPosition: flags.initialPosition,
    codec: codecs.bytes(),
  });
  const acks = new Set<Promise<void>>();
  let ackError: unknown;
  const STOP: unique symbol = Symbol('stop');
  const endCheck = new EndCheck();
  // Ctrl-C stops taking messages; what was printed is still acknowledged before the exit.
  const stopped = onShutdownSignal().then((): typeof STOP => STOP);
  try {
    let printed = 0;
    let pending = consumer.next();
    for (;;) {
      const waits: Array<Promise<IteratorResult<ConsumerMessage<Uint8Array>, undefined> | typeof STOP | typeof TICK>> = [pending, stopped];
      if (flags.exitAtEnd) waits.push(endCheck.next());
      const r = await Promise.race(waits);
      if (r === STOP) break;
      if (r === TICK) {
        if (acks.size === 0 && consumer.caughtUp()) break;
        continue;
      }
      if (r.done) break;
      const message = r.value;
      await writeOut(flags.format(message));
      printed++;
      const ack = message.ack().then(
        () => void acks.delete(ack),
        (error: unknown) => {
          acks.delete(ack);
          ackError ??= error;
        },
      );
      acks.add(ack);
      if (ackError !== undefined) break;
      if (flags.maxMessages !== undefined && printed >= flags.maxMessages) break;
      pending = consumer.next();
    }
    await Promise.all(acks);
  } finally {
    await consumer.close();
  }
  if (ackError !== undefined) throw ackError;
}

export async function consumeCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse('consume', argv, OPTIONS, 1);
  if (values.help) {
    process.stdout.write(`${CONSUME_HELP}\n`);
    return 0;
  }
  const topic = positionals[0]!;
  const subscription = subscriptionFlags(topic, values);
  if (subscription !== undefined) {
    const client = await Tidemark.connect(connection(values));
    try {
      await consumeSubscription(client, subscription);
    } finally {
      await client.close();
    }
    return 0;
  }
  const partition = intFlag('partition', values.partition, 0, 9_999);
  const offset = intFlag('offset', values.offset, 0, Number.MAX_SAFE_INTEGER);
  const maxMessages = intFlag('max-messages', values['max-messages'], 1, Number.MAX_SAFE_INTEGER);
  if (offset !== undefined && partition === undefined) throw new UsageError('--offset needs --partition');
  if (offset !== undefined && values['from-beginning']) throw new UsageError('use --offset or --from-beginning, not both');
  const from: StartFrom = offset !== undefined ? { offset } : values['from-beginning'] ? 'earliest' : 'latest';
  const format = formatter(values, false);
  const exitAtEnd = values['exit-at-end'] ?? false;

  const client = await Tidemark.connect(connection(values));
  try {
    const partitions =
      partition !== undefined ? [partition] : (await client.admin().describeTopic(topic)).partitions.map((p) => p.partition);
    const readers = partitions.map((p) => client.reader({ topic, partition: p, from, codec: codecs.bytes() }));
    const endCheck = new EndCheck();
    let printed = 0;
    const stop = () => Promise.all(readers.map((r) => r.close()));
    // Each reader until it is closed (Ctrl-C, --max-messages) or, with --exit-at-end, at its end.
    const pump = async (reader: Reader<Uint8Array>) => {
      let pending = reader.next();
      for (;;) {
        const r = exitAtEnd ? await Promise.race([pending, endCheck.next()]) : await pending;
        if (r === TICK) {
          if (reader.caughtUp()) break;
          continue;
        }
        if (r.done) return;
        if (maxMessages !== undefined && printed >= maxMessages) break;
        printed++;
        await writeOut(format(r.value));
        if (maxMessages !== undefined && printed >= maxMessages) return void (await stop());
        if (exitAtEnd && reader.caughtUp()) break;
        pending = reader.next();
      }
      await reader.close();
    };
    void onShutdownSignal().then(stop);
    await Promise.all(readers.map(pump));
  } finally {
    await client.close();
  }
  return 0;
}
