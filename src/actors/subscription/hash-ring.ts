/**
 * Key_Shared's consistent hash ring (Pulsar 4's default sticky-key selector): each consumer puts
 * RING_POINTS_PER_CONSUMER points on the 0..65535 ring, point i = stringHash(name + '#' + i), and
 * owns the hashes from the previous point (exclusive) up to its own (inclusive), wrapping round.
 * A join or leave moves only the hashes next to the points that come or go (about 1/n of them).
 *
 * Points depend on the consumer name, so a consumer that reconnects under the same name gets its
 * keys back. Consumers sharing a name get a name index (0, 1, ...; the first keeps the plain
 * formula, the others hash name + '#' + index + '#' + i) so they do not fall on the same points.
 * Equal points go to the lower consumerId.
 *
 * Lookups are O(1): the owner of every hash is precomputed into a 64 Ki table on each membership
 * change (O(P log P + 65536) for P points).
 */
import { KEY_HASH_RANGE, stringHash } from './key-hash.js';

export const RING_POINTS_PER_CONSUMER = 100;

/** One consumer's points on the ring. */
export function ringPoints(consumerName: string, nameIndex: number): Uint16Array {
  const points = new Uint16Array(RING_POINTS_PER_CONSUMER);
  const prefix = nameIndex === 0 ? `${consumerName}#` : `${consumerName}#${nameIndex}#`;
  for (let i = 0; i < RING_POINTS_PER_CONSUMER; i++) points[i] = stringHash(prefix + i);
  return points;
}

export interface RingMember {
  consumerId: string;
  points: Uint16Array;
}

/** 2^20: a tie-break rank below it packs next to the point in one sortable number. */
const RANK_SPAN = 1_048_576;

export class HashRing {
  private readonly ids: string[];
  private readonly owners = new Int32Array(KEY_HASH_RANGE);

  constructor(members: readonly RingMember[]) {
    const sorted = [...members].sort((a, b) => (a.consumerId < b.consumerId ? -1 : a.consumerId > b.consumerId ? 1 : 0));
    this.ids = sorted.map((m) => m.consumerId);
    if (sorted.length === 0) {
      this.owners.fill(-1);
      return;
    }
    const keys = new Float64Array(sorted.length * RING_POINTS_PER_CONSUMER);
    let n = 0;
    sorted.forEach((m, rank) => {
      for (const p of m.points) keys[n++] = p * RANK_SPAN + rank;
    });
    keys.sort();
    let j = 0;
    for (let h = 0; h < KEY_HASH_RANGE; h++) {
      while (j < n && Math.floor(keys[j]! / RANK_SPAN) < h) j++;
      const key = j < n ? keys[j]! : keys[0]!;
      this.owners[h] = key % RANK_SPAN;
    }
  }

  /** The consumer owning `hash`; undefined on an empty ring. */
  owner(hash: number): string | undefined {
    const i = this.owners[hash]!;
    return i < 0 ? undefined : this.ids[i];
  }
}
