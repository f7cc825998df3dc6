/**
 * The record ledger: what producers were told and readers saw, checked against the replicas'
 * disks, with Kafka's replication semantics.
 *
 * - Every acknowledgement (acks=1 or all) means the record was on a disk at that offset when the
 *   client got it (unless a power loss or a truncation has taken it off since).
 * - acks=all, on a topic without unclean election: the record is committed. When acknowledged it
 *   is on at least min.insync.replicas disks, and from then on it is at its offset on the disk of
 *   the partition's newest leader and of every member of its newest ISR (as committed metadata
 *   names them).
 * - The committed prefix never changes: what a reader saw, what acks=all acknowledged and what any
 *   leader held below its high watermark (`leaderHw`) is the record at that offset for good, and
 *   the newest leader's log holds exactly those records there.
 * - acks=1 records may be lost when leadership moves (a follower that had not fetched them becomes
 *   leader): not flagged; they count for producer order only while they are still there.
 * - A producer's acknowledged records sit at increasing offsets in the order it sent them (on the
 *   newest leader's log, where each was first written).
 *
 * The one excuse for a committed record going: with `flush.mode=replicated` replicas count records
 * they have not fsynced, so power losses that take a record from every replica that had it lose it
 * (`lostEverywhere`, decided at each power loss by looking at the disks of the replicas that count:
 * the ISR and the leader metadata names; a copy outside the ISR cannot be elected cleanly). A
 * replica (not the leader it then becomes) may also miss records its own power loss took, until it
 * fetches them again. With `flush.mode=fsync` (the default) nothing is excused.
 * Topics with unclean election enabled keep only the first rule. A topic whose deletion was asked
 * for is no longer checked (its records may go at any moment).
 */
import { topicByName, type MetadataImage } from '../../src/metadata/image.js';
import { decodeBatch, isControlBatch, type StoredRecord } from '../../src/protocol/batch.js';
import type { LostAppend } from '../../src/storage/memory-storage.js';
import type { SimCluster, SimNode } from './cluster.js';
import type { Violations } from './checkers.js';
import { clean, partitionKey, volatileReplicas, type PartitionBook, type PartitionFacts } from './partitions.js';
import type { Trace } from './trace.js';

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

/** A stored record as the ledger needs it: its offset and its value as text. */
interface Rec {
  offset: number;
  value: string;
}

interface AckEntry {
  ack: Ack;
  pid: string | undefined;
  /** Node -> the batch object the record was last found in there (batches never change once stored). */
  foundIn: Map<number, Uint8Array>;
}

interface FirstOffsets {
  node: number;
  batches: Uint8Array[];
  scanned: number;
  last: Uint8Array | undefined;
  at: Map<string, number>;
}

interface Removal {
  value: string;
  node: number;
  why: 'power loss' | 'truncation';
  atMs: number;
}

/** A partition's committed records: offset -> value, filled up to `end` from leaders' disks. */
interface Committed {
  values: Array<string | undefined>;
  end: number;
  /** Batches (on some leader's disk) already found to match, not compared again. */
  verified: WeakSet<Uint8Array>;
}

const text = new TextDecoder();

/**
 * SIM_KAFKA_REPLICATED=1: check flush.mode=replicated topics against Kafka's semantics before
 * KIP-966 instead of the documented guarantee: a replica whose own power loss took committed
 * records stays in the ISR and may be elected, and those records are then lost. Off by default.
 */
const KAFKA_REPLICATED = process.env['SIM_KAFKA_REPLICATED'] === '1';

export class RecordLedger {
  private readonly topicIds = new Map<string, string>();
  private readonly deleted = new Set<string>();
  private readonly acks: AckEntry[] = [];
  /** Partition -> where each record was first written on the newest leader's log (built incrementally). */
  private readonly firsts = new Map<string, FirstOffsets>();
  private readonly committed = new Map<string, Committed>();
  /** Partition -> offset -> records removed from some disk there, by whom and why. */
  private readonly removals = new Map<string, Map<number, Removal[]>>();
  /** Partition -> offset -> records a power loss took from every replica that had them. */
  private readonly lostEverywhere = new Map<string, Map<number, Set<string>>>();
  private readonly decoded = new WeakMap<Uint8Array, Rec[]>();
  private readonly excusedAcks = new WeakSet<Ack>();
  private readonly lostAcks1 = new WeakSet<Ack>();
  readonly stats = { acked: 0, read: 0, excused: 0, lostRecords: 0, lostEverywhere: 0, truncatedRecords: 0, acks1Lost: 0, committed: 0 };

  /** Told when committed records from an offset on are gone from every replica (other checkers forget them). */
  onLostEverywhere: ((topic: string, partition: number, fromOffset: number) => void) | undefined;

  constructor(
    private readonly cluster: () => SimCluster,
    private readonly book: PartitionBook,
    private readonly violations: Violations,
    private readonly trace: Trace,
    private readonly now: () => number,
  ) {}

  /** The workload tells the id a topic was created with. */
  topicCreated(topic: string, topicId: string): void {
    this.topicIds.set(topic, topicId);
  }

  topicDeleted(topic: string): void {
    this.deleted.add(topic);
  }

  isDeleted(topic: string): boolean {
    return this.deleted.has(topic);
  }

  /** Whether clean-election guarantees hold for the partition (false while unknown). */
  isClean(topic: string, partition: number): boolean {
    const pid = this.partitionId(topic, partition);
    return pid !== undefined && clean(this.book.get(pid));
  }

  /** A power loss took these appends off `node`'s disk. */
  powerLost(node: SimNode, lost: readonly LostAppend[]): void {
    const atMs = this.now();
    for (const l of lost) {
      const facts = this.book.get(l.partition);
      let everywhereFrom: number | undefined;
      for (const batch of l.batches) {
        for (const r of decodeBatch(batch)) {
          const value = valueOf(r);
          this.removed(l.partition, r.offset, { value, node: node.id, why: 'power loss', atMs });
          this.stats.lostRecords++;
          // Replicas that count unsynced records: gone for good once no replica that counts (the
          // ISR and the leader, as metadata names them now) holds it any more. A copy outside the
          // ISR cannot be elected cleanly: it will be truncated to the new leader's log.
          if (!volatileReplicas(facts) || this.holders(l.partition, r.offset, value, countingReplicas(facts)).length > 0) continue;
          let byOffset = this.lostEverywhere.get(l.partition);
          if (byOffset === undefined) this.lostEverywhere.set(l.partition, (byOffset = new Map()));
          const values = byOffset.get(r.offset) ?? new Set<string>();
          values.add(value);
          byOffset.set(r.offset, values);
          this.stats.lostEverywhere++;
          if (this.committed.get(l.partition)?.values[r.offset] === value) everywhereFrom = Math.min(everywhereFrom ?? r.offset, r.offset);
        }
      }
      if (everywhereFrom !== undefined) {
        // Committed records no replica has any more: the offsets from there on are free again.
        const c = this.committed.get(l.partition)!;
        c.values.length = Math.min(c.values.length, everywhereFrom);
        c.end = Math.min(c.end, everywhereFrom);
        c.verified = new WeakSet();
        this.trace.event('ledger', `${facts?.topic}/${facts?.partition}: committed records from ${everywhereFrom} lost from every replica (flush.mode=replicated)`);
        if (facts !== undefined) this.onLostEverywhere?.(facts.topic, facts.partition, everywhereFrom);
      }
    }
  }

  /** `node` truncated the partition's log at `offset`, removing these batches. */
  truncated(node: SimNode, pid: string, offset: number, removed: readonly Uint8Array[]): void {
    const atMs = this.now();
    let count = 0;
    let from = Number.POSITIVE_INFINITY;
    for (const batch of removed) {
      for (const r of this.records(batch)) {
        this.removed(pid, r.offset, { value: r.value, node: node.id, why: 'truncation', atMs });
        from = Math.min(from, r.offset);
        count++;
      }
    }
    this.stats.truncatedRecords += count;
    const facts = this.book.get(pid);
    this.trace.event('truncate', `n${node.id} ${facts?.topic}/${facts?.partition} at ${offset}: ${count} record(s) from ${from} removed`);
  }

  acked(ack: Ack): void {
    if (this.deleted.has(ack.topic)) return;
    this.stats.acked++;
    const entry: AckEntry = { ack, pid: this.partitionId(ack.topic, ack.partition), foundIn: new Map() };
    this.acks.push(entry);
    // Unknown when every node that knew the topic is down right now: checked by verifyAll.
    const pid = entry.pid;
    if (pid === undefined) return;
    const holders = this.holders(pid, ack.offset, ack.value);
    const removedFrom = this.removalsOf(pid, ack.offset, ack.value).map((r) => r.node);
    const where = `${ack.value} acknowledged (acks=${ack.acks}) at ${ack.topic}/${ack.partition}@${ack.offset}`;
    if (holders.length === 0 && removedFrom.length === 0) {
      const found = this.anyValueAt(pid, ack.offset);
      this.violations.add(`${where}, but when acknowledged ${found === undefined ? 'it is not on any disk' : `${found} is there instead`}`);
      return;
    }
    const facts = this.book.get(pid);
    if (ack.acks !== 'all' || !clean(facts)) return;
    const had = new Set([...holders, ...removedFrom]);
    const minIsr = facts!.config.minInsyncReplicas;
    if (had.size < minIsr) this.violations.add(`${where}, but when acknowledged only ${[...had].map((id) => `n${id}`).join(',')} had it (min.insync.replicas=${minIsr})`);
    if (this.verifyCommitted(entry, pid, facts!, 'when acknowledged')) this.commit(pid, ack.offset, ack.value, `${ack.value} acknowledged (acks=all)`);
  }

  /** Distinct records acknowledged per topic (a record acknowledged twice, by a retry, counts once). */
  acknowledgedByTopic(): Map<string, number> {
    const seen = new Set<string>();
    const out = new Map<string, number>();
    for (const { ack } of this.acks) {
      const key = `${ack.topic}/${ack.partition}@${ack.offset}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.set(ack.topic, (out.get(ack.topic) ?? 0) + 1);
    }
    return out;
  }

  read(topic: string, partition: number, offset: number, value: string): void {
    if (this.deleted.has(topic)) return;
    this.stats.read++;
    const pid = this.partitionId(topic, partition);
    if (pid !== undefined && clean(this.book.get(pid))) this.commit(pid, offset, value, `${value} read`);
  }

  /**
   * A leader's high watermark is `hw`: the records below it on its disk are committed. Called by
   * the safety checker when a leader's HW passes what the ledger has filled so far.
   */
  leaderHw(pid: string, hw: number, node: SimNode): void {
    const facts = this.book.get(pid);
    if (!clean(facts) || this.deleted.has(facts!.topic)) return;
    const c = this.committedOf(pid);
    if (hw <= c.end) return;
    const data = node.disk.partitions.get(pid);
    if (data !== undefined) {
      for (let i = Math.max(0, floorIndex(data.bases, c.end)); i < data.batches.length && data.bases[i]! < hw; i++) {
        for (const r of this.records(data.batches[i]!)) {
          if (r.offset >= c.end && r.offset < hw) this.commit(pid, r.offset, r.value, `below the HW ${hw} of leader n${node.id}`);
        }
      }
    }
    c.end = hw;
  }

  /** Every acknowledgement again, against the disks now; the committed prefix; each producer's order. */
  verifyAll(): void {
    const chains = new Map<string, Ack[]>();
    for (const entry of this.acks) {
      const ack = entry.ack;
      if (this.deleted.has(ack.topic)) continue;
      const pid = (entry.pid ??= this.partitionId(ack.topic, ack.partition));
      if (pid === undefined) {
        this.violations.add(`${ack.value} acknowledged on ${ack.topic}, a topic no node knows`);
        continue;
      }
      const facts = this.book.get(pid);
      if (facts === undefined) continue;
      if (ack.acks === 'all' && clean(facts)) {
        if (!this.verifyCommitted(entry, pid, facts, 'later')) continue;
      } else if (facts.leader < 0 || !this.holds(entry, facts.leader, pid)) {
        // acks=1 (or an unclean topic): counts for order only while the newest leader still has it there.
        if (ack.acks === 1 && facts.leader >= 0 && !this.lostAcks1.has(ack)) {
          this.lostAcks1.add(ack);
          this.stats.acks1Lost++;
        }
        continue;
      }
      const key = `${ack.producer}/${pid}`;
      const chain = chains.get(key);
      if (chain === undefined) chains.set(key, [ack]);
      else chain.push(ack);
    }
    const leaderFirsts = new Map<string, Map<string, number> | undefined>();
    for (const [key, chain] of chains) {
      const pid = key.slice(key.indexOf('/') + 1);
      if (!leaderFirsts.has(pid)) leaderFirsts.set(pid, this.firstOffsets(pid));
      const first = leaderFirsts.get(pid);
      if (first === undefined) continue;
      // A record written twice (a retry after its reply was lost, taken by a leader without the
      // producer's state) counts where it was first written.
      const at = (a: Ack) => first.get(a.value) ?? a.offset;
      chain.sort((a, b) => a.seq - b.seq);
      for (let i = 1; i < chain.length; i++) {
        const [a, b] = [chain[i - 1]!, chain[i]!];
        if (at(b) <= at(a)) this.violations.add(`${b.value} was sent after ${a.value} but was first written at ${at(b)}, not after ${at(a)}`);
      }
    }
    for (const [pid, c] of this.committed) this.verifyPrefix(pid, c);
  }

  /**
   * A committed (acks=all) record: at its offset on the newest leader's disk and on every newest ISR
   * member's, excuses aside. False when it is not (reported) or excused (lost everywhere).
   */
  private verifyCommitted(entry: AckEntry, pid: string, facts: PartitionFacts, when: string): boolean {
    const ack = entry.ack;
    if (this.isLostEverywhere(pid, ack.offset, ack.value)) {
      if (!this.excusedAcks.has(ack)) this.stats.excused++;
      this.excusedAcks.add(ack);
      return false;
    }
    const targets = [...new Set([...(facts.leader < 0 ? [] : [facts.leader]), ...facts.isr])];
    for (const id of targets) {
      if (this.holds(entry, id, pid)) continue;
      if (this.excusedOn(id, pid, ack.offset, ack.value, facts)) {
        // SIM_KAFKA_REPLICATED: the leader's excuse may have lost it for good.
        if (this.isLostEverywhere(pid, ack.offset, ack.value)) return this.verifyCommitted(entry, pid, facts, when);
        continue;
      }
      const disk = this.onDisk(this.cluster().node(id), pid, ack.offset);
      const found = disk.kind === 'record' ? `${disk.value} is there instead` : 'it is missing';
      const role = id === facts.leader ? 'the leader' : 'in the ISR';
      this.violations.add(
        `${ack.value} acknowledged (acks=all) at ${ack.topic}/${ack.partition}@${ack.offset}, but ${when} ${found} on n${id} (${role} of epoch ${facts.leaderEpoch}, ISR ${facts.isr.join(',')})`,
      );
      return false;
    }
    return true;
  }

  /**
   * Whether `node` may lack a committed record: its own power loss took it (flush.mode=replicated),
   * and, when it is the newest leader, after that leadership was decided (it has not led since).
   */
  private excusedOn(node: number, pid: string, offset: number, value: string, facts: PartitionFacts): boolean {
    if (!volatileReplicas(facts)) return false;
    const took = this.removalsOf(pid, offset, value).filter((r) => r.node === node && r.why === 'power loss');
    if (node !== facts.leader || took.some((r) => r.atMs >= facts.leaderSinceMs)) return took.length > 0;
    // Elected after its power loss, before anyone noticed: the leadership names a dead process. It
    // cannot act on it, and its next incarnation starts fenced, registers (which fences the old
    // one and moves its leaderships) and leads nothing until unfenced; from then on it is checked.
    if (took.length > 0 && !this.serving(node)) return true;
    if (!KAFKA_REPLICATED || took.length === 0) return false;
    this.loseEverywhere(pid, offset, value, `its leader n${node} lost it in a power loss and was elected`);
    return true;
  }

  /** The node runs a registered, unfenced broker: only then can it act as a partition leader. */
  private serving(node: number): boolean {
    const n = this.cluster().node(node);
    const broker = n.state === 'up' ? n.parts.broker?.getSnapshot().context : undefined;
    return broker !== undefined && !broker.fenced;
  }

  /** SIM_KAFKA_REPLICATED: a committed record is gone for good; the offsets from there on are free again. */
  private loseEverywhere(pid: string, offset: number, value: string, why: string): void {
    let byOffset = this.lostEverywhere.get(pid);
    if (byOffset === undefined) this.lostEverywhere.set(pid, (byOffset = new Map()));
    const values = byOffset.get(offset) ?? new Set<string>();
    values.add(value);
    byOffset.set(offset, values);
    this.stats.lostEverywhere++;
    const c = this.committed.get(pid);
    if (c === undefined || c.values[offset] !== value) return;
    c.values.length = offset;
    c.end = Math.min(c.end, offset);
    c.verified = new WeakSet();
    const facts = this.book.get(pid);
    this.trace.event('ledger', `${facts?.topic}/${facts?.partition}: committed records from ${offset} lost (${why}; SIM_KAFKA_REPLICATED)`);
  }

  /** The newest leader's disk holds the committed records at their offsets. */
  private verifyPrefix(pid: string, c: Committed): void {
    const facts = this.book.get(pid);
    if (facts === undefined || facts.leader < 0 || !clean(facts) || this.deleted.has(facts.topic)) return;
    const node = this.cluster().node(facts.leader);
    const data = node.disk.partitions.get(pid);
    const where = (o: number) => `${facts.topic}/${facts.partition}@${o}`;
    for (let i = 0; data !== undefined && i < data.batches.length; i++) {
      const batch = data.batches[i]!;
      if (c.verified.has(batch)) continue;
      if (data.bases[i]! >= c.values.length) break;
      let whole = true;
      for (const r of this.records(batch)) {
        const expected = c.values[r.offset];
        if (r.offset >= c.end || expected === undefined) {
          whole = false;
          continue;
        }
        const value = r.value;
        if (value === expected || this.isLostEverywhere(pid, r.offset, expected) || this.excusedOn(node.id, pid, r.offset, expected, facts)) continue;
        this.violations.add(`${where(r.offset)} was committed as ${expected}, but the leader n${node.id} (epoch ${facts.leaderEpoch}) has ${value} there`);
        return;
      }
      if (whole) c.verified.add(batch);
    }
    const end = data?.logEndOffset ?? 0;
    const start = data?.logStartOffset ?? 0;
    for (let o = Math.max(end, start); o < c.end; o++) {
      const expected = c.values[o];
      if (expected === undefined || this.isLostEverywhere(pid, o, expected) || this.excusedOn(node.id, pid, o, expected, facts)) continue;
      this.violations.add(`${where(o)} was committed as ${expected}, but the log of the leader n${node.id} (epoch ${facts.leaderEpoch}) ends at ${end}`);
      return;
    }
  }

  /** Whether node `id`'s disk holds the acknowledged record at its offset (or has retained it away). */
  private holds(entry: AckEntry, id: number, pid: string): boolean {
    const { offset, value } = entry.ack;
    const data = this.cluster().node(id).disk.partitions.get(pid);
    if (data === undefined || offset >= data.logEndOffset) return false;
    if (offset < data.logStartOffset) return true;
    const batch = data.batches[floorIndex(data.bases, offset)];
    if (batch === undefined) return false;
    if (entry.foundIn.get(id) === batch) return true;
    const found = this.records(batch).some((r) => r.offset === offset && r.value === value);
    if (found) entry.foundIn.set(id, batch);
    return found;
  }

  /** Where each record of the partition was first written, on the newest leader's disk. */
  private firstOffsets(pid: string): Map<string, number> | undefined {
    const facts = this.book.get(pid);
    if (facts === undefined || facts.leader < 0) return undefined;
    const batches = this.cluster().node(facts.leader).disk.partitions.get(pid)?.batches ?? [];
    let f = this.firsts.get(pid);
    // Logs only grow between truncations: go on from where the last scan ended when it still holds.
    if (f === undefined || f.node !== facts.leader || f.batches !== batches || f.scanned > batches.length || (f.scanned > 0 && batches[f.scanned - 1] !== f.last)) {
      f = { node: facts.leader, batches, scanned: 0, last: undefined, at: new Map() };
      this.firsts.set(pid, f);
    }
    for (; f.scanned < batches.length; f.scanned++) {
      for (const r of this.records(batches[f.scanned]!)) if (!f.at.has(r.value)) f.at.set(r.value, r.offset);
    }
    f.last = batches[f.scanned - 1];
    return f.at;
  }

  private commit(pid: string, offset: number, value: string, what: string): void {
    const c = this.committedOf(pid);
    const before = c.values[offset];
    if (before === value) return;
    const facts = this.book.get(pid);
    if (before !== undefined && facts !== undefined && facts.leader >= 0 && !this.isLostEverywhere(pid, offset, before)) {
      // SIM_KAFKA_REPLICATED: the newest leader's own power loss may have taken it.
      this.excusedOn(facts.leader, pid, offset, before, facts);
    }
    if (before !== undefined && !this.isLostEverywhere(pid, offset, before)) {
      this.violations.add(`${facts?.topic}/${facts?.partition}@${offset} was committed as ${before}, and now ${what} there`);
      return;
    }
    if (before === undefined) this.stats.committed++;
    c.values[offset] = value;
  }

  private committedOf(pid: string): Committed {
    let c = this.committed.get(pid);
    if (c === undefined) this.committed.set(pid, (c = { values: [], end: 0, verified: new WeakSet() }));
    return c;
  }

  private removed(pid: string, offset: number, removal: Removal): void {
    let byOffset = this.removals.get(pid);
    if (byOffset === undefined) this.removals.set(pid, (byOffset = new Map()));
    const list = byOffset.get(offset) ?? [];
    list.push(removal);
    byOffset.set(offset, list);
  }

  private removalsOf(pid: string, offset: number, value: string): Removal[] {
    return (this.removals.get(pid)?.get(offset) ?? []).filter((r) => r.value === value);
  }

  private isLostEverywhere(pid: string, offset: number, value: string): boolean {
    return this.lostEverywhere.get(pid)?.get(offset)?.has(value) === true;
  }

  /** Nodes (of `among`, default all) whose disk holds `value` at `offset` (or has retained it away). */
  private holders(pid: string, offset: number, value: string, among?: ReadonlySet<number>): number[] {
    const ids: number[] = [];
    for (const n of this.cluster().nodes) {
      if (among !== undefined && !among.has(n.id)) continue;
      const disk = this.onDisk(n, pid, offset);
      if (disk.kind === 'retained' || (disk.kind === 'record' && disk.value === value)) ids.push(n.id);
    }
    return ids;
  }

  private anyValueAt(pid: string, offset: number): string | undefined {
    for (const n of this.cluster().nodes) {
      const disk = this.onDisk(n, pid, offset);
      if (disk.kind === 'record') return `${disk.value} (n${n.id})`;
    }
    return undefined;
  }

  private records(batch: Uint8Array): Rec[] {
    let records = this.decoded.get(batch);
    if (records === undefined) this.decoded.set(batch, (records = decodeBatch(batch).map((r) => ({ offset: r.offset, value: valueOf(r) }))));
    return records;
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

  /** Whether some node holds a control batch (cursor records) over `offset`: readers skip those offsets. */
  isControl(topic: string, partition: number, offset: number): boolean {
    const pid = this.partitionId(topic, partition);
    if (pid === undefined) return false;
    for (const n of this.cluster().nodes) {
      const data = n.disk.partitions.get(pid);
      if (data === undefined || offset < data.logStartOffset || offset >= data.logEndOffset) continue;
      const batch = data.batches[floorIndex(data.bases, offset)];
      if (batch !== undefined && isControlBatch(batch)) return true;
    }
    return false;
  }

  /** The record at `offset` on one node's disk. */
  private onDisk(n: SimNode, pid: string, offset: number): OnDisk {
    const data = n.disk.partitions.get(pid);
    if (data === undefined || offset >= data.logEndOffset) return { kind: 'absent' };
    if (offset < data.logStartOffset) return { kind: 'retained' };
    const batch = data.batches[floorIndex(data.bases, offset)];
    if (batch === undefined) return { kind: 'absent' };
    const record = this.records(batch).find((r) => r.offset === offset);
    return record === undefined ? { kind: 'absent' } : { kind: 'record', value: record.value };
  }
}

function* imagesOf(parts: { metadata?: { image(): MetadataImage }; broker?: { getSnapshot(): { context: { image: MetadataImage } } } }): Generator<MetadataImage> {
  if (parts.metadata !== undefined) yield parts.metadata.image();
  if (parts.broker !== undefined) yield parts.broker.getSnapshot().context.image;
}

/** The replicas whose copies the protocol counts: the newest ISR and leader. */
function countingReplicas(facts: PartitionFacts | undefined): ReadonlySet<number> {
  return new Set([...(facts?.isr ?? []), ...(facts === undefined || facts.leader < 0 ? [] : [facts.leader])]);
}

export function valueOf(r: StoredRecord): string {
  return r.value === null ? '<null>' : text.decode(r.value);
}

/** Greatest i with bases[i] <= offset, or -1. */
export function floorIndex(bases: readonly number[], offset: number): number {
  let [lo, hi, found] = [0, bases.length - 1, -1];
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (bases[mid]! <= offset) [found, lo] = [mid, mid + 1];
    else hi = mid - 1;
  }
  return found;
}
