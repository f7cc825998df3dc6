/**
 * The metadata seam. Brokers read the committed image and follow its changes (`MetadataView`); the
 * active controller also proposes records (`MetadataStore`). `createQuorumMetadataStore` commits
 * through the controller quorum's Raft log: one proposal is one Raft entry, committed on a majority,
 * and every voter applies the same entries in the same order. `createMemoryMetadataStore` commits
 * at once, for unit tests.
 */
import { applyRecords, emptyImage, imageRecords, type MetadataImage } from './image.js';
import { decodeEntry, encodeEntry, type MetadataRecord } from './records.js';
import { applyEntry, entryPayloads, followState, type FollowState } from './transactions.js';

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
/** Payload bytes of those entries kept at most (a transaction's parts are large), bytes. */
export const RECENT_ENTRIES_BYTES_MAX = 32 * 1024 * 1024;
/** Payloads in one proposal (the quorum's proposalPayloadsMax default); longer transactions take several. */
const PROPOSAL_PAYLOADS_MAX = 256;

export interface QuorumMetadataStore extends MetadataStore {
  /** Feed committed Raft entries here, in order (the Raft node's commit listener). */
  apply(entries: readonly CommittedEntry[]): void;
  /**
   * Offset of the last committed entry applied: past `image().offset` while a transaction is open
   * (its parts are applied but the image shows them only once the last one is).
   */
  lastOffset(): number;
  /** The largest payload of one entry, bytes (also the size of a snapshot chunk sent to brokers). */
  readonly entryBytesMax: number;
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

/**
 * `entryBytesMax`: the largest payload one Raft entry may carry (the quorum's appendBytesMax);
 * changes larger than that are committed as a transaction of several entries (transactions.ts).
 */
export function createQuorumMetadataStore(propose: (payloads: readonly Uint8Array[]) => Promise<unknown>, entryBytesMax = 512 * 1024): QuorumMetadataStore {
  let state: FollowState = followState(emptyImage);
  const listeners = new Set<MetadataListener>();
  const recent: CommittedEntry[] = [];
  let recentBytes = 0;
  /** The last proposal in flight: the next one starts after it settles. */
  let proposing: Promise<unknown> | undefined;
  return {
    image: () => state.image,
    lastOffset: () => state.lastOffset,
    entryBytesMax,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    apply(entries) {
      for (const entry of entries) {
        // Empty payloads are the no-ops a new Raft leader appends: they only move the offset (and
        // abort a transaction left open by the leader before).
        const { state: next, applied } = applyEntry(state, entry.index, entry.payload);
        state = next;
        recent.push(entry);
        recentBytes += entry.payload.length;
        while (recent.length > RECENT_ENTRIES_MAX || (recent.length > 1 && recentBytes > RECENT_ENTRIES_BYTES_MAX)) recentBytes -= recent.shift()!.payload.length;
        if (applied === undefined) continue;
        for (const listener of listeners) listener(state.image, applied);
      }
    },
    entriesAfter(offset, max) {
      if (offset >= state.lastOffset) return [];
      const first = recent[0];
      if (first === undefined || first.index > offset + 1) return undefined;
      const start = recent.findIndex((e) => e.index > offset);
      return recent.slice(start, start + max);
    },
    snapshot() {
      // Never inside an open transaction: the image's offset is before it, so the log keeps its parts.
      return { index: state.image.offset, data: encodeEntry(imageRecords(state.image)) };
    },
    install(index, data) {
      const records = decodeEntry(data);
      state = followState(applyRecords(emptyImage, records, index));
      // Brokers behind the snapshot get the image (entriesAfter says so), not the entries it replaced.
      recent.length = 0;
      recentBytes = 0;
      for (const listener of listeners) listener(state.image, records);
    },
    propose(records) {
      // Resolves once committed and applied here, so the image includes the records. No records is
      // a barrier: an entry that only moves the offset, committed to prove this voter still leads.
      // A change too large for one entry goes as a transaction; its parts are proposed in order,
      // and calls are serialized here (the controller's jobs and the metadata server's barriers
      // both propose), so only a leader change can come between them, and that aborts it.
      const go = async () => {
        const payloads = entryPayloads(records, entryBytesMax);
        for (let i = 0; i < payloads.length; i += PROPOSAL_PAYLOADS_MAX) await propose(payloads.slice(i, i + PROPOSAL_PAYLOADS_MAX));
        return state.image;
      };
      // Idle: start now, in this call (callers and tests rely on a proposal being on its way).
      const run = proposing === undefined ? go() : proposing.then(go);
      const settled = run.then(
        () => undefined,
        () => undefined,
      );
      proposing = settled;
      void settled.then(() => {
        if (proposing === settled) proposing = undefined;
      });
      return run;
    },
  };
}

/** Commits at once; for unit tests of the actors that follow metadata. */
export function createMemoryMetadataStore(entryBytesMax?: number): QuorumMetadataStore {
  let next = 1;
  const store: QuorumMetadataStore = createQuorumMetadataStore(async (payloads) => {
    store.apply(payloads.map((payload) => ({ index: next++, payload })));
  }, entryBytesMax);
  return store;
}
