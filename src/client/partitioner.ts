/**
 * Which partition a record goes to. Keyed records: Kafka's default partitioner exactly
 * (`toPositive(Utils.murmur2(keyBytes)) % numPartitions`), so a key lands where a Kafka client would
 * put it. Keyless records: sticky round robin — one partition until its open batch closes, then
 * the next one (Kafka's sticky partitioner, KIP-480, without the load weighting).
 */
import type { Random } from '../runtime/ports.js';

const M = 0x5bd1e995;
const SEED = 0x9747b28c;

/** Kafka's `Utils.murmur2`: a signed 32-bit result, like Java's int. */
export function murmur2(data: Uint8Array): number {
  const length = data.length;
  let h = SEED ^ length;
  const tail = length & ~3;
  for (let i = 0; i < tail; i += 4) {
    let k = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M);
    h ^= k;
  }
  const rest = length & 3;
  if (rest === 3) h ^= data[tail + 2]! << 16;
  if (rest >= 2) h ^= data[tail + 1]! << 8;
  if (rest >= 1) {
    h ^= data[tail]!;
    h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

/** Kafka's `Utils.toPositive`: clears the sign bit (not Math.abs). */
export function toPositive(n: number): number {
  return n & 0x7fffffff;
}

/** The partition Kafka's default partitioner picks for a key. */
export function partitionForKey(key: Uint8Array, partitionCount: number): number {
  return toPositive(murmur2(key)) % partitionCount;
}

export class Partitioner {
  private sticky: number | undefined;
  private next: number;

  constructor(random: Random) {
    // Start the round robin somewhere random so many producers do not all pile onto partition 0.
    this.next = Math.floor(random.next() * 0x7fffffff);
  }

  partition(key: Uint8Array | null, partitionCount: number): number {
    if (key !== null) return partitionForKey(key, partitionCount);
    if (this.sticky === undefined || this.sticky >= partitionCount) {
      this.sticky = this.next % partitionCount;
      this.next = (this.next + 1) % 0x7fffffff;
    }
    return this.sticky;
  }

  /** A batch closed on `partition`: keyless records move on to the next partition. */
  batchClosed(partition: number): void {
    if (this.sticky === partition) this.sticky = undefined;
  }
}
