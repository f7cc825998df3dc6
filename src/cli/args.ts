/** Argument parsing shared by every command: node's parseArgs, strict, with typed number flags. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { NatsSecurity } from '../runtime/nats-security.js';
import { UsageError } from './cli-error.js';

export const GLOBAL_OPTIONS = {
  nats: { type: 'string' },
  cluster: { type: 'string' },
  'nats-creds': { type: 'string' },
  'nats-user': { type: 'string' },
  'nats-password': { type: 'string' },
  'nats-token': { type: 'string' },
  'nats-nkey': { type: 'string' },
  'nats-tls-ca': { type: 'string' },
  'nats-tls-cert': { type: 'string' },
  'nats-tls-key': { type: 'string' },
  'nats-inbox-prefix': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies NonNullable<ParseArgsConfig['options']>;

export const GLOBAL_HELP = `Global options:
  --nats URL        NATS server (env TIDEMARK_NATS; default nats://127.0.0.1:4222)
  --cluster NAME    cluster name, the subject prefix (env TIDEMARK_CLUSTER; default tidemark)
  -h, --help        this help
NATS credentials (docs/security.md; each also from its environment variable):
  --nats-creds FILE         a .creds file (JWT and seed)            TIDEMARK_NATS_CREDS
  --nats-user NAME          user, with --nats-password              TIDEMARK_NATS_USER
  --nats-password PASS      (prefer the variable: flags show in ps) TIDEMARK_NATS_PASSWORD
  --nats-token TOKEN        authorization token                     TIDEMARK_NATS_TOKEN
  --nats-nkey FILE          a file holding an NKey user seed        TIDEMARK_NATS_NKEY
  --nats-tls-ca FILE        CA of the server's certificate (PEM)    TIDEMARK_NATS_TLS_CA
  --nats-tls-cert FILE      client certificate (PEM), with its key  TIDEMARK_NATS_TLS_CERT
  --nats-tls-key FILE       its private key (PEM)                   TIDEMARK_NATS_TLS_KEY
  --nats-inbox-prefix P     reply inbox prefix the permissions      TIDEMARK_NATS_INBOX_PREFIX
                            allow, e.g. _INBOX_alice (see tidemark acl print)`;

/** Each credential flag and the environment variable that gives it when the flag is absent. */
export const SECURITY_ENV = {
  'nats-creds': 'TIDEMARK_NATS_CREDS',
  'nats-user': 'TIDEMARK_NATS_USER',
  'nats-password': 'TIDEMARK_NATS_PASSWORD',
  'nats-token': 'TIDEMARK_NATS_TOKEN',
  'nats-nkey': 'TIDEMARK_NATS_NKEY',
  'nats-tls-ca': 'TIDEMARK_NATS_TLS_CA',
  'nats-tls-cert': 'TIDEMARK_NATS_TLS_CERT',
  'nats-tls-key': 'TIDEMARK_NATS_TLS_KEY',
  'nats-inbox-prefix': 'TIDEMARK_NATS_INBOX_PREFIX',
} as const;

type SecurityFlag = keyof typeof SECURITY_ENV;

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

/**
 * Where and as whom to connect: `--nats`, `--cluster` and the NATS credentials, each flag before
 * its environment variable. The credentials are spread into `Tidemark.connect` / `startNode` as
 * they are (only the ones given appear).
 */
export function connection(
  values: { nats?: string | undefined; cluster?: string | undefined } & { [F in SecurityFlag]?: string | undefined },
): { servers: string; cluster: string } & NatsSecurity {
  const given = (flag: SecurityFlag): string | undefined => {
    const value = values[flag] ?? process.env[SECURITY_ENV[flag]];
    return value === '' ? undefined : value;
  };
  const caFile = given('nats-tls-ca');
  const certFile = given('nats-tls-cert');
  const keyFile = given('nats-tls-key');
  const tls = { ...(caFile === undefined ? {} : { caFile }), ...(certFile === undefined ? {} : { certFile }), ...(keyFile === undefined ? {} : { keyFile }) };
  const security: NatsSecurity = {};
  const set = <K extends keyof NatsSecurity>(key: K, value: NatsSecurity[K] | undefined) => {
    if (value !== undefined) security[key] = value;
  };
  set('credsFile', given('nats-creds'));
  set('user', given('nats-user'));
  set('password', given('nats-password'));
  set('token', given('nats-token'));
  set('nkeySeedFile', given('nats-nkey'));
  set('inboxPrefix', given('nats-inbox-prefix'));
  if (Object.keys(tls).length > 0) security.tls = tls;
  if (security.password !== undefined && security.user === undefined) throw new UsageError('--nats-password (TIDEMARK_NATS_PASSWORD) needs --nats-user (TIDEMARK_NATS_USER)');
  if ((certFile === undefined) !== (keyFile === undefined)) throw new UsageError('--nats-tls-cert and --nats-tls-key go together');
  return {
    servers: values.nats ?? process.env['TIDEMARK_NATS'] ?? 'nats://127.0.0.1:4222',
    cluster: values.cluster ?? process.env['TIDEMARK_CLUSTER'] ?? 'tidemark',
    ...security,
  };
}

/** The NATS credentials part of `connection(values)`, for what connects without the cluster name. */
export function natsSecurityOf(connection: { servers: string; cluster: string } & NatsSecurity): NatsSecurity {
  const { servers: _servers, cluster: _cluster, ...security } = connection;
  return security;
}

/**
 * The environment that gives a child `tidemark` process (dev's nodes) the same credentials as
 * flags would; variables, so no secret shows in the child's command line.
 */
export function natsSecurityEnv(security: NatsSecurity): Record<string, string> {
  const env: Record<string, string> = {};
  const put = (flag: SecurityFlag, value: string | undefined) => {
    if (value !== undefined) env[SECURITY_ENV[flag]] = value;
  };
  put('nats-creds', security.credsFile);
  put('nats-user', security.user);
  put('nats-password', security.password);
  put('nats-token', security.token);
  put('nats-nkey', security.nkeySeedFile);
  put('nats-tls-ca', security.tls?.caFile);
  put('nats-tls-cert', security.tls?.certFile);
  put('nats-tls-key', security.tls?.keyFile);
  put('nats-inbox-prefix', security.inboxPrefix);
  return env;
}

/** Parses an integer flag within bounds, or throws a UsageError naming the flag. */
export function intFlag(name: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const value = /^-?[0-9]+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}, got "${text}"`);
  return value;
}
