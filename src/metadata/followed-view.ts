/** A broker's copy of the metadata image, kept current by the metadata fetcher. */
import { emptyImage, type MetadataImage } from './image.js';
import type { MetadataListener, MetadataView } from './metadata-store.js';
import type { MetadataRecord } from './records.js';

export interface FollowedView extends MetadataView {
  /** Installs a newer image (the fetcher applied entries or a snapshot). */
  replace(image: MetadataImage, records: readonly MetadataRecord[]): void;
  /**
   * Asks the controller once, without waiting, for what the broker lacks (single flight: at most one
   * sync running and one queued, which starts after it, so every caller's sync began after its
   * call). Resolves true if the broker then has everything the controller had committed; false if
   * not, if no fetcher runs, or on any failure.
   */
  sync(timeoutMs: number): Promise<boolean>;
  /** The metadata fetcher plugs its one-shot fetch in here while it runs. */
  setSyncer(syncer: ((timeoutMs: number) => Promise<boolean>) | undefined): void;
}

export function createFollowedView(): FollowedView {
  let image = emptyImage;
  let syncer: ((timeoutMs: number) => Promise<boolean>) | undefined;
  let running: Promise<boolean> | undefined;
  let queued: Promise<boolean> | undefined;
  const start = (timeoutMs: number): Promise<boolean> => {
    const run = syncer === undefined ? Promise.resolve(false) : syncer(timeoutMs).catch(() => false);
    running = run;
    void run.then(() => {
      if (running === run) running = undefined;
    });
    return run;
  };
  const listeners = new Set<MetadataListener>();
  return {
    image: () => image,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    setSyncer(next) {
      syncer = next;
    },
    sync(timeoutMs) {
      if (running === undefined) return start(timeoutMs);
      queued ??= running.then(() => {
        queued = undefined;
        return start(timeoutMs);
      });
      return queued;
    },
    replace(next, records) {
      image = next;
      for (const listener of listeners) listener(image, records);
    },
  };
}
