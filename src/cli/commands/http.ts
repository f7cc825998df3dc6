import { Tidemark } from '../../client/client.js';
import { createApiHandler } from '../../http/api.js';
import { startHttpServer, type HttpServer } from '../../http/server.js';
import { createLogger } from '../../runtime/logger.js';
import { connection, GLOBAL_HELP, GLOBAL_OPTIONS, parse } from '../args.js';
import { UsageError } from '../cli-error.js';
import { onShutdownSignal } from '../signals.js';

export const HTTP_HELP = `Usage: tidemark http [--listen HOST:PORT] [--log-level L]

Serves Tidemark's JSON API (/v1: topic lookup, administration, produce; docs/http-api.md and
docs/openapi.json) for programs that do not speak NATS. A stateless process: it reaches the cluster
through NATS like any client, so run as many as you like. Prints one line with the URL it listens
on. SIGINT / SIGTERM stop it: new requests are refused, records received are flushed and answered.

Options:
  --listen HOST:PORT   where to listen (default 127.0.0.1:8080; port 0 picks a free one;
                       IPv6 as [::1]:8080)
  --log-level L        pino level (default info; env TIDEMARK_LOG_LEVEL); logs go to stderr
${GLOBAL_HELP}`;

const OPTIONS = {
  ...GLOBAL_OPTIONS,
  listen: { type: 'string' },
  'log-level': { type: 'string' },
} as const;

const DEFAULT_LISTEN = '127.0.0.1:8080';

/** HOST:PORT (or [IPV6]:PORT) into its parts; a UsageError names what is wrong. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || port > 65_535) throw new UsageError(`--listen expects HOST:PORT with a port in 0..65535 (IPv6 as [::1]:8080), got "${text}"`);
  return { host: match[1] ?? match[2]!, port };
}

export async function httpCommand(argv: string[]): Promise<number> {
  const { values } = parse('http', argv, OPTIONS, 0);
  if (values.help) {
    process.stdout.write(`${HTTP_HELP}\n`);
    return 0;
  }
  const listen = parseListen(values.listen ?? DEFAULT_LISTEN);
  const logger = createLogger(values['log-level'] === undefined ? {} : { level: values['log-level'] });
  const stop = onShutdownSignal();
  const client = await Tidemark.connect({ ...connection(values), name: 'tidemark-http' });
  const api = createApiHandler(client, { logger });
  try {
    let server: HttpServer;
    try {
      server = await startHttpServer({ ...listen, handlers: [api], logger });
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      process.stderr.write(`tidemark: cannot listen on ${values.listen ?? DEFAULT_LISTEN}: ${reason}\n`);
      return 1;
    }
    const { host, port } = server.address();
    process.stdout.write(`tidemark http listening on http://${host.includes(':') ? `[${host}]` : host}:${port}\n`);
    await stop;
    // The API first: it refuses new requests and answers the ones in progress (producers flush).
    await api.close();
    await server.close();
  } finally {
    await api.close();
    await client.close();
    logger.flush();
  }
  return 0;
}
