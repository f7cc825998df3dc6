/**
 * What a healed cluster must reach within a bound once the faults stop: every node running, one
 * active controller that every voter follows, every voter caught up with everything ever committed,
 * every broker registered, unfenced and caught up with the controller's metadata, every partition
 * of every topic online (its leader serving it at the current epoch) with every replica back in
 * its ISR and following that leader, no producer send left unsettled, and then every follower's
 * log ending where its leader's does, with the leader's high watermark there too.
 * `unmet()` names the first condition that does not hold yet.
 */
import type { FollowerContext } from '../../src/actors/partition/follower.js';
import type { PartitionContext } from '../../src/actors/partition/machine.js';
import { topicByName } from '../../src/metadata/image.js';
import type { SafetyChecker } from './checkers.js';
import type { SimCluster } from './cluster.js';
import type { Workload } from './workload.js';

/** How long a healed cluster may take to converge, simulated ms. */
export const LIVENESS_BOUND_MS = 30_000;
/** How long the probe records may take once it has, simulated ms. */
export const PROBE_BOUND_MS = 15_000;

type ChildSnapshot = { status: string; value: unknown; context: PartitionContext; matches(state: string): boolean };
type FollowerSnapshot = { status: string; context: FollowerContext; value: unknown };

export function unmet(cluster: SimCluster, checker: SafetyChecker, workload: Workload): string | undefined {
  const stopped = cluster.nodes.find((n) => n.state !== 'up' || n.paused);
  if (stopped !== undefined) return `n${stopped.id} is ${stopped.paused ? 'paused' : stopped.state}`;
  const voters = cluster.nodes.filter((n) => n.parts.raft !== undefined);
  const active = voters.filter((n) => {
    const s = n.parts.raft!.status();
    return s.role === 'leader' && s.leaderReady;
  });
  if (active.length !== 1) return `${active.length} active controllers`;
  const leader = active[0]!;
  const lead = leader.parts.raft!.status();
  for (const v of voters) {
    const s = v.parts.raft!.status();
    if (s.term !== lead.term || s.leaderId !== leader.id) return `voter n${v.id} is in term ${s.term} following ${s.leaderId}, not n${leader.id} in ${lead.term}`;
    if (s.appliedIndex < checker.maxCommitted) return `voter n${v.id} applied ${s.appliedIndex} of ${checker.maxCommitted} committed entries`;
  }
  const image = leader.parts.metadata!.image();
  for (const b of cluster.nodes.filter((n) => n.parts.broker !== undefined)) {
    const ctx = b.parts.broker!.getSnapshot().context;
    if (ctx.brokerEpoch < 0 || ctx.fenced || image.brokers.get(b.id)?.fenced !== false) return `broker n${b.id} is not registered and unfenced`;
    if (ctx.image.offset !== image.offset) return `broker n${b.id} has metadata ${ctx.image.offset} of ${image.offset}`;
  }
  const served: Array<{ name: string; pid: string; leader: number; followers: number[]; ctx: PartitionContext }> = [];
  // Every topic that may exist, not only those the workload knows are live: a creation whose
  // answer was lost can still commit, and the final check holds every committed topic to the rules.
  for (const { name, live } of workload.undeletedTopics()) {
    const topic = topicByName(image, name);
    if (topic === undefined) {
      if (live) return `topic ${name} is missing from the controller's image`;
      continue;
    }
    for (const p of topic.partitions) {
      if (p.leader < 0) return `${name}/${p.partition} is offline`;
      const children = cluster.node(p.leader).parts.broker?.getSnapshot().children ?? {};
      const actor = children[`partition:${topic.topicId}/${p.partition}`];
      const snap = (actor as { getSnapshot(): ChildSnapshot } | undefined)?.getSnapshot();
      if (snap === undefined || !snap.matches('open.log.serving') || snap.context.leaderEpoch !== p.leaderEpoch) {
        const state = snap === undefined ? 'no leader actor' : `its actor is at epoch ${snap.context.leaderEpoch}, ${snap.status} ${JSON.stringify(snap.value)}`;
        return `${name}/${p.partition} is not served by its leader n${p.leader} at epoch ${p.leaderEpoch} (${state})`;
      }
      if (p.isr.length !== p.replicas.length) return `${name}/${p.partition} has ISR ${p.isr.join(',')} of replicas ${p.replicas.join(',')}`;
      const followers = p.replicas.filter((id) => id !== p.leader);
      for (const id of followers) {
        const child = cluster.node(id).parts.broker?.getSnapshot().children[`follower:${topic.topicId}/${p.partition}`];
        const f = (child as { getSnapshot(): FollowerSnapshot } | undefined)?.getSnapshot();
        if (f === undefined || f.status !== 'active' || f.context.leaderEpoch !== p.leaderEpoch || f.context.leaderId !== p.leader) {
          return `n${id} does not follow ${name}/${p.partition} at epoch ${p.leaderEpoch}`;
        }
      }
      served.push({ name: `${name}/${p.partition}`, pid: `${topic.topicId}/${p.partition}`, leader: p.leader, followers, ctx: snap.context });
    }
  }
  const pending = workload.pending();
  if (pending > 0) return `${pending} producer send(s) unsettled`;
  for (const s of served) {
    const end = cluster.node(s.leader).disk.partitions.get(s.pid)?.logEndOffset ?? 0;
    for (const id of s.followers) {
      const theirs = cluster.node(id).disk.partitions.get(s.pid)?.logEndOffset ?? 0;
      if (theirs !== end) return `${s.name}: n${id}'s log ends at ${theirs}, its leader n${s.leader}'s at ${end}`;
    }
    if (s.ctx.highWatermark !== end) return `${s.name}: the HW ${s.ctx.highWatermark} of leader n${s.leader} is below its log end ${end}`;
  }
  // Every subscription has received every record (subscriptions.ts).
  const byName = new Map(served.map((s) => [s.name, s]));
  return workload.subscribers.unmet(
    cluster,
    (topic, partition) => {
      const s = byName.get(`${topic}/${partition}`);
      return s === undefined ? undefined : { hw: s.ctx.highWatermark, leader: s.leader, pid: s.pid };
    },
    (topic) => workload.partitionsOf(topic),
  );
}
