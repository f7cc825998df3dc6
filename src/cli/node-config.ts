/**
 * `tidemark node start --config FILE` and `--print-config`: a node's settings in one file.
 *
 * The format is Kafka's server.properties with our flag names as keys, one setting per line:
 *
 *     # node 1 of the orders cluster
 *     id = 1
 *     data-dir = /var/lib/tidemark
 *     controllers = 1,2,3
 *     nats = nats://10.0.0.5:4222
 *
 * Blank lines and lines starting with `#` are ignored; a key is any long option of `tidemark node
 * start` (without `--`), a boolean option takes `true` or `false`; a value may be wrapped in double
 * quotes. An unknown key, a key given twice or a line without `=` is refused with its line number, so
 * a typo never silently falls back to a default. Precedence: a flag on the command line, then the
 * file, then the environment variable of that setting (TIDEMARK_NATS, ...), then the default.
 *
 * `--print-config` prints the effective settings in the same format (a file it prints can be given
 * back to --config), grouped by where they came from; defaults and secrets are commented out, and a
 * secret's value is never shown.
 */
import { readFile } from 'node:fs/promises';
import type { ParseArgsConfig } from 'node:util';
import { UsageError } from './cli-error.js';

type Options = NonNullable<ParseArgsConfig['options']>;
export type ConfigValues = Record<string, string | boolean>;

/** A config file larger than this is refused (a node's settings fit in a few hundred bytes). */
export const NODE_CONFIG_BYTES_MAX = 64 * 1024;

/** Options that steer the command itself and so cannot come from the file. */
const NOT_IN_FILE = new Set(['config', 'print-config', 'help']);

/** Settings whose value is a secret: printed commented out, as "set" or not. */
const SECRET = new Set(['nats-password', 'nats-token']);

/** Parses a config file's text; `source` names it in errors. */
export function parseNodeConfig(text: string, options: Options, source: string): ConfigValues {
  const out: ConfigValues = {};
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${source}:${i + 1}`;
    const eq = line.indexOf('=');
    if (eq < 0) throw new UsageError(`${where}: expected "key = value", got "${line}"`);
    const key = line.slice(0, eq).trim();
    let value = line.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    const option = Object.hasOwn(options, key) && !NOT_IN_FILE.has(key) ? options[key]! : undefined;
    if (option === undefined) throw new UsageError(`${where}: unknown setting "${key}" (the keys are the long options of "tidemark node start")`);
    if (Object.hasOwn(out, key)) throw new UsageError(`${where}: "${key}" is set twice`);
    if (option.type === 'boolean') {
      if (value !== 'true' && value !== 'false') throw new UsageError(`${where}: "${key}" takes true or false, got "${value}"`);
      out[key] = value === 'true';
    } else {
      if (value === '') throw new UsageError(`${where}: "${key}" needs a value`);
      out[key] = value;
    }
  }
  return out;
}

export async function readNodeConfig(path: string, options: Options): Promise<ConfigValues> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new UsageError(`cannot read --config ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  if (bytes.length > NODE_CONFIG_BYTES_MAX) throw new UsageError(`--config ${path} is larger than ${NODE_CONFIG_BYTES_MAX} bytes`);
  return parseNodeConfig(bytes.toString('utf8'), options, path);
}

export type Source = 'flag' | 'file' | 'env' | 'default';

/**
 * Fills the options the command line did not give from the file, and says where each came from.
 * Environment variables are read later, by whoever reads an unset option (they stay below the file).
 */
export function applyNodeConfig<V extends Record<string, unknown>>(values: V, file: ConfigValues): { values: V; sources: Map<string, Source> } {
  const sources = new Map<string, Source>();
  const merged: Record<string, unknown> = { ...values };
  for (const [key, value] of Object.entries(values)) if (value !== undefined) sources.set(key, 'flag');
  for (const [key, value] of Object.entries(file)) {
    if (merged[key] !== undefined) continue;
    merged[key] = value;
    sources.set(key, 'file');
  }
  return { values: merged as V, sources };
}

export interface EffectiveSetting {
  key: string;
  /** undefined: not set, no default. */
  value: string | boolean | undefined;
  source: Source | `env ${string}`;
}

const SOURCE_TITLE: Record<string, string> = {
  flag: 'from the command line',
  file: 'from the config file',
  default: 'defaults',
};

/**
 * The effective settings as a config file, grouped by where they came from (a comment line heads
 * each group, so the values themselves carry no comment and the output reads back as a file).
 */
export function formatNodeConfig(settings: readonly EffectiveSetting[]): string {
  const width = Math.max(...settings.map((s) => s.key.length));
  const lines = ['# tidemark node start --print-config: the effective settings (flag > file > environment > default)'];
  const groups = new Map<string, EffectiveSetting[]>();
  for (const s of settings) {
    const title = s.value === undefined ? 'not set' : (SOURCE_TITLE[s.source] ?? `from the environment (${s.source.slice(4)})`);
    groups.set(title, [...(groups.get(title) ?? []), s]);
  }
  for (const [title, group] of groups) {
    lines.push('', `# ${title}`);
    for (const s of group) {
      const pad = s.key.padEnd(width);
      // Defaults are written commented out (as in Kafka's sample server.properties), so the output
      // read back with --config sets exactly what was set, and a default that changes still applies.
      if (s.value === undefined) lines.push(`# ${pad} =`);
      else if (s.source === 'default') lines.push(`# ${pad} = ${String(s.value)}`);
      else if (SECRET.has(s.key)) lines.push(`# ${pad} = (set, not shown)`);
      else lines.push(`${pad} = ${String(s.value)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
