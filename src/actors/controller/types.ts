import type { CreateTopicRequest, DeleteTopicRequest } from '../../protocol/messages.js';

interface JobBase {
  replyTo: string;
  /** Local clock time after which the caller has given up: the job is answered TIMEOUT, not applied. */
  deadlineMs: number;
}

export type AdminJob =
  | (JobBase & { op: 'create-topic'; request: CreateTopicRequest })
  | (JobBase & { op: 'delete-topic'; request: DeleteTopicRequest });

export type ControllerEvent = { type: 'ADMIN'; job: AdminJob } | { type: 'STOP' };
