/**
 * Plain SVG charts for the bench report, no dependencies: horizontal bars (one bar per row, coloured
 * by series) and a line chart (linear, log or "nines" axes), with axes, ticks and a legend. Text is
 * a fixed monospace font so widths can be estimated without measuring; GitHub renders these files
 * as images when report.md links them.
 */

const FONT_PX = 12;
/** Width of one monospace character at FONT_PX, px (about 0.6 em). */
const CHAR_PX = 7.8;
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export function color(i: number): string {
  return COLORS[i % COLORS.length]!;
}

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function text(x: number, y: number, body: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}"${attrs ? ` ${attrs}` : ''}>${esc(body)}</text>`;
}

function frame(width: number, height: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="monospace" font-size="${FONT_PX}">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    text(width / 2, 20, title, 'text-anchor="middle" font-weight="bold" font-size="14"'),
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** Round tick values covering [0, max]: 1, 2 or 5 times a power of ten apart. */
function linearTicks(max: number, count = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  const ticks: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) ticks.push(v);
  if (ticks[ticks.length - 1]! < max) ticks.push(ticks[ticks.length - 1]! + step);
  return ticks;
}

/** A short label for a number: 12k, 1.5M, 0.25. */
export function shortNumber(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return `${+v.toPrecision(3)}`;
  if (a === 0) return '0';
  return `${+v.toPrecision(2)}`;
}

function legend(x: number, y: number, names: string[]): string[] {
  return names.flatMap((name, i) => [
    `<rect x="${x}" y="${y + i * 16 - 9}" width="10" height="10" fill="${color(i)}"/>`,
    text(x + 14, y + i * 16, name),
  ]);
}

export interface Bar {
  label: string;
  /** NaN or undefined: drawn as "failed" / "n/a" with no bar. */
  value: number | undefined;
  /** Index into `series` (colour and legend). @default 0 */
  series?: number;
}

export interface BarChartOptions {
  title: string;
  /** The value axis' label, e.g. "records/s". */
  unit: string;
  bars: Bar[];
  /** Legend entries, by series index; no legend when there is one or none. */
  series?: string[];
  /** @default 760 */
  width?: number;
}

/** One horizontal bar per row, labels on the left, the value printed at the end of each bar. */
export function barChart(options: BarChartOptions): string {
  const width = options.width ?? 760;
  const series = options.series ?? [];
  const labelPx = Math.min(360, Math.max(...options.bars.map((b) => b.label.length), 4) * CHAR_PX + 12);
  const rowPx = 22;
  const top = 36 + (series.length > 1 ? series.length * 16 + 4 : 0);
  const plotLeft = labelPx;
  const plotRight = width - 70;
  const plotHeight = options.bars.length * rowPx;
  const height = top + plotHeight + 44;
  const finite = options.bars.map((b) => b.value).filter((v): v is number => v !== undefined && Number.isFinite(v));
  const ticks = linearTicks(Math.max(0, ...finite));
  const max = ticks[ticks.length - 1]!;
  const xOf = (v: number) => plotLeft + ((plotRight - plotLeft) * v) / max;
  const body: string[] = [];
  if (series.length > 1) body.push(...legend(plotLeft, 44, series));
  for (const t of ticks) {
    const x = xOf(t);
    body.push(`<line x1="${x.toFixed(1)}" y1="${top}" x2="${x.toFixed(1)}" y2="${top + plotHeight}" stroke="#e0e0e0"/>`);
    body.push(text(x, top + plotHeight + 16, shortNumber(t), 'text-anchor="middle" fill="#444"'));
  }
  options.bars.forEach((bar, i) => {
    const y = top + i * rowPx;
    body.push(text(plotLeft - 6, y + rowPx / 2 + 4, bar.label, 'text-anchor="end"'));
    if (bar.value === undefined || !Number.isFinite(bar.value)) {
      body.push(text(plotLeft + 4, y + rowPx / 2 + 4, 'failed / not run', 'fill="#999"'));
      return;
    }
    const w = Math.max(1, xOf(bar.value) - plotLeft);
    body.push(`<rect x="${plotLeft}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowPx - 6}" fill="${color(bar.series ?? 0)}"/>`);
    body.push(text(plotLeft + w + 4, y + rowPx / 2 + 4, shortNumber(bar.value), 'fill="#222"'));
  });
  body.push(`<line x1="${plotLeft}" y1="${top}" x2="${plotLeft}" y2="${top + plotHeight}" stroke="#444"/>`);
  body.push(text((plotLeft + plotRight) / 2, top + plotHeight + 34, options.unit, 'text-anchor="middle"'));
  return frame(width, height, options.title, body);
}

export type Scale = 'linear' | 'log' | 'nines';

export interface Axis {
  label: string;
  /** linear; log (base 10, positive values only); nines: a percentile p drawn at -log10(1 - p/100). */
  scale: Scale;
  /** Tick values in data units; default: chosen from the data. */
  ticks?: number[];
  /** Formats a tick value. @default shortNumber (nines: "p" + value) */
  format?: (v: number) => string;
}

export interface Series {
  name: string;
  points: Array<[number, number]>;
}

export interface LineChartOptions {
  title: string;
  x: Axis;
  y: Axis;
  series: Series[];
  /** @default 760 */
  width?: number;
  /** @default 420 */
  height?: number;
}

const NINES_MAX = 4.5;

function transform(scale: Scale, v: number): number {
  if (scale === 'log') return Math.log10(v);
  if (scale === 'nines') return v >= 100 ? NINES_MAX : Math.min(NINES_MAX, -Math.log10(1 - v / 100));
  return v;
}

function usable(scale: Scale, v: number): boolean {
  return Number.isFinite(v) && (scale !== 'log' || v > 0);
}

function autoTicks(scale: Scale, lo: number, hi: number): number[] {
  if (scale === 'nines') return [0, 50, 90, 99, 99.9, 99.99];
  if (scale === 'log') {
    const ticks: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** e;
        if (v >= lo / 1.0001 && v <= hi * 1.0001) ticks.push(v);
      }
    }
    if (ticks.length < 2) return [10 ** Math.floor(Math.log10(lo)), 10 ** Math.ceil(Math.log10(hi))];
    return ticks;
  }
  return linearTicks(hi);
}

/** The nearest 1, 2 or 5 times a power of ten at or below (down) / above (up) v > 0. */
function niceLog(v: number, way: 'down' | 'up'): number {
  const e = Math.floor(Math.log10(v));
  const steps = [1, 2, 5, 10].map((m) => m * 10 ** e);
  return way === 'down' ? steps.filter((x) => x <= v * 1.0001).pop()! : steps.find((x) => x >= v / 1.0001)!;
}

/** Lines with point markers; the legend sits to the right of the plot. */
export function lineChart(options: LineChartOptions): string {
  const height = options.height ?? 420;
  const legendPx = Math.max(...options.series.map((s) => s.name.length), 4) * CHAR_PX + 40;
  const width = Math.max(options.width ?? 760, 480 + legendPx);
  const left = 70;
  const right = width - legendPx - 10;
  const top = 36;
  const bottom = height - 50;
  const { x, y } = options;
  const points = options.series.flatMap((s) => s.points).filter(([px, py]) => usable(x.scale, px) && usable(y.scale, py));
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const yLo = y.scale === 'log' ? Math.min(...ys, Number.POSITIVE_INFINITY) : 0;
  const yHi = Math.max(...ys, y.scale === 'log' ? 0 : 1);
  const xTicks = x.ticks ?? autoTicks(x.scale, Math.min(...xs, Number.POSITIVE_INFINITY), Math.max(...xs, 1));
  let yTicks = y.ticks ?? (points.length === 0 ? [1, 10] : autoTicks(y.scale, yLo, yHi));
  if (y.scale === 'log' && points.length > 0) {
    // Extend to 1-2-5 steps around the data so every point is inside the plot.
    const lo = niceLog(yLo, 'down');
    const hi = niceLog(yHi, 'up');
    yTicks = [...new Set([lo, ...yTicks.filter((t) => t > lo && t < hi), hi])];
  } else if (y.scale === 'linear') {
    yTicks = linearTicks(yHi);
  }
  const span = (scale: Scale, ticks: number[], values: number[]) => {
    const all = [...ticks, ...values].filter((v) => usable(scale, v)).map((v) => transform(scale, v));
    const lo = Math.min(...all);
    const hi = Math.max(...all);
    return hi > lo ? [lo, hi] : [lo - 1, lo + 1];
  };
  const [x0, x1] = span(x.scale, xTicks, xs) as [number, number];
  const [y0, y1] = span(y.scale, yTicks, ys) as [number, number];
  const px = (v: number) => left + ((right - left) * (transform(x.scale, v) - x0)) / (x1 - x0);
  const py = (v: number) => bottom - ((bottom - top) * (transform(y.scale, v) - y0)) / (y1 - y0);
  const xFormat = x.format ?? (x.scale === 'nines' ? (v: number) => (v >= 100 ? 'max' : `p${v}`) : shortNumber);
  const yFormat = y.format ?? shortNumber;
  const body: string[] = [];
  for (const t of xTicks) {
    body.push(`<line x1="${px(t).toFixed(1)}" y1="${top}" x2="${px(t).toFixed(1)}" y2="${bottom}" stroke="#e0e0e0"/>`);
    body.push(text(px(t), bottom + 16, xFormat(t), 'text-anchor="middle" fill="#444"'));
  }
  for (const t of yTicks) {
    body.push(`<line x1="${left}" y1="${py(t).toFixed(1)}" x2="${right}" y2="${py(t).toFixed(1)}" stroke="#e0e0e0"/>`);
    body.push(text(left - 6, py(t) + 4, yFormat(t), 'text-anchor="end" fill="#444"'));
  }
  body.push(`<rect x="${left}" y="${top}" width="${right - left}" height="${bottom - top}" fill="none" stroke="#444"/>`);
  body.push(text((left + right) / 2, height - 14, x.label, 'text-anchor="middle"'));
  body.push(text(16, (top + bottom) / 2, y.label, `text-anchor="middle" transform="rotate(-90 16 ${((top + bottom) / 2).toFixed(1)})"`));
  options.series.forEach((s, i) => {
    const pts = s.points.filter(([a, b]) => usable(x.scale, a) && usable(y.scale, b));
    if (pts.length === 0) return;
    const path = pts.map(([a, b]) => `${px(a).toFixed(1)},${py(b).toFixed(1)}`).join(' ');
    body.push(`<polyline points="${path}" fill="none" stroke="${color(i)}" stroke-width="2"/>`);
    for (const [a, b] of pts) body.push(`<circle cx="${px(a).toFixed(1)}" cy="${py(b).toFixed(1)}" r="3" fill="${color(i)}"/>`);
  });
  body.push(...legend(right + 14, top + 10, options.series.map((s) => s.name)));
  return frame(width, height, options.title, body);
}
