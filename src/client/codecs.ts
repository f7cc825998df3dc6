/** Value codecs: how a producer turns values into bytes and a reader turns them back. */
import { decode, encode } from '@msgpack/msgpack';

export interface Codec<T> {
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** Strings are UTF-8 on the wire (keys, header values, string values). */
export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/** Throws a TypeError on bytes that are not valid UTF-8. */
export function fromUtf8(bytes: Uint8Array): string {
  return utf8Decoder.decode(bytes);
}

export const codecs = {
  /** JSON text, UTF-8. `decode` trusts the producer: it does not check the shape against T. */
  json<T>(): Codec<T> {
    return {
      encode: (value) => utf8(JSON.stringify(value)),
      decode: (bytes) => JSON.parse(fromUtf8(bytes)) as T,
    };
  },
  /** UTF-8 text. */
  string(): Codec<string> {
    return { encode: utf8, decode: fromUtf8 };
  },
  /** Bytes as they are. */
  bytes(): Codec<Uint8Array> {
    return { encode: (value) => value, decode: (bytes) => bytes };
  },
  /** msgpack (the wire format of the protocol itself). `decode` does not check the shape against T. */
  msgpack<T>(): Codec<T> {
    return {
      encode: (value) => encode(value),
      decode: (bytes) => decode(bytes) as T,
    };
  },
} as const;
