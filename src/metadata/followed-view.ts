/** A broker's copy of the metadata image, kept current by the metadata fetcher. */
import { emptyImage, type MetadataImage } from './image.js';
import type { MetadataListener, MetadataView } from './metadata-store.js';
import type { MetadataRecord } from './records.js';

export interface FollowedView extends MetadataView {
  /** Installs a newer image (the fetcher applied entries or a snapshot). */
  replace(image: MetadataImage, records: readonly MetadataRecord[]): void;
}

export function createFollowedView(): FollowedView {
  let image = emptyImage;
  const listeners = new Set<MetadataListener>();
  return {
    image: () => image,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    replace(next, records) {
      image = next;
      for (const listener of listeners) listener(image, records);
    },
  };
}
