/**
 * A latency histogram in the manner of HdrHistogram: log-linear buckets with 3 significant digits
 * (2048 sub-buckets per power of two, so a bucket is at most 1/1024 of its values wide), integer
 * microseconds, fixed memory (about 220 KiB) whatever the number of samples. Values below 2048 µs
 * are exact; a percentile answers the middle of its bucket, so it is within 0.05 % of the exact
 * value at that rank. `record`, `percentile`, `merge`; no dependencies.
 *
 *   node dist/bench/hdr.js --self-check [--samples N] [--seed S]
 * compares against exact sorted percentiles on random data and exits 1 on > 0.1 % relative error.
 */
import { seededRandom } from '../test/helpers/sim-network.js';
import { pathToFileURL } from 'node:url';

/** 2^11 sub-buckets: the first 2048 µs are counted exactly, above that 1024 steps per power of two. */
const SUB_BUCKET_BITS = 11;
const SUB_BUCKET_COUNT = 1 << SUB_BUCKET_BITS;
const SUB_BUCKET_HALF = SUB_BUCKET_COUNT >> 1;
/** Values above 2^36 µs (19 hours) are counted as 2^36 µs. */
const VALUE_US_MAX = 2 ** 36;
const EXPONENT_MAX = 36 - (SUB_BUCKET_BITS - 1);
const BUCKETS = SUB_BUCKET_COUNT + EXPONENT_MAX * SUB_BUCKET_HALF;

function indexOf(valueUs: number): number {
  if (valueUs < SUB_BUCKET_COUNT) return valueUs;
  const exponent = Math.floor(Math.log2(valueUs)) - (SUB_BUCKET_BITS - 1);
  // Math.log2 can be off by one at exact powers of two; the shift below must land in [1024, 2047].
  let e = exponent;
  while (Math.floor(valueUs / 2 ** e) >= SUB_BUCKET_COUNT) e++;
  while (Math.floor(valueUs / 2 ** e) < SUB_BUCKET_HALF) e--;
  return SUB_BUCKET_COUNT + (e - 1) * SUB_BUCKET_HALF + (Math.floor(valueUs / 2 ** e) - SUB_BUCKET_HALF);
}

/** The lowest value and the width of bucket `index`, µs. */
function bucketOf(index: number): { lowUs: number; widthUs: number } {
  if (index < SUB_BUCKET_COUNT) return { lowUs: index, widthUs: 1 };
  const above = index - SUB_BUCKET_COUNT;
  const e = Math.floor(above / SUB_BUCKET_HALF) + 1;
  const sub = (above % SUB_BUCKET_HALF) + SUB_BUCKET_HALF;
  return { lowUs: sub * 2 ** e, widthUs: 2 ** e };
}

/** The summary a report keeps of a histogram (ms, as the tables show). */
export interface LatencySummary {
  count: number;
  minMs: number;
  meanMs: number;
  maxMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  /** [percentile, ms] along the curve, for charts. */
  curve: Array<[number, number]>;
}

/** Percentiles a curve is drawn through. */
export const CURVE_PERCENTILES = [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100] as const;

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  private total = 0;
  private sumUs = 0;
  private minUs = Number.POSITIVE_INFINITY;
  private maxUs = 0;

  get count(): number {
    return this.total;
  }

  /** Records one value in microseconds (rounded to an integer, clamped to 0..2^36). */
  recordUs(valueUs: number, times = 1): void {
    const v = Math.min(VALUE_US_MAX, Math.max(0, Math.round(valueUs)));
    this.counts[indexOf(v)]! += times;
    this.total += times;
    this.sumUs += v * times;
    if (v < this.minUs) this.minUs = v;
    if (v > this.maxUs) this.maxUs = v;
  }

  /** Records one value in milliseconds (as `performance.now()` differences are). */
  recordMs(valueMs: number): void {
    this.recordUs(valueMs * 1000);
  }

  /** Adds every count of `other` to this one. */
  merge(other: Histogram): this {
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!;
    this.total += other.total;
    this.sumUs += other.sumUs;
    this.minUs = Math.min(this.minUs, other.minUs);
    this.maxUs = Math.max(this.maxUs, other.maxUs);
    return this;
  }

  /**
   * The value at percentile `p` (0..100), µs: the value of rank ceil(p/100 * count) (at least 1)
   * in sorted order, to within its bucket. NaN when empty.
   */
  percentileUs(p: number): number {
    if (this.total === 0) return Number.NaN;
    if (p <= 0) return this.minUs;
    if (p >= 100) return this.maxUs;
    const rank = Math.max(1, Math.ceil((p / 100) * this.total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        const { lowUs, widthUs } = bucketOf(i);
        const mid = widthUs === 1 ? lowUs : lowUs + (widthUs - 1) / 2;
        return Math.min(this.maxUs, Math.max(this.minUs, mid));
      }
    }
    return this.maxUs;
  }

  percentileMs(p: number): number {
    return this.percentileUs(p) / 1000;
  }

  summary(): LatencySummary {
    const ms = (p: number) => this.percentileMs(p);
    return {
      count: this.total,
      minMs: this.total === 0 ? Number.NaN : this.minUs / 1000,
      meanMs: this.total === 0 ? Number.NaN : this.sumUs / this.total / 1000,
      maxMs: this.total === 0 ? Number.NaN : this.maxUs / 1000,
      p50Ms: ms(50),
      p90Ms: ms(90),
      p99Ms: ms(99),
      p999Ms: ms(99.9),
      curve: CURVE_PERCENTILES.map((p) => [p, ms(p)]),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Self-check: node dist/bench/hdr.js --self-check


const RELATIVE_ERROR_MAX = 0.001;

function selfCheck(samples: number, seed: number): boolean {
  const source = seededRandom(seed);
  const random = () => source.next();
  const shapes: Array<[string, () => number]> = [
    ['log-uniform 1 µs .. 100 s', () => Math.round(10 ** (random() * 8))],
    ['uniform 0 .. 5 ms', () => Math.round(random() * 5000)],
    ['latency-like: 2 ms body, 1 % tail to 2 s', () => Math.round(random() < 0.99 ? 1500 + random() * 1000 : 2000 + random() * 2e6)],
    ['powers of two and neighbours', () => {
      const e = 11 + Math.floor(random() * 24);
      return 2 ** e + Math.floor(random() * 3) - 1;
    }],
  ];
  const percentiles = [1, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99];
  let ok = true;
  for (const [name, draw] of shapes) {
    const values: number[] = [];
    const whole = new Histogram();
    const halves = [new Histogram(), new Histogram()];
    for (let i = 0; i < samples; i++) {
      const v = draw();
      values.push(v);
      whole.recordUs(v);
      halves[i % 2]!.recordUs(v);
    }
    const merged = halves[0]!.merge(halves[1]!);
    values.sort((a, b) => a - b);
    let worst = 0;
    for (const p of percentiles) {
      const exact = values[Math.max(1, Math.ceil((p / 100) * values.length)) - 1]!;
      for (const h of [whole, merged]) {
        const got = h.percentileUs(p);
        const error = exact === 0 ? Math.abs(got) : Math.abs(got - exact) / exact;
        worst = Math.max(worst, error);
        if (error > RELATIVE_ERROR_MAX) {
          ok = false;
          process.stderr.write(`FAIL ${name}: p${p} exact ${exact} µs, histogram ${got} µs (${(100 * error).toFixed(4)} %)\n`);
        }
      }
    }
    process.stdout.write(`${worst <= RELATIVE_ERROR_MAX ? 'ok  ' : 'FAIL'} ${name}: ${samples} samples, worst relative error ${(100 * worst).toFixed(4)} %\n`);
  }
  return ok;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: number) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : fallback;
  };
  if (!args.includes('--self-check')) {
    process.stderr.write('usage: node dist/bench/hdr.js --self-check [--samples N] [--seed S]\n');
    process.exit(2);
  }
  const seed = arg('--seed', Date.now() % 2 ** 31);
  process.stdout.write(`hdr self-check, seed ${seed}\n`);
  process.exit(selfCheck(arg('--samples', 200_000), seed) ? 0 : 1);
}
