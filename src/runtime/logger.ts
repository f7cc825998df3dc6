/** Builds the real pino logger; only the composition root and the CLI call this. */
import { pino } from 'pino';
import type { Logger } from './ports.js';

export interface LoggerOptions {
  /** @default "info" */
  level?: string;
  /** Human-readable output (tidemark dev). @default false */
  pretty?: boolean;
  /** Where JSON lines go. @default 2 (stderr) */
  fd?: number;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env['TIDEMARK_LOG_LEVEL'] ?? 'info';
  if (options.pretty) {
    return pino({ level, transport: { target: 'pino-pretty', options: { destination: options.fd ?? 2, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino({ level }, pino.destination({ fd: options.fd ?? 2, sync: false }));
}
