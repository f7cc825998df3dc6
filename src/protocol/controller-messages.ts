/**
 * Broker <-> active controller messages (subjects `tm.<c>.controller.<op>`), and the cluster status
 * every node answers on `tm.<c>.status`. Same conventions as messages.ts: msgpack, a time budget on
 * every request, checked where the bytes enter.
 */
import { array, bool, bytes, int, object, oneOf, optional, str, type Infer, type Schema } from './validate.js';
import { FETCH_WAIT_MS_MAX, PAYLOAD_BYTES_MAX, REPLICATION_FACTOR_MAX, REQUEST_TIMEOUT_MS_MAX, TOPIC_PARTITIONS_MAX } from './messages.js';

const timeoutMs = int(1, REQUEST_TIMEOUT_MS_MAX);
const brokerId = int(0, 2 ** 31 - 1);
const epoch = int(0, Number.MAX_SAFE_INTEGER);
const offset = int(-1, Number.MAX_SAFE_INTEGER);

/** `incarnation` is random per process start: a retried registration of the same process gets the same epoch. */
/** `uncleanShutdown`: the broker's storage was not closed by the last process (NodeStorage.uncleanShutdown). */
export const registerBrokerRequest = object({ timeoutMs, brokerId, rack: str(255), incarnation: str(64), uncleanShutdown: optional(bool) });
export type RegisterBrokerRequest = Infer<typeof registerBrokerRequest>;
export const registerBrokerReply = object({ brokerEpoch: epoch });
export type RegisterBrokerReply = Infer<typeof registerBrokerReply>;

/** Copies of partitions awaiting a recovery election a heartbeat reports at most (more wait for the next). */
export const LOG_END_REPORTS_MAX = 512;
/** A broker's copy of a partition awaiting a recovery election (planner.planRecoveryElections). */
export const logEndReport = object({ topicId: str(32), partition: int(0, TOPIC_PARTITIONS_MAX - 1), lastEpoch: int(-1, 2 ** 31 - 1), logEndOffset: offset });
export type LogEndReportWire = Infer<typeof logEndReport>;
/**
 * `metadataOffset`: the last metadata offset the broker has applied (-1 for none). `logEnds`: its
 * copies of the partitions its metadata shows awaiting a recovery election.
 */
export const heartbeatRequest = object({ timeoutMs, brokerId, brokerEpoch: epoch, metadataOffset: offset, logEnds: optional(array(logEndReport, LOG_END_REPORTS_MAX)) });
export type HeartbeatRequest = Infer<typeof heartbeatRequest>;
/**
 * `metadataOffset`: the controller's committed metadata offset when it answered. A broker told it
 * is unfenced starts no partition actor before its own metadata reaches it (broker/machine.ts).
 */
export const heartbeatReply = object({ fenced: bool, metadataOffset: optional(offset) });
export type HeartbeatReply = Infer<typeof heartbeatReply>;

/** Chunks one metadata snapshot to a broker may take at most. */
export const SNAPSHOT_CHUNKS_MAX = 4096;
/**
 * `fromOffset`: the last offset the follower has (-1: none, send a snapshot). Long-polls up to
 * maxWaitMs. `snapshot`: the follower is reading a chunked snapshot taken at `offset` and asks for
 * chunk `chunk` (if the controller no longer has that snapshot it starts another, at chunk 0).
 */
export const metadataFetchRequest = object({
  timeoutMs,
  brokerId,
  fromOffset: offset,
  maxWaitMs: int(0, FETCH_WAIT_MS_MAX),
  snapshot: optional(object({ offset, chunk: int(1, SNAPSHOT_CHUNKS_MAX - 1) })),
  /**
   * Answer only after a barrier entry commits in this controller's term (no waiting otherwise):
   * a deposed controller that has not noticed yet cannot commit one, so the reply has everything
   * committed before the request. A broker's sync for a client's `confirm` sends it.
   */
  barrier: optional(bool),
});
export type MetadataFetchRequest = Infer<typeof metadataFetchRequest>;
/**
 * `snapshot`: true when `entries` holds one entry that rebuilds the whole image as of `offset` (the
 * follower starts over from it); false when `entries` are the committed entries after `fromOffset`.
 */
export const metadataFetchReply = object({
  offset,
  snapshot: bool,
  entries: array(object({ offset, payload: bytes(PAYLOAD_BYTES_MAX) }), 10_000),
  /** With `snapshot`: this reply's entry is chunk `index` of `count` (records of the image at `offset`). */
  chunk: optional(object({ index: int(0, SNAPSHOT_CHUNKS_MAX - 1), count: int(1, SNAPSHOT_CHUNKS_MAX) })),
});
export type MetadataFetchReply = Infer<typeof metadataFetchReply>;

/**
 * The leader of a partition asks to change its ISR (Kafka's AlterPartition). `leaderEpoch` and
 * `partitionEpoch` are what the leader last saw: if the partition changed since, the controller
 * refuses (FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION) and the leader waits for new metadata.
 */
export const alterPartitionRequest = object({
  timeoutMs,
  brokerId,
  brokerEpoch: epoch,
  topicId: str(32),
  partition: int(0, TOPIC_PARTITIONS_MAX - 1),
  leaderEpoch: int(0, 2 ** 31 - 1),
  partitionEpoch: int(0, 2 ** 31 - 1),
  isr: array(brokerId, REPLICATION_FACTOR_MAX),
});
export type AlterPartitionRequest = Infer<typeof alterPartitionRequest>;
export const alterPartitionReply = object({ leaderEpoch: int(0, 2 ** 31 - 1), partitionEpoch: int(0, 2 ** 31 - 1), isr: array(brokerId, REPLICATION_FACTOR_MAX), metadataOffset: offset });
export type AlterPartitionReply = Infer<typeof alterPartitionReply>;

/**
 * Controlled shutdown: the broker asks the controller to move every leadership it holds to another
 * in-sync replica and to take it out of the ISRs, and stops once it leads nothing (or its budget
 * ends). `remainingLeaders` counts the partitions it still leads because no other replica can.
 */
export const controlledShutdownRequest = object({ timeoutMs, brokerId, brokerEpoch: epoch });
export type ControlledShutdownRequest = Infer<typeof controlledShutdownRequest>;
export const controlledShutdownReply = object({ remainingLeaders: int(0, Number.MAX_SAFE_INTEGER), metadataOffset: offset });
export type ControlledShutdownReply = Infer<typeof controlledShutdownReply>;

/** Controller voters in a status reply's voter set, upper bound. */
const VOTERS_MAX = 64;

export const statusRequest = object({ timeoutMs });
export type StatusRequest = Infer<typeof statusRequest>;

export interface NodeStatus {
  nodeId: number;
  roles: Array<'broker' | 'controller'>;
  /**
   * Present on controller voters. Optional fields (newer nodes): `voters` is the configured voter
   * set; the active controller (Raft leader) adds `followers`, its view of each other voter (match
   * index, ms since its last reply), so `cluster status` can show a voter that does not answer.
   */
  voter?: {
    role: string;
    term: number;
    leaderId: number;
    commitIndex: number;
    lastIndex: number;
    voters?: number[];
    followers?: Array<{ id: number; matchIndex: number; heardMsAgo: number }>;
  };
  /** Present on brokers. */
  broker?: { brokerEpoch: number; fenced: boolean; metadataOffset: number; partitionsLed: number };
}

export const nodeStatus: Schema<NodeStatus> = (v, path) => {
  const o = object({
    nodeId: brokerId,
    roles: array(oneOf('broker', 'controller'), 2),
    voter: optional(
      object({
        role: str(32),
        term: epoch,
        leaderId: int(-1, 2 ** 31 - 1),
        commitIndex: int(0, Number.MAX_SAFE_INTEGER),
        lastIndex: int(0, Number.MAX_SAFE_INTEGER),
        voters: optional(array(brokerId, VOTERS_MAX)),
        followers: optional(array(object({ id: brokerId, matchIndex: int(0, Number.MAX_SAFE_INTEGER), heardMsAgo: int(0, Number.MAX_SAFE_INTEGER) }), VOTERS_MAX)),
      }),
    ),
    broker: optional(object({ brokerEpoch: offset, fenced: bool, metadataOffset: offset, partitionsLed: int(0, 1e9) })),
  })(v, path);
  const out: NodeStatus = { nodeId: o.nodeId, roles: o.roles };
  if (o.voter !== undefined) {
    const { voters, followers, ...voter } = o.voter;
    out.voter = voter;
    if (voters !== undefined) out.voter.voters = voters;
    if (followers !== undefined) out.voter.followers = followers;
  }
  if (o.broker !== undefined) out.broker = o.broker;
  return out;
};
