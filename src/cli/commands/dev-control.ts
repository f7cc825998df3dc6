/** `tidemark dev stop|start|restart N`: asks the running `tidemark dev` (dev.ts serves the subject) over NATS. */
import { Rpc } from '../../client/rpc.js';
import { devControlReply, type DevAction, type DevControlRequest } from '../../protocol/dev-messages.js';
import { TidemarkError } from '../../protocol/errors.js';
import { Subjects } from '../../protocol/subjects.js';
import { connectNats, type NatsTransport } from '../../runtime/nats-transport.js';
import { connection, GLOBAL_OPTIONS, natsSecurityOf, parse } from '../args.js';
import { UsageError } from '../cli-error.js';

const CONTROL_OPTIONS = { ...GLOBAL_OPTIONS } as const;
/** Bound on each node's clean stop after SIGTERM, ms. */
export const STOP_TIMEOUT_MS = 15_000;
/** Bound on a started node registering (unfenced), ms. */
export const NODE_READY_TIMEOUT_MS = 30_000;
/** Bound on one control request as seen by `tidemark dev stop|start|restart`, ms: a stop and a start. */
const CONTROL_TIMEOUT_MS = STOP_TIMEOUT_MS + NODE_READY_TIMEOUT_MS + 5_000;

/** `tidemark dev stop|start|restart N`: asks the running `tidemark dev` over NATS. */
export async function devControlCommand(action: DevAction, argv: string[]): Promise<number> {
  const { values, positionals } = parse(`dev ${action}`, argv, CONTROL_OPTIONS, 1);
  const text = positionals[0]!;
  const node = /^[0-9]{1,9}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(node)) throw new UsageError(`dev ${action}: the node must be a node id (an integer), got "${text}"`);
  const target = connection(values);
  const { servers, cluster } = target;
  const subjects = new Subjects(cluster);
  const absent = () => {
    process.stderr.write(`tidemark: no tidemark dev answers for cluster "${cluster}" on ${servers} (is it running, with the same --nats and --cluster?)\n`);
    return 1;
  };
  let transport: NatsTransport;
  try {
    transport = await connectNats({ ...natsSecurityOf(target), servers, name: `tidemark dev ${action}` });
  } catch (error) {
    if (error instanceof TidemarkError && error.code === 'CONNECTION_FAILED') return absent();
    throw error;
  }
  try {
    const reply = await new Rpc(transport).request(subjects.devControl(), { timeoutMs: CONTROL_TIMEOUT_MS, action, node } satisfies DevControlRequest, devControlReply);
    process.stdout.write(`${reply.message}\n`);
    return 0;
  } catch (error) {
    if (error instanceof TidemarkError && error.code === 'NO_RESPONDERS') return absent();
    throw error;
  } finally {
    await transport.close();
  }
}
