/**
 * Replica fetching between brokers, Kafka's design over NATS: one fetch session per (follower
 * broker, leader broker) carrying every partition between them (KIP-227). The follower side is
 * fetcher.ts (one ReplicaFetcher per leader broker), the leader side sessions.ts (one session per
 * follower broker), wired into the broker by session-listener.ts. docs/replication.md.
 */
export { ReplicaFetcher, ReplicaFetchers, type FetcherLimits, type FetcherPorts, type FetchState } from './fetcher.js';
export { LeaderSessions, DEFAULT_SESSION_LIMITS, type SessionLimits } from './sessions.js';
export { sessionListener, SessionHub } from './session-listener.js';
