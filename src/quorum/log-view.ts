/**
 * What the Raft machine and the stores know about a log without reading it: its last index, the
 * snapshot it starts after, and the index at which each later term starts (Kafka's leader-epoch
 * cache, for Raft terms). Pure values and functions; `termAt` is a binary search, so a log of any
 * length costs O(terms) memory.
 *
 * Indexes start at 1. Index 0 is the empty prefix and has term 0. Once a snapshot covers the log up
 * to `snapshotIndex`, that index is the log's base: `termAt(snapshotIndex)` is `snapshotTerm` (what
 * AppendEntries' prevLogIndex/prevLogTerm check against), every index below it is undefined, and
 * `starts` only covers the entries after it.
 */
import { assert } from '../protocol/errors.js';

export interface TermStart {
  readonly term: number;
  /** First index holding an entry of `term`. */
  readonly index: number;
}

export interface LogView {
  /** The snapshot's last index when it is the last entry (snapshotIndex, 0 when the log is empty). */
  readonly lastIndex: number;
  /**
   * Ascending in both index and term; one per term whose first entry is after the snapshot. Entries
   * after the snapshot before the first start are of `snapshotTerm`.
   */
  readonly starts: readonly TermStart[];
  /** Last index the snapshot covers; 0 without a snapshot. Entries at or below it are gone. */
  readonly snapshotIndex: number;
  /** Term of the entry at `snapshotIndex`; 0 without a snapshot. */
  readonly snapshotTerm: number;
}

export const EMPTY_LOG: LogView = { lastIndex: 0, starts: [], snapshotIndex: 0, snapshotTerm: 0 };

/** Term of the entry at `index`: snapshotTerm at snapshotIndex (0 at 0), undefined outside [snapshotIndex, lastIndex]. */
export function termAt(view: LogView, index: number): number | undefined {
  if (index === view.snapshotIndex) return view.snapshotTerm;
  if (index < view.snapshotIndex || index > view.lastIndex) return undefined;
  let lo = 0;
  let hi = view.starts.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (view.starts[mid]!.index <= index) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  if (found < 0) {
    assert(view.snapshotIndex > 0, `log view has no term for index ${index}`);
    return view.snapshotTerm;
  }
  return view.starts[found]!.term;
}

export function lastTerm(view: LogView): number {
  return view.starts.at(-1)?.term ?? view.snapshotTerm;
}

/**
 * First index of `term` the log still holds, or undefined when it holds no entry of that term.
 * Entries of the snapshot's own term that follow the snapshot start right after it.
 */
export function firstIndexOfTerm(view: LogView, term: number): number | undefined {
  const start = view.starts.find((s) => s.term === term)?.index;
  if (start !== undefined) return start;
  return term === view.snapshotTerm && view.lastIndex > view.snapshotIndex ? view.snapshotIndex + 1 : undefined;
}

/** The view after appending entries of these terms at lastIndex + 1 on. Terms never go down. */
export function appendTerms(view: LogView, terms: readonly number[]): LogView {
  if (terms.length === 0) return view;
  const starts = [...view.starts];
  let last = lastTerm(view);
  terms.forEach((term, i) => {
    assert(term >= last, `entry term ${term} below the log's last term ${last}`);
    if (term > last) starts.push({ term, index: view.lastIndex + 1 + i });
    last = term;
  });
  return { ...view, lastIndex: view.lastIndex + terms.length, starts };
}

/** The view after removing every entry at or past `from`; never at or below the snapshot. */
export function truncateView(view: LogView, from: number): LogView {
  if (from > view.lastIndex) return view;
  assert(from > view.snapshotIndex, `truncating from ${from} would cut into the snapshot at ${view.snapshotIndex}`);
  return { ...view, lastIndex: from - 1, starts: view.starts.filter((s) => s.index < from) };
}

/**
 * The view once a snapshot covers the log up to `index` (Raft figure 13, steps 6 and 7): when the
 * log holds an entry of `term` at `index`, the entries after it stay; otherwise (a different term,
 * or a log too short) the whole log goes and the log ends at the snapshot. A snapshot not newer than
 * the current one changes nothing.
 */
export function compactView(view: LogView, index: number, term: number): LogView {
  if (index <= view.snapshotIndex) return view;
  if (termAt(view, index) === term) {
    return { lastIndex: view.lastIndex, starts: view.starts.filter((s) => s.index > index), snapshotIndex: index, snapshotTerm: term };
  }
  return { lastIndex: index, starts: [], snapshotIndex: index, snapshotTerm: term };
}

/** Raft §5.4.1: a candidate's log is at least as up to date as this one. */
export function isUpToDate(view: LogView, candidateLastIndex: number, candidateLastTerm: number): boolean {
  const mine = lastTerm(view);
  return candidateLastTerm > mine || (candidateLastTerm === mine && candidateLastIndex >= view.lastIndex);
}
