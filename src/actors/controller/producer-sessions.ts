/**
 * Producer sessions on the active controller (issue 12): who writes a topic Shared, who waits for
 * it (WaitForExclusive, first come first served), and when its exclusive owner was last heard from.
 * Memory only, as broker sessions are: they decide Pulsar's refusals (PRODUCER_BUSY) and hand-overs,
 * never safety, which rests on the producer epoch in the metadata log. The owner itself is the
 * image's (`TopicInfo.producerAccess.owner`); here is only when it was last heard from.
 *
 * Plain immutable data and pure functions of (state, image topic, request, nowMs). Each returns the
 * next state and its effects: answers to send, grants and releases to commit through the
 * controller's job queue. Grants and releases reach this state again through `grantDone` and
 * `releaseDone`; hand-overs to waiters happen in `tick`, which the controller runs every tickMs.
 */
import type { OutboxEvent } from '../outbox.js';
import { TidemarkError, type ErrorCode } from '../../protocol/errors.js';
import {
  NODE_PRODUCERS_MAX,
  TOPIC_PRODUCERS_MAX,
  type AccessMode,
  type ProducerAttachReply,
  type ProducerAttachRequest,
  type ProducerDetachRequest,
  type ProducerHeartbeatRequest,
} from '../../protocol/producer-messages.js';
import type { MetadataImage, TopicInfo } from '../../metadata/image.js';
import type { ProducerGrant } from '../../metadata/producer-planner.js';

/** WaitForExclusive attaches the controller holds at once (all topics). Beyond it: answered `waiting` at once. */
export const PARKED_ATTACHES_MAX = 1_024;

export interface ProducerSessionConfig {
  /** A producer silent this long loses its session (and an owner its claim), ms. */
  timeoutMs: number;
  /** @default TOPIC_PRODUCERS_MAX */
  topicProducersMax?: number;
  /** @default NODE_PRODUCERS_MAX */
  nodeProducersMax?: number;
  /** @default PARKED_ATTACHES_MAX */
  parkedMax?: number;
}

export interface ProducerSession {
  readonly sessionId: string;
  readonly name: string;
  readonly lastSeenMs: number;
}

/** A WaitForExclusive attach held until it can be granted or `untilMs`, when it is answered `waiting`. */
export interface ParkedAttach {
  readonly sessionId: string;
  readonly replyTo: string;
  readonly untilMs: number;
  /** When its caller gives up: the deadline of a grant committed for it. */
  readonly deadlineMs: number;
}

export interface TopicSessions {
  readonly shared: readonly ProducerSession[];
  /** WaitForExclusive producers, first come first served. */
  readonly waiters: readonly ProducerSession[];
  readonly parked: readonly ParkedAttach[];
  /** When the image's owner was last heard from; absent: since `ownersSeenSinceMs`. */
  readonly ownerSeenMs?: number;
  /** An exclusive grant queued for commit: every other attach sees it. */
  readonly granting?: { readonly sessionId: string; readonly fencing: boolean; readonly sinceMs: number };
  /** The owner's release is queued for commit. */
  readonly releasing?: boolean;
}

export interface ProducerSessions {
  /** By topic id, so a topic deleted and created again starts afresh. */
  readonly topics: Readonly<Record<string, TopicSessions>>;
  /** When this controller became active (or last found itself paused): owners not heard from since count from it. */
  readonly ownersSeenSinceMs: number;
  /** No Exclusive grant before it: producers get one full timeout to report to a new controller. */
  readonly graceUntilMs: number;
}

export interface GrantEffect {
  grant: ProducerGrant;
  replyTo: string | undefined;
  deadlineMs: number;
}
export interface ReleaseEffect {
  topicId: string;
  sessionId: string;
  replyTo: string | undefined;
  deadlineMs: number;
  /** The owner went silent (logged), rather than detached. */
  expired: boolean;
}

export interface Step {
  state: ProducerSessions;
  answers: OutboxEvent[];
  grants: GrantEffect[];
  releases: ReleaseEffect[];
}

type TopicView = Pick<TopicInfo, 'topicId' | 'name' | 'producerAccess'>;

const NO_SESSIONS: TopicSessions = { shared: [], waiters: [], parked: [] };

/** A new active controller: no sessions; owners counted as heard from now; no Exclusive grant for one timeout. */
export function activeSessions(nowMs: number, timeoutMs: number): ProducerSessions {
  return { topics: {}, ownersSeenSinceMs: nowMs, graceUntilMs: nowMs + timeoutMs };
}

export function heartbeatIntervalMs(timeoutMs: number): number {
  return Math.max(1, Math.floor(timeoutMs / 3));
}

const fail = (replyTo: string, code: ErrorCode, message: string): OutboxEvent => ({ type: 'REPLY_ERROR', replyTo, error: new TidemarkError(code, message).toWire() });
const reply = (replyTo: string, body: object): OutboxEvent => ({ type: 'REPLY', replyTo, body });

function topicOf(state: ProducerSessions, topicId: string): TopicSessions {
  return state.topics[topicId] ?? NO_SESSIONS;
}

function withTopic(state: ProducerSessions, topicId: string, t: TopicSessions): ProducerSessions {
  const topics = { ...state.topics };
  const empty = t.shared.length === 0 && t.waiters.length === 0 && t.parked.length === 0 && t.ownerSeenMs === undefined && t.granting === undefined && t.releasing !== true;
  if (empty) delete topics[topicId];
  else topics[topicId] = t;
  return { ...state, topics };
}

const upsert = (list: readonly ProducerSession[], s: ProducerSession): ProducerSession[] =>
  list.some((x) => x.sessionId === s.sessionId) ? list.map((x) => (x.sessionId === s.sessionId ? s : x)) : [...list, s];
const without = (list: readonly ProducerSession[], sessionId: string) => list.filter((x) => x.sessionId !== sessionId);

function topicCount(t: TopicSessions, owned: boolean): number {
  return t.shared.length + t.waiters.length + (owned ? 1 : 0);
}

function nodeCount(state: ProducerSessions): number {
  let n = 0;
  for (const t of Object.values(state.topics)) n += t.shared.length + t.waiters.length + (t.ownerSeenMs === undefined ? 0 : 1);
  return n;
}

function parkedCount(state: ProducerSessions): number {
  let n = 0;
  for (const t of Object.values(state.topics)) n += t.parked.length;
  return n;
}

const live = (s: ProducerSession, nowMs: number, timeoutMs: number) => nowMs - s.lastSeenMs <= timeoutMs;

/** Why `sessionId` cannot hold the topic exclusively now; undefined: it can (Exclusive's rules, bar the waiters). */
function blocker(state: ProducerSessions, t: TopicSessions, topic: TopicView, sessionId: string, nowMs: number, cfg: ProducerSessionConfig): { code: ErrorCode; message: string } | undefined {
  const owner = topic.producerAccess.owner;
  if (owner !== undefined) return { code: 'PRODUCER_FENCED', message: `topic "${topic.name}" has exclusive producer "${owner.name}"` };
  if (t.granting !== undefined) return { code: 'PRODUCER_FENCED', message: `topic "${topic.name}" is being granted to another exclusive producer` };
  if (t.shared.some((s) => s.sessionId !== sessionId && live(s, nowMs, cfg.timeoutMs))) return { code: 'PRODUCER_BUSY', message: `topic "${topic.name}" has shared producers` };
  if (nowMs < state.graceUntilMs) {
    return { code: 'BUSY', message: `the controller is new and waits ${state.graceUntilMs - nowMs} ms more for producer sessions to report before an exclusive grant; retry` };
  }
  return undefined;
}

function grantOf(topic: TopicView, request: Pick<ProducerAttachRequest, 'producerName' | 'sessionId'>, accessMode: AccessMode): ProducerGrant {
  return {
    topicId: topic.topicId,
    owner: { name: request.producerName, sessionId: request.sessionId, accessMode },
    fencing: accessMode === 'ExclusiveWithFencing',
    expectEpoch: topic.producerAccess.epoch,
  };
}

/** A producer asks to write the topic (one of the four access modes). */
export function attach(state: ProducerSessions, topic: TopicView | undefined, request: ProducerAttachRequest, replyTo: string, nowMs: number, cfg: ProducerSessionConfig): Step {
  const step: Step = { state, answers: [], grants: [], releases: [] };
  if (topic === undefined) {
    step.answers.push(fail(replyTo, 'UNKNOWN_TOPIC', `topic "${request.topic}" does not exist`));
    return step;
  }
  const hb = heartbeatIntervalMs(cfg.timeoutMs);
  const access = topic.producerAccess;
  const t = topicOf(state, topic.topicId);
  const sid = request.sessionId;
  const granted = (epoch: number, fence: boolean): ProducerAttachReply => ({ status: 'granted', epoch, fence, heartbeatIntervalMs: hb });
  const refuse = (code: ErrorCode, message: string) => {
    step.answers.push(fail(replyTo, code, message));
    return step;
  };

  if (request.accessMode === 'WaitForExclusive' && request.waitingSince !== undefined && access.fencedEpoch > request.waitingSince) {
    step.state = withTopic(state, topic.topicId, { ...t, waiters: without(t.waiters, sid) });
    return refuse('PRODUCER_FENCED', `topic "${topic.name}" was taken with fencing at epoch ${access.fencedEpoch}, after this producer began to wait`);
  }
  // A retried attach of the owner (or a waiter granted while it was not asking): it holds the topic.
  if (access.owner?.sessionId === sid) {
    step.state = withTopic(state, topic.topicId, { ...t, ownerSeenMs: nowMs });
    step.answers.push(reply(replyTo, granted(access.epoch, true)));
    return step;
  }
  if (t.granting?.sessionId === sid) return refuse('BUSY', `the exclusive grant of topic "${topic.name}" to this producer is being committed; retry`);
  const known = t.shared.some((s) => s.sessionId === sid) || t.waiters.some((s) => s.sessionId === sid);
  if (!known) {
    if (topicCount(t, access.owner !== undefined) >= (cfg.topicProducersMax ?? TOPIC_PRODUCERS_MAX)) return refuse('BUSY', `topic "${topic.name}" has the most producer sessions the controller keeps`);
    if (nodeCount(state) >= (cfg.nodeProducersMax ?? NODE_PRODUCERS_MAX)) return refuse('BUSY', 'the controller keeps the most producer sessions it may');
  }
  const grant = (accessMode: AccessMode, rest: TopicSessions) => {
    step.state = withTopic(state, topic.topicId, { ...rest, granting: { sessionId: sid, fencing: accessMode === 'ExclusiveWithFencing', sinceMs: nowMs } });
    step.grants.push({ grant: grantOf(topic, request, accessMode), replyTo, deadlineMs: nowMs + request.timeoutMs });
    return step;
  };

  switch (request.accessMode) {
    case 'Shared': {
      if (access.owner !== undefined) return refuse('PRODUCER_BUSY', `topic "${topic.name}" has exclusive producer "${access.owner.name}"`);
      if (t.granting !== undefined) return refuse('PRODUCER_BUSY', `topic "${topic.name}" is being granted to an exclusive producer`);
      if (t.waiters.length > 0) return refuse('PRODUCER_BUSY', `topic "${topic.name}" has producers waiting for exclusive access`);
      step.state = withTopic(state, topic.topicId, { ...t, shared: upsert(t.shared, { sessionId: sid, name: request.producerName, lastSeenMs: nowMs }) });
      step.answers.push(reply(replyTo, granted(access.epoch, false)));
      return step;
    }
    case 'Exclusive': {
      const why = blocker(state, t, topic, sid, nowMs, cfg);
      if (why !== undefined) return refuse(why.code, why.message);
      if (t.waiters.some((w) => w.sessionId !== sid)) return refuse('PRODUCER_BUSY', `topic "${topic.name}" has producers waiting for exclusive access`);
      return grant('Exclusive', { ...t, shared: without(t.shared, sid), waiters: without(t.waiters, sid) });
    }
    case 'ExclusiveWithFencing': {
      // Takes the topic whoever holds it: the shared producers and the waiters are fenced.
      for (const p of t.parked) step.answers.push(fail(p.replyTo, 'PRODUCER_FENCED', `topic "${topic.name}" was taken with fencing by "${request.producerName}"`));
      return grant('ExclusiveWithFencing', { ...t, shared: [], waiters: [], parked: [] });
    }
    case 'WaitForExclusive': {
      const head = t.waiters[0];
      if (blocker(state, t, topic, sid, nowMs, cfg) === undefined && (head === undefined || head.sessionId === sid)) {
        return grant('WaitForExclusive', { ...t, shared: without(t.shared, sid), waiters: without(t.waiters, sid), parked: t.parked.filter((p) => p.sessionId !== sid) });
      }
      const waiters = upsert(t.waiters, { sessionId: sid, name: request.producerName, lastSeenMs: nowMs });
      const position = waiters.findIndex((w) => w.sessionId === sid);
      // An older parked ask of the same producer is answered now: it has given up on it.
      const older = t.parked.filter((p) => p.sessionId === sid);
      for (const p of older) step.answers.push(reply(p.replyTo, waiting(access.epoch, position, hb)));
      const parked = t.parked.filter((p) => p.sessionId !== sid);
      const untilMs = nowMs + Math.min(request.maxWaitMs, Math.floor(request.timeoutMs / 2));
      if (untilMs <= nowMs || parkedCount(state) - older.length >= (cfg.parkedMax ?? PARKED_ATTACHES_MAX)) {
        step.state = withTopic(state, topic.topicId, { ...t, waiters, parked });
        step.answers.push(reply(replyTo, waiting(access.epoch, position, hb)));
        return step;
      }
      step.state = withTopic(state, topic.topicId, { ...t, waiters, parked: [...parked, { sessionId: sid, replyTo, untilMs, deadlineMs: nowMs + request.timeoutMs }] });
      return step;
    }
  }
}

function waiting(epoch: number, position: number, hb: number): ProducerAttachReply {
  return { status: 'waiting', epoch, position, fence: false, heartbeatIntervalMs: hb };
}

/** A producer's session is alive. A new controller learns its Shared producers this way. */
export function heartbeat(state: ProducerSessions, topic: TopicView | undefined, request: ProducerHeartbeatRequest, replyTo: string, nowMs: number, cfg: ProducerSessionConfig): Step {
  const step: Step = { state, answers: [], grants: [], releases: [] };
  if (topic === undefined) {
    step.answers.push(fail(replyTo, 'UNKNOWN_TOPIC', `topic "${request.topic}" does not exist`));
    return step;
  }
  const access = topic.producerAccess;
  const t = topicOf(state, topic.topicId);
  const sid = request.sessionId;
  const ok = reply(replyTo, { epoch: access.epoch });
  if (access.owner?.sessionId === sid) {
    step.state = withTopic(state, topic.topicId, { ...t, ownerSeenMs: nowMs });
    step.answers.push(ok);
    return step;
  }
  if (request.epoch < access.epoch) {
    step.state = withTopic(state, topic.topicId, { ...t, shared: without(t.shared, sid), waiters: without(t.waiters, sid) });
    step.answers.push(fail(replyTo, 'PRODUCER_FENCED', `topic "${topic.name}" is at producer epoch ${access.epoch}, past this producer's ${request.epoch}`));
    return step;
  }
  // A waiter that also heartbeats keeps its place (its attaches are its heartbeats too).
  const waiter = t.waiters.find((w) => w.sessionId === sid);
  if (request.accessMode === 'WaitForExclusive' && waiter !== undefined) {
    step.state = withTopic(state, topic.topicId, { ...t, waiters: upsert(t.waiters, { ...waiter, lastSeenMs: nowMs }) });
    step.answers.push(ok);
    return step;
  }
  if (request.accessMode !== 'Shared') {
    step.answers.push(fail(replyTo, 'PRODUCER_FENCED', `producer "${request.producerName}" no longer holds topic "${topic.name}": its exclusive claim expired`));
    return step;
  }
  if (!t.shared.some((s) => s.sessionId === sid)) {
    if (topicCount(t, access.owner !== undefined) >= (cfg.topicProducersMax ?? TOPIC_PRODUCERS_MAX) || nodeCount(state) >= (cfg.nodeProducersMax ?? NODE_PRODUCERS_MAX)) {
      step.answers.push(fail(replyTo, 'BUSY', 'the controller keeps the most producer sessions it may'));
      return step;
    }
  }
  step.state = withTopic(state, topic.topicId, { ...t, shared: upsert(t.shared, { sessionId: sid, name: request.producerName, lastSeenMs: nowMs }) });
  step.answers.push(ok);
  return step;
}

/** A producer closed. An owner's claim is released through a commit; anyone else is answered at once with `metadataOffset`. */
export function detach(state: ProducerSessions, topic: TopicView | undefined, request: ProducerDetachRequest, replyTo: string, nowMs: number, metadataOffset: number): Step {
  const step: Step = { state, answers: [], grants: [], releases: [] };
  if (topic === undefined) {
    step.answers.push(reply(replyTo, { metadataOffset }));
    return step;
  }
  const t = topicOf(state, topic.topicId);
  const sid = request.sessionId;
  for (const p of t.parked) if (p.sessionId === sid) step.answers.push(fail(p.replyTo, 'CLOSED', 'the producer detached'));
  const rest: TopicSessions = { ...t, shared: without(t.shared, sid), waiters: without(t.waiters, sid), parked: t.parked.filter((p) => p.sessionId !== sid) };
  if (topic.producerAccess.owner?.sessionId === sid || t.granting?.sessionId === sid) {
    // Queued behind its own grant, if that is still being committed: the release then finds it the owner.
    step.state = withTopic(state, topic.topicId, { ...rest, releasing: true });
    step.releases.push({ topicId: topic.topicId, sessionId: sid, replyTo, deadlineMs: nowMs + request.timeoutMs, expired: false });
    return step;
  }
  step.state = withTopic(state, topic.topicId, rest);
  step.answers.push(reply(replyTo, { metadataOffset }));
  return step;
}

/** An exclusive grant was committed (`ok`) or failed. Its producer's other asks are answered; waiters promoted at the next tick. */
export function grantDone(state: ProducerSessions, image: MetadataImage, grant: ProducerGrant, ok: boolean, cfg: ProducerSessionConfig): Step {
  const step: Step = { state, answers: [], grants: [], releases: [] };
  const t = state.topics[grant.topicId];
  if (t === undefined) return step;
  const granting = t.granting?.sessionId === grant.owner.sessionId ? t.granting : undefined;
  let next: TopicSessions = { ...t, ...(granting === undefined ? {} : { granting: undefined }) };
  const access = image.topicsById.get(grant.topicId)?.producerAccess;
  if (ok && access?.owner?.sessionId === grant.owner.sessionId) {
    const hb = heartbeatIntervalMs(cfg.timeoutMs);
    const mine = next.parked.filter((p) => p.sessionId === grant.owner.sessionId);
    for (const p of mine) step.answers.push(reply(p.replyTo, { status: 'granted', epoch: access.epoch, fence: true, heartbeatIntervalMs: hb } satisfies ProducerAttachReply));
    let shared = without(next.shared, grant.owner.sessionId);
    let waiters = without(next.waiters, grant.owner.sessionId);
    let parked = next.parked.filter((p) => p.sessionId !== grant.owner.sessionId);
    if (grant.fencing) {
      // Those who came while the fencing grant was being committed are fenced too.
      for (const p of parked) step.answers.push(fail(p.replyTo, 'PRODUCER_FENCED', `topic was taken with fencing by "${grant.owner.name}"`));
      shared = [];
      waiters = [];
      parked = [];
    }
    next = { ...next, shared, waiters, parked, ownerSeenMs: granting?.sinceMs ?? state.ownersSeenSinceMs };
  }
  if (next.granting === undefined) {
    const { granting: _, ...rest } = next;
    next = rest;
  }
  step.state = withTopic(state, grant.topicId, next);
  return step;
}

/** An owner's release was committed or failed (a failed one is tried again when the owner stays silent). */
export function releaseDone(state: ProducerSessions, image: MetadataImage, topicId: string): ProducerSessions {
  const t = state.topics[topicId];
  if (t === undefined) return state;
  const { releasing: _, ownerSeenMs, ...rest } = t;
  const stillOwned = image.topicsById.get(topicId)?.producerAccess.owner !== undefined;
  return withTopic(state, topicId, stillOwned && ownerSeenMs !== undefined ? { ...rest, ownerSeenMs } : rest);
}

/**
 * Time passes: parked asks past their wait are answered `waiting`, sessions silent for longer than
 * the timeout go (an owner's claim is released through a commit), and each free topic is granted
 * to its first waiter. `paused`: this process itself was stopped, so the silence is its own; every
 * session is refreshed instead.
 */
export function tick(state: ProducerSessions, image: MetadataImage, nowMs: number, paused: boolean, cfg: ProducerSessionConfig): Step {
  if (paused) {
    const topics: Record<string, TopicSessions> = {};
    for (const [id, t] of Object.entries(state.topics)) {
      const fresh = (list: readonly ProducerSession[]) => list.map((s) => ({ ...s, lastSeenMs: nowMs }));
      topics[id] = { ...t, shared: fresh(t.shared), waiters: fresh(t.waiters), ...(t.ownerSeenMs === undefined ? {} : { ownerSeenMs: nowMs }) };
    }
    return { state: { ...state, topics, ownersSeenSinceMs: nowMs }, answers: [], grants: [], releases: [] };
  }
  const step: Step = { state, answers: [], grants: [], releases: [] };
  const hb = heartbeatIntervalMs(cfg.timeoutMs);
  const timeoutMs = cfg.timeoutMs;
  for (const [topicId, t] of Object.entries(state.topics)) {
    const topic = image.topicsById.get(topicId);
    if (topic === undefined) {
      for (const p of t.parked) step.answers.push(fail(p.replyTo, 'UNKNOWN_TOPIC', 'the topic was deleted'));
      step.state = withTopic(step.state, topicId, NO_SESSIONS);
      continue;
    }
    const epoch = topic.producerAccess.epoch;
    const isParked = (sid: string) => t.parked.some((p) => p.sessionId === sid);
    // A parked waiter is alive: its ask is open (or answered just now), however long it was held.
    let waiters = t.waiters.filter((w) => live(w, nowMs, timeoutMs) || isParked(w.sessionId));
    const parked: ParkedAttach[] = [];
    for (const p of t.parked) {
      if (p.untilMs > nowMs) {
        parked.push(p);
        continue;
      }
      const position = waiters.findIndex((w) => w.sessionId === p.sessionId);
      step.answers.push(reply(p.replyTo, waiting(epoch, Math.max(0, position), hb)));
      waiters = waiters.map((w) => (w.sessionId === p.sessionId ? { ...w, lastSeenMs: nowMs } : w));
    }
    step.state = withTopic(step.state, topicId, { ...t, shared: t.shared.filter((s) => live(s, nowMs, timeoutMs)), waiters, parked });
  }
  for (const topic of image.topicsById.values()) {
    const owner = topic.producerAccess.owner;
    if (owner === undefined) continue;
    const t = topicOf(step.state, topic.topicId);
    const seen = t.ownerSeenMs ?? step.state.ownersSeenSinceMs;
    if (t.releasing === true || t.granting !== undefined || nowMs - seen <= timeoutMs) continue;
    step.state = withTopic(step.state, topic.topicId, { ...t, releasing: true });
    step.releases.push({ topicId: topic.topicId, sessionId: owner.sessionId, replyTo: undefined, deadlineMs: nowMs + timeoutMs, expired: true });
  }
  for (const [topicId, t] of Object.entries(step.state.topics)) {
    const topic = image.topicsById.get(topicId);
    const head = t.waiters[0];
    if (topic === undefined || head === undefined || t.releasing === true) continue;
    if (blocker(step.state, t, topic, head.sessionId, nowMs, cfg) !== undefined) continue;
    const ask = t.parked.find((p) => p.sessionId === head.sessionId);
    // The head stays a waiter until its grant commits: a failed commit leaves it first in line.
    step.state = withTopic(step.state, topicId, { ...t, parked: t.parked.filter((p) => p !== ask), granting: { sessionId: head.sessionId, fencing: false, sinceMs: nowMs } });
    step.grants.push({
      grant: grantOf(topic, { producerName: head.name, sessionId: head.sessionId }, 'WaitForExclusive'),
      replyTo: ask?.replyTo,
      deadlineMs: ask?.deadlineMs ?? nowMs + timeoutMs,
    });
  }
  return step;
}

/** This controller stops leading: every parked ask is refused NOT_CONTROLLER (the new controller takes the retries). */
export function standby(state: ProducerSessions): OutboxEvent[] {
  const answers: OutboxEvent[] = [];
  for (const t of Object.values(state.topics)) for (const p of t.parked) answers.push(fail(p.replyTo, 'NOT_CONTROLLER', 'controller changed'));
  return answers;
}
