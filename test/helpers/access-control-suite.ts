/**
 * Access control through NATS (docs/security.md), against a real nats-server started with one of
 * the configurations the doc shows (two accounts: the nodes' and the clients'; or one account with
 * the same users; passwords from the server's environment) and a real node process using the node
 * user's credentials. Each test file runs this suite on one configuration.
 *
 * alice may produce to `orders` and consume `payments:billing`; bob administers both topics,
 * produces to `payments` and reads `orders`. Every refusal must be NOT_AUTHORIZED, final, and fast:
 * well under the SDK's retry budget (30 s) and request timeout (10 s), which is what a timeout
 * after retries would take.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { encode } from '@msgpack/msgpack';
import type { TestFn } from 'ava';
import { Tidemark, type ConnectOptions } from '../../src/client/client.js';
import { codecs } from '../../src/client/codecs.js';
import type { Reader } from '../../src/client/reader.js';
import { TidemarkError } from '../../src/protocol/errors.js';
import { decodeReply, encodeMessage, metadataReply } from '../../src/protocol/messages.js';
import { clientPermissions } from '../../src/protocol/permissions.js';
import { Subjects } from '../../src/protocol/subjects.js';
import { connectNats, type NatsTransport } from '../../src/runtime/nats-transport.js';
import { killAllCliProcesses, runCli, startNodeProcess, type CliProcess } from './cli.js';
import { startNatsServer, type NatsServer } from './nats-server.js';
import { tempDir } from './node.js';

const PASSWORDS = { node: 'node-pw-9c41e', alice: 'alice-pw-27fd0', bob: 'bob-pw-e18a3' } as const;
type User = keyof typeof PASSWORDS;
/** A refusal must come this fast (ms): the retry budget is 30 s, one request's timeout 10 s. */
const REFUSED_WITHIN_MS = 2_000;
/** A CLI command that is refused exits within this (ms), process start included. */
const CLI_REFUSED_WITHIN_MS = 8_000;
const ALICE_GRANT = { produce: ['orders'], consume: [{ topic: 'payments', subscription: 'billing' }] };

const s = new Subjects('tidemark');
const root = new URL('../../../', import.meta.url);
const codec = codecs.string();


/**
 * The suite, on the `block`th configuration of docs/security.md, which must carry `commands` blocks
 * printed by `tidemark acl print` (each compared with what the command prints now).
 */
export function accessControlSuite(test: TestFn, config: { block: number; commands: string[] }): void {
let conf: string;
let nats: NatsServer;
let dataDir: string;
let node: CliProcess;
let alice: Tidemark;
let bob: Tidemark;
let aliceRaw: NatsTransport;
let watcher: NatsTransport;

/** The `index`th ```conf block of docs/security.md: the configuration under test. */
async function documentedConfig(index: number): Promise<string> {
  const doc = await readFile(new URL('docs/security.md', root), 'utf8');
  const blocks = [...doc.matchAll(/```conf\n([\s\S]*?)```/g)];
  if (blocks[index] === undefined) throw new Error(`docs/security.md has no ${index + 1}th \`\`\`conf block`);
  return blocks[index][1]!;
}

const connectAs = (user: User, extra: Partial<ConnectOptions> = {}) =>
  Tidemark.connect({ servers: nats.url, cluster: 'tidemark', user, password: PASSWORDS[user], inboxPrefix: `_INBOX_${user}`, ...extra });

function bounded<T>(what: string, promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

async function readValues(reader: Reader<string>, n: number): Promise<Array<string | null>> {
  const out: Array<string | null> = [];
  while (out.length < n) {
    const next = await bounded(`record ${out.length + 1} of ${n}`, reader.next(), 15_000);
    if (next.done) break;
    out.push(next.value.value);
  }
  return out;
}

/** Checks a call is refused NOT_AUTHORIZED, final, within REFUSED_WITHIN_MS. */
async function refused(t: import('ava').ExecutionContext, what: string, call: () => Promise<unknown>): Promise<void> {
  const started = performance.now();
  const error = await t.throwsAsync(bounded(what, call(), 20_000), { instanceOf: TidemarkError }, what);
  const ms = performance.now() - started;
  t.is(error?.code, 'NOT_AUTHORIZED', `${what}: ${error?.message}`);
  t.false(error?.retriable, `${what}: final`);
  t.true(ms < REFUSED_WITHIN_MS, `${what}: refused in ${ms.toFixed(0)} ms`);
  t.log(`${what}: NOT_AUTHORIZED after ${ms.toFixed(0)} ms`);
}

test.before(async () => {
  conf = await documentedConfig(config.block);
  nats = await startNatsServer({
    config: conf,
    env: { TIDEMARK_NODE_PASSWORD: PASSWORDS.node, ALICE_PASSWORD: PASSWORDS.alice, BOB_PASSWORD: PASSWORDS.bob },
  });
  dataDir = await tempDir('tm-acl-');
  // The node's credentials by environment (as docs/security.md says), so none is in its argv.
  node = await startNodeProcess({
    nats: nats.url,
    dataDir,
    env: { TIDEMARK_NATS_USER: 'node', TIDEMARK_NATS_PASSWORD: PASSWORDS.node },
    // A new controller waits this long before its first Exclusive grant (issue 12): keep the Exclusive case short.
    args: ['--producer-session-timeout-ms', '2000'],
  });
  bob = await connectAs('bob');
  alice = await connectAs('alice');
  await bob.admin().createTopic({ name: 'orders', partitions: 1 });
  await bob.admin().createTopic({ name: 'payments', partitions: 1 });
  await bob.admin().createSubscription({ topic: 'payments', name: 'audit', initialPosition: 'earliest' });
  aliceRaw = await connectNats({ servers: nats.url, user: 'alice', password: PASSWORDS.alice, inboxPrefix: '_INBOX_alice' });
  watcher = await connectNats({ servers: nats.url, user: 'node', password: PASSWORDS.node, name: 'acl-test-watcher' });
});

test.after.always(async () => {
  await alice?.close();
  await bob?.close();
  await aliceRaw?.close();
  await watcher?.close();
  await node?.kill('SIGTERM').catch(() => {});
  await killAllCliProcesses();
  await nats?.stop();
  if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
});

test.serial('the documented configuration carries exactly what `tidemark acl print` prints for each user', async (t) => {
  const lines = conf.split('\n').map((l) => l.trim());
  const commands = lines.filter((l) => l.startsWith('# tidemark acl print '));
  t.deepEqual(commands.map((c) => c.slice('# tidemark acl print '.length)), config.commands, 'the blocks the configuration carries');
  for (const command of commands) {
    const printed = await runCli(command.slice('# tidemark '.length).split(' '));
    t.is(printed.code, 0, printed.stderr);
    const expected = printed.stdout.trimEnd().split('\n').map((l) => l.trim());
    const at = lines.indexOf(command);
    t.deepEqual(lines.slice(at, at + expected.length), expected, `${command}: the block in docs/security.md`);
  }
});

test.serial('alice produces to orders (Shared and Exclusive) and consumes payments:billing', async (t) => {
  const shared = alice.producer({ topic: 'orders', codec });
  await Promise.all(['o1', 'o2'].map((value) => shared.send({ value })));
  await shared.close();
  // An exclusive producer attaches and fences the partition leaders: all on orders' subjects.
  const exclusive = await alice.createProducer({ topic: 'orders', codec, accessMode: 'Exclusive', timeoutMs: 15_000 });
  await exclusive.send({ value: 'o3' });
  await exclusive.close();
  const reader = bob.reader({ topic: 'orders', partition: 0, from: 'earliest', codec, maxWaitMs: 200 });
  t.deepEqual(await readValues(reader, 3), ['o1', 'o2', 'o3'], 'bob reads what alice produced');
  await reader.close();

  const producer = bob.producer({ topic: 'payments', codec });
  await Promise.all(['p1', 'p2'].map((value) => producer.send({ value })));
  await producer.close();
  const consumer = await alice.consumer({ topic: 'payments', subscription: 'billing', codec, initialPosition: 'earliest', maxWaitMs: 200 });
  const got: Array<string | null> = [];
  while (got.length < 2) {
    const next = await bounded('a payments message', consumer.next(), 15_000);
    if (next.done) break;
    got.push(next.value.value);
    await next.value.ack();
  }
  await consumer.close();
  t.deepEqual(got, ['p1', 'p2']);
});

test.serial('alice is refused everything else at once with a final NOT_AUTHORIZED: produce to payments, read orders, another subscription, topic admin', async (t) => {
  const garbage = encodeMessage({ timeoutMs: 1000 });
  await refused(t, 'a producer of payments', async () => {
    const producer = alice.producer({ topic: 'payments', codec });
    try {
      await producer.send({ value: 'not mine' });
    } finally {
      await producer.close();
    }
  });
  await refused(t, 'a produce request on payments', () => aliceRaw.request(s.produce(1, 'payments'), garbage, 5000));
  await refused(t, 'a reader of orders', async () => {
    const reader = alice.reader({ topic: 'orders', partition: 0, from: 'earliest', codec, maxWaitMs: 200 });
    try {
      await reader.next();
    } finally {
      await reader.close();
    }
  });
  await refused(t, 'a fetch request on orders', () => aliceRaw.request(s.partition('fetch', 1, 'orders', 0), garbage, 5000));
  await refused(t, 'a consumer of payments:audit', () => alice.consumer({ topic: 'payments', subscription: 'audit', codec }));
  await refused(t, 'a consume request on payments:audit', () => aliceRaw.request(s.consumer('consume', 1, 'payments', 'audit'), garbage, 5000));
  await refused(t, 'acks on payments:audit', () => aliceRaw.request(s.consumer('ack', 1, 'payments', 'audit'), garbage, 5000));
  await refused(t, 'create a topic', () => alice.admin().createTopic({ name: 'alices', partitions: 1 }));
  await refused(t, 'alter orders', () => alice.admin().alterTopicConfig('orders', { set: { 'retention.ms': '1000' } }));
  await refused(t, 'grow orders', () => alice.admin().createPartitions('orders', 2));
  await refused(t, 'delete orders', () => alice.admin().deleteTopic('orders'));
  await refused(t, 'delete payments:billing', () => alice.admin().deleteSubscription('payments', 'billing'));
  await refused(t, 'seek payments:audit', () => alice.admin().resetSubscription('payments', 'audit', 'earliest'));
  await refused(t, 'elect leaders', () => alice.admin().electLeaders());
  // Nothing changed.
  const orders = await bob.admin().describeTopic('orders');
  t.is(orders.partitions.length, 1);
  t.is(orders.config['retention.ms'], undefined);
  t.false((await bob.admin().listTopics()).includes('alices'));
});

test.serial('alice cannot impersonate a node, answer for one, or listen to anything but her inbox', async (t) => {
  const body = encodeMessage({ timeoutMs: 1000 });
  const nodeSubjects = [
    s.raft(1),
    s.controller('register'),
    s.controller('heartbeat'),
    s.controller('metadata-fetch'),
    s.controller('alter-partition'),
    s.controller('shutdown'),
    s.replicaFetchSession(1),
    s.partition('replica-fetch', 1, 'orders', 0),
    s.devControl(),
    s.offsets(1),
    s.subscriptionAdmin(1, 'payments'),
    '_INBOX.forged-reply',
    '_INBOX_bob.forged-reply',
    `${s.prefix}.something-new`,
  ];
  for (const subject of nodeSubjects) await refused(t, `a request on ${subject}`, () => aliceRaw.request(subject, body, 5000));

  // A plain one-way publish (as Raft messages are) is refused by the server too: it says so on the connection.
  const violation = (async () => {
    for await (const status of aliceRaw.connection.status()) {
      if (status.type === 'error' && status.error.message.includes(s.raft(1))) return status.error.message;
    }
    return 'closed';
  })();
  aliceRaw.publish(s.raft(1), body);
  t.regex(await bounded('the server refusing a publish on raft', violation, 5_000), /Permissions Violation for Publish/i);

  for (const subject of [`${s.prefix}.>`, s.raft(1), '_INBOX.>', '_INBOX_bob.>', '>']) {
    const refusedSub = new Promise<string>((resolve) => {
      aliceRaw.connection.subscribe(subject, { callback: (error) => resolve(error === null ? 'a message' : error.message) });
    });
    t.regex(await bounded(`subscribing to ${subject}`, refusedSub, 5_000), /Permissions Violation for Subscription/i, subject);
  }
});

test.serial('garbage on every subject alice may publish to, with and without a reply, leaves the node serving; no reply is reflected elsewhere', async (t) => {
  const allowed = clientPermissions(s, '_INBOX_alice', ALICE_GRANT).publish.map((pattern) => pattern.replaceAll('.*.', '.1.'));
  t.true(allowed.length >= 10);
  const maxPayload = aliceRaw.maxPayloadBytes;
  const payloads = [
    new Uint8Array(0),
    new Uint8Array([0xc1]),
    randomBytes(64),
    randomBytes(4096),
    encode({ timeoutMs: -1 }),
    encode({ timeoutMs: 1000, partitions: 'all', topic: 'payments', name: 'audit', acks: 9 }),
    encode([1, 2, 3]),
    randomBytes(maxPayload - 512),
  ];
  // Replies pointed at node-to-node subjects: a node must not publish there on alice's behalf.
  const reflectTo = [s.raft(99), s.replicaFetchSession(1)];
  let reflected = 0;
  const watches = reflectTo.map((subject) => watcher.subscribe(subject, () => reflected++));
  await watcher.connection.flush();

  let answered = 0;
  for (const subject of allowed) {
    for (const payload of payloads) {
      aliceRaw.publish(subject, payload);
      for (const reply of reflectTo) aliceRaw.connection.publish(subject, payload, { reply });
      // A request is answered (an error reply, or a reply for a body that happens to be valid), never left hanging.
      const data = await aliceRaw.request(subject, payload, 10_000);
      try {
        decodeReply(data, (v) => v);
      } catch (error) {
        t.true(error instanceof TidemarkError, `${subject}: a typed error reply`);
      }
      answered++;
    }
  }
  t.is(answered, allowed.length * payloads.length);
  // The node handles its messages in order: once a later request is answered, any reflected reply
  // was published before that answer; the watcher's flush then delivers it if there was one.
  decodeReply(await aliceRaw.request(s.metadata(), encodeMessage({ timeoutMs: 1000 }), 5000), metadataReply);
  await watcher.connection.flush();
  t.is(reflected, 0, 'no reply went to a node subject');
  for (const w of watches) w.unsubscribe();

  t.is(node.child.exitCode, null, 'the node is running');
  const cluster = await alice.admin().describeCluster();
  t.true(cluster.controllerId >= 0 && cluster.brokers.length === 1 && !cluster.brokers[0]!.fenced, 'status answers');
  const producer = alice.producer({ topic: 'orders', codec });
  const sent = await producer.send({ value: 'after-garbage' });
  await producer.close();
  const reader = bob.reader({ topic: 'orders', partition: 0, from: { offset: sent.offset }, codec, maxWaitMs: 200 });
  t.deepEqual(await readValues(reader, 1), ['after-garbage'], 'the permitted produce still works');
  await reader.close();
  t.false(node.stderrLines.join('\n').includes(PASSWORDS.node), 'the node never logs its password');
});

test.serial('a wrong password, an unknown user or a missing inbox prefix fails connect with NOT_AUTHORIZED, saying why and no secret', async (t) => {
  const wrong = 'not-the-password';
  await refused(t, 'a wrong password', () => Tidemark.connect({ servers: nats.url, user: 'alice', password: wrong, inboxPrefix: '_INBOX_alice' }));
  const error = await t.throwsAsync(Tidemark.connect({ servers: nats.url, user: 'alice', password: wrong }), { instanceOf: TidemarkError });
  t.regex(error!.message, /user "alice".*Authorization Violation/i);
  t.false(error!.message.includes(wrong));
  await refused(t, 'an unknown user', () => Tidemark.connect({ servers: nats.url, user: 'mallory', password: 'x' }));
  await refused(t, 'no credentials', () => Tidemark.connect({ servers: nats.url }));
  const noInbox = await t.throwsAsync(Tidemark.connect({ servers: nats.url, user: 'alice', password: PASSWORDS.alice }), { instanceOf: TidemarkError });
  t.is(noInbox?.code, 'NOT_AUTHORIZED');
  t.regex(noInbox!.message, /inbox/);
});

test.serial('CLI: credential flags and TIDEMARK_NATS_* variables reach the connection; refusals are clear and quick', async (t) => {
  const listed = await runCli(['topic', 'list', '--nats', nats.url, '--nats-user', 'bob', '--nats-password', PASSWORDS.bob, '--nats-inbox-prefix', '_INBOX_bob']);
  t.is(listed.code, 0, listed.stderr);
  t.deepEqual(listed.stdout.trim().split('\n').sort(), ['orders', 'payments']);

  const asAlice = { TIDEMARK_NATS_USER: 'alice', TIDEMARK_NATS_PASSWORD: PASSWORDS.alice, TIDEMARK_NATS_INBOX_PREFIX: '_INBOX_alice' };
  const produced = await runCli(['produce', 'orders'], { nats: nats.url, env: asAlice, stdin: 'from-cli\n' });
  t.is(produced.code, 0, produced.stderr);

  const create = await runCli(['topic', 'create', 'alices', '--partitions', '1'], { nats: nats.url, env: asAlice });
  t.is(create.code, 1);
  t.regex(create.stderr, /NOT_AUTHORIZED/);
  t.true(create.ms < CLI_REFUSED_WITHIN_MS, `refused in ${create.ms.toFixed(0)} ms`);

  const wrong = await runCli(['topic', 'list', '--nats-user', 'bob', '--nats-password', 'wrong-pw-5521'], { nats: nats.url });
  t.is(wrong.code, 1);
  t.regex(wrong.stderr, /NOT_AUTHORIZED: NATS at .* refused the connection of user "bob"/);
  t.false(wrong.stderr.includes('wrong-pw-5521'), 'the password is not printed');

  const usage = await runCli(['topic', 'list', '--nats-password', 'x'], { nats: nats.url });
  t.is(usage.code, 2, 'a password without a user is a usage error');

  // A node with the wrong credentials stops at once, saying so.
  const badNodeDir = await tempDir('tm-acl-bad-');
  const badNode = await runCli(['node', 'start', '--id', '2', '--data-dir', badNodeDir, '--nats', nats.url], {
    env: { TIDEMARK_NATS_USER: 'node', TIDEMARK_NATS_PASSWORD: 'wrong-node-pw' },
  });
  await rm(badNodeDir, { recursive: true, force: true });
  t.is(badNode.code, 1);
  t.regex(badNode.stderr, /NOT_AUTHORIZED/);
  t.false(badNode.stderr.includes('wrong-node-pw'));
});
}
