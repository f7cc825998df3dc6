/**
 * Shape-and-bounds checking for bytes that enter a node or the SDK. A schema is a function that
 * returns the typed value or throws INVALID_REQUEST naming the field; nothing is ever cast.
 */
import { TidemarkError } from './errors.js';

export type Schema<T> = (value: unknown, path: string) => T;
export type Infer<S> = S extends Schema<infer T> ? T : never;

function invalid(path: string, why: string): TidemarkError {
  return new TidemarkError('INVALID_REQUEST', `${path}: ${why}`);
}

export const int =
  (min: number, max: number): Schema<number> =>
  (v, path) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw invalid(path, 'expected an integer');
    if (v < min || v > max) throw invalid(path, `must be within ${min}..${max}`);
    return v;
  };

export const str =
  (maxLength: number): Schema<string> =>
  (v, path) => {
    if (typeof v !== 'string') throw invalid(path, 'expected a string');
    if (v.length > maxLength) throw invalid(path, `longer than ${maxLength}`);
    return v;
  };

export const bool: Schema<boolean> = (v, path) => {
  if (typeof v !== 'boolean') throw invalid(path, 'expected a boolean');
  return v;
};

export const bytes =
  (maxLength: number): Schema<Uint8Array> =>
  (v, path) => {
    if (!(v instanceof Uint8Array)) throw invalid(path, 'expected binary');
    if (v.length > maxLength) throw invalid(path, `longer than ${maxLength} bytes`);
    return v;
  };

export const oneOf =
  <const T extends readonly (string | number)[]>(...values: T): Schema<T[number]> =>
  (v, path) => {
    if (!values.includes(v as T[number])) throw invalid(path, `must be one of ${values.join(', ')}`);
    return v as T[number];
  };

export const optional =
  <T>(schema: Schema<T>): Schema<T | undefined> =>
  (v, path) =>
    v === undefined || v === null ? undefined : schema(v, path);

export const array =
  <T>(item: Schema<T>, maxItems: number): Schema<T[]> =>
  (v, path) => {
    if (!Array.isArray(v)) throw invalid(path, 'expected an array');
    if (v.length > maxItems) throw invalid(path, `more than ${maxItems} items`);
    return v.map((x, i) => item(x, `${path}[${i}]`));
  };

/** A string-to-string map (topic configs), bounded in entries and lengths. */
export const stringMap =
  (maxEntries: number, maxLength: number): Schema<Record<string, string>> =>
  (v, path) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Uint8Array) throw invalid(path, 'expected a map');
    const entries = Object.entries(v);
    if (entries.length > maxEntries) throw invalid(path, `more than ${maxEntries} entries`);
    const out: Record<string, string> = {};
    for (const [k, x] of entries) {
      if (k.length > maxLength) throw invalid(path, `key longer than ${maxLength}`);
      out[k] = str(maxLength)(x, `${path}.${k}`);
    }
    return out;
  };

type Shape = Record<string, Schema<unknown>>;
/** Keys whose schema accepts a missing value are optional in the type too. */
type OptionalKeys<S extends Shape> = { [K in keyof S]: undefined extends Infer<S[K]> ? K : never }[keyof S];
type ObjectOf<S extends Shape> = { [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> } & { [K in OptionalKeys<S>]?: Infer<S[K]> };

export const object =
  <S extends Shape>(shape: S): Schema<ObjectOf<S>> =>
  (v, path) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Uint8Array) throw invalid(path, 'expected a map');
    const src = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const [k, schema] of Object.entries(shape)) out[k] = schema(src[k], path === '' ? k : `${path}.${k}`);
    return out as ObjectOf<S>;
  };
