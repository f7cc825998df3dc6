/**
 * Tells the controller machine when this voter becomes the active controller (Raft leader whose
 * own no-op is applied, so its image holds every committed entry) and when it stops being one, and
 * ticks it every `tickMs` for broker session checks. Polls the Raft status on the injected clock.
 */
import { fromCallback } from 'xstate';
import type { Clock } from '../../runtime/ports.js';
import type { ControllerEvent } from './types.js';

export interface LeadershipSource {
  status(): { role: string; leaderReady: boolean };
}

export interface LeadershipWatchInput {
  raft: LeadershipSource;
  clock: Clock;
  /** Poll and tick period, ms. */
  tickMs: number;
}

export const leadershipWatch = fromCallback<{ type: 'NONE' }, LeadershipWatchInput>(({ input, sendBack }) => {
  const { raft, clock } = input;
  let active = false;
  let timer: unknown;
  const poll = () => {
    const status = raft.status();
    const now = status.role === 'leader' && status.leaderReady;
    if (now !== active) {
      active = now;
      sendBack((now ? { type: 'ACTIVE', nowMs: clock.now() } : { type: 'STANDBY' }) satisfies ControllerEvent);
    } else if (active) {
      sendBack({ type: 'TICK', nowMs: clock.now() } satisfies ControllerEvent);
    }
    timer = clock.setTimeout(poll, input.tickMs);
  };
  poll();
  return () => clock.clearTimeout(timer);
});
