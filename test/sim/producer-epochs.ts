/**
 * The simulator's checker for producer access modes (issue 12). On topics the workload writes with
 * ExclusiveWithFencing producers (each takeover fences the one before), users rely on: no record
 * from a producer is acknowledged after a producer with a higher epoch was acknowledged on that
 * topic. Checked two ways, both exact (no timing slack):
 *   - per partition, by offset: every acknowledged record of a lower epoch lies below every
 *     acknowledged record of a higher one (the fence record sits between them in the log);
 *   - across partitions, by time: a send made after a newer producer finished its fences (its
 *     createProducer resolved) must never be acknowledged; it reaches every leader after the fence.
 * acks=all producers only (an acks=1 write to a deposed leader is Kafka's known hole).
 */
import type { Violations } from './checkers.js';

interface EpochSpan {
  min: number;
  max: number;
}

export class ProducerEpochChecker {
  /** topic -> partition -> epoch -> offsets acknowledged. */
  private readonly spans = new Map<string, Map<number, Map<number, EpochSpan>>>();
  /** topic -> [epoch, sim ms when a producer of it was ready (fenced everywhere)]. */
  private readonly ready = new Map<string, Array<[number, number]>>();
  checked = 0;

  constructor(private readonly violations: Violations) {}

  /** A producer of `epoch` finished its fences at `atMs`. */
  producerReady(topic: string, epoch: number, atMs: number): void {
    const list = this.ready.get(topic) ?? [];
    list.push([epoch, atMs]);
    this.ready.set(topic, list);
  }

  /** A record of a producer of `epoch`, sent at `sentAtMs`, was acknowledged at (partition, offset). */
  acked(topic: string, epoch: number, partition: number, offset: number, sentAtMs: number): void {
    this.checked++;
    for (const [newer, atMs] of this.ready.get(topic) ?? []) {
      if (newer > epoch && atMs < sentAtMs) {
        this.violations.add(`producer epochs ${topic}: a record of epoch ${epoch} sent at ${sentAtMs} ms was acknowledged (${partition}@${offset}) though epoch ${newer} was fenced in at ${atMs} ms`);
      }
    }
    let partitions = this.spans.get(topic);
    if (partitions === undefined) this.spans.set(topic, (partitions = new Map()));
    let epochs = partitions.get(partition);
    if (epochs === undefined) partitions.set(partition, (epochs = new Map()));
    for (const [other, span] of epochs) {
      if ((other > epoch && offset > span.min) || (other < epoch && offset < span.max)) {
        this.violations.add(`producer epochs ${topic}/${partition}: a record of epoch ${epoch} at offset ${offset}, records of epoch ${other} at ${span.min}..${span.max}`);
      }
    }
    const span = epochs.get(epoch);
    if (span === undefined) epochs.set(epoch, { min: offset, max: offset });
    else {
      span.min = Math.min(span.min, offset);
      span.max = Math.max(span.max, offset);
    }
  }

  /**
   * Committed records from `fromOffset` on are gone from every replica (flush.mode=replicated and a
   * power loss of all of them): those offsets are written again, by whichever producer comes next.
   * The fence between two epochs may be among the lost, so nothing is asserted about them.
   */
  lost(topic: string, partition: number, fromOffset: number): void {
    const epochs = this.spans.get(topic)?.get(partition);
    if (epochs === undefined) return;
    for (const [epoch, span] of epochs) {
      if (span.min >= fromOffset) epochs.delete(epoch);
      else span.max = Math.min(span.max, fromOffset - 1);
    }
  }

  topicDeleted(topic: string): void {
    this.spans.delete(topic);
    this.ready.delete(topic);
  }
}
