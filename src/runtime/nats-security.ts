/**
 * How a connection proves who it is to NATS (user/password, token, NKey seed, `.creds` file), TLS,
 * and the inbox prefix its replies arrive under. NATS is Tidemark's authentication and
 * authorization (docs/security.md): these options only present credentials; the server decides.
 *
 * Secrets never leave this module in a message: errors name files and the user, never a password,
 * token or seed.
 */
import { readFile } from 'node:fs/promises';
import { credsAuthenticator, nkeyAuthenticator, type Authenticator } from '@nats-io/transport-node';
import { TidemarkError } from '../protocol/errors.js';

/** TLS towards the NATS server. */
export type NatsTls = {
  /** PEM file of the CA that signed the server's certificate. @default the system's CAs */
  caFile?: string;
  /** PEM client certificate, for a server that verifies clients (`verify: true`). @default none */
  certFile?: string;
  /** PEM private key of `certFile`. @default none */
  keyFile?: string;
};

/** Credentials and channel security of one NATS connection; at most one way to authenticate. */
export type NatsSecurity = {
  /** NATS user (with `password`). @default none */
  user?: string;
  /** Password of `user`. @default none */
  password?: string;
  /** Authorization token. @default none */
  token?: string;
  /** File holding an NKey user seed (`SU…`). @default none */
  nkeySeedFile?: string;
  /** A `.creds` file (JWT and seed, as `nsc` writes it), for operator/JWT mode. @default none */
  credsFile?: string;
  /** TLS; also used when the server requires it. @default plain TCP unless the server asks for TLS */
  tls?: NatsTls;
  /**
   * Prefix of this connection's reply subjects (nats.js `inboxPrefix`), so a permission can confine
   * its replies to `<prefix>.>` (`tidemark acl print` uses `_INBOX_<user>`). It must start with
   * `_INBOX`: nodes answer only requests whose reply subject does (see nats-transport.ts).
   * @default '_INBOX'
   */
  inboxPrefix?: string;
};

/** Replies go only to subjects under this prefix (nats.js's default inbox and every allowed custom one). */
export const INBOX_PREFIX = '_INBOX';

const INBOX_PREFIX_FORMAT = /^_INBOX[A-Za-z0-9_-]{0,64}(\.[A-Za-z0-9_-]{1,64}){0,3}$/;

/** The nats.js connection options for `security`; rejects with INVALID_REQUEST when they are inconsistent or a file is unreadable. */
export async function natsSecurityOptions(security: NatsSecurity): Promise<{
  user?: string;
  pass?: string;
  token?: string;
  authenticator?: Authenticator;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  inboxPrefix?: string;
}> {
  const ways = [
    security.user !== undefined || security.password !== undefined ? 'user/password' : undefined,
    security.token !== undefined ? 'token' : undefined,
    security.nkeySeedFile !== undefined ? 'NKey seed' : undefined,
    security.credsFile !== undefined ? 'creds file' : undefined,
  ].filter((w) => w !== undefined);
  if (ways.length > 1) throw new TidemarkError('INVALID_REQUEST', `NATS credentials: give one of user/password, token, NKey seed or creds file, not ${ways.join(' and ')}`);
  if (security.password !== undefined && security.user === undefined) throw new TidemarkError('INVALID_REQUEST', 'NATS credentials: a password needs a user');
  if (security.user !== undefined && security.user === '') throw new TidemarkError('INVALID_REQUEST', 'NATS credentials: the user is empty');
  if (security.inboxPrefix !== undefined && !INBOX_PREFIX_FORMAT.test(security.inboxPrefix)) {
    throw new TidemarkError('INVALID_REQUEST', `NATS inbox prefix "${security.inboxPrefix}" must start with ${INBOX_PREFIX} and be plain subject tokens (e.g. _INBOX_alice)`);
  }
  const tls = security.tls;
  if (tls !== undefined && (tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new TidemarkError('INVALID_REQUEST', 'NATS TLS: a client certificate needs its key, and a key its certificate');
  }
  return {
    ...(security.user === undefined ? {} : { user: security.user }),
    ...(security.password === undefined ? {} : { pass: security.password }),
    ...(security.token === undefined ? {} : { token: security.token }),
    ...(security.nkeySeedFile === undefined ? {} : { authenticator: nkeyAuthenticator(await readSecret('NKey seed', security.nkeySeedFile)) }),
    ...(security.credsFile === undefined ? {} : { authenticator: credsAuthenticator(await readSecret('creds', security.credsFile)) }),
    ...(tls === undefined ? {} : { tls: await checkedTls(tls) }),
    ...(security.inboxPrefix === undefined ? {} : { inboxPrefix: security.inboxPrefix }),
  };
}

/** A file's bytes, trimmed; INVALID_REQUEST when unreadable or empty (the message names the file, never its content). */
async function readSecret(what: string, path: string): Promise<Uint8Array> {
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).trim();
  } catch (cause) {
    throw new TidemarkError('INVALID_REQUEST', `cannot read the NATS ${what} file ${path}: ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}`);
  }
  if (text === '') throw new TidemarkError('INVALID_REQUEST', `the NATS ${what} file ${path} is empty`);
  return new TextEncoder().encode(text);
}

/** nats.js reads the TLS files itself, later and with a less clear error: check they are readable now. */
async function checkedTls(tls: NatsTls): Promise<NatsTls> {
  for (const [what, path] of [['TLS CA', tls.caFile], ['TLS certificate', tls.certFile], ['TLS key', tls.keyFile]] as const) {
    if (path !== undefined) await readSecret(what, path);
  }
  return { ...tls };
}

/** `nats://user:secret@host` → `nats://user:***@host`, for messages and logs. */
export function redactServers(servers: string | string[]): string {
  return [servers].flat().map((s) => s.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@').replace(/\/\/([^:@/]+)@/, '//***@')).join(',');
}

/** Who this connection claims to be, for messages: never a secret. */
export function describeIdentity(security: NatsSecurity): string {
  if (security.user !== undefined) return `user "${security.user}"`;
  if (security.token !== undefined) return 'a token';
  if (security.nkeySeedFile !== undefined) return `the NKey seed in ${security.nkeySeedFile}`;
  if (security.credsFile !== undefined) return `the creds in ${security.credsFile}`;
  return 'no credentials';
}
