/**
 * Safety checkers, run after every simulation step (and fed as things happen through the cluster
 * observer):
 * - at most one Raft leader per term (every live voter's status);
 * - a committed metadata entry is never lost or changed: every voter delivers entries in index
 *   order without gaps (except what a snapshot covers) and every delivery of an index carries the
 *   same term and payload; the image after each index is the same on every voter and every broker
 *   that reaches it (snapshots installed from the store or the leader included);
 * - at most one partition leader per leader epoch, in every image any node holds; a leader actor
 *   runs only on the broker its epoch names, a follower actor only on another replica of the
 *   partition, following the leader its epoch names;
 * - a broker's metadata never goes back (within one process lifetime);
 * - a leader actor's high watermark never decreases (a new leader starts from 0 and recomputes it
 *   from its followers' fetches), and it is never above the log end on the disk of any ISR member
 *   the leader names (flush.mode=replicated excuses a member whose power loss took records since);
 *   every leader's HW also feeds the ledger's committed prefix (records.ts);
 * - ISR members agree byte for byte with their leader below its HW: batches (stamped offsets and
 *   leader epochs) and epoch caches (`checkReplicasAgree`, every simulated second and at the
 *   liveness phase's quiescent points, where every replica must hold the leader's whole log).
 */
import type { PartitionContext } from '../../src/actors/partition/machine.js';
import type { MetadataImage } from '../../src/metadata/image.js';
import type { NodeParts } from '../../src/node.js';
import type { LogEntry } from '../../src/quorum/raft-store.js';
import type { LostAppend } from '../../src/storage/memory-storage.js';
import type { FollowerContext } from '../../src/actors/partition/follower.js';
import type { ClusterObserver, SimCluster, SimNode } from './cluster.js';
import { clean, partitionKey, volatileReplicas, type PartitionBook } from './partitions.js';
import { floorIndex, type RecordLedger } from './records.js';
import type { Trace } from './trace.js';

export { partitionKey };

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
      const parts = t.partitions.map((p) => `${p.partition}:${p.replicas}:${p.isr}:${p.leader}:${p.leaderEpoch}:${p.partitionEpoch}:${p.suspects}`);
      return `${t.topicId}/${t.name}/${config.join(',')}/${parts.join(';')}`;
    });
  return fnv(`${brokers.join('|')}#${topics.join('|')}`);
}

type PartitionSnapshot = { status: string; value: unknown; context: PartitionContext; matches(state: string): boolean };
type FollowerSnapshot = { status: string; context: FollowerContext; value: unknown };

interface LeaderSeen {
  pid: string;
  hw: number;
  /** Simulated ms when the checker first saw this actor serving. */
  sinceMs: number;
  /** What the ISR disk check last looked at. */
  checked: { hw: number; isr: readonly number[]; shrinks: number } | undefined;
  /** SIM_WATCH: the last state traced. */
  watched?: string;
}

/** SIM_WATCH=topic/partition traces every change of that partition's replication state (for replays). */
const WATCH = process.env['SIM_WATCH'];

export class SafetyChecker implements Omit<ClusterObserver, 'truncated'> {
  /** term -> the voter that led it. */
  private readonly leaders = new Map<number, number>();
  /** index -> term and payload digest of the committed entry. */
  private readonly entries = new Map<number, string>();
  /** metadata offset -> digest of the image after it. */
  private readonly images = new Map<number, string>();
  private readonly checkedImages = new WeakSet<MetadataImage>();
  /** `topicId/partition@epoch` -> leader. */
  private readonly epochLeaders = new Map<string, number>();
  /** Partition -> highest HW any leader had. */
  readonly maxHw = new Map<string, number>();
  /** Metadata offset each broker (one per process lifetime) has reached: it never goes back. */
  private readonly brokerOffsets = new WeakMap<object, number>();
  /** Leader actors already seen serving, and their HW. */
  private readonly leaderActors = new WeakMap<object, LeaderSeen>();
  /** Follower actors already seen. */
  private readonly followerActors = new WeakSet<object>();
  /** `node/partition` -> simulated ms of the last power loss that took records of it there. */
  private readonly powerLossAt = new Map<string, number>();
  /** Leader batch -> follower batches found equal to it byte for byte. */
  private readonly agreed = new WeakMap<Uint8Array, WeakSet<Uint8Array>>();
  /** Truncations and power losses so far (disks whose logs may have got shorter). */
  private diskShrinks = 0;
  /** Highest metadata index any voter delivered. */
  maxCommitted = 0;

  /** Highest term any voter led. */
  get maxTerm(): number {
    return Math.max(0, ...this.leaders.keys());
  }

  constructor(
    private readonly cluster: () => SimCluster,
    private readonly book: PartitionBook,
    private readonly ledger: RecordLedger,
    private readonly violations: Violations,
    private readonly trace: Trace,
    private readonly now: () => number,
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

  powerLost(node: SimNode, lost: readonly LostAppend[]): void {
    this.diskShrinks++;
    for (const l of lost) this.powerLossAt.set(`${node.id}/${l.partition}`, this.now());
  }

  /** The image after `image.offset` must be the same wherever it is seen. */
  private checkImage(where: string, image: MetadataImage): void {
    if (this.checkedImages.has(image)) return;
    this.checkedImages.add(image);
    this.book.learn(image);
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
    for (const n of this.cluster().nodes) {
      if (n.state === 'down') continue;
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
      this.checkPartitions(n, broker.children, offset);
    }
  }

  /** `offset`: the broker's metadata offset (traced with the actors it starts). */
  private checkPartitions(n: SimNode, children: Record<string, unknown>, offset: number): void {
    for (const id in children) {
      const child = children[id];
      if (typeof child !== 'object' || child === null) continue;
      if (id.startsWith('partition:')) this.checkLeader(n, child, offset);
      else if (id.startsWith('follower:')) this.checkFollower(n, child, offset);
    }
  }

  private checkLeader(n: SimNode, child: object, offset: number): void {
    const snap = (child as { getSnapshot(): PartitionSnapshot }).getSnapshot();
    // 'open' (serving, draining or failed), not loading: a cheap look at the state value.
    if (snap.status !== 'active' || typeof snap.value !== 'object' || snap.value === null || !('open' in snap.value)) return;
    const ctx = snap.context;
    let seen = this.leaderActors.get(child);
    if (seen === undefined) {
      // First sight of this actor: the checks that do not change while it lives.
      const pid = partitionKey(ctx.topicId, ctx.partition);
      const leader = this.epochLeaders.get(`${pid}@${ctx.leaderEpoch}`);
      if (leader !== undefined && leader !== n.id) {
        this.violations.add(`n${n.id} leads ${ctx.topic}/${ctx.partition} at epoch ${ctx.leaderEpoch}, which names leader ${leader}`);
      }
      this.trace.event('partition', `n${n.id} leads ${ctx.topic}/${ctx.partition} epoch ${ctx.leaderEpoch} (ISR ${ctx.isr.join(',')}) from log end ${ctx.logEndOffset} (metadata ${offset})`);
      this.leaderActors.set(child, (seen = { pid, hw: -1, sinceMs: this.now(), checked: undefined }));
    }
    const pid = seen.pid;
    const hw = ctx.highWatermark;
    if (WATCH !== undefined && WATCH === `${ctx.topic}/${ctx.partition}`) this.watch(n, ctx, seen);
    const where = () => `${ctx.topic}/${ctx.partition} (leader n${n.id}, epoch ${ctx.leaderEpoch})`;
    if (hw < seen.hw) this.violations.add(`HW of ${where()} went from ${seen.hw} to ${hw}`);
    const grew = hw > seen.hw;
    if (grew) {
      seen.hw = hw;
      this.maxHw.set(pid, Math.max(hw, this.maxHw.get(pid) ?? hw));
    }
    if (hw === 0 || this.ledger.isDeleted(ctx.topic)) return;
    // After an unclean election a deposed leader's ISR members follow a log without its committed
    // records: only the newest leader's HW says something about them there.
    const facts = this.book.get(pid);
    if (facts !== undefined && !clean(facts) && ctx.leaderEpoch < facts.leaderEpoch) return;
    // The HW counts only what every ISR member has on disk (an fsynced append, or with
    // flush.mode=replicated an append, which that member's own power loss may take back). A disk's
    // log end only goes back by a truncation or a power loss: nothing to look at again otherwise.
    const c = seen.checked;
    if (c !== undefined && c.hw === hw && c.isr === ctx.isr && c.shrinks === this.diskShrinks) return;
    seen.checked = { hw, isr: ctx.isr, shrinks: this.diskShrinks };
    const nodes = this.cluster().nodes;
    const ownEnd = n.disk.partitions.get(pid)?.logEndOffset ?? 0;
    if (hw > ownEnd) this.violations.add(`HW ${hw} of ${where()} is above the log end ${ownEnd} on its own disk`);
    for (const id of ctx.isr) {
      if (id === n.id) continue;
      const end = nodes[id - 1]?.disk.partitions.get(pid)?.logEndOffset ?? 0;
      if (hw <= end) continue;
      if (volatileReplicas(facts) && (this.powerLossAt.get(`${id}/${pid}`) ?? -1) >= seen.sinceMs) continue;
      this.violations.add(`HW ${hw} of ${where()} is above the log end ${end} on n${id}'s disk (ISR ${ctx.isr.join(',')})`);
    }
    if (grew) this.ledger.leaderHw(pid, hw, n);
  }

  /** SIM_WATCH=topic/partition: every change of that partition's leaders' replication state, traced. */
  private watch(n: SimNode, ctx: PartitionContext, seen: LeaderSeen): void {
    const followers = Object.entries(ctx.followers).map(([id, f]) => `n${id}@${f.logEndOffset}`).join(' ');
    const disks = this.cluster().nodes.map((x) => `n${x.id}:${x.disk.partitions.get(seen.pid)?.logEndOffset ?? '-'}`).join(' ');
    const line = `n${n.id} epoch ${ctx.leaderEpoch}: HW ${ctx.highWatermark}, durable end ${ctx.logEndOffset}, ISR ${ctx.isr.join(',')}${ctx.pendingIsr === undefined ? '' : ` (pending ${ctx.pendingIsr.join(',')})`}, followers ${followers}; disks ${disks}`;
    if (line !== seen.watched) this.trace.event('watch', line);
    seen.watched = line;
  }

  /** A disk's log got shorter (a truncation): leaders' HWs are checked against the disks again. */
  truncated(): void {
    this.diskShrinks++;
  }

  private checkFollower(n: SimNode, child: object, offset: number): void {
    if (this.followerActors.has(child)) return;
    const snap = (child as { getSnapshot(): FollowerSnapshot }).getSnapshot();
    if (snap.status !== 'active' || snap.value === 'loading') return;
    this.followerActors.add(child);
    const ctx = snap.context;
    const pid = partitionKey(ctx.topicId, ctx.partition);
    const leader = this.epochLeaders.get(`${pid}@${ctx.leaderEpoch}`);
    const replicas = this.book.get(pid)?.replicas;
    const where = `n${n.id} follows ${ctx.topic}/${ctx.partition} at epoch ${ctx.leaderEpoch} from n${ctx.leaderId}`;
    if (leader !== undefined && leader !== ctx.leaderId) this.violations.add(`${where}, but that epoch names leader ${leader}`);
    if (ctx.leaderId === n.id) this.violations.add(`${where}: itself`);
    if (replicas !== undefined && !replicas.includes(n.id)) this.violations.add(`${where}, but it is not a replica (${replicas.join(',')})`);
    this.trace.event('partition', `${where} (log end ${ctx.logEndOffset}, metadata ${offset})`);
  }

  /** The leader actor serving the partition's newest epoch, with its node; undefined when none does. */
  private newestLeader(pid: string): { node: SimNode; ctx: PartitionContext } | undefined {
    const facts = this.book.get(pid);
    if (facts === undefined || facts.leader < 0) return undefined;
    const node = this.cluster().node(facts.leader);
    if (node.state === 'down') return undefined;
    const child = node.parts.broker?.getSnapshot().children[`partition:${pid}`];
    const snap = (child as { getSnapshot(): PartitionSnapshot } | undefined)?.getSnapshot();
    if (snap === undefined || snap.status !== 'active' || !snap.matches('open') || snap.context.leaderEpoch !== facts.leaderEpoch) return undefined;
    return { node, ctx: snap.context };
  }

  /**
   * ISR members agree with their leader byte for byte below its HW: the same batches (stamped base
   * offsets and leader epochs included) and the same epoch cache. `whole` (a quiescent cluster):
   * every replica must be in the ISR and hold the leader's whole log. Returns whether it held.
   */
  checkReplicasAgree(when: string, whole = false): boolean {
    for (const facts of this.book.all()) {
      if (this.ledger.isDeleted(facts.topic)) continue;
      const leader = this.newestLeader(facts.pid);
      if (leader === undefined) {
        if (!whole) continue;
        this.violations.add(`${when}: ${facts.topic}/${facts.partition} has no leader serving epoch ${facts.leaderEpoch}`);
        return false;
      }
      const { node, ctx } = leader;
      const mine = node.disk.partitions.get(facts.pid);
      const limit = whole ? (mine?.logEndOffset ?? 0) : ctx.highWatermark;
      const members = whole ? facts.replicas : ctx.isr;
      for (const id of members) {
        if (id === node.id) continue;
        const theirs = this.cluster().node(id).disk.partitions.get(facts.pid);
        const problem = this.compareLogs(mine, theirs, limit, whole);
        if (problem === undefined) continue;
        this.violations.add(`${when}: ${facts.topic}/${facts.partition}: n${id} disagrees with its leader n${node.id} (epoch ${ctx.leaderEpoch}) below ${whole ? 'the log end' : 'the HW'} ${limit}: ${problem}`);
        return false;
      }
    }
    return true;
  }

  private compareLogs(mine: PartitionData | undefined, theirs: PartitionData | undefined, limit: number, whole: boolean): string | undefined {
    const myEnd = mine?.logEndOffset ?? 0;
    const theirEnd = theirs?.logEndOffset ?? 0;
    if (whole && myEnd !== theirEnd) return `its log ends at ${theirEnd}, the leader's at ${myEnd}`;
    // Below the HW a member may lack records only when its own power loss took them (checked with
    // the HW, in checkLeader): compare what both have.
    const upTo = Math.min(limit, theirEnd, myEnd);
    const from = Math.max(mine?.logStartOffset ?? 0, theirs?.logStartOffset ?? 0);
    if (mine === undefined || theirs === undefined || upTo <= from) return undefined;
    for (let i = Math.max(0, floorIndex(mine.bases, from)); i < mine.batches.length && mine.bases[i]! < upTo; i++) {
      const base = mine.bases[i]!;
      const batch = mine.batches[i]!;
      const j = floorIndex(theirs.bases, base);
      const other = theirs.batches[j];
      if (other === undefined || theirs.bases[j] !== base) return `the leader has a batch at ${base}, it has ${j < 0 ? 'none' : `one at ${theirs.bases[j]}`}`;
      if (this.agreed.get(batch)?.has(other) === true) continue;
      if (!sameBytes(batch, other)) return `the batches at ${base} differ (${bytesDigest(batch)} vs ${bytesDigest(other)})`;
      let set = this.agreed.get(batch);
      if (set === undefined) this.agreed.set(batch, (set = new WeakSet()));
      set.add(other);
    }
    const epochs = (d: PartitionData) => d.epochs.filter((e) => e.startOffset >= from && e.startOffset < upTo).map((e) => `${e.epoch}@${e.startOffset}`);
    const [a, b] = [epochs(mine).join(','), epochs(theirs).join(',')];
    if (a !== b) return `epoch caches differ: leader ${a}, it ${b}`;
    return undefined;
  }

  /** Voters' applied indexes, for the liveness phase. */
  appliedBy(n: SimNode): number {
    return n.parts.raft?.status().appliedIndex ?? -1;
  }
}

type PartitionData = NonNullable<ReturnType<SimNode['disk']['partitions']['get']>>;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
