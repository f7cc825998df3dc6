/**
 * The metadata seam. Brokers read the committed image and follow its changes (`MetadataView`); the
 * active controller also proposes records (`MetadataStore`). `createQuorumMetadataStore` commits
 * through the controller quorum's Raft log: one proposal is one Raft entry, committed on a majority,
 * and every voter applies the same entries in the same order. `createMemoryMetadataStore` commits
 * at once, for unit tests.
 */
import { applyRecords, emptyImage, imageRecords, type MetadataImage } from './image.js';
import { decodeEntry, encodeEntry, type MetadataRecord } from './records.js';

export type MetadataListener = (image: MetadataImage, records: readonly MetadataRecord[]) => void;

export interface MetadataView {
  /** The latest committed image this node has. */
  image(): MetadataImage;
  /** Called after every change, in commit order. Returns an unsubscribe function. */
  subscribe(listener: MetadataListener): () => void;
}

export interface MetadataStore extends MetadataView {
  /**
   * Commits records (all or none) and resolves with the image that includes them. Active controller
   * only. With no records it commits a barrier (an entry that only moves the offset): it resolves
   * only if this controller still leads after everything it decided before the call.
   */
  propose(records: readonly MetadataRecord[]): Promise<MetadataImage>;
}

/** A committed metadata entry as the quorum delivers it. */
export interface CommittedEntry {
  readonly index: number;
  readonly payload: Uint8Array;
}

/** Committed entries kept in memory for brokers' incremental fetches; older ones get a snapshot. */
export const RECENT_ENTRIES_MAX = 1000;

export interface QuorumMetadataStore extends MetadataStore {
  /** Feed committed Raft entries here, in order (the Raft node's commit listener). */
  apply(entries: readonly CommittedEntry[]): void;
  /** Entries after `offset` if they are all still kept in memory; undefined means: send a snapshot. */
  entriesAfter(offset: number, max: number): CommittedEntry[] | undefined;
  /**
   * The Raft snapshot of the image (RaftStateMachine.snapshot): the records that rebuild it from
   * the empty image, encoded like one entry, at the image's offset.
   */
  snapshot(): { index: number; data: Uint8Array };
  /**
   * Replaces the image with a Raft snapshot's (RaftStateMachine.install): the empty image plus its
   * records, at offset `index`. Listeners get the new image with those records.
   */
  install(index: number, data: Uint8Array): void;
}

export function createQuorumMetadataStore(propose: (payloads: readonly Uint8Array[]) => Promise<unknown>): QuorumMetadataStore {
  let image = emptyImage;
  const listeners = new Set<MetadataListener>();
  const recent: CommittedEntry[] = [];
  return {
    image: () => image,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    apply(entries) {
      for (const entry of entries) {
        // Empty payloads are the no-ops a new Raft leader appends: they only move the offset.
        const records = entry.payload.length === 0 ? [] : decodeEntry(entry.payload);
        image = applyRecords(image, records, entry.index);
        recent.push(entry);
        if (recent.length > RECENT_ENTRIES_MAX) recent.shift();
        for (const listener of listeners) listener(image, records);
      }
    },
    entriesAfter(offset, max) {
      if (offset >= image.offset) return [];
      const first = recent[0];
      if (first === undefined || first.index > offset + 1) return undefined;
      const start = recent.findIndex((e) => e.index > offset);
      return recent.slice(start, start + max);
    },
    snapshot() {
      return { index: image.offset, data: encodeEntry(imageRecords(image)) };
    },
    install(index, data) {
      const records = decodeEntry(data);
      image = applyRecords(emptyImage, records, index);
      // Brokers behind the snapshot get the image (entriesAfter says so), not the entries it replaced.
      recent.length = 0;
      for (const listener of listeners) listener(image, records);
    },
    async propose(records) {
      // Resolves once committed and applied here, so the image includes the records. No records is
      // a barrier: an entry that only moves the offset, committed to prove this voter still leads.
      await propose([encodeEntry(records)]);
      return image;
    },
  };
}

/** Commits at once; for unit tests of the actors that follow metadata. */
export function createMemoryMetadataStore(): QuorumMetadataStore {
  let next = 1;
  const store: QuorumMetadataStore = createQuorumMetadataStore(async (payloads) => {
    store.apply(payloads.map((payload) => ({ index: next++, payload })));
  });
  return store;
}
