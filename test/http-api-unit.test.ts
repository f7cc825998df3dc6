/**
 * The HTTP API's pure parts: routing, record decoding, the producer cache and the produce deadline,
 * and docs/openapi.json against the route table the router serves.
 */
import { readFile } from 'node:fs/promises';
import test from 'ava';
import { resetTarget } from '../src/http/api.js';
import { API_ROUTES, isApiPath, matchRoute } from '../src/http/api-routes.js';
import { API_RECORDS_PER_REQUEST_MAX, decodeProduceBody } from '../src/http/api-records.js';
import { ProducerCache, sendAll } from '../src/http/api-producers.js';
import { parseListen } from '../src/cli/commands/http.js';
import { ErrorCodes, TidemarkError } from '../src/protocol/errors.js';
import type { Producer, ProducerRecord, RecordMetadata } from '../src/client/producer.js';
import { FakeClock } from './helpers/fake-transport.js';

const root = new URL('../../', import.meta.url);
const text = (bytes: Uint8Array | null | undefined) => (bytes == null ? bytes : Buffer.from(bytes).toString('utf8'));

function codeOf(t: { throws: (fn: () => unknown) => unknown }, fn: () => unknown): string {
  const error = t.throws(fn) as unknown;
  return error instanceof TidemarkError ? error.code : `not a TidemarkError: ${String(error)}`;
}

test('every route matches its own path with parameters, decoded', (t) => {
  for (const route of API_ROUTES) {
    const path = route.path.replace('{topic}', 'orders.eu-1').replace('{partition}', '3').replace('{subscription}', 'bill%5Fing');
    const match = matchRoute(route.method, path);
    t.is(match.kind, 'route', `${route.method} ${path}`);
    if (match.kind !== 'route') continue;
    t.is(match.route.operation, route.operation);
    if (route.path.includes('{topic}')) t.is(match.params['topic'], 'orders.eu-1');
    if (route.path.includes('{partition}')) t.is(match.params['partition'], '3');
    if (route.path.includes('{subscription}')) t.is(match.params['subscription'], 'bill_ing');
  }
});

test('a known path with another method is a 405 listing the allowed methods; unknown paths match nothing', (t) => {
  t.deepEqual(matchRoute('PUT', '/v1/topics'), { kind: 'method', allowed: ['GET', 'POST'] });
  t.deepEqual(matchRoute('POST', '/v1/topics/t'), { kind: 'method', allowed: ['GET', 'DELETE'] });
  t.deepEqual(matchRoute('GET', '/v1/topics/t/records'), { kind: 'method', allowed: ['POST'] });
  for (const path of ['/v1', '/v1/', '/v1/topics/', '/v1/topicsx', '/v1/topics//config', '/v2/topics', '/v1/topics/t/partitions/0/leader/x', `/v1${'/a'.repeat(50)}`]) {
    t.deepEqual(matchRoute('GET', path), { kind: 'none' }, path);
  }
  t.is(codeOf(t, () => matchRoute('GET', '/v1/topics/a%E0%A4%A')), 'INVALID_REQUEST');
  t.true(isApiPath('/v1') && isApiPath('/v1/topics'));
  t.false(isApiPath('/v10/topics') || isApiPath('/metrics') || isApiPath('/healthz'));
});

test('values: strings as UTF-8 text, other JSON as JSON text, base64 as bytes, null or absent as null', (t) => {
  const [a, b, c, d, e, f] = decodeProduceBody([
    { key: 'k', value: 'héllo' },
    { value: { a: [1, true, null] } },
    { value: 42.5, key: 7 },
    { valueBase64: 'AP8=', keyBase64: 'aw==' },
    { value: null },
    {},
  ]);
  t.is(text(a!.key as Uint8Array), 'k');
  t.is(text(a!.value), 'héllo');
  t.is(text(b!.value), '{"a":[1,true,null]}');
  t.is(b!.key, undefined);
  t.is(text(c!.value), '42.5');
  t.is(text(c!.key as Uint8Array), '7');
  t.deepEqual([...d!.value!], [0, 255]);
  t.deepEqual([...(d!.key as Uint8Array)], [107]);
  t.is(e!.value, null);
  t.is(f!.value, null);
  t.is(text(decodeProduceBody([{ value: '"quoted"' }])[0]!.value), '"quoted"', 'a string is sent as it is, quotes included when given');
});

test('headers, timestamp and partition pass through; {"records": [...]} is accepted too', (t) => {
  const [r] = decodeProduceBody({ records: [{ value: 'v', headers: { trace: 'abc', empty: null }, headersBase64: { bin: 'AQI=' }, timestamp: 1_700_000_000_000, partition: 2 }] });
  t.is(r!.headers!['trace'], 'abc');
  t.is(r!.headers!['empty'], null);
  t.deepEqual([...(r!.headers!['bin'] as Uint8Array)], [1, 2]);
  t.is(r!.timestamp, 1_700_000_000_000);
  t.is(r!.partition, 2);
});

test('a malformed record refuses the request with INVALID_RECORD naming it', (t) => {
  const bad: unknown[] = [
    { value: 'v', partiton: 1 },
    { value: 'v', valueBase64: 'AA==' },
    { key: 'k', keyBase64: 'AA==' },
    { valueBase64: 'not base64!' },
    { valueBase64: 'AAA' },
    { valueBase64: 5 },
    { headers: { h: 5 } },
    { headers: ['x'] },
    { headers: { h: 'a' }, headersBase64: { h: 'AA==' } },
    { headersBase64: { h: '%%' } },
    { partition: -1 },
    { partition: 1.5 },
    { partition: '1' },
    { timestamp: -5 },
    'just a string',
    null,
  ];
  for (const record of bad) {
    const error = t.throws(() => decodeProduceBody([{ value: 'fine' }, record])) as TidemarkError;
    t.is(error.code, 'INVALID_RECORD', JSON.stringify(record));
    t.regex(error.message, /^record 1\b/);
  }
  let deep: unknown = 1;
  for (let i = 0; i < 200_000; i++) deep = [deep];
  t.is(codeOf(t, () => decodeProduceBody([{ value: deep }])), 'INVALID_RECORD', 'nesting too deep to serialize is refused, not a crash');
});

test('the body is an array (or {records}) of 1..API_RECORDS_PER_REQUEST_MAX records', (t) => {
  for (const body of [[], {}, { records: 'x' }, { records: [], extra: 1 }, 'x', 5, null, new Array(API_RECORDS_PER_REQUEST_MAX + 1).fill({ value: 'v' })]) {
    t.is(codeOf(t, () => decodeProduceBody(body)), 'INVALID_REQUEST', JSON.stringify(body).slice(0, 40));
  }
  t.is(decodeProduceBody(new Array(API_RECORDS_PER_REQUEST_MAX).fill({ value: 'v' })).length, API_RECORDS_PER_REQUEST_MAX);
});

test('reset targets: earliest, latest, {offset}, {timestamp}; anything else is INVALID_REQUEST', (t) => {
  t.is(resetTarget('earliest'), 'earliest');
  t.is(resetTarget('latest'), 'latest');
  t.deepEqual(resetTarget({ offset: 5 }), { offset: 5 });
  t.deepEqual(resetTarget({ timestamp: 1000 }), { timestamp: 1000 });
  for (const to of ['start', { offset: -1 }, { offset: 1, timestamp: 2 }, { other: 1 }, [], null, undefined]) {
    t.is(codeOf(t, () => resetTarget(to)), 'INVALID_REQUEST', JSON.stringify(to));
  }
});

test('--listen takes HOST:PORT and [IPV6]:PORT', (t) => {
  t.deepEqual(parseListen('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  t.deepEqual(parseListen('localhost:8080'), { host: 'localhost', port: 8080 });
  t.deepEqual(parseListen('[::1]:9000'), { host: '::1', port: 9000 });
  for (const bad of ['8080', 'host:', ':80', 'h:65536', 'h:-1', '::1:80', 'h:80x']) t.throws(() => parseListen(bad), undefined, bad);
});

/** A producer that records what it was sent and lets the test settle each send. */
class FakeProducer {
  readonly sent: Array<{ record: ProducerRecord<Uint8Array>; resolve: (m: RecordMetadata) => void; reject: (e: unknown) => void }> = [];
  closed = 0;
  constructor(readonly topic: string) {}
  send(record: ProducerRecord<Uint8Array>): Promise<RecordMetadata> {
    return new Promise((resolve, reject) => this.sent.push({ record, resolve, reject }));
  }
  async close(): Promise<void> {
    this.closed++;
  }
}

function fakeCache(max: number) {
  const made: FakeProducer[] = [];
  const cache = new ProducerCache((topic) => {
    const p = new FakeProducer(topic);
    made.push(p);
    return p as unknown as Producer<Uint8Array>;
  }, max);
  return { cache, made };
}

test('producer cache: one producer per (topic, acks), the least recently used closed beyond the bound', async (t) => {
  const { cache, made } = fakeCache(2);
  const a = cache.get('a', 'all');
  t.is(cache.get('a', 'all'), a);
  const a1 = cache.get('a', 1);
  t.not(a1, a);
  cache.get('a', 'all'); // a/all is now the most recently used
  cache.get('b', 'all'); // evicts a/1
  t.is(cache.size, 2);
  t.deepEqual(made.map((p) => p.closed), [0, 1, 0]);
  cache.drop('a');
  t.deepEqual(made.map((p) => p.closed), [1, 1, 0]);
  await cache.close();
  t.deepEqual(made.map((p) => p.closed), [1, 1, 1]);
  t.is(cache.size, 0);
});

test('sendAll answers each record in order; what is unanswered at the deadline is a TIMEOUT', async (t) => {
  const clock = new FakeClock();
  const producer = new FakeProducer('t');
  const records = [{ value: null }, { value: null }, { value: null }];
  let results: Awaited<ReturnType<typeof sendAll>> | undefined;
  void sendAll(producer as unknown as Producer<Uint8Array>, records, 1000, clock).then((r) => (results = r));
  t.is(producer.sent.length, 3, 'every record is sent at once');
  producer.sent[1]!.resolve({ topic: 't', partition: 0, offset: 7 });
  producer.sent[2]!.reject(new TidemarkError('RECORD_TOO_LARGE'));
  await clock.advance(999);
  t.is(results, undefined);
  await clock.advance(1);
  t.is(results?.length, 3);
  t.is((results![0] as { error: TidemarkError }).error.code, 'TIMEOUT');
  t.deepEqual(results![1], { partition: 0, offset: 7 });
  t.is((results![2] as { error: TidemarkError }).error.code, 'RECORD_TOO_LARGE');
  t.is(clock.pendingTimers, 0);
});

test('sendAll resolves as soon as every record is answered, its timer cleared', async (t) => {
  const clock = new FakeClock();
  const producer = new FakeProducer('t');
  const done = sendAll(producer as unknown as Producer<Uint8Array>, [{ value: null }], 30_000, clock);
  producer.sent[0]!.reject(new Error('boom'));
  const [result] = await done;
  t.is((result as { error: TidemarkError }).error.code, 'INTERNAL', 'a non-Tidemark failure is INTERNAL');
  t.is(clock.pendingTimers, 0);
});

type OpenApi = {
  openapi: string;
  paths: Record<string, Record<string, { operationId: string; parameters?: Array<{ $ref: string }>; responses: Record<string, unknown> }>>;
  components: { schemas: Record<string, { properties?: Record<string, { enum?: string[] }> }>; parameters: Record<string, { name: string; in: string }> };
};

test('docs/openapi.json lists exactly the routes the router serves', async (t) => {
  const doc = JSON.parse(await readFile(new URL('docs/openapi.json', root), 'utf8')) as OpenApi;
  t.regex(doc.openapi, /^3\./);
  const inFile = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => `${method.toUpperCase()} ${path} ${op.operationId}`));
  const served = API_ROUTES.map((r) => `${r.method} ${r.path} ${r.operation}`);
  t.deepEqual(inFile.sort(), served.sort());
});

test('docs/openapi.json: every path parameter declared, every reference resolves, errors use the SDK codes', async (t) => {
  const raw = await readFile(new URL('docs/openapi.json', root), 'utf8');
  const doc = JSON.parse(raw) as OpenApi;
  for (const [path, methods] of Object.entries(doc.paths)) {
    const inPath = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
    for (const [method, op] of Object.entries(methods)) {
      const declared = (op.parameters ?? []).map((p) => doc.components.parameters[p.$ref.split('/').pop()!]!).filter((p) => p.in === 'path').map((p) => p.name).sort();
      t.deepEqual(declared, inPath, `${method} ${path}`);
      t.truthy(op.responses['default'], `${method} ${path} documents its errors`);
      t.true(Object.keys(op.responses).some((s) => /^2\d\d$/.test(s)), `${method} ${path} documents its success`);
    }
  }
  for (const [, ref] of raw.matchAll(/"\$ref": "#\/([^"]+)"/g)) {
    const target = ref!.split('/').reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], doc);
    t.truthy(target, `#/${ref} resolves`);
  }
  t.deepEqual(doc.components.schemas['Error']!.properties!['code']!.enum, Object.keys(ErrorCodes));
});
