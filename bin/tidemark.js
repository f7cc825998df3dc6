#!/usr/bin/env -S node --initial-old-space-size=128
// The flag is src/cli/node-flags.ts's NODE_PROCESS_FLAGS (a node's heap sizing; see there).
// Thin launcher: the CLI is compiled TypeScript in dist/ (built by `npm ci` via the prepare script).
import { existsSync } from 'node:fs';
const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('tidemark: not built yet; run `npm ci` (or `npm run build`) first\n');
  process.exit(1);
}
await import(main.href);
