/**
 * The quorum's one subject, built here until it moves into src/protocol/subjects.ts with the rest:
 *
 *   tm.<cluster>.raft.<voterId>     every Raft message addressed to that voter (one-way publish)
 *
 * Each voter subscribes to its own subject only. Messages are plain publishes, never requests: the
 * protocol treats the fabric as lossy, reordering and duplicating, and every reply is a message of
 * its own to the sender's subject.
 */

/** `prefix` is `Subjects.prefix`, i.e. `tm.<cluster>`. */
export function raftSubject(prefix: string, voterId: number): string {
  return `${prefix}.raft.${voterId}`;
}
