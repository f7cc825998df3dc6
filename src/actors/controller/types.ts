import type { AlterPartitionRequest, ControlledShutdownRequest, LogEndReportWire, RegisterBrokerRequest } from '../../protocol/controller-messages.js';
import type { CreateSubscriptionRequest, DeleteSubscriptionRequest } from '../../protocol/subscription-messages.js';
import type { AlterConfigRequest, CreatePartitionsRequest, CreateTopicRequest, DeleteTopicRequest, ElectLeadersRequest } from '../../protocol/messages.js';
import type { ProducerAttachRequest, ProducerDetachRequest, ProducerHeartbeatRequest } from '../../protocol/producer-messages.js';
import type { ProducerGrant } from '../../metadata/producer-planner.js';

interface JobBase {
  /** Absent for jobs the controller gives itself (fencing, unfencing). */
  replyTo: string | undefined;
  /** Local clock time after which the caller has given up: the job is answered TIMEOUT, not applied. */
  deadlineMs: number;
}

/** Every metadata change goes through one queue, applied one at a time. */
export type ControllerJob =
  | (JobBase & { op: 'create-topic'; request: CreateTopicRequest })
  | (JobBase & { op: 'delete-topic'; request: DeleteTopicRequest })
  | (JobBase & { op: 'create-partitions'; request: CreatePartitionsRequest })
  | (JobBase & { op: 'alter-config'; request: AlterConfigRequest })
  | (JobBase & { op: 'elect-leaders'; request: ElectLeadersRequest })
  | (JobBase & { op: 'create-subscription'; request: CreateSubscriptionRequest })
  | (JobBase & { op: 'delete-subscription'; request: DeleteSubscriptionRequest })
  | (JobBase & { op: 'register'; request: RegisterBrokerRequest })
  | (JobBase & { op: 'alter-partition'; request: AlterPartitionRequest })
  | (JobBase & { op: 'shutdown'; request: ControlledShutdownRequest })
  /** Periodic: move leadership back to preferred replicas that are in sync. */
  | (JobBase & { op: 'elect-preferred' })
  | (JobBase & { op: 'fence'; brokerId: number })
  | (JobBase & { op: 'unfence'; brokerId: number })
  /** Recovery elections of partitions whose ISR members are all suspects, from the reports so far. */
  | (JobBase & { op: 'recover'; reports: LogEndReports })
  /** An exclusive producer grant (issue 12): raise the topic's producer epoch and name the owner; answered with a ProducerAttachReply. */
  | (JobBase & { op: 'producer-grant'; grant: ProducerGrant; heartbeatIntervalMs: number })
  /** An exclusive owner detached or went silent: the topic has no owner (same epoch); answered with a ProducerDetachReply. */
  | (JobBase & { op: 'producer-release'; topicId: string; sessionId: string });

/** The latest log-end report per broker (from that broker epoch), per "topicId/partition". */
export type LogEndReports = Readonly<Record<number, { brokerEpoch: number; ends: Readonly<Record<string, { lastEpoch: number; logEndOffset: number }>> }>>;

/** Kept for the admin listener: the jobs clients send. */
export type AdminJob = Extract<ControllerJob, { op: 'create-topic' | 'delete-topic' | 'create-partitions' | 'alter-config' | 'elect-leaders' | 'create-subscription' | 'delete-subscription' }>;

export type ControllerEvent =
  | { type: 'ADMIN'; job: ControllerJob }
  | { type: 'HEARTBEAT'; replyTo: string; brokerId: number; brokerEpoch: number; metadataOffset: number; logEnds: readonly LogEndReportWire[]; nowMs: number }
  | { type: 'PRODUCER_ATTACH'; replyTo: string; request: ProducerAttachRequest; nowMs: number }
  | { type: 'PRODUCER_HEARTBEAT'; replyTo: string; request: ProducerHeartbeatRequest; nowMs: number }
  | { type: 'PRODUCER_DETACH'; replyTo: string; request: ProducerDetachRequest; nowMs: number }
  | { type: 'TICK'; nowMs: number }
  | { type: 'ACTIVE'; nowMs: number }
  | { type: 'STANDBY' }
  | { type: 'STOP' };
