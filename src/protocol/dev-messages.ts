/**
 * `tidemark dev`'s control subject (Subjects.devControl): `tidemark dev stop|start|restart N`, run
 * from another terminal, asks the running `tidemark dev` to stop, start or restart one of its node
 * processes. The reply is `{ ok, message }`, or an error reply (INVALID_REQUEST for an unknown node,
 * a node already running, or a malformed request).
 */
import { REQUEST_TIMEOUT_MS_MAX } from './messages.js';
import { bool, int, object, oneOf, str, type Infer } from './validate.js';

export const DEV_ACTIONS = ['stop', 'start', 'restart'] as const;
export type DevAction = (typeof DEV_ACTIONS)[number];

export const devControlRequest = object({
  timeoutMs: int(1, REQUEST_TIMEOUT_MS_MAX),
  action: oneOf(...DEV_ACTIONS),
  node: int(0, 2 ** 31 - 1),
});
export type DevControlRequest = Infer<typeof devControlRequest>;

export const devControlReply = object({ ok: bool, message: str(1000) });
export type DevControlReply = Infer<typeof devControlReply>;
