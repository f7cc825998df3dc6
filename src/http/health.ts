/**
 * `GET /healthz` and `GET /readyz`, for orchestrators. /healthz answers 200 while the process serves
 * HTTP at all (liveness); /readyz answers 200 when the node is ready to serve clients and 503 with a
 * JSON body naming what is missing otherwise (metrics/readiness.ts decides).
 */
import type { Readiness } from '../metrics/readiness.js';
import { sendJson, type HttpHandler } from './server.js';

export function healthHandler(nodeId: number, readiness: () => Readiness): HttpHandler {
  return (req, res, url) => {
    if (url.pathname !== '/healthz' && url.pathname !== '/readyz') return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      sendJson(res, 405, { code: 'INVALID_REQUEST', message: `${url.pathname} answers GET`, retriable: false });
      return true;
    }
    if (url.pathname === '/healthz') {
      sendJson(res, 200, { status: 'ok', node: nodeId });
      return true;
    }
    const state = readiness();
    sendJson(res, state.ready ? 200 : 503, { ready: state.ready, node: nodeId, missing: state.missing });
    return true;
  };
}
