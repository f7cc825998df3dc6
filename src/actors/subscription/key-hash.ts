/** Key_Shared's hash of a record key into 0..65535 (placeholder until the dispatcher lands). */
export function keyHash(key: Uint8Array | null): number {
  let h = 0x811c9dc5;
  if (key !== null) for (const b of key) h = Math.imul(h ^ b, 0x01000193);
  return (h >>> 0) % 65536;
}
