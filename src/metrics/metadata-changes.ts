/**
 * ISR changes and leader elections, read off committed metadata as a broker applies it: the
 * partition records of one applied step are compared with the state before them. Each change is
 * reported once, by the broker that leads the partition after it, so summing a counter over the
 * cluster counts every change once (a broker that catches up from a snapshot counts only the net
 * change over what it missed; its first image after a start counts nothing). Pure: the metrics wiring (node.ts) calls it from the view's listener.
 */
import type { MetadataImage } from '../metadata/image.js';
import type { MetadataView } from '../metadata/metadata-store.js';
import type { MetadataRecord } from '../metadata/records.js';
import type { NodeMetrics } from './port.js';

export type PartitionChange =
  | { type: 'isr'; topic: string; partition: number; change: 'shrink' | 'expand' }
  | { type: 'election'; topic: string; partition: number; clean: boolean };

/**
 * The changes `records` (applied in order onto `before`, giving `after`) made to partitions that
 * `brokerId` leads afterwards. A partition created by them is not a change.
 */
export function partitionChanges(before: MetadataImage, after: MetadataImage, records: readonly MetadataRecord[], brokerId: number): PartitionChange[] {
  const out: PartitionChange[] = [];
  /** The state each partition touched so far is in, within this step. */
  const seen = new Map<string, { isr: readonly number[]; leader: number }>();
  for (const r of records) {
    if (r.type !== 'Partition') continue;
    const key = `${r.topicId}/${r.partition}`;
    const prev = seen.get(key) ?? before.topicsById.get(r.topicId)?.partitions[r.partition];
    seen.set(key, { isr: r.isr, leader: r.leader });
    if (prev === undefined || r.leader !== brokerId) continue;
    const topic = after.topicsById.get(r.topicId)?.name ?? before.topicsById.get(r.topicId)?.name;
    if (topic === undefined) continue;
    if (prev.leader !== brokerId) out.push({ type: 'election', topic, partition: r.partition, clean: prev.isr.includes(brokerId) });
    if (prev.isr.some((id) => !r.isr.includes(id))) out.push({ type: 'isr', topic, partition: r.partition, change: 'shrink' });
    if (r.isr.some((id) => !prev.isr.includes(id))) out.push({ type: 'isr', topic, partition: r.partition, change: 'expand' });
  }
  return out;
}

/** Counts the partition changes each metadata step makes (see partitionChanges); returns the unsubscribe. */
export function watchPartitionChanges(view: MetadataView, brokerId: number, metrics: NodeMetrics): () => void {
  let before = view.image();
  return view.subscribe((after, records) => {
    for (const c of partitionChanges(before, after, records, brokerId)) {
      if (c.type === 'isr') metrics.isrChanged(c.topic, c.change);
      else metrics.leaderElected(c.topic, c.clean);
    }
    before = after;
  });
}
