/**
 * The SDK's produce requests, one per leader broker (Kafka's sender: one ProduceRequest per broker
 * carries the batches of every partition it leads). Partition pipelines hand their batches here;
 * the ones handed over in the same turn of the event loop that go to the same broker and topic
 * with the same acks leave together in one request (split when it would pass the
 * payload bound), and each batch's own outcome comes back to its pipeline. So a producer spread
 * over 1,000 partitions on 3 brokers sends about 3 requests per round, not 1,000.
 *
 * One attempt per batch, as rpc.ts: the partition pipeline is the one retry layer. A failure of
 * the whole request (TIMEOUT, NO_RESPONDERS, a malformed reply) fails every batch in it.
 */
import { TidemarkError } from '../protocol/errors.js';
import { produceResponse, type ProduceRequest, type ProduceResponse } from '../protocol/messages.js';
import type { Subjects } from '../protocol/subjects.js';
import type { Rpc } from './rpc.js';

/** What one partition's batch needs to leave. */
export interface ProduceEntry {
  brokerId: number;
  topic: string;
  acks: 0 | 1 | -1;
  timeoutMs: number;
  partition: number;
  batch: Uint8Array;
  leaderEpoch: number | undefined;
  /** The topic producer epoch the producer was granted (producer-access.ts); 0: never raised. */
  accessEpoch: number;
}

export interface ProduceOutcome {
  baseOffset: number;
}

/** Bytes a request entry adds beyond its batch (msgpack map and fields), an upper bound. */
const ENTRY_OVERHEAD_BYTES = 64;

interface Waiting {
  entry: ProduceEntry;
  resolve(outcome: ProduceOutcome): void;
  reject(error: unknown): void;
}

interface Group {
  subject: string;
  acks: 0 | 1 | -1;
  accessEpoch: number;
  timeoutMs: number;
  waiting: Waiting[];
  bytes: number;
}

export class ProduceChannel {
  private groups = new Map<string, Group>();
  private scheduled = false;

  constructor(
    private readonly rpc: Rpc,
    private readonly subjects: Subjects,
  ) {}

  /** Resolves with the batch's base offset (-1 for acks=0) or rejects with its own error. */
  produce(entry: ProduceEntry): Promise<ProduceOutcome> {
    return new Promise<ProduceOutcome>((resolve, reject) => {
      // Not keyed by timeout: one partition's batches must never land in two requests of one turn that
      // could leave out of order. The request takes the smallest budget of its batches.
      const key = `${entry.brokerId}/${entry.topic}/${entry.acks}/${entry.accessEpoch}`;
      const size = entry.batch.length + ENTRY_OVERHEAD_BYTES;
      let group = this.groups.get(key);
      if (group !== undefined && group.bytes + size > this.rpc.payloadBytesMax()) {
        this.groups.delete(key);
        this.send(group);
        group = undefined;
      }
      if (group === undefined) {
        group = { subject: this.subjects.produce(entry.brokerId, entry.topic), acks: entry.acks, accessEpoch: entry.accessEpoch, timeoutMs: entry.timeoutMs, waiting: [], bytes: 0 };
        this.groups.set(key, group);
      }
      group.timeoutMs = Math.min(group.timeoutMs, entry.timeoutMs);
      group.waiting.push({ entry, resolve, reject });
      group.bytes += size;
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => this.sendAll());
      }
    });
  }

  private sendAll(): void {
    this.scheduled = false;
    const groups = [...this.groups.values()];
    this.groups.clear();
    for (const g of groups) this.send(g);
  }

  private send(group: Group): void {
    const request: ProduceRequest = {
      timeoutMs: group.timeoutMs,
      acks: group.acks,
      ...(group.accessEpoch > 0 ? { accessEpoch: group.accessEpoch } : {}),
      partitions: group.waiting.map(({ entry }) =>
        entry.leaderEpoch === undefined ? { partition: entry.partition, batch: entry.batch } : { partition: entry.partition, batch: entry.batch, leaderEpoch: entry.leaderEpoch },
      ),
    };
    if (group.acks === 0) {
      try {
        this.rpc.publish(group.subject, request);
      } catch (error) {
        for (const w of group.waiting) w.reject(error);
        return;
      }
      for (const w of group.waiting) w.resolve({ baseOffset: -1 });
      return;
    }
    this.rpc.request(group.subject, request, produceResponse).then(
      (reply) => settle(group.waiting, reply),
      (error: unknown) => {
        for (const w of group.waiting) w.reject(error);
      },
    );
  }
}

function settle(waiting: readonly Waiting[], reply: ProduceResponse): void {
  if (reply.partitions.length !== waiting.length) {
    const error = new TidemarkError('INTERNAL', `produce reply has ${reply.partitions.length} outcomes for ${waiting.length} batches`);
    for (const w of waiting) w.reject(error);
    return;
  }
  waiting.forEach((w, i) => {
    const outcome = reply.partitions[i]!;
    if (outcome.partition !== w.entry.partition) w.reject(new TidemarkError('INTERNAL', `produce reply entry ${i} is for partition ${outcome.partition}, not ${w.entry.partition}`));
    else if (outcome.error !== undefined) w.reject(TidemarkError.fromWire(outcome.error));
    else w.resolve({ baseOffset: outcome.baseOffset });
  });
}
