/**
 * Topic configuration: the keys Tidemark understands, their defaults and their bounds. Unknown keys
 * are refused (INVALID_CONFIG) rather than silently ignored, so a typo never looks applied.
 */
import { TidemarkError } from '../protocol/errors.js';

export interface TopicConfig {
  /** Delete whole batches older than this, ms; -1 keeps forever. @default 604800000 (7 days) */
  retentionMs: number;
  /** Keep each partition under about this size, bytes; -1 = no limit. @default -1 */
  retentionBytes: number;
  /** Largest record batch accepted, bytes (Kafka's max.message.bytes). @default 1048588 */
  maxMessageBytes: number;
}

interface KeySpec {
  field: keyof TopicConfig;
  default: number;
  min: number;
  max: number;
}

const KEYS: Record<string, KeySpec> = {
  'retention.ms': { field: 'retentionMs', default: 604_800_000, min: -1, max: Number.MAX_SAFE_INTEGER },
  'retention.bytes': { field: 'retentionBytes', default: -1, min: -1, max: Number.MAX_SAFE_INTEGER },
  'max.message.bytes': { field: 'maxMessageBytes', default: 1_048_588, min: 64, max: 64 * 1024 * 1024 },
};

export const TOPIC_CONFIG_KEYS = Object.keys(KEYS);

/** Parses a topic's string config; throws INVALID_CONFIG naming the key. */
export function parseTopicConfig(raw: Readonly<Record<string, string>>): TopicConfig {
  const config = Object.fromEntries(Object.values(KEYS).map((k) => [k.field, k.default])) as unknown as TopicConfig;
  for (const [key, text] of Object.entries(raw)) {
    const spec = KEYS[key];
    if (spec === undefined) {
      throw new TidemarkError('INVALID_CONFIG', `unknown topic config "${key}" (known: ${TOPIC_CONFIG_KEYS.join(', ')})`);
    }
    const value = /^-?[0-9]+$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < spec.min || value > spec.max || (value < 0 && value !== -1)) {
      throw new TidemarkError('INVALID_CONFIG', `${key}=${text}: expected an integer in ${spec.min}..${spec.max}`);
    }
    config[spec.field] = value;
  }
  return config;
}
