/**
 * Ports: everything an actor needs from the outside world. Only the composition root
 * (`src/node.ts`) builds the real ones; tests and the simulator pass their own.
 */
import type { Logger as PinoLogger } from 'pino';

/** Time. Also satisfies xstate's `Clock`, so delayed transitions run on the same clock. */
export interface Clock {
  /** Milliseconds since the epoch (wall clock for timestamps; simulated in the simulator). */
  now(): number;
  setTimeout(fn: (...args: unknown[]) => void, timeoutMs: number): unknown;
  clearTimeout(id: unknown): void;
}

export interface Random {
  /** A float in [0, 1). */
  next(): number;
}

export interface InboundMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  /** Reply subject of a request; absent for a plain publish (e.g. produce with acks=0). */
  readonly reply: string | undefined;
  /** Answer the sender of a request. Returns false when the message has no reply subject. */
  respond(data: Uint8Array): boolean;
}

export interface Subscription {
  unsubscribe(): void;
}

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group. */
  queue?: string;
}

/** Subject-based messaging with NATS core semantics: at most once, per-connection order. */
export interface Transport {
  publish(subject: string, data: Uint8Array): void;
  /** The handler must not throw; it is called synchronously in arrival order. */
  subscribe(subject: string, handler: (msg: InboundMessage) => void, options?: SubscribeOptions): Subscription;
  /** Resolves with the reply's bytes; rejects with a TidemarkError TIMEOUT or NO_RESPONDERS. */
  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /**
   * A request every subscriber answers: collects replies until `maxWaitMs` passes or `maxReplies`
   * arrived; an empty list when nobody subscribes. Used for cluster status, where every node answers.
   */
  requestMany(subject: string, data: Uint8Array, options: { maxWaitMs: number; maxReplies: number }): Promise<Uint8Array[]>;
  /** Largest payload the fabric accepts, in bytes. */
  readonly maxPayloadBytes: number;
}

export type Logger = PinoLogger;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id as NodeJS.Timeout),
};

export const systemRandom: Random = { next: () => Math.random() };
