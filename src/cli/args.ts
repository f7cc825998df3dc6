/** Argument parsing shared by every command: node's parseArgs, strict, with typed number flags. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
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

type Options = NonNullable<ParseArgsConfig['options']>;
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true }>>;

/** A negative number: an option's value, never an option (`--partitions -3`, `--offset -1`). */
const NEGATIVE_NUMBER = /^-[0-9.]/;

/**
 * Joins a string option and a following negative number into `--name=-3`, so it is the option's
 * value (parseArgs refuses a separate value that starts with a dash as ambiguous).
 */
function joinNegativeValues(args: string[], options: Options): string[] {
  const byShort = new Map(Object.entries(options).flatMap(([name, o]) => (o.short === undefined ? [] : [[o.short, name] as const])));
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') {
      out.push(...args.slice(i));
      break;
    }
    const name = arg.startsWith('--') ? arg.slice(2) : /^-[^-]$/.test(arg) ? byShort.get(arg.slice(1)) : undefined;
    const next = args[i + 1];
    if (name !== undefined && Object.hasOwn(options, name) && options[name]!.type === 'string' && next !== undefined && NEGATIVE_NUMBER.test(next)) {
      out.push(`${arg.startsWith('--') ? arg : `--${name}`}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/**
 * Says in one line what a strict parse refused, from the lenient parse's tokens (parseArgs' own
 * messages span lines and quote unevenly); undefined if the tokens show nothing wrong.
 */
function explain(command: string, args: string[], options: Options): string | undefined {
  const { tokens } = parseArgs({ args, options, allowPositionals: true, strict: false, tokens: true });
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    const option = Object.hasOwn(options, token.name) ? options[token.name] : undefined;
    if (option === undefined) return `unknown option "${token.rawName}" for "tidemark ${command}"`;
    const flag = `--${token.name}`;
    if (option.type === 'boolean' && token.value !== undefined) return `option ${flag} takes no value, got "${token.value}"`;
    if (option.type === 'string' && token.value === undefined) return `option ${flag} needs a value`;
    if (option.type === 'string' && !token.inlineValue && token.value!.startsWith('-')) {
      return `option ${flag} needs a value, got the option "${token.value}" (for a value starting with "-" write ${flag}=VALUE)`;
    }
  }
  return undefined;
}

/**
 * Parses a command's arguments (strict, so unknown flags are refused) and checks the positional
 * count; every mistake becomes a one-line UsageError. `command` names it in messages ("topic create").
 */
export function parse<const O extends Options>(command: string, argv: string[], options: O, positionals: number): Parsed<O> {
  const args = joinNegativeValues(argv, options);
  let parsed: Parsed<O>;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? '';
    if (!code.startsWith('ERR_PARSE_ARGS_')) throw error;
    throw new UsageError(explain(command, args, options) ?? `invalid arguments for "tidemark ${command}": ${oneLine((error as Error).message)}`);
  }
  if (!(parsed.values as { help?: boolean }).help && parsed.positionals.length !== positionals) {
    throw new UsageError(
      parsed.positionals.length > positionals
        ? `unexpected argument "${parsed.positionals[positionals]}"`
        : `expected ${positionals} argument(s), got ${parsed.positionals.length}`,
    );
  }
  return parsed;
}

function oneLine(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join(' ');
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
