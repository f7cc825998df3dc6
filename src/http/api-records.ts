/**
 * The records of a produce request, from JSON to what the SDK producer sends (pure).
 *
 * Bytes in JSON (key, value, header values), as a user of Confluent's REST proxy would expect:
 * - a JSON string is sent as its UTF-8 text, without quotes (`"value": "hello"` stores `hello`);
 * - any other JSON value (object, array, number, boolean) is sent as its JSON text
 *   (`"value": {"a": 1}` stores `{"a":1}`), re-serialized, so number precision is JavaScript's;
 * - null, or the field left out, is no bytes: a null key, a tombstone value, a null header;
 * - binary goes in the `…Base64` twin of the field (`keyBase64`, `valueBase64`, `headersBase64`),
 *   standard base64 with padding (RFC 4648 section 4); a field and its twin together are refused.
 * Header values are strings or null only (a header is text or bytes, not JSON).
 * A record that breaks these rules refuses the whole request (INVALID_RECORD naming it): nothing
 * of a request is sent unless all of it can be.
 */
import { TidemarkError } from '../protocol/errors.js';
import type { ProducerRecord } from '../client/producer.js';
import { intField, isObject, objectWith } from './api-input.js';

/** Records one produce request may carry. */
export const API_RECORDS_PER_REQUEST_MAX = 1000;

const RECORD_FIELDS = ['key', 'keyBase64', 'value', 'valueBase64', 'headers', 'headersBase64', 'timestamp', 'partition'] as const;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const utf8 = new TextEncoder();

/**
 * A produce request body: a JSON array of records, or `{"records": [...]}` (Confluent's v2 shape).
 * 1..API_RECORDS_PER_REQUEST_MAX records.
 */
export function decodeProduceBody(body: unknown): ProducerRecord<Uint8Array>[] {
  const list = Array.isArray(body) ? body : isObject(body) ? objectWith(body, 'the body', ['records'])['records'] : undefined;
  if (!Array.isArray(list)) throw new TidemarkError('INVALID_REQUEST', 'the body must be a JSON array of records (or {"records": [...]})');
  if (list.length < 1 || list.length > API_RECORDS_PER_REQUEST_MAX) {
    throw new TidemarkError('INVALID_REQUEST', `a produce request carries 1..${API_RECORDS_PER_REQUEST_MAX} records, got ${list.length}`);
  }
  return list.map((record, i) => decodeRecord(record, `record ${i}`));
}

export function decodeRecord(value: unknown, what: string): ProducerRecord<Uint8Array> {
  const r = objectWith(value, what, RECORD_FIELDS, 'INVALID_RECORD');
  const record: ProducerRecord<Uint8Array> = { value: bytesOf(r, 'value', what) };
  const key = bytesOf(r, 'key', what);
  if (key !== null) record.key = key;
  const headers = headersOf(r, what);
  if (headers !== undefined) record.headers = headers;
  if (r['timestamp'] !== undefined) record.timestamp = intField(r['timestamp'], `${what}: timestamp (ms since the epoch)`, 0, Number.MAX_SAFE_INTEGER, 'INVALID_RECORD');
  if (r['partition'] !== undefined) record.partition = intField(r['partition'], `${what}: partition`, 0, 2 ** 31 - 1, 'INVALID_RECORD');
  return record;
}

/** `field` or its `…Base64` twin as bytes; null when both are absent or null. */
function bytesOf(r: Record<string, unknown>, field: 'key' | 'value', what: string): Uint8Array | null {
  const text = r[field];
  const base64 = r[`${field}Base64`];
  if (text !== undefined && base64 !== undefined) throw invalid(what, `give ${field} or ${field}Base64, not both`);
  if (base64 !== undefined) return base64 === null ? null : fromBase64(base64, what, `${field}Base64`);
  if (text === undefined || text === null) return null;
  if (typeof text === 'string') return utf8.encode(text);
  return utf8.encode(jsonText(text, what, field));
}

function headersOf(r: Record<string, unknown>, what: string): Record<string, string | Uint8Array | null> | undefined {
  const text = r['headers'];
  const base64 = r['headersBase64'];
  if (text === undefined && base64 === undefined) return undefined;
  const headers: Record<string, string | Uint8Array | null> = {};
  if (text !== undefined) {
    if (!isObject(text)) throw invalid(what, 'headers must be an object of name: string or null');
    for (const [name, v] of Object.entries(text)) {
      if (v !== null && typeof v !== 'string') throw invalid(what, `header "${name.slice(0, 100)}" must be a string or null (binary values go in headersBase64)`);
      headers[name] = v;
    }
  }
  if (base64 !== undefined) {
    if (!isObject(base64)) throw invalid(what, 'headersBase64 must be an object of name: base64 string or null');
    for (const [name, v] of Object.entries(base64)) {
      if (Object.hasOwn(headers, name)) throw invalid(what, `header "${name.slice(0, 100)}" is in both headers and headersBase64`);
      headers[name] = v === null ? null : fromBase64(v, what, `headersBase64.${name.slice(0, 100)}`);
    }
  }
  return headers;
}

function fromBase64(value: unknown, what: string, field: string): Uint8Array {
  if (typeof value !== 'string' || !BASE64.test(value)) throw invalid(what, `${field} must be standard base64 with padding (RFC 4648)`);
  return new Uint8Array(Buffer.from(value, 'base64'));
}

function jsonText(value: unknown, what: string, field: string): string {
  try {
    return JSON.stringify(value);
  } catch {
    // JSON.parse takes nesting that JSON.stringify's recursion cannot write out again.
    throw invalid(what, `${field} is nested too deeply to serialize`);
  }
}

function invalid(what: string, message: string): TidemarkError {
  return new TidemarkError('INVALID_RECORD', `${what}: ${message}`);
}
