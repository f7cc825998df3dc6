/**
 * The node-wide bound on produce bytes that leaders have accepted and not yet settled (answered, or
 * expired and on disk): `pendingAppendBytesMax` bounds one partition, this bounds their sum, so a
 * node leading 2,000 partitions cannot hold 2,000 x 64 MiB. Built once per node by the composition
 * root (node.ts) and handed to every leader actor in its input; never a module-level singleton, so
 * simulated nodes in one process each have their own.
 *
 * It is a port-like counter, not an actor: a leader's `queueFull` guard asks `fits()` and the
 * action that accepts the batch reserves in the same synchronous step, so no other leader can take
 * the room in between (an actor round trip would need a reservation protocol to get the same). The
 * machine stays pure in that it only reserves and releases from actions enqueued as effects, never
 * while computing a transition. Each leader holds a lease; stopping the actor, however it stops,
 * closes the lease (a callback actor's cleanup), which gives back whatever it still held.
 */
import { assert } from '../../protocol/errors.js';

/** Default of the node option `nodePendingAppendBytesMax`, bytes (256 MiB). */
export const NODE_PENDING_APPEND_BYTES_MAX_DEFAULT = 256 * 1024 * 1024;

export interface PendingBytesLease {
  /** Bytes this lease holds now. */
  readonly heldBytes: number;
  reserve(bytes: number): void;
  release(bytes: number): void;
  /** Gives back everything held; the lease takes no more. Idempotent. */
  close(): void;
}

export interface PendingBytesBudget {
  readonly limitBytes: number;
  /** Bytes held by every lease together. */
  readonly usedBytes: number;
  /** Whether `bytes` more fit under the limit now. */
  fits(bytes: number): boolean;
  /** A new holder's share (one per leader actor). */
  lease(): PendingBytesLease;
}

export function createPendingBytesBudget(limitBytes: number): PendingBytesBudget {
  assert(Number.isSafeInteger(limitBytes) && limitBytes > 0, `pending bytes budget must be a positive integer, got ${limitBytes}`);
  let usedBytes = 0;
  return {
    limitBytes,
    get usedBytes() {
      return usedBytes;
    },
    fits: (bytes) => usedBytes + bytes <= limitBytes,
    lease() {
      let held = 0;
      let closed = false;
      return {
        get heldBytes() {
          return held;
        },
        reserve(bytes) {
          assert(!closed, 'reserve on a closed pending-bytes lease');
          assert(Number.isSafeInteger(bytes) && bytes >= 0, `reserve of ${bytes} bytes`);
          held += bytes;
          usedBytes += bytes;
        },
        release(bytes) {
          if (closed) return;
          assert(Number.isSafeInteger(bytes) && bytes >= 0 && bytes <= held, `release of ${bytes} bytes from a lease holding ${held}`);
          held -= bytes;
          usedBytes -= bytes;
        },
        close() {
          if (closed) return;
          closed = true;
          usedBytes -= held;
          held = 0;
        },
      };
    },
  };
}
