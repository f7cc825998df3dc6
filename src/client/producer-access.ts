/**
 * A producer's access to its topic (issue 12; protocol in producer-messages.ts): it attaches at
 * the controller in its access mode, which grants it the topic's producer epoch (an exclusive
 * grant raises it; WaitForExclusive queues until its turn), fences every partition at that epoch
 * before its first record when the grant was exclusive, heartbeats while open, and detaches on
 * close. Every produce request then carries the epoch, and a partition leader that knows a higher
 * one refuses it PRODUCER_FENCED: from then on the producer fails every send with that error.
 *
 * Retries: attach and the fences retry here, with the one retry helper (they are their own call
 * paths); a heartbeat is one attempt per interval (a lost one is followed by the next); the detach
 * is one attempt (the session expires anyway).
 */
import { TidemarkError } from '../protocol/errors.js';
import { produceResponse } from '../protocol/messages.js';
import {
  isValidProducerName,
  producerAttachReply,
  producerDetachReply,
  producerHeartbeatReply,
  type AccessMode,
  type FenceRequest,
  type ProducerAttachReply,
  type ProducerAttachRequest,
  type ProducerDetachRequest,
  type ProducerHeartbeatRequest,
  ACCESS_MODES,
} from '../protocol/producer-messages.js';
import { retry } from '../runtime/retry.js';
import type { Random } from '../runtime/ports.js';
import type { ProducerDeps } from './producer.js';

export type { AccessMode };
export { ACCESS_MODES };

/** How long the controller may hold one WaitForExclusive attach before it answers `waiting`, ms. */
const WAIT_POLL_MS = 5_000;

/** What attaching needs of the producer's own deps (its policy is the producer's). */
export type ProducerAccessDeps = Pick<ProducerDeps, 'rpc' | 'subjects' | 'metadata' | 'clock' | 'random' | 'policy' | 'requestTimeoutMs'>;

export interface ProducerAccessOptions {
  topic: string;
  accessMode: AccessMode;
  producerName: string;
}

type State = { kind: 'detached' } | { kind: 'attaching'; done: Promise<void> } | { kind: 'attached'; epoch: number } | { kind: 'failed'; error: TidemarkError };

export function defaultProducerName(random: Random): string {
  return `producer-${randomHex(random, 8)}`;
}

function randomHex(random: Random, chars: number): string {
  let id = '';
  for (let i = 0; i < chars; i++) id += Math.floor(random.next() * 16).toString(16);
  return id;
}

export class ProducerAccess {
  /** Random per producer instance: the controller recognises a retried attach by it. */
  readonly sessionId: string;
  private state: State = { kind: 'detached' };
  private heartbeatTimer: unknown = undefined;
  private closed = false;
  /** Told once when the producer is fenced or refused for good. */
  onFailed: (error: TidemarkError) => void = () => {};

  constructor(
    private readonly deps: ProducerAccessDeps,
    readonly options: ProducerAccessOptions,
  ) {
    if (!ACCESS_MODES.includes(options.accessMode)) throw new TidemarkError('INVALID_REQUEST', `accessMode must be one of ${ACCESS_MODES.join(', ')}, got ${String(options.accessMode)}`);
    if (!isValidProducerName(options.producerName)) throw new TidemarkError('INVALID_REQUEST', `invalid producer name "${options.producerName}": use 1-128 of [A-Za-z0-9._-]`);
    this.sessionId = randomHex(deps.random, 24);
  }

  /** The epoch to write with, once granted. */
  get epoch(): number | undefined {
    return this.state.kind === 'attached' ? this.state.epoch : undefined;
  }

  /** Why this producer may not write (fenced, refused), if so. */
  get failure(): TidemarkError | undefined {
    return this.state.kind === 'failed' ? this.state.error : undefined;
  }

  /**
   * Attaches (once; later calls wait for the same attach). Rejects with the refusal
   * (PRODUCER_BUSY, PRODUCER_FENCED) or the last retriable error when `totalMs` runs out.
   */
  attach(options: { signal?: AbortSignal; totalMs?: number } = {}): Promise<void> {
    switch (this.state.kind) {
      case 'attached':
        return Promise.resolve();
      case 'failed':
        return Promise.reject(this.state.error);
      case 'attaching':
        return this.state.done;
      case 'detached': {
        const done = this.run(options).then(
          (epoch) => {
            if (this.state.kind !== 'failed') this.state = { kind: 'attached', epoch };
          },
          (error: unknown) => {
            const err = error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'producer attach failed', { cause: error });
            // A retriable failure (the controller unreachable for the whole budget) may be tried again,
            // and so may a missing topic: it may be created, and the answer may have come from a
            // controller that was deposed and did not know it yet (no barrier on this path).
            if (err.retriable || err.code === 'UNKNOWN_TOPIC') this.state = { kind: 'detached' };
            else this.fail(err);
            throw err;
          },
        );
        this.state = { kind: 'attaching', done };
        return done;
      }
    }
  }

  /** A partition leader refused a send PRODUCER_FENCED: no send of this producer may go on. */
  fenced(error: TidemarkError): void {
    this.fail(error);
  }

  /** Stops heartbeating and tells the controller (one attempt: the session expires anyway). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopHeartbeats();
    if (this.state.kind !== 'attached' && this.state.kind !== 'attaching') return;
    const request: ProducerDetachRequest = { timeoutMs: Math.min(this.deps.requestTimeoutMs, 5_000), topic: this.options.topic, sessionId: this.sessionId };
    try {
      await this.deps.rpc.request(this.deps.subjects.admin('producer-detach', this.options.topic), request, producerDetachReply);
    } catch {
      // The controller forgets the session after its timeout.
    }
  }

  private fail(error: TidemarkError): void {
    if (this.state.kind === 'failed') return;
    this.state = { kind: 'failed', error };
    this.stopHeartbeats();
    this.onFailed(error);
  }

  private async run(options: { signal?: AbortSignal; totalMs?: number }): Promise<number> {
    const { clock, random, policy } = this.deps;
    const startedAtMs = clock.now();
    const totalMs = options.totalMs ?? policy.totalMsMax;
    let waitingSince: number | undefined;
    let reply: ProducerAttachReply;
    for (;;) {
      reply = await retry(
        async (remainingMs) => {
          // A topic a caught-up broker says does not exist fails here at once (final UNKNOWN_TOPIC);
          // the controller's own UNKNOWN_TOPIC stays retriable (see the catch in attach()).
          await this.deps.metadata.topic(this.options.topic);
          const maxWaitMs = this.options.accessMode === 'WaitForExclusive' ? Math.max(0, Math.min(WAIT_POLL_MS, remainingMs - 1_000)) : 0;
          const request: ProducerAttachRequest = {
            timeoutMs: Math.max(1, Math.min(this.deps.requestTimeoutMs, remainingMs) + maxWaitMs),
            topic: this.options.topic,
            accessMode: this.options.accessMode,
            producerName: this.options.producerName,
            sessionId: this.sessionId,
            maxWaitMs,
            ...(waitingSince === undefined ? {} : { waitingSince }),
          };
          return this.deps.rpc.request(this.deps.subjects.admin('producer-attach', this.options.topic), request, producerAttachReply);
        },
        {
          policy,
          clock,
          random,
          startedAtMs,
          totalMs,
          ...(options.signal === undefined ? {} : { signal: options.signal }),
          // The controller said UNKNOWN_TOPIC: the next attempt asks the brokers again.
          onRetry: (error) => this.deps.metadata.noteError(this.options.topic, error),
        },
      );
      if (this.closed) throw new TidemarkError('CLOSED', 'producer closed while attaching');
      if (reply.status === 'granted') break;
      waitingSince ??= reply.epoch;
      if (clock.now() - startedAtMs >= totalMs) {
        throw new TidemarkError('TIMEOUT', `still waiting for exclusive access to "${this.options.topic}" after ${totalMs} ms (${reply.position ?? 0} ahead)`, {
          context: { topic: this.options.topic, position: reply.position },
        });
      }
      if (options.signal?.aborted === true) throw new TidemarkError('CLOSED', 'aborted while waiting for exclusive access');
    }
    this.startHeartbeats(reply.epoch, reply.heartbeatIntervalMs);
    if (reply.fence) await this.fence(reply.epoch, { startedAtMs, totalMs, ...(options.signal === undefined ? {} : { signal: options.signal }) });
    return reply.epoch;
  }

  /**
   * Writes a fence at `epoch` to every partition (acks=all), one request per leader broker; the
   * partitions not yet fenced are retried after a refresh, until all are or the budget is spent.
   */
  private async fence(epoch: number, budget: { startedAtMs: number; totalMs: number; signal?: AbortSignal }): Promise<void> {
    const { metadata, clock, random, policy, rpc, subjects } = this.deps;
    const topic = this.options.topic;
    const done = new Set<number>();
    await retry(
      async (remainingMs) => {
        const md = await metadata.topic(topic);
        const byBroker = new Map<number, FenceRequest['partitions']>();
        for (const p of md.partitions) {
          if (done.has(p.partition)) continue;
          if (p.leader < 0) {
            metadata.invalidate(topic);
            throw new TidemarkError('LEADER_NOT_AVAILABLE', `partition ${topic}/${p.partition} has no leader right now`);
          }
          const list = byBroker.get(p.leader) ?? [];
          list.push({ partition: p.partition, leaderEpoch: p.leaderEpoch });
          byBroker.set(p.leader, list);
        }
        const timeoutMs = Math.max(1, Math.min(this.deps.requestTimeoutMs, remainingMs));
        let firstError: unknown;
        await Promise.all(
          [...byBroker].map(async ([brokerId, partitions]) => {
            try {
              const reply = await rpc.request(subjects.fence(brokerId, topic), { timeoutMs, accessEpoch: epoch, partitions } satisfies FenceRequest, produceResponse);
              for (const outcome of reply.partitions) {
                if (outcome.error === undefined) done.add(outcome.partition);
                else firstError ??= TidemarkError.fromWire(outcome.error);
              }
            } catch (error) {
              firstError ??= error;
            }
          }),
        );
        if (firstError !== undefined) throw firstError;
      },
      {
        policy,
        clock,
        random,
        startedAtMs: budget.startedAtMs,
        totalMs: budget.totalMs,
        ...(budget.signal === undefined ? {} : { signal: budget.signal }),
        onRetry: (error) => metadata.noteError(topic, error),
      },
    );
  }

  private startHeartbeats(epoch: number, intervalMs: number): void {
    this.stopHeartbeats();
    if (this.closed) return;
    const beat = () => {
      this.heartbeatTimer = undefined;
      const request: ProducerHeartbeatRequest = {
        timeoutMs: Math.max(1, Math.min(this.deps.requestTimeoutMs, intervalMs)),
        topic: this.options.topic,
        accessMode: this.options.accessMode,
        producerName: this.options.producerName,
        sessionId: this.sessionId,
        epoch,
      };
      this.deps.rpc.request(this.deps.subjects.admin('producer-heartbeat', this.options.topic), request, producerHeartbeatReply).then(
        () => {},
        (error: unknown) => {
          // Only a refusal for good matters; anything else is followed by the next heartbeat.
          if (error instanceof TidemarkError && (error.code === 'PRODUCER_FENCED' || error.code === 'PRODUCER_BUSY')) this.fail(error);
        },
      );
      if (!this.closed && this.state.kind !== 'failed') this.heartbeatTimer = this.deps.clock.setTimeout(beat, intervalMs);
    };
    this.heartbeatTimer = this.deps.clock.setTimeout(beat, intervalMs);
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer !== undefined) this.deps.clock.clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }
}
