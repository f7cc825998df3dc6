/**
 * The /v1 JSON API (docs/http-api.md, docs/openapi.json): topic lookup, administration and
 * produce over HTTP, for programs that do not speak NATS. Every call goes through the SDK client it
 * is given (the one retry layer is the SDK's), so the API answers with the SDK's error codes, each
 * with its HTTP status. One HttpHandler: mount it on any server of src/http/server.ts; it answers
 * paths under /v1 and leaves the rest to the next handler.
 *
 * Bounds: request bodies (API_BODY_BYTES_MAX, API_PRODUCE_BODY_BYTES_MAX), records per request
 * (API_RECORDS_PER_REQUEST_MAX), produce requests in progress (API_PRODUCE_REQUESTS_MAX: beyond,
 * BUSY / 429 before the body is read), cached producers and their bytes (api-producers.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Tidemark } from '../client/client.js';
import { codecs } from '../client/codecs.js';
import type { Acks } from '../client/producer.js';
import type { ResetTarget } from '../client/admin.js';
import { TidemarkError } from '../protocol/errors.js';
import { INITIAL_POSITIONS, type InitialPosition } from '../protocol/subscription-messages.js';
import { systemClock, type Clock, type Logger } from '../runtime/ports.js';
import { configField, intField, objectWith, parseJson, partitionParam, queryParams, stringField, subscriptionParam, topicParam } from './api-input.js';
import { API_PRODUCE_TIMEOUT_MS_MAX, API_PRODUCER_IN_FLIGHT_BYTES_MAX, API_PRODUCERS_MAX, asTidemarkError, ProducerCache, sendAll } from './api-producers.js';
import { decodeProduceBody } from './api-records.js';
import { isApiPath, matchRoute, type ApiOperation } from './api-routes.js';
import { readBody, sendError, sendJson, type HttpHandler } from './server.js';

/** Bound of an admin request's body (topic, config, subscription), bytes. */
export const API_BODY_BYTES_MAX = 64 * 1024;
/** Bound of a produce request's body, bytes (records as JSON; base64 makes binary a third larger). */
export const API_PRODUCE_BODY_BYTES_MAX = 4 * 1024 * 1024;
/** Produce requests read or waiting at once; beyond, BUSY (429) without reading the body. */
export const API_PRODUCE_REQUESTS_MAX = 32;

export type ApiOptions = {
  logger: Logger;
  /**
   * Timers of produce requests (their timeoutMs).
   * @default systemClock
   */
  clock?: Clock;
  /**
   * SDK producers kept open at once (per topic and acks).
   * @default API_PRODUCERS_MAX (32)
   */
  producersMax?: number;
};

/** The API's handler; `close()` refuses new requests, flushes and closes its producers, and waits for requests in progress. */
export type ApiHandler = HttpHandler & { close(): Promise<void> };

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

interface Call {
  req: IncomingMessage;
  url: URL;
  params: Record<string, string>;
}

const ACKS: Record<string, Acks> = { all: 'all', '-1': 'all', '1': 1, '0': 0 };

export function createApiHandler(client: Tidemark, options: ApiOptions): ApiHandler {
  const { logger } = options;
  const clock = options.clock ?? systemClock;
  const admin = client.admin();
  const producers = new ProducerCache(
    (topic, acks) => client.producer({ topic, acks, codec: codecs.bytes(), inFlightBytesMax: API_PRODUCER_IN_FLIGHT_BYTES_MAX, deliveryTimeoutMs: API_PRODUCE_TIMEOUT_MS_MAX }),
    options.producersMax ?? API_PRODUCERS_MAX,
  );
  const inProgress = new Set<Promise<void>>();
  let produceRequests = 0;
  let closed = false;

  const ok = (body: unknown): Reply => ({ status: 200, body });
  const noContent = (): Reply => ({ status: 204 });

  async function jsonBody(req: IncomingMessage, bytesMax = API_BODY_BYTES_MAX): Promise<unknown> {
    return parseJson(await readBody(req, bytesMax));
  }

  /** One partition of `described`, or a final UNKNOWN_TOPIC naming how many the topic has. */
  function partitionOf<P extends { partition: number }>(described: { partitions: P[] }, topic: string, partition: number): P {
    const found = described.partitions.find((p) => p.partition === partition);
    if (found === undefined) {
      throw new TidemarkError('UNKNOWN_TOPIC', `topic "${topic}" has no partition ${partition} (it has ${described.partitions.length})`, {
        context: { topic, partition },
        final: true,
      });
    }
    return found;
  }

  const operations: Record<ApiOperation, (call: Call) => Promise<Reply>> = {
    describeCluster: async () => ok(await admin.describeCluster()),
    listTopics: async () => ok({ topics: await admin.listTopics() }),
    createTopic: async ({ req }) => {
      const body = objectWith(await jsonBody(req), 'the body', ['name', 'partitions', 'replicationFactor', 'config']);
      const name = topicParam(stringField(body['name'], 'name', 'INVALID_TOPIC'));
      const topic = await admin.createTopic({
        name,
        ...(body['partitions'] === undefined ? {} : { partitions: intField(body['partitions'], 'partitions', 1, 2 ** 31 - 1, 'INVALID_PARTITIONS') }),
        ...(body['replicationFactor'] === undefined
          ? {}
          : { replicationFactor: intField(body['replicationFactor'], 'replicationFactor', 1, 2 ** 15, 'INVALID_REPLICATION_FACTOR') }),
        ...(body['config'] === undefined ? {} : { config: configField(body['config'], 'config') }),
      });
      return { status: 201, body: topic, headers: { location: `/v1/topics/${encodeURIComponent(name)}` } };
    },
    describeTopic: async ({ params }) => ok(await admin.describeTopic(topicParam(params['topic']!))),
    deleteTopic: async ({ params }) => {
      const topic = topicParam(params['topic']!);
      await admin.deleteTopic(topic);
      producers.drop(topic);
      return noContent();
    },
    alterTopicConfig: async ({ req, params }) => {
      const topic = topicParam(params['topic']!);
      const body = objectWith(await jsonBody(req), 'the body', ['set', 'delete']);
      const set = body['set'] === undefined ? {} : configField(body['set'], 'set');
      const deletes = body['delete'] === undefined ? [] : body['delete'];
      if (!Array.isArray(deletes) || !deletes.every((k) => typeof k === 'string')) throw new TidemarkError('INVALID_CONFIG', 'delete must be an array of config keys');
      if (Object.keys(set).length === 0 && deletes.length === 0) throw new TidemarkError('INVALID_REQUEST', 'nothing to change: give set and/or delete');
      return ok(await admin.alterTopicConfig(topic, { set, delete: deletes as string[] }));
    },
    listPartitions: async ({ params }) => ok({ partitions: (await admin.describeTopic(topicParam(params['topic']!))).partitions }),
    createPartitions: async ({ req, params }) => {
      const topic = topicParam(params['topic']!);
      const body = objectWith(await jsonBody(req), 'the body', ['totalCount']);
      return ok(await admin.createPartitions(topic, intField(body['totalCount'], 'totalCount', 1, 2 ** 31 - 1, 'INVALID_PARTITIONS')));
    },
    describePartition: async ({ params }) => {
      const topic = topicParam(params['topic']!);
      return ok(partitionOf(await admin.describeTopic(topic), topic, partitionParam(params['partition']!)));
    },
    // Metadata alone, like Pulsar's lookup: it answers while the partition's leader is unreachable.
    lookupLeader: async ({ params }) => {
      const topic = topicParam(params['topic']!);
      const p = partitionOf(await admin.lookupTopic(topic), topic, partitionParam(params['partition']!));
      if (p.leader < 0) throw new TidemarkError('LEADER_NOT_AVAILABLE', `${topic}/${p.partition} has no leader right now (an election is running, or no replica is alive)`);
      return ok({ topic, partition: p.partition, leader: p.leader, leaderEpoch: p.leaderEpoch, replicas: p.replicas, isr: p.isr });
    },
    produce: async ({ req, url, params }) => {
      const topic = topicParam(params['topic']!);
      const query = queryParams(url, ['acks', 'timeoutMs']);
      const acksText = query.get('acks') ?? 'all';
      const acks = ACKS[acksText];
      if (acks === undefined) throw new TidemarkError('INVALID_REQUEST', `acks must be all, -1, 1 or 0, got "${acksText.slice(0, 20)}"`);
      const timeoutText = query.get('timeoutMs');
      const timeoutMs =
        timeoutText === undefined ? API_PRODUCE_TIMEOUT_MS_MAX : intField(/^[0-9]{1,9}$/.test(timeoutText) ? Number(timeoutText) : Number.NaN, 'timeoutMs', 1, API_PRODUCE_TIMEOUT_MS_MAX);
      if (produceRequests >= API_PRODUCE_REQUESTS_MAX) {
        throw new TidemarkError('BUSY', `${API_PRODUCE_REQUESTS_MAX} produce requests are in progress (API_PRODUCE_REQUESTS_MAX); retry later`);
      }
      produceRequests++;
      try {
        const records = decodeProduceBody(await jsonBody(req, API_PRODUCE_BODY_BYTES_MAX));
        const results = await sendAll(producers.get(topic, acks), records, timeoutMs, clock);
        const first = results[0]!;
        // Every record refused for one reason (an unknown topic, no permission, ...): that is the answer.
        if ('error' in first && results.every((r) => 'error' in r && r.error.code === first.error.code)) throw first.error;
        return ok({ offsets: results.map((r) => ('error' in r ? { error: errorBody(r.error) } : r)) });
      } finally {
        produceRequests--;
      }
    },
    listSubscriptions: async ({ params }) => ok({ subscriptions: await admin.listSubscriptions(topicParam(params['topic']!)) }),
    createSubscription: async ({ req, params }) => {
      const topic = topicParam(params['topic']!);
      const body = objectWith(await jsonBody(req), 'the body', ['name', 'initialPosition']);
      const name = subscriptionParam(stringField(body['name'], 'name'));
      const position = body['initialPosition'];
      if (position !== undefined && !INITIAL_POSITIONS.includes(position as InitialPosition)) {
        throw new TidemarkError('INVALID_REQUEST', `initialPosition must be one of ${INITIAL_POSITIONS.join(', ')}`);
      }
      return ok(await admin.createSubscription({ topic, name, ...(position === undefined ? {} : { initialPosition: position as InitialPosition }) }));
    },
    describeSubscription: async ({ params }) => ok(await admin.describeSubscription(topicParam(params['topic']!), subscriptionParam(params['subscription']!))),
    deleteSubscription: async ({ params }) => {
      await admin.deleteSubscription(topicParam(params['topic']!), subscriptionParam(params['subscription']!));
      return noContent();
    },
    resetSubscription: async ({ req, params }) => {
      const topic = topicParam(params['topic']!);
      const name = subscriptionParam(params['subscription']!);
      const body = objectWith(await jsonBody(req), 'the body', ['to']);
      await admin.resetSubscription(topic, name, resetTarget(body['to']));
      return noContent();
    },
  };

  async function serve(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    let reply: Reply;
    try {
      if (closed) throw new TidemarkError('SHUTTING_DOWN', 'the HTTP API is shutting down');
      const match = matchRoute(req.method ?? '', url.pathname);
      if (match.kind === 'none') throw new TidemarkError('INVALID_REQUEST', `no API route ${url.pathname.slice(0, 200)} (see docs/openapi.json)`, { context: { httpStatus: 404 } });
      if (match.kind === 'method') {
        res.setHeader('allow', match.allowed.join(', '));
        throw new TidemarkError('INVALID_REQUEST', `method ${req.method} is not allowed on ${url.pathname.slice(0, 200)}; allowed: ${match.allowed.join(', ')}`, {
          context: { httpStatus: 405 },
        });
      }
      if (match.route.operation !== 'produce') queryParams(url, []);
      reply = await operations[match.route.operation]({ req, url, params: match.params });
    } catch (thrown) {
      const error = asTidemarkError(thrown);
      if (error.code === 'INTERNAL') logger.warn({ err: thrown, method: req.method, path: url.pathname }, 'http api request failed');
      else logger.debug({ code: error.code, method: req.method, path: url.pathname }, 'http api request refused');
      sendError(res, error);
      return;
    }
    if (reply.headers !== undefined) for (const [name, value] of Object.entries(reply.headers)) res.setHeader(name, value);
    if (reply.body === undefined) {
      res.writeHead(reply.status);
      res.end();
    } else {
      sendJson(res, reply.status, reply.body);
    }
  }

  const handler = (req: IncomingMessage, res: ServerResponse, url: URL): boolean => {
    if (!isApiPath(url.pathname)) return false;
    const served = serve(req, res, url);
    inProgress.add(served);
    void served.finally(() => inProgress.delete(served));
    return true;
  };

  let closing: Promise<void> | undefined;
  return Object.assign(handler, {
    close(): Promise<void> {
      closed = true;
      closing ??= (async () => {
        await producers.close();
        await Promise.allSettled([...inProgress]);
      })();
      return closing;
    },
  });
}

/** `{code, message, retriable}`: the error schema of every error answer, and of a record's error. */
export function errorBody(error: TidemarkError): { code: string; message: string; retriable: boolean } {
  return { code: error.code, message: error.message, retriable: error.retriable };
}

/** A reset body's `to`: "earliest", "latest", {"offset": N} or {"timestamp": MS}. */
export function resetTarget(to: unknown): ResetTarget {
  if (to === 'earliest' || to === 'latest') return to;
  if (typeof to === 'object' && to !== null && !Array.isArray(to)) {
    const keys = Object.keys(to);
    const value = (to as Record<string, unknown>)[keys[0] ?? ''];
    if (keys.length === 1 && keys[0] === 'offset') return { offset: intField(value, 'to.offset', 0, Number.MAX_SAFE_INTEGER) };
    if (keys.length === 1 && keys[0] === 'timestamp') return { timestamp: intField(value, 'to.timestamp', 0, Number.MAX_SAFE_INTEGER) };
  }
  throw new TidemarkError('INVALID_REQUEST', 'to must be "earliest", "latest", {"offset": N} or {"timestamp": MS}');
}
