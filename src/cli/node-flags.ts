/**
 * Flags of a node process: the V8 flags it is started with (below), and the producer session
 * flag of `tidemark node start` (further down, issue 12).
 *
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
import type { NodeOptions } from '../node.js';
import { intFlag } from './args.js';

export const NODE_PROCESS_FLAGS: readonly string[] = ['--initial-old-space-size=128'];

/**
 * `tidemark node start` options of the active controller's producer sessions (issue 12): the
 * option spec for parseArgs, its help lines, and the NodeOptions it gives.
 */
export const PRODUCER_SESSION_FLAG_OPTIONS = { 'producer-session-timeout-ms': { type: 'string' } } as const;

export const PRODUCER_SESSION_FLAG_HELP = `  --producer-session-timeout-ms N
                       as the active controller, a producer not heard from for N ms loses its
                       session (an exclusive one its claim); a new controller waits N ms before
                       granting an Exclusive producer (default 10000)`;

/** Bounds: the heartbeat interval (a third of it) stays within a request's budget. */
export const PRODUCER_SESSION_TIMEOUT_MS_MIN = 300;
export const PRODUCER_SESSION_TIMEOUT_MS_MAX = 600_000;

export function producerSessionFlags(values: { 'producer-session-timeout-ms'?: string | undefined }): Pick<NodeOptions, 'producerSessionTimeoutMs'> {
  const producerSessionTimeoutMs = intFlag('producer-session-timeout-ms', values['producer-session-timeout-ms'], PRODUCER_SESSION_TIMEOUT_MS_MIN, PRODUCER_SESSION_TIMEOUT_MS_MAX);
  return producerSessionTimeoutMs === undefined ? {} : { producerSessionTimeoutMs };
}
