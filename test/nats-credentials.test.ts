/**
 * The other ways to present NATS credentials (docs/security.md): NKey seeds and TLS with client
 * certificates (a node process and the CLI, by environment and by flags), tokens, and the checks
 * made before connecting. User/password and permissions are in access-control.test.ts.
 */
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { nkeys } from '@nats-io/transport-node';
import test from 'ava';
import { Tidemark } from '../src/client/client.js';
import { codecs } from '../src/client/codecs.js';
import { TidemarkError } from '../src/protocol/errors.js';
import { connectNats } from '../src/runtime/nats-transport.js';
import { redactServers } from '../src/runtime/nats-security.js';
import { killAllCliProcesses, runCli, startNodeProcess, type CliProcess } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';

const run = promisify(execFile);
/** openssl makes a test CA, a server certificate for 127.0.0.1 and a client certificate, all P-256. */
async function makeCertificates(dir: string): Promise<void> {
  const openssl = (...args: string[]) => run('openssl', args, { cwd: dir, timeout: 20_000 });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl('req', '-x509', ...ec, '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=tidemark test CA');
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const [name, cn, ext] of [['server', 'localhost', ['-extfile', 'server.ext']], ['client', 'tidemark-client', []]] as const) {
    await openssl('req', ...ec, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    await openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', ...ext);
  }
}

const nodeKey = nkeys.createUser();
const clientKey = nkeys.createUser();
const TOKEN = 'tok-6d0c2a9b';
let secure: NatsServer;
let tokenServer: NatsServer;
let dir: string;
let dataDir: string;
let node: CliProcess;
const file = (name: string) => join(dir, name);
const tlsFlags = () => ['--nats-tls-ca', file('ca.pem'), '--nats-tls-cert', file('client.pem'), '--nats-tls-key', file('client-key.pem')];

test.before(async () => {
  dir = await tempDir('tm-creds-');
  await makeCertificates(dir);
  await writeFile(file('node.nk'), `${new TextDecoder().decode(nodeKey.getSeed())}\n`);
  await writeFile(file('client.nk'), new TextDecoder().decode(clientKey.getSeed()));
  await writeFile(file('stranger.nk'), new TextDecoder().decode(nkeys.createUser().getSeed()));
  // TLS with client certificates, and NKey users: the server knows only the public keys.
  secure = await startNatsServer({
    config: `
tls {
  cert_file: "${file('server.pem')}"
  key_file: "${file('server-key.pem')}"
  ca_file: "${file('ca.pem')}"
  verify: true
}
authorization {
  users: [
    { nkey: ${nodeKey.getPublicKey()} }
    {
      nkey: ${clientKey.getPublicKey()}
      # Everything but the data path of topic "denied": each SDK path must stop at that step.
      permissions: {
        publish: { allow: ["tm.tidemark.>"], deny: ["tm.tidemark.b.*.produce.denied", "tm.tidemark.b.*.fetch.denied.*", "tm.tidemark.b.*.consume.denied.*"] }
        subscribe: { allow: ["_INBOX.>"] }
      }
    }
  ]
}
`,
  });
  tokenServer = await startNatsServer({ config: 'authorization { token: $TIDEMARK_TEST_TOKEN }\n', env: { TIDEMARK_TEST_TOKEN: TOKEN } });
  dataDir = await tempDir('tm-creds-node-');
  node = await startNodeProcess({
    nats: secure.url,
    dataDir,
    env: { TIDEMARK_NATS_NKEY: file('node.nk'), TIDEMARK_NATS_TLS_CA: file('ca.pem'), TIDEMARK_NATS_TLS_CERT: file('client.pem'), TIDEMARK_NATS_TLS_KEY: file('client-key.pem') },
  });
});

test.after.always(async () => {
  await node?.kill('SIGTERM').catch(() => {});
  await killAllCliProcesses();
  await secure?.stop();
  await tokenServer?.stop();
  for (const d of [dir, dataDir]) if (d !== undefined) await rm(d, { recursive: true, force: true });
});

test('a node over TLS with an NKey seed serves the CLI, which presents its own seed and client certificate by flags', async (t) => {
  const created = await runCli(['topic', 'create', 'secured', '--partitions', '1', '--nats', secure.url, '--nats-nkey', file('client.nk'), ...tlsFlags()]);
  t.is(created.code, 0, created.stderr);
  const produced = await runCli(['produce', 'secured', '--nats', secure.url, '--nats-nkey', file('client.nk'), ...tlsFlags()], { stdin: 'over-tls\n' });
  t.is(produced.code, 0, produced.stderr);
  const consumed = await runCli(['consume', 'secured', '--from-beginning', '--max-messages', '1', '--nats', secure.url], {
    env: { TIDEMARK_NATS_NKEY: file('client.nk'), TIDEMARK_NATS_TLS_CA: file('ca.pem'), TIDEMARK_NATS_TLS_CERT: file('client.pem'), TIDEMARK_NATS_TLS_KEY: file('client-key.pem') },
  });
  t.is(consumed.code, 0, consumed.stderr);
  t.is(consumed.stdout, 'over-tls\n');
});

test('TLS: without the CA or without a client certificate the connection fails, saying so', async (t) => {
  const noCa = await t.throwsAsync(connectNats({ servers: secure.url, nkeySeedFile: file('client.nk'), tls: { certFile: file('client.pem'), keyFile: file('client-key.pem') } }), { instanceOf: TidemarkError });
  t.is(noCa?.code, 'CONNECTION_FAILED', noCa?.message);
  const noCert = await t.throwsAsync(connectNats({ servers: secure.url, nkeySeedFile: file('client.nk'), tls: { caFile: file('ca.pem') } }), { instanceOf: TidemarkError });
  t.true(noCert?.code === 'CONNECTION_FAILED' || noCert?.code === 'NOT_AUTHORIZED', noCert?.message);
  const ok = await connectNats({ servers: secure.url, nkeySeedFile: file('client.nk'), tls: { caFile: file('ca.pem'), certFile: file('client.pem'), keyFile: file('client-key.pem') } });
  await ok.close();
});

test('NKey: a seed the server does not know is refused NOT_AUTHORIZED', async (t) => {
  const error = await t.throwsAsync(connectNats({ servers: secure.url, nkeySeedFile: file('stranger.nk'), tls: { caFile: file('ca.pem'), certFile: file('client.pem'), keyFile: file('client-key.pem') } }), {
    instanceOf: TidemarkError,
  });
  t.is(error?.code, 'NOT_AUTHORIZED', error?.message);
  t.regex(error!.message, /stranger\.nk/, 'names the seed file, not the seed');
});

test('token: the right one connects, a wrong one is NOT_AUTHORIZED without being printed', async (t) => {
  const ok = await connectNats({ servers: tokenServer.url, token: TOKEN });
  await ok.close();
  const error = await t.throwsAsync(connectNats({ servers: tokenServer.url, token: 'tok-wrong-1234' }), { instanceOf: TidemarkError });
  t.is(error?.code, 'NOT_AUTHORIZED');
  t.false(error!.message.includes('tok-wrong-1234'));
  const cli = await runCli(['topic', 'list', '--nats', tokenServer.url], { env: { TIDEMARK_NATS_TOKEN: 'tok-wrong-1234' } });
  t.is(cli.code, 1);
  t.regex(cli.stderr, /NOT_AUTHORIZED/);
  t.false(cli.stderr.includes('tok-wrong-1234'));
});

test('inconsistent or unreadable credentials are refused before connecting, with INVALID_REQUEST naming the problem', async (t) => {
  const invalid = async (options: Parameters<typeof connectNats>[0], pattern: RegExp) => {
    const error = await t.throwsAsync(connectNats(options), { instanceOf: TidemarkError });
    t.is(error?.code, 'INVALID_REQUEST');
    t.regex(error!.message, pattern);
  };
  const servers = tokenServer.url;
  await invalid({ servers, user: 'a', password: 'b', token: 'c' }, /one of user\/password, token/);
  await invalid({ servers, password: 'b' }, /needs a user/);
  await invalid({ servers, credsFile: file('missing.creds') }, /missing\.creds: ENOENT/);
  await invalid({ servers, nkeySeedFile: file('missing.nk') }, /missing\.nk: ENOENT/);
  await invalid({ servers, tls: { certFile: file('client.pem') } }, /needs its key/);
  await invalid({ servers, tls: { caFile: file('missing-ca.pem') } }, /missing-ca\.pem/);
  await invalid({ servers, token: TOKEN, inboxPrefix: 'replies.alice' }, /must start with _INBOX/);
  await invalid({ servers, token: TOKEN, inboxPrefix: '_INBOX_a.>' }, /must start with _INBOX/);
  t.is(redactServers(['nats://u:secret@h:4222', 'nats://tokenonly@h2']), 'nats://u:***@h:4222,nats://***@h2');
});

test('the SDK paths end promptly in NOT_AUTHORIZED at the step NATS denies: produce channel, reader fetch, consumer poll', async (t) => {
  const client = await Tidemark.connect({
    servers: secure.url,
    nkeySeedFile: file('client.nk'),
    tls: { caFile: file('ca.pem'), certFile: file('client.pem'), keyFile: file('client-key.pem') },
  });
  t.teardown(() => client.close());
  await client.admin().createTopic({ name: 'denied', partitions: 1 });
  const codec = codecs.string();
  const refused = async (what: string, call: () => Promise<unknown>) => {
    const started = performance.now();
    const error = await t.throwsAsync(call(), { instanceOf: TidemarkError }, what);
    const ms = performance.now() - started;
    t.is(error?.code, 'NOT_AUTHORIZED', `${what}: ${error?.message}`);
    t.true(ms < 2_000, `${what}: refused in ${ms.toFixed(0)} ms (the retry budget is 30 s)`);
    t.log(`${what}: NOT_AUTHORIZED after ${ms.toFixed(0)} ms`);
  };
  // The producer attaches (allowed), then its batch's produce request is denied: the pipeline gives it up at once.
  const producer = client.producer({ topic: 'denied', codec });
  await refused('a send through the produce channel', () => producer.send({ value: 'x' }));
  await producer.close();
  const reader = client.reader({ topic: 'denied', partition: 0, from: 'earliest', codec, maxWaitMs: 200 });
  await refused('a reader fetch', () => reader.next());
  await reader.close();
  // The subscription is created (allowed), then the first poll is denied.
  await refused('a consumer start', () => client.consumer({ topic: 'denied', subscription: 'sub', codec }));
  // The same client still works where it is allowed.
  await client.admin().createTopic({ name: 'allowed', partitions: 1 });
  const ok = client.producer({ topic: 'allowed', codec });
  t.true((await ok.send({ value: 'fine' })).offset >= 0);
  await ok.close();
});
