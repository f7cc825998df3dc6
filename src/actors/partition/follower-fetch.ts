/**
 * One step of a follower: fetch from the leader at the follower's log end and either append what
 * came back (fsynced under flush.mode=fsync, so the next fetch, which reports this log end, only
 * counts durable records toward the leader's high watermark), truncate where the leader says the
 * logs diverge, or, when the leader's log now starts past this log's end (retention there removed
 * what this replica would fetch next: OFFSET_OUT_OF_RANGE with the leader's log range), empty the
 * log and restart it at the leader's log start (Kafka's truncateFullyAndStartAt). Every step starts
 * from what is on disk, so a lost, late or duplicated reply costs one round trip and nothing else:
 * a late reply's request is gone, and records are appended only at the exact offset the log ends at.
 */
import { fromPromise } from 'xstate';
import { readBatchHeader, splitBatches, verifyBatch } from '../../protocol/batch.js';
import { logRangeOf, TidemarkError } from '../../protocol/errors.js';
import { decodeReply, encodeMessage } from '../../protocol/messages.js';
import { replicaFetchReply, type ReplicaFetchReply, type ReplicaFetchRequest } from '../../protocol/replica-messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { Logger, Transport } from '../../runtime/ports.js';
import type { PartitionStore, RetentionPolicy } from '../../storage/partition-store.js';
import type { ReplicaFetchers } from '../replica-fetcher/fetcher.js';
import { truncationOffset } from './replication.js';

export interface FollowerFetchInput {
  store: PartitionStore;
  transport: Transport;
  subjects: Subjects;
  logger: Logger;
  topic: string;
  partition: number;
  brokerId: number;
  leaderId: number;
  leaderEpoch: number;
  sync: boolean;
  fetchMaxBytes: number;
  fetchMaxWaitMs: number;
  topicId: string;
  /** The node's replica fetchers: the fetch goes in the session with the leader's broker. Absent: one request per fetch (tests). */
  fetchers: ReplicaFetchers | undefined;
}

export interface FollowerStep {
  kind: 'appended' | 'truncated' | 'empty' | 'restarted';
  logEndOffset: number;
  /** Absent when the leader's answer did not say (a restart answers an error). */
  leaderHighWatermark: number | undefined;
}

/**
 * What a fetch brought: a reply to apply, or the leader's log start to restart this log at (the
 * fetch was below it). `fetchOffset` is this log's end when the fetch was sent.
 */
export type FollowerFetched = { fetchOffset: number } & ({ reply: ReplicaFetchReply; restartAt?: undefined } | { restartAt: number; reply?: undefined });

/** Budget of a replica fetch beyond its long poll, ms. */
const FETCH_SLACK_MS = 2_000;

/** The request half: cancellable (a reply arriving after the follower stopped is dropped unread). */
export const followerRequest = fromPromise<FollowerFetched, FollowerFetchInput>(async ({ input, signal }) => {
  const { store, transport, subjects } = input;
  const fetchOffset = store.logEndOffset();
  const epochs = store.epochs();
  if (input.fetchers !== undefined) {
    const state = { topicId: input.topicId, partition: input.partition, leaderEpoch: input.leaderEpoch, fetchOffset, lastFetchedEpoch: epochs[epochs.length - 1]?.epoch ?? -1 };
    try {
      return { fetchOffset, reply: await input.fetchers.for(input.leaderId).fetch(state, signal) };
    } catch (error) {
      const range = logRangeOf(error);
      if (range !== undefined && fetchOffset < range.logStartOffset) return { fetchOffset, restartAt: range.logStartOffset };
      throw error;
    }
  }
  const request: ReplicaFetchRequest = {
    timeoutMs: input.fetchMaxWaitMs + FETCH_SLACK_MS,
    replicaId: input.brokerId,
    leaderEpoch: input.leaderEpoch,
    fetchOffset,
    lastFetchedEpoch: epochs[epochs.length - 1]?.epoch ?? -1,
    maxBytes: input.fetchMaxBytes,
    maxWaitMs: input.fetchMaxWaitMs,
  };
  const subject = subjects.partition('replica-fetch', input.leaderId, input.topic, input.partition);
  try {
    return { fetchOffset, reply: decodeReply(await transport.request(subject, encodeMessage(request), request.timeoutMs), replicaFetchReply) };
  } catch (error) {
    // Only below the leader's log start: a fetch past its end is divergence, which the leader
    // answers with divergingEpoch; anything else is retried as it is.
    const range = logRangeOf(error);
    if (range !== undefined && fetchOffset < range.logStartOffset) return { fetchOffset, restartAt: range.logStartOffset };
    throw error;
  }
});

export interface FollowerApplyInput {
  store: PartitionStore;
  logger: Logger;
  sync: boolean;
  fetched: FollowerFetched;
  /** Present when retention is due: followers apply the topic's retention to their own copy. */
  retention: RetentionPolicy | undefined;
}

/**
 * The write half: truncates or appends what the reply carries. The follower machine lets it finish
 * before it stops, so the leader actor that may open this log next never sees a write land late.
 */
export const followerApply = fromPromise<FollowerStep, FollowerApplyInput>(async ({ input }) => {
  const step = await applyReply(input);
  if (input.retention !== undefined) await input.store.applyRetention(input.retention);
  return step;
});

async function applyReply(input: FollowerApplyInput): Promise<FollowerStep> {
  const { store, logger } = input;
  const { fetchOffset, reply, restartAt } = input.fetched;
  if (store.logEndOffset() !== fetchOffset) throw new TidemarkError('INTERNAL', `follower log moved from ${fetchOffset} to ${store.logEndOffset()} during a fetch`);
  if (restartAt !== undefined) {
    logger.warn({ fetchOffset, leaderLogStartOffset: restartAt }, 'log ends below the leader\'s log start; restarting it there');
    await store.truncateFullyAndStartAt(restartAt);
    return { kind: 'restarted', logEndOffset: store.logEndOffset(), leaderHighWatermark: undefined };
  }
  if (reply.divergingEpoch !== undefined) {
    const to = truncationOffset(reply.divergingEpoch, (epoch) => store.endOffsetForEpoch(epoch));
    logger.warn({ fetchOffset, diverging: reply.divergingEpoch, truncateTo: to }, 'log diverges from the leader; truncating');
    await store.truncateTo(to);
    return { kind: 'truncated', logEndOffset: store.logEndOffset(), leaderHighWatermark: reply.highWatermark };
  }
  if (reply.records.length === 0) return { kind: 'empty', logEndOffset: fetchOffset, leaderHighWatermark: reply.highWatermark };

  let batches = splitBatches(reply.records);
  for (const b of batches) verifyBatch(b);
  // The leader returns whole batches from the one holding fetchOffset.
  batches = batches.filter((b) => {
    const h = readBatchHeader(b);
    return h.baseOffset + h.recordCount > fetchOffset;
  });
  const first = batches[0] === undefined ? undefined : readBatchHeader(batches[0]);
  if (first !== undefined && first.baseOffset < fetchOffset) {
    // Our last batch ends inside one of the leader's: the logs differ there. Drop ours from its start.
    logger.warn({ fetchOffset, leaderBatchBase: first.baseOffset }, 'batch boundary differs from the leader; truncating');
    await store.truncateTo(first.baseOffset);
    if (store.logEndOffset() !== first.baseOffset) return { kind: 'truncated', logEndOffset: store.logEndOffset(), leaderHighWatermark: reply.highWatermark };
  }
  let expected = store.logEndOffset();
  for (const b of batches) {
    const h = readBatchHeader(b);
    if (h.baseOffset !== expected) throw new TidemarkError('CORRUPT_MESSAGE', `replica fetch: batch at ${h.baseOffset}, expected ${expected}`);
    expected = h.baseOffset + h.recordCount;
  }
  if (batches.length > 0) await store.append(batches, { sync: input.sync });
  return { kind: batches.length > 0 ? 'appended' : 'empty', logEndOffset: store.logEndOffset(), leaderHighWatermark: reply.highWatermark };
}
