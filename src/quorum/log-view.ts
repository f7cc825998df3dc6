/**
 * What the Raft machine and the stores know about a log without reading it: its last index and
 * the index at which each term starts (Kafka's leader-epoch cache, for Raft terms). Pure values and
 * functions; `termAt` is a binary search, so a log of any length costs O(terms) memory.
 *
 * Indexes start at 1; index 0 is the empty prefix and has term 0. Snapshot seam: when snapshots
 * land, a view also carries `{ snapshotIndex, snapshotTerm }`, `termAt` answers that term at
 * `snapshotIndex` and undefined below it, and `starts` only covers the entries after it.
 */
import { assert } from '../protocol/errors.js';

export interface TermStart {
  readonly term: number;
  /** First index holding an entry of `term`. */
  readonly index: number;
}

export interface LogView {
  /** 0 when the log is empty. */
  readonly lastIndex: number;
  /** Ascending in both index and term; one per term present in the log. */
  readonly starts: readonly TermStart[];
}

export const EMPTY_LOG: LogView = { lastIndex: 0, starts: [] };

/** Term of the entry at `index`: 0 for index 0, undefined outside [0, lastIndex]. */
export function termAt(view: LogView, index: number): number | undefined {
  if (index === 0) return 0;
  if (index < 0 || index > view.lastIndex) return undefined;
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
  assert(found >= 0, `log view has no term for index ${index}`);
  return view.starts[found]!.term;
}

export function lastTerm(view: LogView): number {
  return view.starts.at(-1)?.term ?? 0;
}

/** First index of `term` in the log, or undefined when the log holds no entry of that term. */
export function firstIndexOfTerm(view: LogView, term: number): number | undefined {
  return view.starts.find((s) => s.term === term)?.index;
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
  return { lastIndex: view.lastIndex + terms.length, starts };
}

/** The view after removing every entry at or past `from`. */
export function truncateView(view: LogView, from: number): LogView {
  if (from > view.lastIndex) return view;
  return { lastIndex: Math.max(0, from - 1), starts: view.starts.filter((s) => s.index < from) };
}

/** Raft §5.4.1: a candidate's log is at least as up to date as this one. */
export function isUpToDate(view: LogView, candidateLastIndex: number, candidateLastTerm: number): boolean {
  const mine = lastTerm(view);
  return candidateLastTerm > mine || (candidateLastTerm === mine && candidateLastIndex >= view.lastIndex);
}
