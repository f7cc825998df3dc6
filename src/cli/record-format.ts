/**
 * How `tidemark consume` prints a record: the value's bytes as they are (the default), a kcat-style
 * `--format` template, or `--json`. Values and keys are written as bytes, never decoded, except
 * for --json, whose strings are UTF-8.
 */
import { fromUtf8 } from '../client/codecs.js';
import type { ReaderRecord } from '../client/reader.js';
import { TidemarkError } from '../protocol/errors.js';
import { UsageError } from './cli-error.js';

/** A record as consume gets it: raw value bytes, and a redelivery count from a subscription. */
export type PrintedRecord = ReaderRecord<Uint8Array> & { readonly redeliveryCount?: number };

export type RecordFormatter = (record: PrintedRecord) => Buffer;

const NEWLINE = Buffer.from('\n');
const EMPTY = Buffer.alloc(0);

const bytes = (b: Uint8Array | null): Buffer => (b === null ? EMPTY : Buffer.from(b.buffer, b.byteOffset, b.byteLength));
const text = (s: string | number): Buffer => Buffer.from(String(s));

/** kcat's -f tokens that fit Tidemark records, with %r added for a subscription's redeliveries. */
const TOKENS: Record<string, (r: PrintedRecord) => Buffer> = {
  t: (r) => text(r.topic),
  p: (r) => text(r.partition),
  o: (r) => text(r.offset),
  k: (r) => bytes(r.key),
  K: (r) => text(r.key === null ? -1 : r.key.byteLength),
  s: (r) => bytes(r.value),
  v: (r) => bytes(r.value),
  S: (r) => text(r.value === null ? -1 : r.value.byteLength),
  T: (r) => text(r.timestamp),
  h: (r) =>
    Buffer.concat(
      Object.entries(r.headers).flatMap(([name, value], i) => [i === 0 ? EMPTY : text(','), text(`${name}=`), bytes(value ?? null)]),
    ),
  r: (r) => text(r.redeliveryCount ?? 0),
};

const ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', '\\': '\\' };

export const FORMAT_TOKENS = '%t %p %o %k %K %s %v %S %h %T %r %%';

/**
 * Compiles a --format template once; a token or escape it does not know is a UsageError, so a
 * typo fails before anything connects. `subscription` allows %r.
 */
export function compileFormat(template: string, subscription: boolean): RecordFormatter {
  const parts: Array<(r: PrintedRecord) => Buffer> = [];
  let literal = '';
  const flush = () => {
    if (literal === '') return;
    const b = Buffer.from(literal);
    parts.push(() => b);
    literal = '';
  };
  for (let i = 0; i < template.length; i++) {
    const c = template[i]!;
    if (c !== '%' && c !== '\\') {
      literal += c;
      continue;
    }
    const next = template[i + 1];
    i++;
    if (next === undefined) throw new UsageError(`--format ends with a lone "${c}" (write ${c}${c} for a literal ${c})`);
    if (c === '\\') {
      const escaped = ESCAPES[next];
      if (escaped === undefined) throw new UsageError(`--format: unknown escape "\\${next}" (known: \\n \\r \\t \\\\)`);
      literal += escaped;
    } else if (next === '%') {
      literal += '%';
    } else {
      const token = Object.hasOwn(TOKENS, next) ? TOKENS[next] : undefined;
      if (token === undefined) throw new UsageError(`--format: unknown token "%${next}" (known: ${FORMAT_TOKENS})`);
      if (next === 'r' && !subscription) throw new UsageError('--format: %r (redelivery count) needs --subscription');
      flush();
      parts.push(token);
    }
  }
  // A template that never says where a line ends gets one per record (as the default output), so
  // `--format '%k %v'` prints lines; one with a \n anywhere is printed exactly as written (kcat).
  if (!/\\n/.test(template)) literal += '\n';
  flush();
  return (r) => Buffer.concat(parts.map((p) => p(r)));
}

/** The default: the value's bytes and a newline (as kcat prints). */
export const valueLine: RecordFormatter = (r) => Buffer.concat([bytes(r.value), NEWLINE]);

/** --json: one object per line; key, value and header values as UTF-8 text. */
export const jsonLine: RecordFormatter = (r) => {
  const out: Record<string, unknown> = {
    topic: r.topic,
    partition: r.partition,
    offset: r.offset,
    key: r.keyString,
    value: r.value === null ? null : utf8Value(r),
    headers: Object.fromEntries(Object.keys(r.headers).map((k) => [k, r.headerString(k)])),
    timestamp: r.timestamp,
  };
  if (r.redeliveryCount !== undefined) out['redeliveryCount'] = r.redeliveryCount;
  return Buffer.from(`${JSON.stringify(out)}\n`);
};

function utf8Value(r: PrintedRecord): string {
  try {
    return fromUtf8(r.value!);
  } catch (cause) {
    const at = `${r.topic}/${r.partition}@${r.offset}`;
    throw new TidemarkError('CORRUPT_MESSAGE', `value at ${at} is not UTF-8 text, which --json needs (print it with --format '%v')`, {
      cause,
      context: { topic: r.topic, partition: r.partition, offset: r.offset },
    });
  }
}
