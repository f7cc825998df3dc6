/**
 * The controller's producer-access decisions that reach the metadata log (issue 12), as pure
 * functions of the image: an exclusive grant raises the topic's producer epoch and names its owner;
 * a release drops the owner and keeps the epoch. Planned when the job is applied, not when it was
 * queued: a plan made from an older image fails retriably instead of committing over a change it
 * did not see.
 */
import { TidemarkError } from '../protocol/errors.js';
import { PRODUCER_EPOCH_MAX, type AccessMode } from '../protocol/producer-messages.js';
import type { MetadataImage } from './image.js';
import type { ProducerAccessRecord } from './records.js';

export interface ProducerGrant {
  topicId: string;
  owner: { name: string; sessionId: string; accessMode: AccessMode };
  /** ExclusiveWithFencing: take the topic whoever holds it, and fence the waiters from before. */
  fencing: boolean;
  /** Not fencing: the producer epoch the grant was decided on; another at apply time makes it stale. */
  expectEpoch: number;
}

/** The records of an exclusive grant; none when `owner` already holds the topic (a retry). */
export function planProducerGrant(image: MetadataImage, grant: ProducerGrant): ProducerAccessRecord[] {
  const topic = image.topicsById.get(grant.topicId);
  if (topic === undefined) throw new TidemarkError('UNKNOWN_TOPIC', `topic ${grant.topicId} was deleted`);
  const access = topic.producerAccess;
  if (access.owner?.sessionId === grant.owner.sessionId) return [];
  if (!grant.fencing && (access.epoch !== grant.expectEpoch || access.owner !== undefined)) {
    throw new TidemarkError('BUSY', `topic "${topic.name}" producer access changed while the grant waited (epoch ${grant.expectEpoch} -> ${access.epoch}); retry`);
  }
  if (access.epoch >= PRODUCER_EPOCH_MAX) throw new TidemarkError('INVALID_REQUEST', `topic "${topic.name}" has reached the highest producer epoch`);
  const epoch = access.epoch + 1;
  return [{ type: 'ProducerAccess', topicId: topic.topicId, epoch, fencedEpoch: grant.fencing ? epoch : access.fencedEpoch, owner: { ...grant.owner } }];
}

/** The records that end `sessionId`'s exclusive claim: none when it holds none (idempotent). */
export function planProducerRelease(image: MetadataImage, topicId: string, sessionId: string): ProducerAccessRecord[] {
  const access = image.topicsById.get(topicId)?.producerAccess;
  if (access === undefined || access.owner?.sessionId !== sessionId) return [];
  return [{ type: 'ProducerAccess', topicId, epoch: access.epoch, fencedEpoch: access.fencedEpoch }];
}
