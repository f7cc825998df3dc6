/**
 * The /v1 JSON API with real HTTP requests (fetch) against a real node process: lookup, admin,
 * produce (read back with the SDK at the answered offsets), errors and bounds, the OpenAPI file
 * against what is served, and `tidemark http` as a process of its own.
 */
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import test from 'ava';
import { pino } from 'pino';
import { codecs } from '../src/client/codecs.js';
import { API_PRODUCE_BODY_BYTES_MAX, API_PRODUCE_REQUESTS_MAX, createApiHandler, type ApiHandler } from '../src/http/api.js';
import { startHttpServer, type HttpServer } from '../src/http/server.js';
import type { Tidemark } from '../src/client/client.js';
import { spawnCli } from './helpers/cli.js';
import { cliNodeFixture } from './helpers/cli-node-fixture.js';

const parts: { api?: ApiHandler; server?: HttpServer; base?: string } = {};
test.after.always(async () => {
  await parts.api?.close();
  await parts.server?.close();
});
const fx = cliNodeFixture(test, 'tm-http-api-', async (client) => {
  const logger = pino({ level: 'silent' });
  parts.api = createApiHandler(client, { logger });
  parts.server = await startHttpServer({ port: 0, handlers: [parts.api], logger });
  parts.base = `http://127.0.0.1:${parts.server.address().port}`;
});

interface Answer {
  status: number;
  headers: Headers;
  /** The parsed JSON answer (shapes in docs/openapi.json); undefined for an empty body. */
  body: any;
}

/** One request to the API, bounded in time; the body is parsed as JSON when there is one. */
async function call(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(`${parts.base}${path}`, {
    method,
    signal: AbortSignal.timeout(45_000),
    ...(body === undefined ? {} : { body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body) }),
    ...init,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) };
}

function isError(t: { is: (a: unknown, b: unknown, m?: string) => void }, answer: Answer, status: number, code: string): void {
  t.is(answer.status, status, JSON.stringify(answer.body));
  t.is(answer.body?.code, code, JSON.stringify(answer.body));
  t.is(typeof answer.body?.message, 'string');
  t.is(typeof answer.body?.retriable, 'boolean');
}

/** The record at `offset` of `topic`/`partition`, read with the SDK. */
async function readAt(client: Tidemark, topic: string, partition: number, offset: number) {
  const reader = client.reader({ topic, partition, codec: codecs.bytes(), from: { offset } });
  try {
    const next = await reader.next();
    if (next.done) throw new Error(`no record at ${topic}/${partition}@${offset}`);
    return next.value;
  } finally {
    await reader.close();
  }
}

test('lookup: a topic with its partitions (leader, epoch, replicas, ISR, offsets) and one partition\'s leader', async (t) => {
  await fx.client.admin().createTopic({ name: 'lookup', partitions: 3 });
  const topic = await call('GET', '/v1/topics/lookup');
  t.is(topic.status, 200);
  t.is(topic.body.name, 'lookup');
  t.is(topic.body.partitions.length, 3);
  for (const p of topic.body.partitions) {
    t.is(p.leader, 1);
    t.true(Number.isInteger(p.leaderEpoch));
    t.deepEqual(p.replicas, [1]);
    t.deepEqual(p.isr, [1]);
    t.is(p.logStartOffset, 0);
    t.is(p.highWatermark, 0);
  }
  const leader = await call('GET', '/v1/topics/lookup/partitions/2/leader');
  t.is(leader.status, 200);
  t.deepEqual(leader.body, { topic: 'lookup', partition: 2, leader: 1, leaderEpoch: topic.body.partitions[2].leaderEpoch, replicas: [1], isr: [1] });
  const one = await call('GET', '/v1/topics/lookup/partitions/1');
  t.is(one.body.partition, 1);
  t.is((await call('GET', '/v1/topics/lookup/partitions')).body.partitions.length, 3);
  isError(t, await call('GET', '/v1/topics/lookup/partitions/3/leader'), 404, 'UNKNOWN_TOPIC');
  isError(t, await call('GET', '/v1/topics/lookup/partitions/-1/leader'), 400, 'INVALID_REQUEST');
  const missing = await call('GET', '/v1/topics/no-such-topic');
  isError(t, missing, 404, 'UNKNOWN_TOPIC');
  t.false(missing.body.retriable, 'confirmed missing: final');
});

test('admin: create, list, alter config, add partitions, delete; the SDK sees each change', async (t) => {
  const created = await call('POST', '/v1/topics', { name: 'admin-t', partitions: 1, replicationFactor: 1, config: { 'retention.ms': 3_600_000 } });
  t.is(created.status, 201, JSON.stringify(created.body));
  t.is(created.headers.get('location'), '/v1/topics/admin-t');
  t.is(created.body.config['retention.ms'], '3600000');
  t.true((await call('GET', '/v1/topics')).body.topics.includes('admin-t'));
  isError(t, await call('POST', '/v1/topics', { name: 'admin-t' }), 409, 'TOPIC_ALREADY_EXISTS');

  const altered = await call('PATCH', '/v1/topics/admin-t/config', { set: { 'max.message.bytes': '65536' }, delete: ['retention.ms'] });
  t.is(altered.status, 200, JSON.stringify(altered.body));
  t.deepEqual((await fx.client.admin().describeTopic('admin-t')).config, { 'max.message.bytes': '65536' });
  isError(t, await call('PATCH', '/v1/topics/admin-t/config', { set: { 'no.such.key': '1' } }), 400, 'INVALID_CONFIG');
  isError(t, await call('PATCH', '/v1/topics/admin-t/config', {}), 400, 'INVALID_REQUEST');

  const grown = await call('POST', '/v1/topics/admin-t/partitions', { totalCount: 3 });
  t.is(grown.status, 200, JSON.stringify(grown.body));
  t.is((await fx.client.admin().describeTopic('admin-t')).partitions.length, 3);
  isError(t, await call('POST', '/v1/topics/admin-t/partitions', { totalCount: 2 }), 400, 'INVALID_PARTITIONS');

  const deleted = await call('DELETE', '/v1/topics/admin-t');
  t.is(deleted.status, 204);
  t.is(deleted.body, undefined);
  t.false((await fx.client.admin().listTopics()).includes('admin-t'));
  isError(t, await call('GET', '/v1/topics/admin-t'), 404, 'UNKNOWN_TOPIC');
  isError(t, await call('DELETE', '/v1/topics/admin-t'), 404, 'UNKNOWN_TOPIC');

  for (const [body, code] of [
    [{ name: 'bad name!' }, 'INVALID_TOPIC'],
    [{ name: 'x', partitions: 0 }, 'INVALID_PARTITIONS'],
    [{ name: 'x', partitions: 'many' }, 'INVALID_PARTITIONS'],
    [{ name: 'x', replicationFactor: 0 }, 'INVALID_REPLICATION_FACTOR'],
    [{ name: 'x', config: { 'retention.ms': [] } }, 'INVALID_CONFIG'],
    [{ name: 'x', partitons: 2 }, 'INVALID_REQUEST'],
    [{}, 'INVALID_TOPIC'],
  ] as const) {
    isError(t, await call('POST', '/v1/topics', body), 400, code);
  }
});

test('admin: subscriptions listed, described, created, reset and deleted; cluster status', async (t) => {
  await fx.client.admin().createTopic({ name: 'subs', partitions: 2 });
  await fx.client.admin().createSubscription({ topic: 'subs', name: 'from-sdk', initialPosition: 'earliest' });
  const made = await call('POST', '/v1/topics/subs/subscriptions', { name: 'from-http', initialPosition: 'latest' });
  t.is(made.status, 200, JSON.stringify(made.body));
  t.is(made.body.name, 'from-http');
  t.is(made.body.initialPosition, 'latest');
  const list = await call('GET', '/v1/topics/subs/subscriptions');
  t.deepEqual(list.body.subscriptions.map((s: { name: string }) => s.name), ['from-http', 'from-sdk']);
  const one = await call('GET', '/v1/topics/subs/subscriptions/from-sdk');
  t.is(one.status, 200);
  t.is(one.body.partitions.length, 2);
  t.is(one.body.consumerCount, 0);
  t.is((await call('POST', '/v1/topics/subs/subscriptions/from-sdk/reset', { to: 'latest' })).status, 204);
  isError(t, await call('POST', '/v1/topics/subs/subscriptions/from-sdk/reset', { to: 'middle' }), 400, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics/subs/subscriptions', { name: 'x', initialPosition: 'oldest' }), 400, 'INVALID_REQUEST');
  t.is((await call('DELETE', '/v1/topics/subs/subscriptions/from-http')).status, 204);
  isError(t, await call('GET', '/v1/topics/subs/subscriptions/from-http'), 404, 'UNKNOWN_SUBSCRIPTION');
  isError(t, await call('GET', '/v1/topics/no-such-topic/subscriptions'), 404, 'UNKNOWN_TOPIC');

  const cluster = await call('GET', '/v1/cluster');
  t.is(cluster.status, 200);
  t.is(cluster.body.controllerId, 1);
  t.deepEqual(cluster.body.brokers.map((b: { id: number; fenced: boolean }) => [b.id, b.fenced]), [[1, false]]);
  t.is(cluster.body.voters[0].role, 'leader');
});

test('produce: each record answered with its partition and offset, and the SDK reads it back there', async (t) => {
  await fx.client.admin().createTopic({ name: 'produce', partitions: 3 });
  const records = [
    { key: 'user-1', value: { event: 'click', n: 1 } },
    { value: 'plain text, ünïcode', headers: { trace: 'abc', none: null }, headersBase64: { bin: 'AP8=' } },
    { valueBase64: Buffer.from([0, 1, 2, 255]).toString('base64'), keyBase64: 'AAE=', partition: 2, timestamp: 1_700_000_000_000 },
    { key: 'tombstone', value: null },
  ];
  const answer = await call('POST', '/v1/topics/produce/records?acks=all&timeoutMs=20000', records);
  t.is(answer.status, 200, JSON.stringify(answer.body));
  const offsets: Array<{ partition: number; offset: number }> = answer.body.offsets;
  t.is(offsets.length, 4);
  t.is(offsets[2]!.partition, 2);

  const read = await Promise.all(offsets.map((o) => readAt(fx.client, 'produce', o.partition, o.offset)));
  t.is(read[0]!.keyString, 'user-1');
  t.is(Buffer.from(read[0]!.value!).toString(), '{"event":"click","n":1}');
  t.is(Buffer.from(read[1]!.value!).toString(), 'plain text, ünïcode');
  t.is(read[1]!.key, null);
  t.is(read[1]!.headerString('trace'), 'abc');
  t.is(read[1]!.headers['none'], null);
  t.deepEqual([...(read[1]!.headers['bin'] as Uint8Array)], [0, 255]);
  t.deepEqual([...read[2]!.value!], [0, 1, 2, 255]);
  t.deepEqual([...read[2]!.key!], [0, 1]);
  t.is(read[2]!.timestamp, 1_700_000_000_000);
  t.is(read[3]!.value, null);
  t.is(read[3]!.keyString, 'tombstone');

  const leaderOnly = await call('POST', '/v1/topics/produce/records?acks=1', { records: [{ value: 'acks one', partition: 0 }] });
  t.is(leaderOnly.status, 200);
  t.is(Buffer.from((await readAt(fx.client, 'produce', 0, leaderOnly.body.offsets[0].offset)).value!).toString(), 'acks one');
  const fireAndForget = await call('POST', '/v1/topics/produce/records?acks=0', [{ value: 'acks zero', partition: 1 }]);
  t.is(fireAndForget.status, 200);
  t.deepEqual(fireAndForget.body.offsets, [{ partition: 1, offset: -1 }], 'acks=0: nobody tells the offset');
});

test('produce: a record the producer refuses gets its own error, the others are written', async (t) => {
  await fx.client.admin().createTopic({ name: 'mixed', partitions: 1 });
  const huge = 'x'.repeat(1024 * 1024 + 1); // more than the producer's batch: refused alone
  const answer = await call('POST', '/v1/topics/mixed/records', [{ value: 'before' }, { value: huge }, { value: 'after' }]);
  t.is(answer.status, 200, JSON.stringify(answer.body).slice(0, 300));
  const [before, failed, after] = answer.body.offsets;
  t.is(failed.error.code, 'RECORD_TOO_LARGE');
  t.false(failed.error.retriable);
  t.is(Buffer.from((await readAt(fx.client, 'mixed', before.partition, before.offset)).value!).toString(), 'before');
  t.is(Buffer.from((await readAt(fx.client, 'mixed', after.partition, after.offset)).value!).toString(), 'after');
  // Every record refused for the same reason: the request is answered with it.
  isError(t, await call('POST', '/v1/topics/mixed/records', [{ value: huge }]), 413, 'RECORD_TOO_LARGE');
});

test('errors: unknown topic 404, malformed JSON 400, bad acks 400, wrong method 405, unknown route 404', async (t) => {
  isError(t, await call('POST', '/v1/topics/never-created/records', [{ value: 'x' }]), 404, 'UNKNOWN_TOPIC');
  isError(t, await call('POST', '/v1/topics/produce/records', '[{"value": '), 400, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics', '{"name": "x",}'), 400, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics/produce/records', ''), 400, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics/produce/records?acks=2', [{ value: 'x' }]), 400, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics/produce/records?acks=all&acks=1', [{ value: 'x' }]), 400, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics/produce/records?timeoutMs=0', [{ value: 'x' }]), 400, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics/produce/records?timeoutMs=99999999', [{ value: 'x' }]), 400, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics/produce/records?ack=1', [{ value: 'x' }]), 400, 'INVALID_REQUEST');
  isError(t, await call('GET', '/v1/topics?verbose=1'), 400, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics/produce/records', [{ value: 'x', partiton: 0 }]), 400, 'INVALID_RECORD');
  isError(t, await call('POST', '/v1/topics/produce/records', [{ value: 'x', partition: 99 }]), 404, 'UNKNOWN_TOPIC');
  isError(t, await call('GET', '/v1/topics/bad*name'), 400, 'INVALID_TOPIC');
  isError(t, await call('GET', '/v1/topics/bad%ZZ'), 400, 'INVALID_REQUEST');
  const wrong = await call('PUT', '/v1/topics/produce/records', [{ value: 'x' }]);
  isError(t, wrong, 405, 'INVALID_REQUEST');
  t.is(wrong.headers.get('allow'), 'POST');
  isError(t, await call('GET', '/v1/no/such/route'), 404, 'INVALID_REQUEST');
});

test('errors: a body over the bound is 413, declared or streamed, and the server keeps serving', async (t) => {
  const tooBig = '['.padEnd(API_PRODUCE_BODY_BYTES_MAX + 1, ' ');
  isError(t, await call('POST', '/v1/topics/produce/records', tooBig), 413, 'INVALID_REQUEST');
  const chunks = Math.ceil((API_PRODUCE_BODY_BYTES_MAX + 1) / 65_536) + 1;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < chunks; i++) controller.enqueue(new Uint8Array(65_536).fill(0x20));
      controller.close();
    },
  });
  isError(t, await call('POST', '/v1/topics/produce/records', undefined, { body: stream, duplex: 'half' } as RequestInit), 413, 'INVALID_REQUEST');
  isError(t, await call('POST', '/v1/topics', `{"name": "${'x'.repeat(70_000)}"}`), 413, 'INVALID_REQUEST');
  t.is((await call('GET', '/v1/topics')).status, 200);
});

test('garbage of every kind leaves the API answering', async (t) => {
  const garbage: Array<[string, string, string | Uint8Array]> = [
    ['POST', '/v1/topics', '\u0000\u0001\u0002'],
    ['POST', '/v1/topics', new Uint8Array([0xff, 0xfe, 0x00, 0x80])],
    ['POST', '/v1/topics', 'null'],
    ['POST', '/v1/topics', '[]'],
    ['POST', '/v1/topics', '{"name": {"$gt": ""}}'],
    ['POST', '/v1/topics/produce/records', '{"records": {"length": 5}}'],
    ['POST', '/v1/topics/produce/records', `[${'['.repeat(100_000)}${']'.repeat(100_000)}]`],
    ['POST', '/v1/topics/produce/records', '[{"__proto__": {"polluted": true}, "value": "x"}]'],
    ['PATCH', '/v1/topics/produce/config', '{"set": null}'],
    ['PATCH', '/v1/topics/produce/config', '{"delete": [1, 2]}'],
    ['POST', '/v1/topics/produce/partitions', '{"totalCount": 1e308}'],
    ['POST', '/v1/topics/produce/subscriptions/s/reset', '{"to": {"offset": "0"}}'],
    ['GET', `/v1/topics/${'t'.repeat(5000)}`, ''],
    ['GET', '/v1/topics/..', ''],
    ['DELETE', '/v1/topics/produce/subscriptions/bad name', ''],
  ];
  for (const [method, path, body] of garbage) {
    const answer = await call(method, path, method === 'GET' || method === 'DELETE' ? undefined : body);
    t.true(answer.status >= 400 && answer.status < 500, `${method} ${path.slice(0, 60)}: ${answer.status} ${JSON.stringify(answer.body)}`);
    t.is(typeof answer.body.code, 'string');
  }
  t.is(({} as Record<string, unknown>)['polluted'], undefined);
  t.is((await call('GET', '/v1/topics/produce')).status, 200);
});

test.serial(`produce requests in progress are bounded: beyond ${API_PRODUCE_REQUESTS_MAX}, BUSY (429) before the body is read`, async (t) => {
  await fx.client.admin().createTopic({ name: 'bounded', partitions: 1 });
  const controllers: Array<ReadableStreamDefaultController<Uint8Array>> = [];
  const open = Array.from({ length: API_PRODUCE_REQUESTS_MAX }, () => {
    const body = new ReadableStream<Uint8Array>({ start: (c) => void controllers.push(c) });
    return call('POST', '/v1/topics/bounded/records', undefined, { body, duplex: 'half' } as RequestInit);
  });
  // The server has seen every slow request once its body's first bytes arrived: poll, bounded, for the 429.
  for (const c of controllers) c.enqueue(new TextEncoder().encode('[{"value": "slow"'));
  let busy: Answer | undefined;
  for (let attempt = 0; attempt < 100 && busy?.status !== 429; attempt++) {
    busy = await call('POST', '/v1/topics/bounded/records', [{ value: 'one too many' }]);
  }
  isError(t, busy!, 429, 'BUSY');
  t.true(busy!.body.retriable);
  for (const c of controllers) {
    c.enqueue(new TextEncoder().encode('}]'));
    c.close();
  }
  const answers = await Promise.all(open);
  t.deepEqual(answers.map((a) => a.status === 200 && a.body.offsets[0].offset >= 0), answers.map(() => true), JSON.stringify(answers.find((a) => a.status !== 200)?.body));
  t.is((await call('POST', '/v1/topics/bounded/records', [{ value: 'room again' }])).status, 200);
});

test('every route of docs/openapi.json is served, and its other methods are 405', async (t) => {
  const doc = JSON.parse(await readFile(new URL('../../docs/openapi.json', import.meta.url), 'utf8')) as { paths: Record<string, Record<string, unknown>> };
  for (const [template, methods] of Object.entries(doc.paths)) {
    const path = template.replace('{topic}', 'openapi-probe').replace('{partition}', '0').replace('{subscription}', 'probe');
    const listed = Object.keys(methods).map((m) => m.toUpperCase());
    for (const method of listed) {
      const answer = await call(method, path, method === 'GET' || method === 'DELETE' ? undefined : '{}');
      t.not(answer.status, 405, `${method} ${template}`);
      t.false(/no API route/.test(answer.body?.message ?? ''), `${method} ${template}`);
    }
    const unlisted = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].find((m) => !listed.includes(m))!;
    const refused = await call(unlisted, path, unlisted === 'GET' || unlisted === 'DELETE' ? undefined : '{}');
    t.is(refused.status, 405, `${unlisted} ${template}`);
    t.deepEqual(refused.headers.get('allow')?.split(', ').sort(), [...listed].sort());
  }
});

type Schema = {
  $ref?: string;
  allOf?: Schema[];
  oneOf?: Schema[];
  type?: string;
  enum?: unknown[];
  nullable?: boolean;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  items?: Schema;
};

/** What in `value` breaks `schema` (the subset of OpenAPI 3.0 docs/openapi.json uses), as messages. */
function violations(doc: unknown, schema: Schema, value: unknown, at: string): string[] {
  if (schema.$ref !== undefined) {
    const target = schema.$ref.slice(2).split('/').reduce<unknown>((node, key) => (node as Record<string, unknown>)[key], doc) as Schema;
    return violations(doc, target, value, at);
  }
  if (schema.allOf !== undefined) return schema.allOf.flatMap((s) => violations(doc, { ...s, additionalProperties: true }, value, at));
  if (schema.oneOf !== undefined) {
    const fits = schema.oneOf.filter((s) => violations(doc, s, value, at).length === 0).length;
    return fits === 1 ? [] : [`${at}: fits ${fits} of oneOf`];
  }
  if (value === null) return schema.nullable ? [] : [`${at}: null`];
  if (schema.enum !== undefined && !schema.enum.includes(value)) return [`${at}: ${JSON.stringify(value)} not in enum`];
  switch (schema.type) {
    case 'integer':
      return Number.isInteger(value) ? [] : [`${at}: not an integer`];
    case 'number':
    case 'string':
    case 'boolean':
      return typeof value === schema.type ? [] : [`${at}: not a ${schema.type}`];
    case 'array':
      return Array.isArray(value) ? value.flatMap((v, i) => violations(doc, schema.items!, v, `${at}[${i}]`)) : [`${at}: not an array`];
    case 'object': {
      if (typeof value !== 'object' || Array.isArray(value)) return [`${at}: not an object`];
      const o = value as Record<string, unknown>;
      const found = (schema.required ?? []).filter((k) => !(k in o)).map((k) => `${at}.${k}: missing`);
      for (const [k, v] of Object.entries(o)) {
        const property = schema.properties?.[k];
        if (property !== undefined) found.push(...violations(doc, property, v, `${at}.${k}`));
        else if (typeof schema.additionalProperties === 'object') found.push(...violations(doc, schema.additionalProperties, v, `${at}.${k}`));
        else if (schema.additionalProperties === false) found.push(`${at}.${k}: not in the schema`);
      }
      return found;
    }
    default:
      return [];
  }
}

test('answers have the shapes docs/openapi.json gives them', async (t) => {
  const doc = JSON.parse(await readFile(new URL('../../docs/openapi.json', import.meta.url), 'utf8')) as {
    paths: Record<string, Record<string, { responses: Record<string, { content?: { 'application/json': { schema: Schema } }; $ref?: string }> }>>;
  };
  const check = (method: string, template: string, answer: Answer) => {
    const responses = doc.paths[template]![method.toLowerCase()]!.responses;
    const response = responses[String(answer.status)] ?? responses['default']!;
    const schema = response.$ref === undefined ? response.content?.['application/json'].schema : { $ref: `${response.$ref}/content/application~1json/schema` };
    if (schema === undefined) return t.is(answer.body, undefined, `${method} ${template} ${answer.status}: no body`);
    const resolved = schema.$ref?.includes('~1') ? (schema.$ref.slice(2).split('/').reduce<unknown>((n, k) => (n as Record<string, unknown>)[k.replace('~1', '/')], doc) as Schema) : schema;
    t.deepEqual(violations(doc, resolved, answer.body, 'body'), [], `${method} ${template} ${answer.status}`);
  };
  const created = await call('POST', '/v1/topics', { name: 'shapes', partitions: 2, config: { 'retention.ms': 60_000 } });
  check('POST', '/v1/topics', created);
  check('POST', '/v1/topics', await call('POST', '/v1/topics', { name: 'shapes' }));
  check('GET', '/v1/topics', await call('GET', '/v1/topics'));
  check('GET', '/v1/cluster', await call('GET', '/v1/cluster'));
  check('POST', '/v1/topics/{topic}/records', await call('POST', '/v1/topics/shapes/records', [{ value: 'a' }, { value: 'b', partition: 5 }]));
  check('GET', '/v1/topics/{topic}', await call('GET', '/v1/topics/shapes'));
  check('GET', '/v1/topics/{topic}', await call('GET', '/v1/topics/never-made'));
  check('GET', '/v1/topics/{topic}/partitions', await call('GET', '/v1/topics/shapes/partitions'));
  check('GET', '/v1/topics/{topic}/partitions/{partition}', await call('GET', '/v1/topics/shapes/partitions/1'));
  check('GET', '/v1/topics/{topic}/partitions/{partition}/leader', await call('GET', '/v1/topics/shapes/partitions/1/leader'));
  check('PATCH', '/v1/topics/{topic}/config', await call('PATCH', '/v1/topics/shapes/config', { set: { 'retention.ms': 120_000 } }));
  check('POST', '/v1/topics/{topic}/partitions', await call('POST', '/v1/topics/shapes/partitions', { totalCount: 3 }));
  check('POST', '/v1/topics/{topic}/subscriptions', await call('POST', '/v1/topics/shapes/subscriptions', { name: 's' }));
  check('GET', '/v1/topics/{topic}/subscriptions', await call('GET', '/v1/topics/shapes/subscriptions'));
  check('GET', '/v1/topics/{topic}/subscriptions/{subscription}', await call('GET', '/v1/topics/shapes/subscriptions/s'));
  check('POST', '/v1/topics/{topic}/subscriptions/{subscription}/reset', await call('POST', '/v1/topics/shapes/subscriptions/s/reset', { to: { offset: 0 } }));
  check('DELETE', '/v1/topics/{topic}/subscriptions/{subscription}', await call('DELETE', '/v1/topics/shapes/subscriptions/s'));
  check('DELETE', '/v1/topics/{topic}', await call('DELETE', '/v1/topics/shapes'));
});

/** A port something listens on, for the "in use" case. */
async function busyPort(): Promise<{ port: number; close: () => void }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as { port: number }).port, close: () => server.close() };
}

test('tidemark http: prints its URL, serves the API, stops cleanly on SIGTERM; bad --listen and a used port fail', async (t) => {
  const http = spawnCli(['http', '--listen', '127.0.0.1:0'], { nats: fx.nats.url });
  const line = await http.waitForLine('stdout', (l) => l.startsWith('tidemark http listening on '), 20_000);
  const url = /listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line)?.[1];
  t.truthy(url, line);
  const created = await fetch(`${url}/v1/topics`, { method: 'POST', body: JSON.stringify({ name: 'via-cli', partitions: 1 }), signal: AbortSignal.timeout(30_000) });
  t.is(created.status, 201);
  const produced = await fetch(`${url}/v1/topics/via-cli/records`, { method: 'POST', body: '[{"value": "from the http process"}]', signal: AbortSignal.timeout(30_000) });
  const { offsets } = (await produced.json()) as { offsets: Array<{ partition: number; offset: number }> };
  t.is(Buffer.from((await readAt(fx.client, 'via-cli', offsets[0]!.partition, offsets[0]!.offset)).value!).toString(), 'from the http process');
  const started = performance.now();
  const exit = await http.kill('SIGTERM', 15_000);
  t.deepEqual(exit, { code: 0, signal: null });
  t.true(performance.now() - started < 10_000);
  t.deepEqual(http.stdoutLines, [line], 'one line on stdout');

  const bad = await fx.tidemark(['http', '--listen', 'localhost']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--listen expects HOST:PORT/);
  const taken = await busyPort();
  try {
    const used = await fx.tidemark(['http', '--listen', `127.0.0.1:${taken.port}`]);
    t.is(used.code, 1);
    t.regex(used.stderr, /cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
  } finally {
    taken.close();
  }
  const help = await fx.tidemark(['http', '--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /Usage: tidemark http/);
});
