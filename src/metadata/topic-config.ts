/**
 * Topic configuration: the keys Tidemark understands, their defaults and their bounds. Unknown keys
 * are refused (INVALID_CONFIG) rather than silently ignored, so a typo never looks applied.
 */
import { TidemarkError } from '../protocol/errors.js';

export type FlushMode = 'fsync' | 'replicated';

export interface TopicConfig {
  /** Delete whole batches older than this, ms; -1 keeps forever. @default 604800000 (7 days) */
  retentionMs: number;
  /** Keep each partition under about this size, bytes; -1 = no limit. @default -1 */
  retentionBytes: number;
  /** Largest record batch accepted, bytes (Kafka's max.message.bytes). @default 1048588 */
  maxMessageBytes: number;
  /** acks=all needs at least this many in-sync replicas (leader included). @default 1 */
  minInsyncReplicas: number;
  /** Elect an out-of-sync replica when no in-sync one is alive, accepting loss. @default false */
  uncleanLeaderElection: boolean;
  /**
   * `fsync`: a replica counts toward the high watermark once the batch is fsynced (group commit);
   * `replicated`: once it is appended (Kafka's default). Under `replicated` power losses of every
   * replica at once take acknowledged records back; one replica's power loss does not (unclean
   * shutdowns make suspects that are not elected: docs/replication.md), at the cost of acks=all
   * waiting up to replica.lag.time.max.ms when an ISR member dies.
   * @default 'fsync'
   */
  flushMode: FlushMode;
}

type KeySpec =
  | { field: 'retentionMs' | 'retentionBytes' | 'maxMessageBytes' | 'minInsyncReplicas'; kind: 'int'; default: number; min: number; max: number }
  | { field: 'uncleanLeaderElection'; kind: 'bool'; default: boolean }
  | { field: 'flushMode'; kind: 'enum'; default: FlushMode; values: readonly FlushMode[] };

const KEYS: Record<string, KeySpec> = {
  'retention.ms': { field: 'retentionMs', kind: 'int', default: 604_800_000, min: -1, max: Number.MAX_SAFE_INTEGER },
  'retention.bytes': { field: 'retentionBytes', kind: 'int', default: -1, min: -1, max: Number.MAX_SAFE_INTEGER },
  'max.message.bytes': { field: 'maxMessageBytes', kind: 'int', default: 1_048_588, min: 64, max: 64 * 1024 * 1024 },
  'min.insync.replicas': { field: 'minInsyncReplicas', kind: 'int', default: 1, min: 1, max: 16 },
  'unclean.leader.election.enable': { field: 'uncleanLeaderElection', kind: 'bool', default: false },
  'flush.mode': { field: 'flushMode', kind: 'enum', default: 'fsync', values: ['fsync', 'replicated'] },
};

export const TOPIC_CONFIG_KEYS = Object.keys(KEYS);

function parseValue(key: string, spec: KeySpec, text: string): number | boolean | string {
  switch (spec.kind) {
    case 'int': {
      const value = /^-?[0-9]+$/.test(text) ? Number(text) : Number.NaN;
      if (!Number.isSafeInteger(value) || value < spec.min || value > spec.max || (value < 0 && value !== -1)) {
        throw new TidemarkError('INVALID_CONFIG', `${key}=${text}: expected an integer in ${spec.min}..${spec.max}`);
      }
      return value;
    }
    case 'bool':
      if (text !== 'true' && text !== 'false') throw new TidemarkError('INVALID_CONFIG', `${key}=${text}: expected true or false`);
      return text === 'true';
    case 'enum':
      if (!(spec.values as readonly string[]).includes(text)) {
        throw new TidemarkError('INVALID_CONFIG', `${key}=${text}: expected one of ${spec.values.join(', ')}`);
      }
      return text;
  }
}

/** Parses a topic's string config; throws INVALID_CONFIG naming the key. */
export function parseTopicConfig(raw: Readonly<Record<string, string>>): TopicConfig {
  const config = Object.fromEntries(Object.values(KEYS).map((k) => [k.field, k.default])) as unknown as Record<string, unknown>;
  for (const [key, text] of Object.entries(raw)) {
    const spec = KEYS[key];
    if (spec === undefined) {
      throw new TidemarkError('INVALID_CONFIG', `unknown topic config "${key}" (known: ${TOPIC_CONFIG_KEYS.join(', ')})`);
    }
    config[spec.field] = parseValue(key, spec, text);
  }
  return config as unknown as TopicConfig;
}
