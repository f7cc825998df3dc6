/** A broker's copy of the metadata image, kept current by the metadata fetcher. */
import { emptyImage, type MetadataImage } from './image.js';
import type { MetadataListener, MetadataView } from './metadata-store.js';
import type { MetadataRecord } from './records.js';

export interface FollowedView extends MetadataView {
  /** Installs a newer image (the fetcher applied entries or a snapshot). */
  replace(image: MetadataImage, records: readonly MetadataRecord[]): void;
  /**
   * The fetcher reached the controller's committed offset and keeps long-polling: until `untilMs`
   * (node clock) this view may call its image current, so a topic missing from it does not exist.
   */
  markCaughtUp(untilMs: number): void;
  /** Whether the image was current as of `nowMs` (see markCaughtUp). */
  caughtUp(nowMs: number): boolean;
}

export function createFollowedView(): FollowedView {
  let image = emptyImage;
  let caughtUpUntilMs = -1;
  const listeners = new Set<MetadataListener>();
  return {
    image: () => image,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    markCaughtUp(untilMs) {
      caughtUpUntilMs = Math.max(caughtUpUntilMs, untilMs);
    },
    caughtUp: (nowMs) => nowMs <= caughtUpUntilMs,
    replace(next, records) {
      image = next;
      for (const listener of listeners) listener(image, records);
    },
  };
}
