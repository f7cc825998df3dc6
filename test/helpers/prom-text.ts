/**
 * A small reader of the Prometheus text exposition format (version 0.0.4), enough for tests:
 * `# HELP` / `# TYPE` lines, and samples `name{label="value",...} number`. Label values may hold
 * escaped quotes, backslashes and newlines.
 */

import { logLine, type CliProcess } from './cli.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Scrape {
  samples: Sample[];
  /** Metric family name -> its TYPE (counter, gauge, histogram, ...). */
  types: Map<string, string>;
  help: Map<string, string>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/y;

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  // prom-client writes "Nan"; Prometheus reads NaN in any case.
  if (text.toLowerCase() === 'nan') return Number.NaN;
  const value = Number(text);
  if (Number.isNaN(value)) throw new Error(`not a sample value: ${text}`);
  return value;
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const start = LABEL.lastIndex;
    const m = LABEL.exec(text);
    if (m === null) throw new Error(`bad labels at ${start}: ${text}`);
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
  }
  return labels;
}

export function parsePromText(text: string): Scrape {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)\s*(.*)$/.exec(line);
      if (m?.[1] === 'TYPE') types.set(m[2]!, m[3]!);
      else if (m?.[1] === 'HELP') help.set(m[2]!, m[3]!);
      continue;
    }
    const m = SAMPLE.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    samples.push({ name: m[1]!, labels: m[2] === undefined ? {} : parseLabels(m[2]), value: parseValue(m[3]!) });
  }
  return { samples, types, help };
}

/** The sum of the samples named `name` whose labels include `match` (0 when there are none). */
export function sumOf(scrape: Scrape, name: string, match: Record<string, string> = {}): number {
  return scrape.samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

/** Whether any sample is named `name` (with labels including `match`). */
export function has(scrape: Scrape, name: string, match: Record<string, string> = {}): boolean {
  return scrape.samples.some((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
}

/** GET `url` with plain fetch and parse it, bounded by `timeoutMs`. */
export async function scrape(url: string, timeoutMs = 5_000): Promise<Scrape> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status}`);
  return parsePromText(await res.text());
}

/**
 * The port a node started with `--metrics-port 0` listens on, from its "http server listening" log
 * line (awaited, bounded).
 */
export async function metricsPortOf(proc: CliProcess, timeoutMs = 20_000): Promise<number> {
  const line = await proc.waitForLine('stderr', (l) => logLine(l)?.msg === 'http server listening', timeoutMs);
  const port = logLine(line)?.['port'];
  if (typeof port !== 'number') throw new Error(`no port in ${line}`);
  return port;
}
