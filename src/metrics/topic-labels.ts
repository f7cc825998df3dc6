/**
 * Bounded label values. A counter labelled by topic keeps one series per value for the life of the
 * process, so the values are capped: the first `max` distinct topics seen get their own series, every
 * later one is counted under {@link OTHER_LABEL}. A topic keeps its slot after it is deleted
 * (counters never go back); a process restart starts over.
 */

/**
 * The label value every topic past the bound shares. It is a valid topic name, so a topic really
 * called `_other` is counted in the same series (docs/operations.md says so).
 */
export const OTHER_LABEL = '_other';

/** Distinct topics with their own series in the per-topic counters and histograms, per node. */
export const TOPIC_SERIES_MAX_DEFAULT = 100;

export class BoundedLabels {
  private readonly known = new Set<string>();

  constructor(readonly max: number) {
    if (!Number.isSafeInteger(max) || max < 0) throw new RangeError(`label bound must be a non-negative integer, got ${max}`);
  }

  /** The label value to count `value` under. */
  of(value: string): string {
    if (this.known.has(value)) return value;
    if (this.known.size >= this.max) return OTHER_LABEL;
    this.known.add(value);
    return value;
  }

  get size(): number {
    return this.known.size;
  }
}

/**
 * For gauges computed at scrape time: keeps the first `max` keys in sorted order and sums the rest
 * into one `other` entry (absent when nothing overflowed). Sorting makes the choice stable between
 * scrapes while the set of keys stays the same.
 */
export function capEntries<T>(entries: ReadonlyMap<string, T>, max: number, merge: (a: T, b: T) => T): { kept: Array<[string, T]>; other: T | undefined } {
  const keys = [...entries.keys()].sort();
  const kept: Array<[string, T]> = [];
  let other: T | undefined;
  for (const key of keys) {
    const value = entries.get(key)!;
    if (kept.length < max) kept.push([key, value]);
    else other = other === undefined ? value : merge(other, value);
  }
  return { kept, other };
}
