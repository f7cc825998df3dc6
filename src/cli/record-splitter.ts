/**
 * Splits a byte stream into records at a delimiter (kcat's -D), for `tidemark produce`.
 *
 * Pure and bounded: bytes go in as chunks (a delimiter may straddle two chunks), records come out
 * as they complete. A record longer than `recordBytesMax` is not buffered: it is reported once as
 * `too-large` as soon as it is known to be too long, and its bytes are dropped up to the next
 * delimiter. In the default line mode (`stripCr`) a `\r` just before the `\n` is removed (a lone
 * `\r` elsewhere is data); a final record without a trailing delimiter is a record; an empty input
 * has none.
 */

export type SplitEvent =
  | { kind: 'record'; bytes: Buffer }
  /** A record over the limit; `bytesSeen` is how many of its bytes were read when it was refused. */
  | { kind: 'too-large'; bytesSeen: number };

export interface SplitterOptions {
  /** The record separator, at least one byte. */
  delimiter: Uint8Array;
  /** Remove one `\r` ending a record (for `\r\n` line ends; only sensible with delimiter `\n`). */
  stripCr: boolean;
  /** Longest record accepted, bytes (after stripping). */
  recordBytesMax: number;
}

const CR = 0x0d;

export class RecordSplitter {
  private readonly delimiter: Buffer;
  /** Bytes of the record being read that were not yet split off. */
  private carry: Buffer = Buffer.alloc(0);
  /** Where in `carry` the delimiter search resumes (earlier positions cannot start one). */
  private searchFrom = 0;
  /** Dropping the bytes of a too-large record until its delimiter. */
  private skipping = false;

  constructor(private readonly options: SplitterOptions) {
    if (options.delimiter.length === 0) throw new RangeError('the delimiter must not be empty');
    if (!Number.isSafeInteger(options.recordBytesMax) || options.recordBytesMax < 0) throw new RangeError('recordBytesMax must be a non-negative integer');
    this.delimiter = Buffer.from(options.delimiter);
  }

  /** Splits what `chunk` completes; the rest is kept for the next chunk. */
  push(chunk: Uint8Array): SplitEvent[] {
    const out: SplitEvent[] = [];
    if (chunk.length === 0) return out;
    const data = this.carry.length === 0 ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length) : Buffer.concat([this.carry, chunk]);
    const d = this.delimiter.length;
    let start = 0;
    let from = this.searchFrom;
    for (;;) {
      const at = data.indexOf(this.delimiter, from);
      if (at < 0) break;
      this.complete(data.subarray(start, at), out);
      start = at + d;
      from = start;
    }
    const rest = data.subarray(start);
    // The last d-1 bytes may begin a delimiter that the next chunk completes.
    const keep = Math.min(rest.length, d - 1);
    if (!this.skipping && rest.length > this.options.recordBytesMax + (this.options.stripCr ? 1 : 0)) {
      out.push({ kind: 'too-large', bytesSeen: rest.length });
      this.skipping = true;
    }
    if (this.skipping) {
      this.carry = Buffer.from(rest.subarray(rest.length - keep));
      this.searchFrom = 0;
    } else {
      // A copy: the caller's chunk is not held on to, and carry stays at most one record long.
      this.carry = Buffer.from(rest);
      this.searchFrom = rest.length - keep;
    }
    return out;
  }

  /** The input ended: a final record without a trailing delimiter, if any. */
  end(): SplitEvent[] {
    const out: SplitEvent[] = [];
    if (this.skipping) {
      this.skipping = false;
    } else if (this.carry.length > 0) {
      this.complete(this.carry, out);
    }
    this.carry = Buffer.alloc(0);
    this.searchFrom = 0;
    return out;
  }

  private complete(bytes: Buffer, out: SplitEvent[]): void {
    if (this.skipping) {
      // The end of a record already reported as too large.
      this.skipping = false;
      return;
    }
    const record = this.options.stripCr && bytes.length > 0 && bytes[bytes.length - 1] === CR ? bytes.subarray(0, bytes.length - 1) : bytes;
    if (record.length > this.options.recordBytesMax) out.push({ kind: 'too-large', bytesSeen: record.length });
    else out.push({ kind: 'record', bytes: record });
  }
}

const ESCAPES: Record<string, number> = { n: 0x0a, r: 0x0d, t: 0x09, '0': 0x00, '\\': 0x5c };

/**
 * Bytes of a delimiter written with kcat's escapes: \n \r \t \0 \\ and \xHH (one byte); other
 * characters are UTF-8. Throws a RangeError naming what is wrong (an unknown escape, a bad \x).
 */
export function parseDelimiter(text: string): Uint8Array {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c !== '\\') {
      const cp = text.codePointAt(i)!;
      const ch = String.fromCodePoint(cp);
      bytes.push(...Buffer.from(ch, 'utf8'));
      i += ch.length - 1;
      continue;
    }
    const next = text[i + 1];
    if (next === undefined) throw new RangeError('ends with a lone "\\" (write "\\\\" for a backslash)');
    if (next === 'x') {
      const hex = text.slice(i + 2, i + 4);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new RangeError(`"\\x" must be followed by two hex digits, got "\\x${hex}"`);
      bytes.push(parseInt(hex, 16));
      i += 3;
      continue;
    }
    const byte = ESCAPES[next];
    if (byte === undefined) throw new RangeError(`unknown escape "\\${next}" (known: \\n \\r \\t \\0 \\\\ \\xHH)`);
    bytes.push(byte);
    i += 1;
  }
  return Uint8Array.from(bytes);
}
