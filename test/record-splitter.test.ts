/** The pure splitter behind `tidemark produce`: delimiters across chunks, \r\n, limits, escapes. */
import test from 'ava';
import { parseDelimiter, RecordSplitter, type SplitEvent, type SplitterOptions } from '../src/cli/record-splitter.js';

const NL = Uint8Array.of(0x0a);

function split(chunks: Array<string | Buffer>, options: Partial<SplitterOptions> = {}): string[] {
  const splitter = new RecordSplitter({ delimiter: NL, stripCr: true, recordBytesMax: 1_000, ...options });
  const events: SplitEvent[] = [];
  for (const c of chunks) events.push(...splitter.push(typeof c === 'string' ? Buffer.from(c, 'latin1') : c));
  events.push(...splitter.end());
  return events.map((e) => (e.kind === 'record' ? e.bytes.toString('latin1') : `<too-large ${e.bytesSeen}>`));
}

test('an empty input has no records', (t) => {
  t.deepEqual(split([]), []);
  t.deepEqual(split(['']), []);
});

test('a final record without a trailing delimiter is a record; empty lines are empty records', (t) => {
  t.deepEqual(split(['a\nb']), ['a', 'b']);
  t.deepEqual(split(['a\n\nb\n']), ['a', '', 'b']);
  t.deepEqual(split(['a', 'b', '\n', 'c']), ['ab', 'c']);
});

test('default line mode strips the \\r of \\r\\n only; a lone \\r is data', (t) => {
  t.deepEqual(split(['a\r\nb\rc\n\r\r\n']), ['a', 'b\rc', '\r']);
  t.deepEqual(split(['a\r', '\nb']), ['a', 'b'], '\\r and \\n in different chunks');
  t.deepEqual(split(['a\r\nb\r']), ['a', 'b'], 'a final record ending in \\r');
  t.deepEqual(split(['a\r\nb'], { stripCr: false }), ['a\r', 'b'], 'no stripping with a custom delimiter');
});

test('a multi-byte delimiter split across chunks at every position', (t) => {
  const delimiter = Buffer.from('--|');
  const input = 'one--|two-|--|three--|--|x';
  for (let a = 0; a <= input.length; a++) {
    for (let b = a; b <= input.length; b++) {
      const chunks = [input.slice(0, a), input.slice(a, b), input.slice(b)];
      t.deepEqual(split(chunks, { delimiter, stripCr: false }), ['one', 'two-|', 'three', '', 'x'], JSON.stringify(chunks));
    }
  }
  // One byte per chunk.
  t.deepEqual(split([...input], { delimiter, stripCr: false }), ['one', 'two-|', 'three', '', 'x']);
});

test('a record longer than the limit is reported once and skipped to the next delimiter, without buffering it', (t) => {
  t.deepEqual(split(['ok\n0123456789ab\nnext\n'], { recordBytesMax: 10 }), ['ok', '<too-large 12>', 'next']);
  t.deepEqual(split(['0123456789'], { recordBytesMax: 10 }), ['0123456789'], 'exactly the limit is fine');
  t.deepEqual(split(['0123456789\r\n'], { recordBytesMax: 10 }), ['0123456789'], 'the stripped \\r does not count');
  // Chunks of a long record: refused as soon as it passes the limit, and its bytes are not kept.
  const splitter = new RecordSplitter({ delimiter: Buffer.from('||'), stripCr: false, recordBytesMax: 10 });
  t.deepEqual(splitter.push(Buffer.from('a||0123456')), [{ kind: 'record', bytes: Buffer.from('a') }]);
  t.deepEqual(splitter.push(Buffer.from('789abc')), [{ kind: 'too-large', bytesSeen: 13 }]);
  for (let i = 0; i < 100; i++) t.deepEqual(splitter.push(Buffer.alloc(10_000, 0x41)), []);
  t.true((splitter as unknown as { carry: Buffer }).carry.length <= 1, 'at most delimiter-1 bytes kept while skipping');
  t.deepEqual(splitter.push(Buffer.from('|')), []);
  t.deepEqual(splitter.push(Buffer.from('|b||c')), [{ kind: 'record', bytes: Buffer.from('b') }], 'the delimiter across chunks ends the skipped record');
  t.deepEqual(splitter.end(), [{ kind: 'record', bytes: Buffer.from('c') }]);
  t.deepEqual(split(['x\n', 'y'.repeat(50)], { recordBytesMax: 10 }), ['x', '<too-large 50>'], 'a too-large final record');
});

test('binary bytes pass unchanged', (t) => {
  const bytes = Buffer.from([0x00, 0xff, 0xfe, 0x0d, 0x80, 0x0a, 0xc3, 0x28]);
  const splitter = new RecordSplitter({ delimiter: NL, stripCr: true, recordBytesMax: 100 });
  const events = [...splitter.push(bytes), ...splitter.end()];
  t.deepEqual(events, [
    { kind: 'record', bytes: Buffer.from([0x00, 0xff, 0xfe, 0x0d, 0x80]) },
    { kind: 'record', bytes: Buffer.from([0xc3, 0x28]) },
  ]);
});

test('parseDelimiter reads kcat escapes', (t) => {
  t.deepEqual([...parseDelimiter('\\n')], [0x0a]);
  t.deepEqual([...parseDelimiter('\\r\\n')], [0x0d, 0x0a]);
  t.deepEqual([...parseDelimiter('a\\t\\0\\\\\\x1e\\xFF')], [0x61, 0x09, 0x00, 0x5c, 0x1e, 0xff]);
  t.deepEqual([...parseDelimiter('é|')], [0xc3, 0xa9, 0x7c]);
  t.throws(() => parseDelimiter('\\q'), { message: /unknown escape "\\q"/ });
  t.throws(() => parseDelimiter('\\x4'), { message: /two hex digits/ });
  t.throws(() => parseDelimiter('a\\'), { message: /lone/ });
});
