/**
 * The leader broker's fetch-session door: subscribes to `tm.<c>.b.<broker>.replica-fetch`, checks
 * every request against its schema (bad input is answered INVALID_REQUEST, never thrown into the
 * NATS callback), and runs the node's session registry (sessions.ts), which asks the partition
 * leader actors it finds in the actor system.
 */
import { fromCallback, type AnyActorRef } from 'xstate';
import { TidemarkError } from '../../protocol/errors.js';
import { decodeRequest, encodeError } from '../../protocol/messages.js';
import { replicaFetchSessionRequest } from '../../protocol/replica-messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Random, Transport } from '../../runtime/ports.js';
import { partitionActorId } from '../broker/metadata-view.js';
import type { ReplicaWatch } from '../partition/types.js';
import { LeaderSessions, type SessionLimits } from './sessions.js';

/**
 * What partition leaders hold of the registry from their start (their answers' local addresses,
 * their written ends); the registry itself lives while the broker listens.
 */
export class SessionHub implements ReplicaWatch {
  sessions: LeaderSessions | undefined;

  written(topicId: string, partition: number, writtenEnd: number): void {
    this.sessions?.written(topicId, partition, writtenEnd);
  }

  follows(replicaId: number, topicId: string, partition: number, leaderEpoch: number, sinceMs: number): boolean {
    return this.sessions?.follows(replicaId, topicId, partition, leaderEpoch, sinceMs) ?? false;
  }

  local = (subject: string, data: Uint8Array): void => {
    this.sessions?.localReply(subject, data);
  };
}

export interface SessionListenerInput {
  brokerId: number;
  hub: SessionHub;
  subjects: Subjects;
  transport: Transport;
  clock: Clock;
  random: Random;
  logger: Logger;
  limits: SessionLimits;
}

export const sessionListener = fromCallback<{ type: 'NONE' }, SessionListenerInput>(({ input, system }) => {
  const { hub, transport, logger } = input;
  const sessions = new LeaderSessions(
    {
      clock: input.clock,
      random: input.random,
      logger,
      maxPayloadBytes: transport.maxPayloadBytes,
      dispatch: (topicId, partition, event) => {
        const actor = system.get(partitionActorId(topicId, partition)) as AnyActorRef | undefined;
        if (actor === undefined) return { code: 'NOT_LEADER', message: `broker ${input.brokerId} does not lead ${topicId}/${partition}` };
        actor.send(event);
        return undefined;
      },
    },
    input.limits,
  );
  hub.sessions = sessions;
  const sub = transport.subscribe(input.subjects.replicaFetchSession(input.brokerId), (msg) => {
    try {
      if (msg.reply === undefined) throw new TidemarkError('INVALID_REQUEST', 'replica fetch needs a reply subject');
      const request = decodeRequest(msg.data, replicaFetchSessionRequest);
      sessions.request({ ...request, maxWaitMs: Math.min(request.maxWaitMs, request.timeoutMs) }, (data) => msg.respond(data));
    } catch (error) {
      const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'internal error', { cause: error });
      if (err.code === 'INTERNAL') logger.error({ err: error }, 'replica fetch session request failed');
      else logger.debug({ code: err.code, reason: err.message }, 'replica fetch session request refused');
      if (msg.reply !== undefined) msg.respond(encodeError(err.toWire()));
    }
  });
  return () => {
    sub.unsubscribe();
    sessions.closeAll();
    if (hub.sessions === sessions) hub.sessions = undefined;
  };
});
