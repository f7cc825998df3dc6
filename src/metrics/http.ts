/** `GET /metrics`: the node's registry in the Prometheus text format. */
import { sendJson, sendText, type HttpHandler } from '../http/server.js';
import type { PromMetrics } from './prom-metrics.js';

export function metricsHandler(metrics: PromMetrics): HttpHandler {
  return async (req, res, url) => {
    if (url.pathname !== '/metrics') return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      sendJson(res, 405, { code: 'INVALID_REQUEST', message: '/metrics answers GET', retriable: false });
      return true;
    }
    sendText(res, 200, metrics.contentType, await metrics.text());
    return true;
  };
}
