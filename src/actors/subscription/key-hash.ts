/**
 * Key hashes for Key_Shared: MurmurHash3 x86 32-bit (seed 0) of the key bytes, mod 65536 — the
 * same hash and range Pulsar uses for its sticky keys, so a key lands in the same slot in both.
 * A null key hashes like the empty key (every keyless record goes to one consumer, in order).
 */

/** Key_Shared hash range: hashes are 0..KEY_HASH_RANGE - 1. */
export const KEY_HASH_RANGE = 65_536;

const utf8 = new TextEncoder();

/** MurmurHash3 x86 32-bit of `bytes` with `seed`, as an unsigned 32-bit integer. */
export function murmur3(bytes: Uint8Array, seed = 0): number {
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  let h = seed >>> 0;
  const n = bytes.length;
  const blocks = n & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = n & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= bytes[blocks + 2]! << 16;
    if (tail >= 2) k ^= bytes[blocks + 1]! << 8;
    k ^= bytes[blocks]!;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  h ^= n;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A record key's Key_Shared hash, 0..65535. */
export function keyHash(key: Uint8Array | null): number {
  return murmur3(key ?? EMPTY) % KEY_HASH_RANGE;
}

/** The hash of a string's UTF-8 bytes, 0..65535 (consumer points on the hash ring). */
export function stringHash(s: string): number {
  return murmur3(utf8.encode(s)) % KEY_HASH_RANGE;
}

const EMPTY = new Uint8Array(0);
