/**
 * The broker's session with the active controller (KRaft's BrokerRegistration + BrokerHeartbeat):
 * registers and gets a broker epoch, then heartbeats every `heartbeatIntervalMs` with the metadata
 * offset it has applied. The controller unfences the broker once it has caught up and fences it
 * when heartbeats stop for `sessionTimeoutMs`. A STALE_BROKER_EPOCH answer means this registration
 * was replaced: register again.
 */
import { fromCallback } from 'xstate';
import type { MetadataView } from '../../metadata/metadata-store.js';
import { awaitingRecovery } from '../../metadata/planner.js';
import { heartbeatReply, LOG_END_REPORTS_MAX, registerBrokerReply, type HeartbeatRequest, type LogEndReportWire, type RegisterBrokerRequest } from '../../protocol/controller-messages.js';
import { TidemarkError } from '../../protocol/errors.js';
import { decodeReply, encodeMessage } from '../../protocol/messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Clock, Logger, Transport } from '../../runtime/ports.js';
import type { NodeStorage } from '../../storage/partition-store.js';
import { noMetrics, type NodeMetrics } from '../../metrics/port.js';

export interface ControllerSessionInput {
  brokerId: number;
  rack: string;
  incarnation: string;
  /** Says whether the last process shut down cleanly, and reports log ends for recovery elections. */
  storage: NodeStorage;
  subjects: Subjects;
  transport: Transport;
  view: MetadataView;
  clock: Clock;
  logger: Logger;
  /** Counts heartbeats answered and missed. @default noMetrics */
  metrics?: NodeMetrics;
  heartbeatIntervalMs: number;
}

/** `metadataOffset`: the controller's metadata offset when it answered (absent: registration). */
export type SessionEvent = { type: 'SESSION'; brokerEpoch: number; fenced: boolean; metadataOffset?: number };

export const controllerSession = fromCallback<{ type: 'NONE' }, ControllerSessionInput>(({ input, sendBack }) => {
  const { subjects, transport, clock, logger } = input;
  const metrics = input.metrics ?? noMetrics;
  let stopped = false;
  let timer: unknown;
  let epoch: number | undefined;
  const requestTimeoutMs = Math.max(200, input.heartbeatIntervalMs * 2);

  const register = async () => {
    const request: RegisterBrokerRequest = {
      timeoutMs: requestTimeoutMs,
      brokerId: input.brokerId,
      rack: input.rack,
      incarnation: input.incarnation,
      uncleanShutdown: input.storage.uncleanShutdown,
    };
    const reply = decodeReply(await transport.request(subjects.controller('register'), encodeMessage(request), requestTimeoutMs), registerBrokerReply);
    epoch = reply.brokerEpoch;
    if (request.uncleanShutdown === true) input.storage.uncleanShutdownReported();
    logger.info({ brokerEpoch: epoch, uncleanShutdown: request.uncleanShutdown }, 'registered with the controller');
    if (!stopped) sendBack({ type: 'SESSION', brokerEpoch: epoch, fenced: true } satisfies SessionEvent);
  };

  /** This broker's copies of the partitions awaiting a recovery election (planner.planRecoveryElections). */
  const logEnds = async (): Promise<LogEndReportWire[]> => {
    const reports: LogEndReportWire[] = [];
    for (const { topic, p } of awaitingRecovery(input.view.image())) {
      if (reports.length >= LOG_END_REPORTS_MAX) break;
      if (!p.isr.includes(input.brokerId)) continue;
      const store = await input.storage.openPartition({ topicId: topic.topicId, partition: p.partition });
      const epochs = store.epochs();
      reports.push({ topicId: topic.topicId, partition: p.partition, lastEpoch: epochs[epochs.length - 1]?.epoch ?? -1, logEndOffset: store.logEndOffset() });
    }
    return reports;
  };

  const heartbeat = async (brokerEpoch: number) => {
    const request: HeartbeatRequest = {
      timeoutMs: requestTimeoutMs,
      brokerId: input.brokerId,
      brokerEpoch,
      metadataOffset: input.view.image().offset,
      logEnds: await logEnds(),
    };
    const reply = decodeReply(await transport.request(subjects.controller('heartbeat'), encodeMessage(request), requestTimeoutMs), heartbeatReply);
    metrics.heartbeat('ok', reply.metadataOffset);
    // A controller that knows less metadata than this broker is a deposed one that has not noticed
    // (paused, cut off): its word on fencing is stale, and would stop this broker's actors for nothing.
    if (reply.metadataOffset !== undefined && reply.metadataOffset < request.metadataOffset) {
      logger.debug({ controllerOffset: reply.metadataOffset, metadataOffset: request.metadataOffset }, 'heartbeat answered by a stale controller; ignored');
      return;
    }
    if (!stopped) sendBack({ type: 'SESSION', brokerEpoch, fenced: reply.fenced, ...(reply.metadataOffset === undefined ? {} : { metadataOffset: reply.metadataOffset }) } satisfies SessionEvent);
  };

  const tick = () => {
    if (stopped) return;
    const step = epoch === undefined ? register() : heartbeat(epoch);
    step.then(
      () => schedule(),
      (error: unknown) => {
        if (error instanceof TidemarkError && error.code === 'STALE_BROKER_EPOCH') {
          logger.warn('broker epoch is stale; registering again');
          epoch = undefined;
        } else {
          metrics.heartbeat('missed');
          logger.debug({ err: error }, epoch === undefined ? 'registration failed; retrying' : 'heartbeat failed');
        }
        schedule();
      },
    );
  };
  const schedule = () => {
    if (!stopped) timer = clock.setTimeout(tick, input.heartbeatIntervalMs);
  };
  tick();
  return () => {
    stopped = true;
    if (timer !== undefined) clock.clearTimeout(timer);
  };
});
