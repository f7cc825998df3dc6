/**
 * The voter's only path to the fabric: subscribes to its own Raft subject, decodes and checks every
 * message, and hands the machine one event per valid message from another voter; publishes what the
 * machine sends. Bad bytes and strangers are logged and dropped, never thrown.
 */
import { fromCallback } from 'xstate';
import type { Logger, Transport } from '../runtime/ports.js';
import { decodeRaftMessage, encodeRaftMessage, type RaftMessage } from './messages.js';
import { raftSubject } from '../protocol/subjects.js';
import type { NetCommand, NetEvent } from './types.js';

function toEvent(msg: RaftMessage): NetEvent {
  switch (msg.type) {
    case 'preVote':
      return { type: 'raft.preVote', msg };
    case 'preVoteReply':
      return { type: 'raft.preVoteReply', msg };
    case 'vote':
      return { type: 'raft.vote', msg };
    case 'voteReply':
      return { type: 'raft.voteReply', msg };
    case 'append':
      return { type: 'raft.append', msg };
    case 'appendReply':
      return { type: 'raft.appendReply', msg };
    case 'installSnapshot':
      return { type: 'raft.installSnapshot', msg };
    case 'snapshotReply':
      return { type: 'raft.snapshotReply', msg };
  }
}

export interface NetInput {
  transport: Transport;
  subjectPrefix: string;
  voterId: number;
  voters: readonly number[];
  logger: Logger;
}

export const netActor = fromCallback<NetCommand, NetInput>(({ input, receive, sendBack }) => {
  const { transport, logger } = input;
  const subscription = transport.subscribe(raftSubject(input.subjectPrefix, input.voterId), (inbound) => {
    let event: NetEvent;
    try {
      const msg = decodeRaftMessage(inbound.data);
      if (msg.from === input.voterId || !input.voters.includes(msg.from)) {
        logger.warn({ from: msg.from }, 'raft message from a non-voter dropped');
        return;
      }
      event = toEvent(msg);
    } catch (error) {
      logger.warn({ err: error }, 'bad raft message dropped');
      return;
    }
    sendBack(event);
  });
  receive((out) => {
    try {
      transport.publish(raftSubject(input.subjectPrefix, out.to), encodeRaftMessage(out.msg));
    } catch (error) {
      logger.warn({ err: error, to: out.to }, 'raft message not sent');
    }
  });
  return () => subscription.unsubscribe();
});
