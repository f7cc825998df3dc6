/**
 * Controlled shutdown (Kafka's): before a broker stops, the controller moves every leadership it
 * holds to another in-sync replica and takes it out of the ISRs, so a rolling restart never leaves
 * a partition without a leader. One answer settles it (partitions no other replica can lead stay:
 * asking again would not change that); a failed request is retried within the budget. Then it
 * waits until this broker's metadata shows the moves, so its leader actors are stopping before the
 * broker stops the rest.
 */
import { fromPromise } from 'xstate';
import type { MetadataView } from '../../metadata/metadata-store.js';
import { controlledShutdownReply, type ControlledShutdownRequest } from '../../protocol/controller-messages.js';
import { decodeReply, encodeMessage } from '../../protocol/messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Transport } from '../../runtime/ports.js';

export interface ControlledShutdownInput {
  brokerId: number;
  brokerEpoch: number;
  subjects: Subjects;
  transport: Transport;
  view: MetadataView;
  clock: Clock;
  logger: Logger;
  /** Whole budget, ms. */
  budgetMs: number;
  /** Pause between attempts, ms. */
  retryMs: number;
}

const sleep = (clock: Clock, ms: number) => new Promise<void>((resolve) => clock.setTimeout(() => resolve(), ms));

export const controlledShutdown = fromPromise<{ remainingLeaders: number }, ControlledShutdownInput>(async ({ input }) => {
  const { clock, logger, view } = input;
  const deadline = clock.now() + input.budgetMs;
  let remaining = -1;
  while (clock.now() < deadline) {
    const timeoutMs = Math.max(1, Math.min(1_000, deadline - clock.now()));
    try {
      const request: ControlledShutdownRequest = { timeoutMs, brokerId: input.brokerId, brokerEpoch: input.brokerEpoch };
      const data = await input.transport.request(input.subjects.controller('shutdown'), encodeMessage(request), timeoutMs);
      const reply = decodeReply(data, controlledShutdownReply);
      remaining = reply.remainingLeaders;
      while (view.image().offset < reply.metadataOffset && clock.now() < deadline) await sleep(clock, 10);
      break;
    } catch (error) {
      logger.debug({ err: error }, 'controlled shutdown request failed; retrying');
    }
    await sleep(clock, input.retryMs);
  }
  logger.info({ remainingLeaders: remaining }, remaining === 0 ? 'controlled shutdown: leadership moved' : 'controlled shutdown: some leaderships stay');
  return { remainingLeaders: remaining };
});
