/**
 * V8 flags a Tidemark node process is started with (a broker's JVM options, in Kafka's terms).
 *
 * `--initial-old-space-size=128`: V8 starts a small heap (here ~9 MiB live) with an old-generation
 * limit of ~25 MiB and, under a node's allocation pattern (large ArrayBuffers for batches passing
 * through, many short-lived event objects), ran a full mark-compact every ~4 MB produced: 50 per
 * 200 MB into one node, 2.2 s of node CPU. Starting the old generation at 128 MiB: 5 mark-compacts,
 * 1.2 s of CPU (-45 %), for ~40 MiB more RSS (docs/bench/budget.md). Heap sizing is read when the
 * isolate is created, so it cannot be set from inside the process (v8.setFlagsFromString has no
 * effect on it): whoever starts a node passes these. `tidemark dev` and the test and bench
 * spawners use this list; bin/tidemark.js's shebang carries the same flag, so `tidemark node start`
 * run as a command gets it; `node bin/tidemark.js node start` needs them by hand (docs/operations.md).
 */
export const NODE_PROCESS_FLAGS: readonly string[] = ['--initial-old-space-size=128'];
