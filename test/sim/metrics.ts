/**
 * The metrics nodes report, in the simulator: every node (each incarnation) gets a counting
 * NodeMetrics port in place of the no-op, and at the end of a run the checker holds the counters to
 * the rule an operator's dashboards rely on: `tidemark_records_appended_total` summed over the
 * cluster is at least the number of distinct records acknowledged (every acknowledged record was
 * written by some leader, and each leader's write was counted). A write path that forgets to count
 * shows here as a shortfall; so does a counter that is reset or lost with an actor. Heartbeats and
 * produce requests are tallied too, for the run's stats.
 */
import type { NodeMetrics } from '../../src/metrics/port.js';

export class MetricsTally {
  /** Records appended per topic, over every node and incarnation. */
  readonly appended = new Map<string, number>();
  readonly stats = { produceRequests: 0, appendedRecords: 0, heartbeats: 0, heartbeatsMissed: 0, isrShrinks: 0, isrExpands: 0, elections: 0 };

  /** One port for one node incarnation (they all add to the same tally). */
  port(): NodeMetrics {
    const done = () => {};
    return {
      produceStarted: () => {
        this.stats.produceRequests++;
        return done;
      },
      fetchRequested: () => {},
      fetchAnswered: () => {},
      appended: (topic, records) => {
        this.appended.set(topic, (this.appended.get(topic) ?? 0) + records);
        this.stats.appendedRecords += records;
      },
      fsyncStarted: () => done,
      consumerRequest: () => {},
      delivered: () => {},
      heartbeat: (outcome) => {
        if (outcome === 'ok') this.stats.heartbeats++;
        else this.stats.heartbeatsMissed++;
      },
      isrChanged: (_topic, change) => {
        if (change === 'shrink') this.stats.isrShrinks++;
        else this.stats.isrExpands++;
      },
      leaderElected: () => {
        this.stats.elections++;
      },
    };
  }

  /** Problems with the counters, given the distinct records acknowledged per topic. */
  check(acknowledged: ReadonlyMap<string, number>): string[] {
    const problems: string[] = [];
    for (const [topic, acked] of acknowledged) {
      const appended = this.appended.get(topic) ?? 0;
      if (appended < acked) problems.push(`metrics: ${acked} distinct records of ${topic} were acknowledged but the leaders counted ${appended} appended`);
    }
    return problems;
  }
}
