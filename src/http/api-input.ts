/**
 * Checking what an API request carries: JSON bodies, their fields, path and query parameters.
 * Pure; every refusal is a TidemarkError naming the field (INVALID_REQUEST unless said otherwise),
 * so a bad request is answered 400 and never reaches the SDK.
 */
import { TidemarkError, type ErrorCode } from '../protocol/errors.js';
import { isValidTopicName } from '../protocol/subjects.js';
import { isValidSubscriptionName } from '../protocol/subscription-messages.js';

export type JsonObject = Record<string, unknown>;

/** A request body as JSON; empty or malformed text is INVALID_REQUEST. */
export function parseJson(body: Buffer): unknown {
  const text = body.toString('utf8');
  if (text.trim() === '') throw new TidemarkError('INVALID_REQUEST', 'the request needs a JSON body');
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new TidemarkError('INVALID_REQUEST', `malformed JSON body: ${(error as Error).message}`);
  }
}

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * `value` as an object with only the `known` fields (a misspelt field is refused, not ignored:
 * `"partiton": 2` must not silently become "any partition").
 */
export function objectWith(value: unknown, what: string, known: readonly string[], code: ErrorCode = 'INVALID_REQUEST'): JsonObject {
  if (!isObject(value)) throw new TidemarkError(code, `${what} must be a JSON object`);
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw new TidemarkError(code, `${what}: unknown field "${key.slice(0, 100)}" (known: ${known.join(', ')})`);
  }
  return value;
}

export function intField(value: unknown, what: string, min: number, max: number, code: ErrorCode = 'INVALID_REQUEST'): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new TidemarkError(code, `${what} must be an integer in ${min}..${max}`);
  }
  return value;
}

export function stringField(value: unknown, what: string, code: ErrorCode = 'INVALID_REQUEST'): string {
  if (typeof value !== 'string') throw new TidemarkError(code, `${what} must be a string`);
  return value;
}

/** Topic config values as the SDK takes them (strings); numbers and booleans are written out. */
export function configField(value: unknown, what: string): Record<string, string> {
  if (!isObject(value)) throw new TidemarkError('INVALID_CONFIG', `${what} must be an object of key: value`);
  const config: Record<string, string> = {};
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      throw new TidemarkError('INVALID_CONFIG', `${what}.${key.slice(0, 100)} must be a string, number or boolean`);
    }
    config[key] = String(v);
  }
  return config;
}

export function topicParam(text: string): string {
  if (!isValidTopicName(text)) {
    throw new TidemarkError('INVALID_TOPIC', `invalid topic name "${text.slice(0, 100)}": 1-249 of [a-zA-Z0-9._-], not "." or ".."`);
  }
  return text;
}

export function subscriptionParam(text: string): string {
  if (!isValidSubscriptionName(text)) {
    throw new TidemarkError('INVALID_REQUEST', `invalid subscription name "${text.slice(0, 100)}": 1-128 of [a-zA-Z0-9._-], not "." or ".."`);
  }
  return text;
}

/** Partition numbers: decimal, no sign, no leading zero. */
export function partitionParam(text: string): number {
  const value = /^(0|[1-9][0-9]{0,9})$/.test(text) ? Number(text) : Number.NaN;
  if (!(value <= 2 ** 31 - 1)) throw new TidemarkError('INVALID_REQUEST', `partition must be an integer in 0..2147483647, got "${text.slice(0, 100)}"`);
  return value;
}

/** The query parameters, refusing any not in `known` and any given twice. */
export function queryParams(url: URL, known: readonly string[]): Map<string, string> {
  const params = new Map<string, string>();
  for (const [key, value] of url.searchParams) {
    if (!known.includes(key)) {
      throw new TidemarkError('INVALID_REQUEST', `unknown query parameter "${key.slice(0, 100)}"${known.length === 0 ? '' : ` (known: ${known.join(', ')})`}`);
    }
    if (params.has(key)) throw new TidemarkError('INVALID_REQUEST', `query parameter "${key}" given twice`);
    params.set(key, value);
  }
  return params;
}
