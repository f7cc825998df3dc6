/**
 * The metrics port: what the node's I/O edges (request listeners, the log writer and reader, the
 * node's shared fsync, the controller session, the metadata follower) tell the operator. Injected
 * like the logger: the composition root builds the Prometheus one (prom-metrics.ts) when a metrics
 * port is configured, everyone else (the simulator, unit tests) gets {@link noMetrics}.
 *
 * Only counters and histograms pass through here, bumped where the I/O happens, never in a machine
 * action. Gauges (partition and controller state, subscription backlog) are read from actor
 * snapshots when Prometheus scrapes (prom-metrics.ts, `collect()`), so no actor keeps them current.
 * Latency is timed by the implementation (the returned `done` functions), so no caller reads a clock
 * for it.
 */
export type ProduceAcks = 0 | 1 | -1;

export interface NodeMetrics {
  /**
   * A produce request for `topic` arrived, carrying `bytes` of record batches; call the returned
   * function once it is answered (acks=0: at once), to time it.
   */
  produceStarted(topic: string, acks: ProduceAcks, bytes: number): () => void;
  /** A client fetch request for `topic` arrived (replica fetches are not counted). */
  fetchRequested(topic: string): void;
  /** A client fetch of `topic` was answered with `bytes` of record batches. */
  fetchAnswered(topic: string, bytes: number): void;
  /** A partition leader of `topic` wrote `records` records to its log. */
  appended(topic: string, records: number): void;
  /** The node's shared WAL fsync started for `groupSize` waiting callers; call `done` when it ends. */
  fsyncStarted(groupSize: number): () => void;
  /**
   * A heartbeat to the controller was answered (`ok`, with the controller's metadata offset when it
   * said) or not (`missed`: no controller answered in time, or the request failed).
   */
  heartbeat(outcome: 'ok' | 'missed', controllerOffset?: number): void;
  /** A consumer of `subscription` on `topic` sent a session poll (`consume`) or acks / nacks (`ack`) to this broker. */
  consumerRequest(topic: string, subscription: string, op: 'consume' | 'ack'): void;
  /** This broker handed `messages` messages of `topic` to a consumer of `subscription` (redeliveries included). */
  delivered(topic: string, subscription: string, messages: number): void;
  /** Committed metadata changed the ISR of a partition of `topic` that this broker leads. */
  isrChanged(topic: string, change: 'shrink' | 'expand'): void;
  /** Committed metadata made this broker the leader of a partition of `topic`; `clean`: it was in the ISR. */
  leaderElected(topic: string, clean: boolean): void;
}

const done = (): void => {};

/** Records nothing: the simulator's and the unit tests' metrics. */
export const noMetrics: NodeMetrics = {
  produceStarted: () => done,
  fetchRequested: () => {},
  fetchAnswered: () => {},
  appended: () => {},
  fsyncStarted: () => done,
  heartbeat: () => {},
  consumerRequest: () => {},
  delivered: () => {},
  isrChanged: () => {},
  leaderElected: () => {},
};
