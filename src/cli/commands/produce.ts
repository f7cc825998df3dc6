import { Tidemark } from '../../client/client.js';
import { codecs, fromUtf8, utf8 } from '../../client/codecs.js';
import { PRODUCER_DEFAULTS, type Acks, type Producer } from '../../client/producer.js';
import type { AccessMode } from '../../client/producer-access.js';
import { BATCH_HEADER_BYTES } from '../../protocol/batch.js';
import { TidemarkError } from '../../protocol/errors.js';
import { isValidProducerName } from '../../protocol/producer-messages.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, intFlag, parse } from '../args.js';
import { UsageError } from '../cli-error.js';
import { parseDelimiter, RecordSplitter, type SplitEvent } from '../record-splitter.js';
import { onShutdownSignal } from '../signals.js';

/** Sends the CLI leaves unsettled before it reads more input (below the producer's sendsWaitingMax). */
const SENDS_OUTSTANDING_MAX = 4_096;
/**
 * Longest record read from stdin, bytes: the producer's default batchBytesMax (1 MiB; the broker's
 * default max.message.bytes is a little more). A longer one is a bad record (RECORD_TOO_LARGE),
 * skipped up to the next delimiter without being held in memory.
 */
export const RECORD_BYTES_MAX = PRODUCER_DEFAULTS.batchBytesMax;
/** How long the topic's max.message.bytes is looked up before the defaults are used, ms. */
const TOPIC_LOOKUP_MS = 3_000;
/** After Ctrl-C, how long sends already made may take to settle before the summary, ms. */
const SIGNAL_SETTLE_MS = 5_000;

export const PRODUCE_HELP = `Usage: tidemark produce TOPIC [--key K | --key-separator SEP] [--partition P] [--acks 0|1|all]
                        [-D|--delimiter STR] [--value-format bytes|string|json] [-H key=value ...]
                        [--skip-errors] [--access-mode MODE] [--producer-name NAME]

Reads records from stdin and sends them in order, batched. Records are separated by "\\n" (a "\\r"
just before it is removed, so "\\r\\n" line ends work; a lone "\\r" is data), or by --delimiter.
The bytes of each record are sent as read, unchanged (binary safe). Exits 0 once every record
is acknowledged.

A bad record (RECORD_TOO_LARGE: over ${RECORD_BYTES_MAX} bytes or the topic's max.message.bytes;
INVALID_RECORD: not valid for --value-format) stops the command: no more input is read, sends in
flight settle, a summary ("N records acknowledged, F failed, S not sent") goes to stderr, exit 1.
With --skip-errors each bad record gets one stderr line ("record 17: RECORD_TOO_LARGE: ...") and
the rest are sent; the exit code is still 1, after the summary. A failure that is not about one
record (PRODUCER_FENCED, PRODUCER_BUSY, UNKNOWN_TOPIC, connection) stops at once: nothing read
after it is sent; one line names the code, with the counts. Ctrl-C (or SIGTERM) stops reading,
waits up to ${SIGNAL_SETTLE_MS / 1000} s for sends in flight, prints the summary and exits 130.

Options:
  -D, --delimiter STR  record separator (kcat's -D; escapes \\n \\r \\t \\0 \\\\ \\xHH), e.g. '\\0' or
                       '\\r\\n'; with it no "\\r" is removed (default: "\\n", "\\r\\n" accepted)
  --value-format F     bytes (default: the record as read), string (must be valid UTF-8), json
                       (must parse as JSON); the bytes sent are always the record as read
  -H, --header K=V     a header on every record (repeatable; "K=" is an empty value)
  --skip-errors        report a bad record on stderr and go on (exit 1 at the end)
  --key K              the same key for every record
  --key-separator SEP  split each record at the first SEP into key and value; a record without
                       SEP is sent with a null key (one warning on stderr names the first)
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
  delimiter: { type: 'string', short: 'D' },
  'value-format': { type: 'string' },
  header: { type: 'string', short: 'H', multiple: true },
  'skip-errors': { type: 'boolean' },
} as const;

const ACCESS_MODE_FLAGS: Record<string, AccessMode> = {
  shared: 'Shared',
  exclusive: 'Exclusive',
  'exclusive-with-fencing': 'ExclusiveWithFencing',
  'wait-for-exclusive': 'WaitForExclusive',
};

type ValueFormat = 'bytes' | 'string' | 'json';
const VALUE_FORMATS: readonly ValueFormat[] = ['bytes', 'string', 'json'];

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

function parseValueFormat(text: string | undefined): ValueFormat {
  if (text === undefined) return 'bytes';
  if (!(VALUE_FORMATS as readonly string[]).includes(text)) throw new UsageError(`--value-format must be one of ${VALUE_FORMATS.join(', ')}, got "${text}"`);
  return text as ValueFormat;
}

function parseHeaders(texts: string[] | undefined): Record<string, string> | undefined {
  if (texts === undefined || texts.length === 0) return undefined;
  const headers: Record<string, string> = {};
  for (const text of texts) {
    const at = text.indexOf('=');
    if (at < 0) throw new UsageError(`--header must be key=value, got "${text}"`);
    if (at === 0) throw new UsageError(`--header needs a key before "=", got "${text}"`);
    headers[text.slice(0, at)] = text.slice(at + 1);
  }
  return headers;
}

function parseDelimiterFlag(text: string | undefined): { delimiter: Uint8Array; stripCr: boolean } {
  if (text === undefined) return { delimiter: Uint8Array.of(0x0a), stripCr: true };
  if (text === '') throw new UsageError('--delimiter must not be empty');
  try {
    return { delimiter: parseDelimiter(text), stripCr: false };
  } catch (error) {
    throw new UsageError(`--delimiter ${JSON.stringify(text)}: ${(error as Error).message}`);
  }
}

/** What a record fails on by itself; the command can skip it and go on. */
function isRecordError(error: unknown): error is TidemarkError {
  return error instanceof TidemarkError && (error.code === 'RECORD_TOO_LARGE' || error.code === 'INVALID_RECORD');
}

function describeError(error: unknown): string {
  if (error instanceof TidemarkError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}

/** The value's check for --value-format: undefined if fine, else why not. */
function checkValue(format: ValueFormat, value: Uint8Array): string | undefined {
  if (format === 'bytes') return undefined;
  let text: string;
  try {
    text = fromUtf8(value);
  } catch {
    return 'value is not valid UTF-8 (--value-format string/json)';
  }
  if (format === 'json') {
    try {
      JSON.parse(text);
    } catch (error) {
      return `value is not JSON: ${(error as Error).message}`;
    }
  }
  return undefined;
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
  const separator = values['key-separator'] === undefined ? undefined : Buffer.from(utf8(values['key-separator']));
  const accessMode = parseAccessMode(values['access-mode']);
  const producerName = values['producer-name'];
  if (producerName !== undefined && !isValidProducerName(producerName)) throw new UsageError(`--producer-name must be 1-128 of [A-Za-z0-9._-], got "${producerName}"`);
  const waitTimeoutMs = intFlag('wait-timeout-ms', values['wait-timeout-ms'], 1, 24 * 3_600_000) ?? 30_000;
  const { delimiter, stripCr } = parseDelimiterFlag(values.delimiter);
  const valueFormat = parseValueFormat(values['value-format']);
  const headers = parseHeaders(values.header);
  const skipErrors = values['skip-errors'] ?? false;
  const fixedKey = values.key === undefined ? null : utf8(values.key);

  const client = await Tidemark.connect(connection(values));
  let closeClient = true;
  try {
    // Batches no larger than the topic's max.message.bytes, so a record over it fails alone
    // (RECORD_TOO_LARGE from the producer) instead of failing the batch it shares with others.
    const recordBytesMax = Math.min(RECORD_BYTES_MAX, (await topicMaxMessageBytes(client, topic)) ?? RECORD_BYTES_MAX);
    const producer = await client.createProducer({
      topic,
      codec: codecs.bytes(),
      batchBytesMax: Math.max(BATCH_HEADER_BYTES + 1, recordBytesMax),
      acks,
      lingerMs,
      accessMode,
      ...(producerName === undefined ? {} : { producerName }),
      timeoutMs: waitTimeoutMs,
    });
    const run = new ProduceRun(producer, {
      splitter: new RecordSplitter({ delimiter, stripCr, recordBytesMax }),
      recordBytesMax,
      valueFormat,
      headers,
      skipErrors,
      fixedKey,
      separator,
      separatorText: values['key-separator'],
      partition,
    });
    const code = await run.run(process.stdin);
    // After a signal, sends still unsettled must not hold the exit up: close without waiting for them.
    if (code === 130) {
      closeClient = false;
      void client.close().catch(() => {});
      setTimeout(() => process.exit(130), 1_000).unref();
    }
    return code;
  } finally {
    if (closeClient) await client.close();
  }
}

/**
 * The topic's max.message.bytes when set; undefined when not set or not learned in time (the
 * broker still refuses what is over it). A topic that does not exist is reported as such.
 */
async function topicMaxMessageBytes(client: Tidemark, topic: string): Promise<number | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const described = await Promise.race([
      client.admin().lookupTopic(topic),
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), TOPIC_LOOKUP_MS))),
    ]);
    const text = described?.config['max.message.bytes'];
    const bytes = text === undefined ? Number.NaN : Number(text);
    return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
  } catch (error) {
    if (error instanceof TidemarkError && error.code === 'UNKNOWN_TOPIC' && !error.retriable) throw error;
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

interface RunOptions {
  splitter: RecordSplitter;
  recordBytesMax: number;
  valueFormat: ValueFormat;
  headers: Record<string, string> | undefined;
  skipErrors: boolean;
  fixedKey: Uint8Array | null;
  separator: Buffer | undefined;
  separatorText: string | undefined;
  partition: number | undefined;
}

/**
 * One `produce` run: stdin chunks -> splitter -> a queue of records -> producer.send, with at most
 * SENDS_OUTSTANDING_MAX sends unsettled (stdin is paused meanwhile), and the counts for the summary.
 */
class ProduceRun {
  private acknowledged = 0;
  private failed = 0;
  private notSent = 0;
  /** Records numbered from 1 as read (bad ones included). */
  private recordNumber = 0;
  private outstanding = 0;
  /** Split records not yet sent (at most one stdin chunk's worth while stdin is paused). */
  private queue: SplitEvent[] = [];
  private queueAt = 0;
  private inputEnded = false;
  /** Why no further record is sent: a record failed (without --skip-errors), a fatal error, a signal. */
  private stopped: 'record' | 'fatal' | 'signal' | undefined;
  private fatal: unknown;
  private anyRecordFailed = false;
  private warnedNoSeparator = false;
  private input: NodeJS.ReadStream | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly producer: Producer<Uint8Array>,
    private readonly options: RunOptions,
  ) {}

  async run(input: NodeJS.ReadStream): Promise<number> {
    this.input = input;
    const SIGNAL = Symbol('signal');
    const signalled = onShutdownSignal().then((): typeof SIGNAL => SIGNAL);
    const onData = (chunk: Buffer) => {
      if (this.stopped !== undefined) return;
      this.enqueue(this.options.splitter.push(chunk));
    };
    const onEnd = () => {
      this.inputEnded = true;
      if (this.stopped === undefined) this.enqueue(this.options.splitter.end());
      this.check();
    };
    const onError = (error: Error) => {
      this.fatal ??= new Error(`cannot read stdin: ${error.message}`);
      this.stop('fatal');
    };
    // Settles once nothing more will be sent and every send made has settled.
    const done = new Promise<void>((resolve) => (this.wake = resolve));
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onError);
    try {
      this.check();
      if ((await Promise.race([done, signalled])) === SIGNAL) {
        this.stop('signal');
        // Sends already made get a few seconds to settle.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([done, new Promise<void>((resolve) => (timer = setTimeout(resolve, SIGNAL_SETTLE_MS)))]);
        clearTimeout(timer);
        this.summary();
        return 130;
      }
      if (this.stopped === undefined) await this.producer.flush();
    } finally {
      input.off('data', onData);
      input.off('end', onEnd);
      input.off('error', onError);
    }
    if (this.fatal !== undefined) {
      // One line names the code, with the counts.
      process.stderr.write(`tidemark: ${describeError(this.fatal)} (${this.counts()})\n`);
      return 1;
    }
    if (this.anyRecordFailed) {
      this.summary();
      return 1;
    }
    return 0;
  }

  private counts(): string {
    const unconfirmed = this.outstanding > 0 ? `, ${this.outstanding} unconfirmed` : '';
    return `${this.acknowledged} records acknowledged, ${this.failed} failed, ${this.notSent} not sent${unconfirmed}`;
  }

  private summary(): void {
    process.stderr.write(`tidemark: ${this.counts()}\n`);
  }

  private enqueue(events: SplitEvent[]): void {
    if (events.length === 0) return;
    if (this.queueAt === this.queue.length) {
      this.queue = events;
      this.queueAt = 0;
    } else {
      for (const e of events) this.queue.push(e);
    }
    this.pump();
  }

  /** Sends queued records while there is room; pauses stdin while records wait. */
  private pump(): void {
    while (this.queueAt < this.queue.length && this.stopped === undefined && this.outstanding < SENDS_OUTSTANDING_MAX) {
      this.handle(this.queue[this.queueAt++]!);
    }
    if (this.stopped !== undefined) {
      this.notSent += this.queue.length - this.queueAt;
      this.queue = [];
      this.queueAt = 0;
    }
    if (this.queueAt < this.queue.length) this.input?.pause();
    else if (this.stopped === undefined && !this.inputEnded) this.input?.resume();
    this.check();
  }

  private handle(event: SplitEvent): void {
    const number = ++this.recordNumber;
    if (event.kind === 'too-large') {
      this.badRecord(number, new TidemarkError('RECORD_TOO_LARGE', `record of more than ${this.options.recordBytesMax} bytes (${event.bytesSeen} read); skipped to the next delimiter`));
      return;
    }
    const { fixedKey, separator, valueFormat, headers, partition } = this.options;
    let key: Uint8Array | null = fixedKey;
    let value: Uint8Array = event.bytes;
    if (separator !== undefined) {
      const at = event.bytes.indexOf(separator);
      if (at >= 0) {
        key = event.bytes.subarray(0, at);
        value = event.bytes.subarray(at + separator.length);
      } else if (!this.warnedNoSeparator) {
        this.warnedNoSeparator = true;
        process.stderr.write(
          `tidemark: warning: record ${number} has no key separator ${JSON.stringify(this.options.separatorText)}; sent with a null key (later ones are not reported)\n`,
        );
      }
    }
    const invalid = checkValue(valueFormat, value);
    if (invalid !== undefined) {
      this.badRecord(number, new TidemarkError('INVALID_RECORD', invalid));
      return;
    }
    this.outstanding++;
    let sent: Promise<unknown>;
    try {
      sent = this.producer.send({ key, value, ...(headers === undefined ? {} : { headers }), ...(partition === undefined ? {} : { partition }) });
    } catch (error) {
      sent = Promise.reject(error);
    }
    sent.then(
      () => {
        this.acknowledged++;
        this.settled();
      },
      (error: unknown) => {
        if (isRecordError(error)) {
          this.badRecord(number, error);
        } else {
          this.failed++;
          // Fenced, refused or disconnected: read no further, even if stdin stays open.
          this.fatal ??= error;
          this.stop('fatal');
        }
        this.settled();
      },
    );
  }

  private settled(): void {
    this.outstanding--;
    if (this.outstanding <= SENDS_OUTSTANDING_MAX / 2) this.pump();
    else this.check();
  }

  private badRecord(number: number, error: TidemarkError): void {
    this.failed++;
    this.anyRecordFailed = true;
    if (this.stopped === 'fatal' || this.stopped === 'signal') return;
    process.stderr.write(`tidemark: record ${number}: ${describeError(error)}\n`);
    if (!this.options.skipErrors) this.stop('record');
  }

  private stop(reason: 'record' | 'fatal' | 'signal'): void {
    if (this.stopped === undefined || (reason !== 'record' && this.stopped === 'record')) this.stopped = reason;
    const input = this.input;
    if (input !== undefined && !input.destroyed) {
      input.pause();
      // Records split but not sent count as not sent; what stdin still holds is not read.
      input.destroy();
    }
    this.pump();
  }

  /** Wakes run() once nothing more will be sent and every send made has settled. */
  private check(): void {
    const readingDone = this.stopped !== undefined || (this.inputEnded && this.queueAt >= this.queue.length);
    if (!readingDone || this.outstanding > 0) return;
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
