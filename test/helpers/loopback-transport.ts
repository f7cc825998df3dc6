/**
 * An in-memory Transport for unit tests: exact-subject and `*` / `>` wildcard subscriptions, queue
 * groups (first member wins), request/reply through generated inboxes, timeouts on the injected
 * clock. Deliveries are asynchronous (a microtask), as over a real connection.
 */
import { TidemarkError } from '../../src/protocol/errors.js';
import type { Clock, InboundMessage, SubscribeOptions, Subscription, Transport } from '../../src/runtime/ports.js';

interface Sub {
  pattern: string[];
  handler: (msg: InboundMessage) => void;
  queue: string | undefined;
}

function matches(pattern: string[], subject: string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === '>') return subject.length > i;
    if (i >= subject.length || (pattern[i] !== '*' && pattern[i] !== subject[i])) return false;
  }
  return pattern.length === subject.length;
}

export class LoopbackTransport implements Transport {
  readonly maxPayloadBytes = 1 << 20;
  private subs = new Set<Sub>();
  private nextInbox = 0;

  constructor(private readonly clock: Clock) {}

  publish(subject: string, data: Uint8Array, reply?: string): void {
    const tokens = subject.split('.');
    const targets: Sub[] = [];
    const queues = new Set<string>();
    for (const sub of this.subs) {
      if (!matches(sub.pattern, tokens)) continue;
      if (sub.queue !== undefined) {
        if (queues.has(sub.queue)) continue;
        queues.add(sub.queue);
      }
      targets.push(sub);
    }
    for (const sub of targets) {
      queueMicrotask(() => {
        if (!this.subs.has(sub)) return;
        sub.handler({ subject, data, reply, respond: (d) => (reply === undefined ? false : (this.publish(reply, d), true)) });
      });
    }
  }

  subscribe(subject: string, handler: (msg: InboundMessage) => void, options?: SubscribeOptions): Subscription {
    const sub: Sub = { pattern: subject.split('.'), handler, queue: options?.queue };
    this.subs.add(sub);
    return { unsubscribe: () => this.subs.delete(sub) };
  }

  hasSubscriber(subject: string): boolean {
    const tokens = subject.split('.');
    return [...this.subs].some((s) => matches(s.pattern, tokens));
  }

  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (!this.hasSubscriber(subject)) return Promise.reject(new TidemarkError('NO_RESPONDERS', `no responders on ${subject}`));
    const inbox = `_INBOX.${this.nextInbox++}`;
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        sub.unsubscribe();
        reject(new TidemarkError('TIMEOUT', `no reply on ${subject} within ${timeoutMs} ms`));
      }, timeoutMs);
      const sub = this.subscribe(inbox, (msg) => {
        this.clock.clearTimeout(timer);
        sub.unsubscribe();
        resolve(msg.data);
      });
      this.publish(subject, data, inbox);
    });
  }

  requestMany(): Promise<Uint8Array[]> {
    return Promise.resolve([]);
  }
}
