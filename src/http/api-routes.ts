/**
 * The /v1 JSON API's routes, as data: the router serves exactly this table and docs/openapi.json
 * lists exactly it (test/http-api-unit.test.ts compares the two), so the file cannot drift from
 * what is served. Matching is pure: a path and a method in, a route with its decoded parameters
 * (or why none matched) out.
 */
import { TidemarkError } from '../protocol/errors.js';

export const API_ROUTES = [
  { method: 'GET', path: '/v1/cluster', operation: 'describeCluster' },
  { method: 'GET', path: '/v1/topics', operation: 'listTopics' },
  { method: 'POST', path: '/v1/topics', operation: 'createTopic' },
  { method: 'GET', path: '/v1/topics/{topic}', operation: 'describeTopic' },
  { method: 'DELETE', path: '/v1/topics/{topic}', operation: 'deleteTopic' },
  { method: 'PATCH', path: '/v1/topics/{topic}/config', operation: 'alterTopicConfig' },
  { method: 'GET', path: '/v1/topics/{topic}/partitions', operation: 'listPartitions' },
  { method: 'POST', path: '/v1/topics/{topic}/partitions', operation: 'createPartitions' },
  { method: 'GET', path: '/v1/topics/{topic}/partitions/{partition}', operation: 'describePartition' },
  { method: 'GET', path: '/v1/topics/{topic}/partitions/{partition}/leader', operation: 'lookupLeader' },
  { method: 'POST', path: '/v1/topics/{topic}/records', operation: 'produce' },
  { method: 'GET', path: '/v1/topics/{topic}/subscriptions', operation: 'listSubscriptions' },
  { method: 'POST', path: '/v1/topics/{topic}/subscriptions', operation: 'createSubscription' },
  { method: 'GET', path: '/v1/topics/{topic}/subscriptions/{subscription}', operation: 'describeSubscription' },
  { method: 'DELETE', path: '/v1/topics/{topic}/subscriptions/{subscription}', operation: 'deleteSubscription' },
  { method: 'POST', path: '/v1/topics/{topic}/subscriptions/{subscription}/reset', operation: 'resetSubscription' },
] as const;

export type ApiRoute = (typeof API_ROUTES)[number];
export type ApiOperation = ApiRoute['operation'];

/** The API's paths all start here; a handler answers nothing else. */
export const API_PATH_PREFIX = '/v1';

/** Path segments one request path may have before it is refused without matching (the longest route has 6). */
const PATH_SEGMENTS_MAX = 16;

export type RouteMatch =
  | { kind: 'route'; route: ApiRoute; params: Record<string, string> }
  /** The path is an API path, but not for this method: answer 405 with `Allow`. */
  | { kind: 'method'; allowed: string[] }
  | { kind: 'none' };

export function isApiPath(pathname: string): boolean {
  return pathname === API_PATH_PREFIX || pathname.startsWith(`${API_PATH_PREFIX}/`);
}

const TEMPLATES = API_ROUTES.map((route) => ({ route, segments: route.path.split('/').slice(1) }));

/**
 * Matches a request path (still percent-encoded, as in `URL.pathname`) against the table.
 * Parameters are percent-decoded; a malformed escape is INVALID_REQUEST. No trailing slash, no
 * empty segment: `/v1/topics/` is no route.
 */
export function matchRoute(method: string, pathname: string): RouteMatch {
  const segments = pathname.split('/').slice(1);
  if (segments.length > PATH_SEGMENTS_MAX) return { kind: 'none' };
  const allowed: string[] = [];
  for (const { route, segments: template } of TEMPLATES) {
    const raw = bind(template, segments);
    if (raw === undefined) continue;
    if (route.method !== method) {
      allowed.push(route.method);
      continue;
    }
    const params: Record<string, string> = {};
    for (const [name, value] of Object.entries(raw)) params[name] = decodeSegment(name, value);
    return { kind: 'route', route, params };
  }
  return allowed.length > 0 ? { kind: 'method', allowed } : { kind: 'none' };
}

/** The template's parameters taken from `segments`, or undefined when they do not fit. */
function bind(template: readonly string[], segments: readonly string[]): Record<string, string> | undefined {
  if (template.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < template.length; i++) {
    const t = template[i]!;
    const s = segments[i]!;
    if (t.startsWith('{')) {
      if (s === '') return undefined;
      params[t.slice(1, -1)] = s;
    } else if (t !== s) {
      return undefined;
    }
  }
  return params;
}

function decodeSegment(name: string, value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new TidemarkError('INVALID_REQUEST', `path parameter ${name} is not valid percent-encoding: "${value.slice(0, 100)}"`);
  }
}
