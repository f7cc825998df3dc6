/**
 * Safety checkers, run after every simulation step (and fed as things happen through the cluster
 * observer):
 * - at most one Raft leader per term (every live voter's status);
 * - a committed metadata entry is never lost or changed: every voter delivers entries in index
 *   order without gaps (except what a snapshot covers) and every delivery of an index carries the
 *   same term and payload; the image after each index is the same on every voter and every broker
 *   that reaches it (snapshots installed from the store or the leader included);
 * - at most one partition leader per leader epoch, in every image any node holds, and a partition
 *   actor runs only on the broker its epoch names;
 * - a broker's metadata never goes back (within one process lifetime);
 * - a partition's high watermark never decreases (across leader restarts too, since with one replica
 *   the log end survives a process crash) except after a power loss took unsynced records, and it is
 *   never above the log end on the leader's disk.
 * Replica agreement below the HW (ISR members byte for byte) is a stub until replication lands.
 */
import type { PartitionContext } from '../../src/actors/partition/machine.js';
import type { MetadataImage } from '../../src/metadata/image.js';
import type { NodeParts } from '../../src/node.js';
import type { LogEntry } from '../../src/quorum/raft-store.js';
import type { LostAppend } from '../../src/storage/memory-storage.js';
import type { ClusterObserver, SimCluster, SimNode } from './cluster.js';
import type { Trace } from './trace.js';

/** Violations kept per run (the first ones matter). */
export const VIOLATIONS_MAX = 20;

export class Violations {
  readonly list: string[] = [];

  constructor(
    private readonly trace: Trace,
    private readonly elapsed: () => number,
  ) {}

  add(message: string): void {
    if (this.list.length >= VIOLATIONS_MAX) return;
    this.list.push(`t=${this.elapsed()} ms: ${message}`);
    this.trace.event('VIOLATION', message);
  }

  get failed(): boolean {
    return this.list.length > 0;
  }
}

export function fnv(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16);
}

function bytesDigest(bytes: Uint8Array): string {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  return `${bytes.length}:${(h >>> 0).toString(16)}`;
}

/** Same content, same digest, whatever order the maps were filled in. */
export function imageDigest(image: MetadataImage): string {
  const brokers = [...image.brokers.values()].sort((a, b) => a.id - b.id).map((b) => `${b.id}/${b.epoch}/${b.fenced}/${b.incarnation}/${b.rack}`);
  const topics = [...image.topicsById.values()]
    .sort((a, b) => (a.topicId < b.topicId ? -1 : 1))
    .map((t) => {
      const config = Object.keys(t.config).sort().map((k) => `${k}=${t.config[k]}`);
      const parts = t.partitions.map((p) => `${p.partition}:${p.replicas}:${p.isr}:${p.leader}:${p.leaderEpoch}:${p.partitionEpoch}`);
      return `${t.topicId}/${t.name}/${config.join(',')}/${parts.join(';')}`;
    });
  return fnv(`${brokers.join('|')}#${topics.join('|')}`);
}

export const partitionKey = (topicId: string, partition: number) => `${topicId}/${partition}`;

type PartitionSnapshot = { status: string; context: PartitionContext; matches(state: string): boolean };

export class SafetyChecker implements ClusterObserver {
  /** term -> the voter that led it. */
  private readonly leaders = new Map<number, number>();
  /** index -> term and payload digest of the committed entry. */
  private readonly entries = new Map<number, string>();
  /** metadata offset -> digest of the image after it. */
  private readonly images = new Map<number, string>();
  private readonly checkedImages = new WeakSet<MetadataImage>();
  /** `topicId/partition@epoch` -> leader. */
  private readonly epochLeaders = new Map<string, number>();
  /** Partition -> highest HW seen since the last power loss that took records of it. */
  private readonly hw = new Map<string, number>();
  /** Partition -> highest HW ever seen. */
  readonly maxHw = new Map<string, number>();
  /** Metadata offset each broker (one per process lifetime) has reached: it never goes back. */
  private readonly brokerOffsets = new WeakMap<object, number>();
  /** Partition actors already seen serving. */
  private readonly actors = new WeakMap<object, { pid: string }>();
  /** Highest metadata index any voter delivered. */
  maxCommitted = 0;

  /** Highest term any voter led. */
  get maxTerm(): number {
    return Math.max(0, ...this.leaders.keys());
  }

  constructor(
    private readonly cluster: () => SimCluster,
    private readonly violations: Violations,
    private readonly trace: Trace,
  ) {}

  started(node: SimNode, parts: NodeParts): void {
    const { raft, metadata } = parts;
    if (raft === undefined || metadata === undefined) return;
    const incarnation = node.incarnation;
    const current = () => node.incarnation === incarnation && node.state !== 'down';
    let delivered = Math.max(0, metadata.image().offset);
    if (delivered > 0) this.checkImage(`n${node.id} (snapshot from its store)`, metadata.image());
    metadata.subscribe((image) => {
      if (current()) this.checkImage(`voter n${node.id}`, image);
    });
    raft.onCommit((batch: readonly LogEntry[]) => {
      if (!current()) return;
      for (const e of batch) {
        if (e.index !== delivered + 1 && raft.status().snapshotIndex < e.index - 1) {
          this.violations.add(`voter n${node.id} delivered entry ${e.index} after ${delivered} with no snapshot covering the gap`);
        }
        delivered = e.index;
        this.maxCommitted = Math.max(this.maxCommitted, e.index);
        const digest = `${e.term}:${bytesDigest(e.payload)}`;
        const seen = this.entries.get(e.index);
        if (seen === undefined) this.entries.set(e.index, digest);
        else if (seen !== digest) this.violations.add(`committed entry ${e.index} changed: ${seen} before, ${digest} on voter n${node.id}`);
      }
    });
  }

  powerLost(_node: SimNode, lost: readonly LostAppend[]): void {
    for (const l of lost) this.hw.delete(l.partition);
  }

  /** The image after `image.offset` must be the same wherever it is seen. */
  private checkImage(where: string, image: MetadataImage): void {
    if (this.checkedImages.has(image)) return;
    this.checkedImages.add(image);
    this.checkEpochs(where, image);
    if (image.offset < 0) return;
    const digest = imageDigest(image);
    const seen = this.images.get(image.offset);
    if (seen === undefined) this.images.set(image.offset, digest);
    else if (seen !== digest) this.violations.add(`the metadata image at offset ${image.offset} differs on ${where}`);
  }

  private checkEpochs(where: string, image: MetadataImage): void {
    for (const topic of image.topicsById.values()) {
      for (const p of topic.partitions) {
        const key = `${partitionKey(topic.topicId, p.partition)}@${p.leaderEpoch}`;
        const leader = this.epochLeaders.get(key);
        if (leader === undefined) this.epochLeaders.set(key, p.leader);
        else if (leader !== p.leader) this.violations.add(`${topic.name}/${p.partition} epoch ${p.leaderEpoch} has leader ${leader} and leader ${p.leader} (on ${where})`);
      }
    }
  }

  afterStep(): void {
    // Stopping nodes too: a broker in controlled shutdown still serves until its leaderships move.
    for (const n of this.cluster().nodes.filter((x) => x.state !== 'down')) {
      const status = n.parts.raft?.status();
      if (status?.role === 'leader') {
        const known = this.leaders.get(status.term);
        if (known === undefined) {
          this.leaders.set(status.term, n.id);
          this.trace.event('raft', `n${n.id} leads term ${status.term}`);
        } else if (known !== n.id) {
          this.violations.add(`two Raft leaders in term ${status.term}: n${known} and n${n.id}`);
        }
      }
      const actor = n.parts.broker;
      const broker = actor?.getSnapshot();
      if (actor === undefined || broker === undefined || broker.status !== 'active') continue;
      this.checkImage(`broker n${n.id}`, broker.context.image);
      const offset = broker.context.image.offset;
      const before = this.brokerOffsets.get(actor) ?? -1;
      if (offset < before) this.violations.add(`broker n${n.id}'s metadata went back from offset ${before} to ${offset}`);
      this.brokerOffsets.set(actor, Math.max(offset, before));
      this.checkPartitions(n, broker.children);
    }
  }

  private checkPartitions(n: SimNode, children: Record<string, unknown>): void {
    for (const id in children) {
      const child = children[id];
      if (!id.startsWith('partition:') || typeof child !== 'object' || child === null) continue;
      const snap = (child as { getSnapshot(): PartitionSnapshot }).getSnapshot();
      if (snap.status !== 'active' || !snap.matches('open')) continue;
      const ctx = snap.context;
      let seen = this.actors.get(child);
      if (seen === undefined) {
        // First sight of this actor: the checks that do not change while it lives.
        const pid = partitionKey(ctx.topicId, ctx.partition);
        const leader = this.epochLeaders.get(`${pid}@${ctx.leaderEpoch}`);
        if (leader !== undefined && leader !== n.id) {
          this.violations.add(`n${n.id} runs ${ctx.topic}/${ctx.partition} at epoch ${ctx.leaderEpoch}, which names leader ${leader}`);
        }
        this.trace.event('partition', `n${n.id} serves ${ctx.topic}/${ctx.partition} epoch ${ctx.leaderEpoch} from offset ${ctx.highWatermark}`);
        this.actors.set(child, (seen = { pid }));
      }
      const pid = seen.pid;
      const hw = ctx.highWatermark;
      const before = this.hw.get(pid);
      if (before !== undefined && hw < before) this.violations.add(`HW of ${ctx.topic}/${ctx.partition} went from ${before} to ${hw} on n${n.id}`);
      this.hw.set(pid, Math.max(hw, before ?? hw));
      this.maxHw.set(pid, Math.max(hw, this.maxHw.get(pid) ?? hw));
      const onDisk = n.disk.partitions.get(pid)?.logEndOffset ?? 0;
      if (hw > onDisk) this.violations.add(`HW ${hw} of ${ctx.topic}/${ctx.partition} is above the log end ${onDisk} on n${n.id}'s disk`);
    }
  }

  /** Replicas in the ISR agree byte for byte below the HW. One replica per partition today: nothing to compare. */
  checkReplicasAgree(): void {
    // Replication (the next issue) fills this in: compare every ISR member's disk below the HW.
  }

  /** Voters' applied indexes, for the liveness phase. */
  appliedBy(n: SimNode): number {
    return n.parts.raft?.status().appliedIndex ?? -1;
  }
}
