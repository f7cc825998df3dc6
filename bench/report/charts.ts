/** The report's charts, built from the suite's results: file name -> SVG text. */
import { barChart, lineChart, type Bar, type Series } from './svg.js';
import { resultOf, type SuiteResults } from './results.js';

export interface Chart {
  /** File name next to report.md. */
  file: string;
  /** Alt text and caption. */
  title: string;
  svg: string;
}

const sizeName = (bytes: number) => (bytes === 1024 ? '1 KiB' : `${bytes} B`);

function replicationCharts(results: SuiteResults): Chart[] {
  const r = resultOf(results.replication);
  if (r === undefined) return [];
  const sizes = [...new Set(r.rows.map((row) => row.recordBytes))];
  const charts: Chart[] = [];
  const bars: Bar[] = r.rows.map((row) => ({
    label: `${row.label} (${sizeName(row.recordBytes)})`,
    value: row.failed === undefined ? row.recordsPerSMedian : undefined,
    series: sizes.indexOf(row.recordBytes),
  }));
  const title = `Replication throughput, records/s (median of ${r.options.rounds} round${r.options.rounds > 1 ? 's' : ''})`;
  charts.push({ file: 'replication-throughput.svg', title, svg: barChart({ title, unit: 'records/s, first send to last ack', bars, series: sizes.map((b) => `${sizeName(b)} records`) }) });
  const mbTitle = 'Replication throughput, MB/s of payload';
  charts.push({
    file: 'replication-mbps.svg',
    title: mbTitle,
    svg: barChart({
      title: mbTitle,
      unit: 'MB/s (records/s x record size)',
      bars: r.rows.map((row) => ({ label: `${row.label} (${sizeName(row.recordBytes)})`, value: row.failed === undefined ? row.mbPerS : undefined, series: sizes.indexOf(row.recordBytes) })),
      series: sizes.map((b) => `${sizeName(b)} records`),
    }),
  });
  for (const bytes of sizes) {
    charts.push(latencyChart(`replication-latency-${bytes}.svg`, `Latency send -> ack at ${r.options.rate} records/s, ${sizeName(bytes)} records`, r.rows, bytes));
  }
  return charts;
}

function partitionsChart(results: SuiteResults): Chart[] {
  const r = resultOf(results.partitions);
  if (r === undefined) return [];
  const series: Series[] = r.options.rfs.map((rf) => ({
    name: `RF${rf} acks=all fsync`,
    points: r.rows.filter((row) => row.rf === rf && row.failed === undefined).map((row) => [row.partitions, row.recordsPerS] as [number, number]),
  }));
  const title = `Records/s against partition count (${r.options.producers} keyed producers, ${sizeName(r.options.recordBytes)})`;
  return [
    {
      file: 'partitions.svg',
      title,
      svg: lineChart({ title, x: { label: 'partitions (log scale)', scale: 'log', ticks: r.options.partitions }, y: { label: 'records/s', scale: 'linear' }, series }),
    },
  ];
}

function idleChart(results: SuiteResults): Chart[] {
  const r = resultOf(results.idle);
  if (r === undefined) return [];
  const ok = r.rows.filter((row) => row.failed === undefined);
  const title = `Idle cluster: CPU of the 3 nodes holding N RF3 partitions (${r.options.windowSeconds} s window)`;
  return [
    {
      file: 'idle-cpu.svg',
      title,
      svg: lineChart({
        title,
        x: { label: 'partitions at RF3 (log scale)', scale: 'log', ticks: r.options.partitions },
        y: { label: '% of one core', scale: 'linear' },
        series: [{ name: 'CPU, 3 nodes summed', points: ok.map((row) => [row.partitions, row.cpuPercent] as [number, number]) }],
      }),
    },
  ];
}

function subscriptionsCharts(results: SuiteResults): Chart[] {
  const r = resultOf(results.subscriptions);
  if (r === undefined) return [];
  const sizes = [...new Set(r.rows.map((row) => row.recordBytes))];
  const title = `Subscriptions: msgs/s delivered and acknowledged, ${r.options.consumers} consumers (median of ${r.options.rounds} round${r.options.rounds > 1 ? 's' : ''})`;
  const charts: Chart[] = [
    {
      file: 'subscriptions-throughput.svg',
      title,
      svg: barChart({
        title,
        unit: 'msgs/s, first delivery to last ack resolved',
        bars: r.rows.map((row) => ({ label: `${row.label} (${sizeName(row.recordBytes)})`, value: row.failed === undefined ? row.msgsPerSMedian : undefined, series: sizes.indexOf(row.recordBytes) })),
        series: sizes.map((b) => `${sizeName(b)} messages`),
      }),
    },
  ];
  for (const bytes of sizes) {
    const title = `Subscriptions: end-to-end latency (send -> consumer receipt) at ${r.options.rate} msgs/s, ${sizeName(bytes)}`;
    charts.push(latencyChart(`subscriptions-latency-${bytes}.svg`, title, r.rows, bytes));
  }
  return charts;
}

export function charts(results: SuiteResults): Chart[] {
  return [...replicationCharts(results), ...subscriptionsCharts(results), ...partitionsChart(results), ...idleChart(results)];
}

/** Latency percentiles (from p50) of the rows of one record size, one line per row, log scale. */
function latencyChart(
  file: string,
  title: string,
  rows: ReadonlyArray<{ label: string; recordBytes: number; latency?: { curve: Array<[number, number]> } | undefined }>,
  bytes: number,
): Chart {
  const series: Series[] = rows
    .filter((row) => row.recordBytes === bytes && row.latency !== undefined)
    .map((row) => ({ name: row.label, points: row.latency!.curve.filter(([p]) => p >= 50) }));
  return {
    file,
    title,
    svg: lineChart({
      title,
      x: { label: 'percentile', scale: 'nines', ticks: [50, 90, 99, 99.9, 99.99, 100] },
      y: { label: 'ms (log scale)', scale: 'log' },
      series,
    }),
  };
}
