/**
 * The record ledger: what producers were told and readers saw, checked against the nodes' disks.
 * - An acks=1 / acks=all acknowledgement means the leader appended the record: when the client gets
 *   it, the record is on the leader's disk at that offset, and it stays there.
 * - Every offset holds one record: an acknowledged or read record is never replaced by another.
 * - A producer's acknowledged records sit at increasing offsets in the order it sent them.
 * The one excuse: partition appends are not fsynced, so a power loss may take back records the
 * leader had acknowledged (and readers had seen). A record is excused exactly when a power loss
 * took that record, at that offset, off the disk that held it; nothing else is.
 * A topic whose deletion was asked for is no longer checked (its records may go at any moment).
 */
import { topicByName, type MetadataImage } from '../../src/metadata/image.js';
import { decodeBatch, type StoredRecord } from '../../src/protocol/batch.js';
import type { LostAppend } from '../../src/storage/memory-storage.js';
import type { SimCluster } from './cluster.js';
import { partitionKey, type Violations } from './checkers.js';

export interface Ack {
  topic: string;
  partition: number;
  offset: number;
  value: string;
  producer: string;
  seq: number;
  acks: 1 | 'all';
}

type OnDisk = { kind: 'record'; value: string } | { kind: 'retained' } | { kind: 'absent' };

const text = new TextDecoder();

export class RecordLedger {
  private readonly topicIds = new Map<string, string>();
  private readonly deleted = new Set<string>();
  private readonly acks: Ack[] = [];
  /** Partition -> offset -> the record last seen there. */
  private readonly observed = new Map<string, Map<number, string>>();
  /** Partition -> offset -> records a power loss took from there. */
  private readonly lost = new Map<string, Map<number, Set<string>>>();
  private readonly decoded = new WeakMap<Uint8Array, StoredRecord[]>();
  private readonly excusedAcks = new WeakSet<Ack>();
  readonly stats = { acked: 0, read: 0, excused: 0, lostRecords: 0 };

  constructor(
    private readonly cluster: () => SimCluster,
    private readonly violations: Violations,
  ) {}

  /** The workload tells the id a topic was created with. */
  topicCreated(topic: string, topicId: string): void {
    this.topicIds.set(topic, topicId);
  }

  topicDeleted(topic: string): void {
    this.deleted.add(topic);
  }

  powerLost(lost: readonly LostAppend[]): void {
    for (const l of lost) {
      let byOffset = this.lost.get(l.partition);
      if (byOffset === undefined) this.lost.set(l.partition, (byOffset = new Map()));
      for (const batch of l.batches) {
        for (const r of decodeBatch(batch)) {
          const values = byOffset.get(r.offset) ?? new Set<string>();
          values.add(valueOf(r));
          byOffset.set(r.offset, values);
          this.stats.lostRecords++;
        }
      }
    }
  }

  acked(ack: Ack): void {
    if (this.deleted.has(ack.topic)) return;
    this.stats.acked++;
    this.acks.push(ack);
    // Unknown when every node that knew the topic is down right now: checked by verifyAll.
    const pid = this.partitionId(ack.topic, ack.partition);
    if (pid === undefined) return;
    this.verify(ack, pid, 'when acknowledged');
    this.observe(pid, ack.topic, ack.partition, ack.offset, ack.value);
  }

  read(topic: string, partition: number, offset: number, value: string): void {
    if (this.deleted.has(topic)) return;
    this.stats.read++;
    const pid = this.partitionId(topic, partition);
    if (pid !== undefined) this.observe(pid, topic, partition, offset, value);
  }

  /** Every acknowledgement again, against the disks now, and each producer's order. */
  verifyAll(): void {
    const chains = new Map<string, Ack[]>();
    for (const ack of this.acks) {
      if (this.deleted.has(ack.topic)) continue;
      const pid = this.partitionId(ack.topic, ack.partition);
      if (pid === undefined) {
        this.violations.add(`${ack.value} acknowledged on ${ack.topic}, a topic no node knows`);
        continue;
      }
      if (!this.verify(ack, pid, 'later')) continue;
      if (this.excused(pid, ack.offset, ack.value)) continue;
      const key = `${ack.producer}/${pid}`;
      const chain = chains.get(key) ?? [];
      chain.push(ack);
      chains.set(key, chain);
    }
    const firsts = new Map<string, Map<string, number>>();
    for (const [key, chain] of chains) {
      const pid = key.slice(key.indexOf('/') + 1);
      if (!firsts.has(pid)) firsts.set(pid, this.firstOffsets(pid));
      const first = firsts.get(pid)!;
      // A record written twice (its leader restarted before answering, the retry was written again)
      // counts where it was first written: producer state does not survive a restart yet.
      const at = (a: Ack) => first.get(a.value) ?? a.offset;
      chain.sort((a, b) => a.seq - b.seq);
      for (let i = 1; i < chain.length; i++) {
        const [a, b] = [chain[i - 1]!, chain[i]!];
        if (at(b) <= at(a)) this.violations.add(`${b.value} was sent after ${a.value} but was first written at ${at(b)}, not after ${at(a)}`);
      }
    }
  }

  /** Where each record of the partition was first written, on the disk that holds it. */
  private firstOffsets(pid: string): Map<string, number> {
    const first = new Map<string, number>();
    for (const n of this.cluster().nodes) {
      for (const batch of n.disk.partitions.get(pid)?.batches ?? []) {
        for (const r of this.records(batch)) if (!first.has(valueOf(r))) first.set(valueOf(r), r.offset);
      }
    }
    return first;
  }

  private records(batch: Uint8Array): StoredRecord[] {
    let records = this.decoded.get(batch);
    if (records === undefined) this.decoded.set(batch, (records = decodeBatch(batch)));
    return records;
  }

  /** True when the record is there (or retained away, or excused). */
  private verify(ack: Ack, pid: string, when: string): boolean {
    const disk = this.onDisk(pid, ack.offset);
    if (disk.kind === 'retained' || (disk.kind === 'record' && disk.value === ack.value)) return true;
    if (this.excused(pid, ack.offset, ack.value)) {
      if (!this.excusedAcks.has(ack)) this.stats.excused++;
      this.excusedAcks.add(ack);
      return true;
    }
    const found = disk.kind === 'record' ? `${disk.value} is there instead` : 'it is not on any disk';
    this.violations.add(`${ack.value} acknowledged (acks=${ack.acks}) at ${ack.topic}/${ack.partition}@${ack.offset}, but ${when} ${found}`);
    return false;
  }

  private excused(pid: string, offset: number, value: string): boolean {
    return this.lost.get(pid)?.get(offset)?.has(value) === true;
  }

  private observe(pid: string, topic: string, partition: number, offset: number, value: string): void {
    let byOffset = this.observed.get(pid);
    if (byOffset === undefined) this.observed.set(pid, (byOffset = new Map()));
    const before = byOffset.get(offset);
    if (before !== undefined && before !== value && !this.excused(pid, offset, before)) {
      this.violations.add(`${topic}/${partition}@${offset} held ${before} and now holds ${value}`);
    }
    byOffset.set(offset, value);
  }

  partitionId(topic: string, partition: number): string | undefined {
    let id = this.topicIds.get(topic);
    if (id === undefined) {
      for (const n of this.cluster().nodes) {
        for (const image of imagesOf(n.parts)) {
          id = topicByName(image, topic)?.topicId;
          if (id !== undefined) break;
        }
        if (id !== undefined) break;
      }
      if (id === undefined) return undefined;
      this.topicIds.set(topic, id);
    }
    return partitionKey(id, partition);
  }

  /** The record at `offset` on whichever disk holds the partition (one replica today). */
  private onDisk(pid: string, offset: number): OnDisk {
    for (const n of this.cluster().nodes) {
      const data = n.disk.partitions.get(pid);
      if (data === undefined || offset >= data.logEndOffset) continue;
      if (offset < data.logStartOffset) return { kind: 'retained' };
      const batch = data.batches[floorIndex(data.bases, offset)];
      if (batch === undefined) continue;
      const record = this.records(batch).find((r) => r.offset === offset);
      if (record !== undefined) return { kind: 'record', value: valueOf(record) };
    }
    return { kind: 'absent' };
  }
}

function* imagesOf(parts: { metadata?: { image(): MetadataImage }; broker?: { getSnapshot(): { context: { image: MetadataImage } } } }): Generator<MetadataImage> {
  if (parts.metadata !== undefined) yield parts.metadata.image();
  if (parts.broker !== undefined) yield parts.broker.getSnapshot().context.image;
}

export function valueOf(r: StoredRecord): string {
  return r.value === null ? '<null>' : text.decode(r.value);
}

/** Greatest i with bases[i] <= offset, or -1. */
function floorIndex(bases: readonly number[], offset: number): number {
  let [lo, hi, found] = [0, bases.length - 1, -1];
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (bases[mid]! <= offset) [found, lo] = [mid, mid + 1];
    else hi = mid - 1;
  }
  return found;
}
