/**
 * The one HTTP server a node (or `tidemark http`) runs: /metrics, /healthz, /readyz and the JSON
 * API share it. Handlers are tried in order; the first that returns true answered. Every limit is
 * named here: a request body is read into memory only up to its handler's bound, connections and
 * header / request time are capped, so a slow or hostile client costs a bounded amount.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TidemarkError, type ErrorCode } from '../protocol/errors.js';
import type { Logger } from '../runtime/ports.js';

/** Answers the request and returns true, or returns false to let the next handler try. */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => boolean | Promise<boolean>;

/** Open connections one server keeps; more are refused by the kernel backlog. */
export const HTTP_CONNECTIONS_MAX = 256;
/** A request's headers must arrive within this, ms. */
export const HTTP_HEADERS_TIMEOUT_MS = 10_000;
/** A whole request (headers and body) must arrive within this, ms. */
export const HTTP_REQUEST_TIMEOUT_MS = 30_000;
/** Default bound of a request body, bytes (a handler may pass its own to readBody). */
export const HTTP_BODY_BYTES_MAX = 1024 * 1024;

export interface HttpServerOptions {
  /** @default '127.0.0.1' */
  host?: string;
  /** 0 picks a free port (tests); `address()` tells which. */
  port: number;
  handlers: readonly HttpHandler[];
  logger: Logger;
}

export interface HttpServer {
  /** Where it listens (the port is the real one when 0 was asked). */
  address(): { host: string; port: number };
  close(): Promise<void>;
}

export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const { handlers, logger } = options;
  const server: Server = createServer((req, res) => {
    void dispatch(req, res).catch((error: unknown) => {
      logger.warn({ err: error, method: req.method, url: req.url }, 'http handler failed');
      if (!res.headersSent) sendError(res, error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', undefined, { cause: error }));
      else res.destroy();
    });
  });
  server.maxConnections = HTTP_CONNECTIONS_MAX;
  server.headersTimeout = HTTP_HEADERS_TIMEOUT_MS;
  server.requestTimeout = HTTP_REQUEST_TIMEOUT_MS;

  async function dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      sendError(res, new TidemarkError('INVALID_REQUEST', 'malformed request URL'));
      return;
    }
    for (const handler of handlers) if (await handler(req, res, url)) return;
    sendJson(res, 404, { code: 'NOT_FOUND', message: `no route for ${req.method ?? '?'} ${url.pathname}` });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (error) => logger.warn({ err: error }, 'http server error'));
  const bound = server.address() as AddressInfo;
  logger.info({ host: bound.address, port: bound.port }, 'http server listening');
  return {
    address: () => ({ host: bound.address, port: bound.port }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * Reads a request body, refusing (INVALID_REQUEST, answered 413) one over `bytesMax` without
 * buffering the rest of it. The rest is still read and dropped, not left in the socket: closing a
 * socket with unread bytes sends a reset that can destroy the 413 answer before the client reads
 * it. The server's requestTimeout bounds how long a client may keep sending.
 */
export function readBody(req: IncomingMessage, bytesMax = HTTP_BODY_BYTES_MAX): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  // Not read at all: node drops the declared bytes itself once the answer is sent.
  if (declared > bytesMax) return Promise.reject(bodyTooLarge(bytesMax));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes <= bytesMax) {
        chunks.push(chunk);
      } else if (bytes - chunk.length <= bytesMax) {
        chunks.length = 0;
        reject(bodyTooLarge(bytesMax));
      }
    });
    req.once('end', () => (bytes <= bytesMax ? resolve(Buffer.concat(chunks, bytes)) : undefined));
    req.once('error', reject);
    req.once('close', () => reject(new TidemarkError('INVALID_REQUEST', 'the client closed the request before its body ended')));
  });
}

function bodyTooLarge(bytesMax: number): TidemarkError {
  return new TidemarkError('INVALID_REQUEST', `request body is larger than ${bytesMax} bytes`, { context: { httpStatus: 413 } });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendText(res: ServerResponse, status: number, contentType: string, text: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** HTTP status of each error code the API may answer with; anything else is 500 (or 503 if retriable). */
const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  INVALID_REQUEST: 400,
  INVALID_RECORD: 400,
  INVALID_TOPIC: 400,
  INVALID_PARTITIONS: 400,
  INVALID_REPLICATION_FACTOR: 400,
  INVALID_CONFIG: 400,
  CORRUPT_MESSAGE: 400,
  OFFSET_OUT_OF_RANGE: 416,
  RECORD_TOO_LARGE: 413,
  NOT_AUTHORIZED: 403,
  UNKNOWN_TOPIC: 404,
  UNKNOWN_SUBSCRIPTION: 404,
  TOPIC_ALREADY_EXISTS: 409,
  ELECTION_NOT_NEEDED: 409,
  CONSUMER_BUSY: 409,
  PRODUCER_BUSY: 409,
  PRODUCER_FENCED: 409,
  TIMEOUT: 504,
  REQUEST_TIMED_OUT: 504,
  BUSY: 429,
};

export function httpStatusOf(error: TidemarkError): number {
  const explicit = error.context['httpStatus'];
  if (typeof explicit === 'number') return explicit;
  return HTTP_STATUS[error.code] ?? (error.retriable ? 503 : 500);
}

/** `{ code, message, retriable }`: the SDK's error, as JSON, with its HTTP status. */
export function sendError(res: ServerResponse, error: TidemarkError): void {
  sendJson(res, httpStatusOf(error), { code: error.code, message: error.message, retriable: error.retriable });
}
