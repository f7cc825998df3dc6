/** Argument parsing shared by every command: node's parseArgs, strict, with typed number flags. */
import type { ParseArgsConfig } from 'node:util';
import { UsageError } from './cli-error.js';

export const GLOBAL_OPTIONS = {
  nats: { type: 'string' },
  cluster: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies NonNullable<ParseArgsConfig['options']>;

export const GLOBAL_HELP = `Global options:
  --nats URL        NATS server (env TIDEMARK_NATS; default nats://127.0.0.1:4222)
  --cluster NAME    cluster name, the subject prefix (env TIDEMARK_CLUSTER; default tidemark)
  -h, --help        this help`;

/**
 * Runs a command's parseArgs (strict, so unknown flags are refused) and checks the positional count;
 * parse errors become UsageErrors.
 */
export function parse<T extends { values: { help?: boolean | undefined }; positionals: string[] }>(run: () => T, positionals: number): T {
  let parsed: T;
  try {
    parsed = run();
  } catch (error) {
    // parseArgs explains some mistakes over several lines (e.g. `--partition -1`); errors are one line.
    throw new UsageError((error as Error).message.split('\n').map((l) => l.trim()).filter((l) => l !== '').join(' '));
  }
  if (!parsed.values.help && parsed.positionals.length !== positionals) {
    throw new UsageError(
      parsed.positionals.length > positionals
        ? `unexpected argument "${parsed.positionals[positionals]}"`
        : `expected ${positionals} argument(s), got ${parsed.positionals.length}`,
    );
  }
  return parsed;
}

export function connection(values: { nats?: string | undefined; cluster?: string | undefined }): { servers: string; cluster: string } {
  return {
    servers: values.nats ?? process.env['TIDEMARK_NATS'] ?? 'nats://127.0.0.1:4222',
    cluster: values.cluster ?? process.env['TIDEMARK_CLUSTER'] ?? 'tidemark',
  };
}

/** Parses an integer flag within bounds, or throws a UsageError naming the flag. */
export function intFlag(name: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const value = /^-?[0-9]+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}, got "${text}"`);
  return value;
}
