/**
 * Determinism guard (TigerBeetle's tidy.zig): time and randomness reach actors, protocol, metadata,
 * storage and SDK logic only through the injected Clock and Random ports, so a whole cluster can run
 * on simulated time from one seed. Only src/runtime (the real ports) and src/cli (the process edge)
 * may touch the real ones.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import test from 'ava';

const root = new URL('../../', import.meta.url).pathname;
const ALLOWED = ['src/runtime/', 'src/cli/', 'src/node.ts'];
const BANNED = [/\bMath\.random\s*\(/, /\bDate\.now\s*\(/, /\bnew Date\s*\(\s*\)/, /(?<![.\w])setTimeout\s*\(/, /(?<![.\w])setInterval\s*\(/, /\bperformance\.now\s*\(/];

async function* sources(dir: string): AsyncGenerator<string> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* sources(path);
    else if (entry.name.endsWith('.ts')) yield path;
  }
}

test('no real clock, timers or randomness outside the runtime ports', async (t) => {
  const offences: string[] = [];
  let files = 0;
  for await (const path of sources(join(root, 'src'))) {
    const rel = relative(root, path);
    if (ALLOWED.some((a) => rel.startsWith(a))) continue;
    files++;
    const lines = (await readFile(path, 'utf8')).split('\n');
    lines.forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, '');
      for (const pattern of BANNED) if (pattern.test(code)) offences.push(`${rel}:${i + 1}: ${line.trim()}`);
    });
  }
  t.true(files > 20, 'the scan saw the source tree');
  t.deepEqual(offences, []);
});

test('the scan catches what it bans', (t) => {
  const sample = ['const x = Math.random();', 'Date.now()', 'new Date()', 'setTimeout(() => 1, 5)', 'setInterval(f, 1)'];
  for (const line of sample) t.true(BANNED.some((p) => p.test(line)), line);
  t.false(BANNED.some((p) => p.test('clock.setTimeout(fn, 5)')));
  t.false(BANNED.some((p) => p.test('new Date(record.timestamp)')));
});
