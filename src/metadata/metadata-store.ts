/**
 * The metadata seam. Brokers read the committed image and follow its changes; the controller
 * proposes records. Today `LocalMetadataStore` commits by appending to the node's own metadata log;
 * with the controller quorum, a Raft-backed store commits on a majority and every node follows the
 * same records through the same interface.
 */
import type { MetadataLogStore } from '../storage/partition-store.js';
import { applyRecord, emptyImage, type MetadataImage } from './image.js';
import { decodeRecord, encodeRecord, type MetadataRecord } from './records.js';

export type MetadataListener = (image: MetadataImage, records: readonly MetadataRecord[]) => void;

export interface MetadataStore {
  /** The latest committed image. */
  image(): MetadataImage;
  /** Commits records (all or none) and resolves with the image that includes them. Controller only. */
  propose(records: readonly MetadataRecord[]): Promise<MetadataImage>;
  /** Called after every commit, in commit order. Returns an unsubscribe function. */
  subscribe(listener: MetadataListener): () => void;
}

/** Entries replayed per read while loading the log at startup. */
const REPLAY_CHUNK_ENTRIES = 1000;

export async function openLocalMetadataStore(log: MetadataLogStore): Promise<MetadataStore> {
  let image = emptyImage;
  for (let from = 0; from <= log.lastIndex(); ) {
    const entries = await log.read(from, REPLAY_CHUNK_ENTRIES);
    if (entries.length === 0) break;
    for (const bytes of entries) image = applyRecord(image, decodeRecord(bytes), from++);
  }
  const listeners = new Set<MetadataListener>();
  let chain: Promise<unknown> = Promise.resolve();

  const commit = async (records: readonly MetadataRecord[]): Promise<MetadataImage> => {
    const first = log.lastIndex() + 1;
    await log.append(records.map(encodeRecord), { sync: true });
    records.forEach((r, i) => (image = applyRecord(image, r, first + i)));
    for (const listener of listeners) listener(image, records);
    return image;
  };

  return {
    image: () => image,
    propose(records) {
      const result = chain.then(() => commit(records));
      chain = result.catch(() => undefined);
      return result;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
