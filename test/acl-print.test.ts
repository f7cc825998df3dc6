/**
 * `tidemark acl print` and the allow lists behind it (src/protocol/permissions.ts): built from the
 * Subjects class, so each listed pattern matches the subjects the SDK publishes on.
 */
import test from 'ava';
import { clientPermissions, clientServices, inboxPrefixFor, nodePermissions } from '../src/protocol/permissions.js';
import { Subjects } from '../src/protocol/subjects.js';
import { runCli } from './helpers/cli.js';

const s = new Subjects('prod');

/** NATS subject matching: `*` one token, `>` the rest. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const t = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return t.length > i;
    if (i >= t.length || (p[i] !== '*' && p[i] !== t[i])) return false;
  }
  return p.length === t.length;
}
const allowed = (patterns: string[], subject: string) => patterns.some((p) => matches(p, subject));

test('a grant allows the subjects the SDK uses for it, on any broker, and not the neighbours', (t) => {
  const { publish, subscribe } = clientPermissions(s, inboxPrefixFor('alice'), { produce: ['orders.v1'], consume: [{ topic: 'payments', subscription: 'billing' }], read: ['audit'] });
  t.deepEqual(subscribe, ['_INBOX_alice.>']);
  for (const subject of [
    s.metadata(),
    s.status(),
    s.produce(7, 'orders.v1'),
    s.fence(3, 'orders.v1'),
    s.admin('producer-attach', 'orders.v1'),
    s.admin('producer-heartbeat', 'orders.v1'),
    s.admin('producer-detach', 'orders.v1'),
    s.consumer('consume', 2, 'payments', 'billing'),
    s.consumer('ack', 2, 'payments', 'billing'),
    s.admin('create-subscription', 'payments', 'billing'),
    s.partition('fetch', 4, 'audit', 11),
    s.offsets(4),
  ]) {
    t.true(allowed(publish, subject), subject);
  }
  for (const subject of [
    s.produce(7, 'orders'),
    s.produce(7, 'payments'),
    s.partition('fetch', 4, 'orders.v1', 0),
    s.consumer('consume', 2, 'payments', 'audit'),
    s.admin('create-subscription', 'payments', 'audit'),
    s.admin('create-topic', 'orders.v1'),
    s.admin('delete-subscription', 'payments', 'billing'),
    s.admin('elect-leaders'),
    s.subscriptionAdmin(2, 'payments'),
    s.controller('register'),
    s.raft(1),
    s.replicaFetchSession(1),
    s.devControl(),
    new Subjects('other').produce(7, 'orders.v1'),
  ]) {
    t.false(allowed(publish, subject), subject);
  }
});

test('admin of a topic covers its topic ops and subscriptions; "*" means any topic; the node block covers every cluster subject', (t) => {
  const admin = clientPermissions(s, '_INBOX_ops', { admin: ['*'], clusterAdmin: true }).publish;
  for (const subject of [s.admin('create-topic', 'x'), s.admin('alter-config', 'y.z'), s.admin('delete-subscription', 'x', 'sub'), s.subscriptionAdmin(9, 'x'), s.admin('elect-leaders')]) {
    t.true(allowed(admin, subject), subject);
  }
  t.false(allowed(admin, s.produce(1, 'x')));
  const node = nodePermissions(s);
  for (const subject of [s.raft(3), s.controller('alter-partition'), s.replicaFetchSession(2), s.produce(1, 'x'), '_INBOX.abc.1']) t.true(allowed(node.publish, subject), subject);
  t.false(allowed(node.publish, new Subjects('other').raft(1)));
  t.deepEqual(node.allowResponses, { max: 1, expires: '6m' });
});

test('acl print refuses what cannot be a grant with a one-line usage error', async (t) => {
  for (const args of [
    ['acl', 'print', '--produce', 'orders'],
    ['acl', 'print', '--user', 'alice', '--consume', 'payments'],
    ['acl', 'print', '--user', 'alice', '--produce', 'has space'],
    ['acl', 'print', '--user', 'al.ice'],
    ['acl', 'print', '--node', '--user', 'alice'],
    ['acl', 'list'],
  ]) {
    const r = await runCli(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  const ok = await runCli(['acl', 'print', '--user', 'ops', '--admin', '*', '--cluster', 'prod']);
  t.is(ok.code, 0, ok.stderr);
  t.true(ok.stdout.includes('"tm.prod.admin.create-topic.*"'));
  t.true(ok.stdout.startsWith("# tidemark acl print --user ops --admin '*' --cluster prod\n"));
});

test('two accounts: the exports are every client-facing subject and no node-to-node one; status passes every node\'s reply', async (t) => {
  const services = clientServices(s);
  const exported = services.map((x) => x.subject);
  // Everything any grant allows is exported, so a user's allow list is the only narrowing.
  const everything = clientPermissions(s, '_INBOX_x', { produce: ['a'], consume: [{ topic: 'b', subscription: 'c' }], read: ['d'], admin: ['e'], clusterAdmin: true }).publish;
  for (const subject of everything) t.true(allowed(exported, subject), `${subject} is exported`);
  for (const subject of [s.raft(1), s.controller('register'), s.controller('heartbeat'), s.controller('alter-partition'), s.replicaFetchSession(1), s.partition('replica-fetch', 1, 'a', 0), s.devControl()]) {
    t.false(allowed(exported, subject), `${subject} is not exported`);
  }
  t.deepEqual(services.filter((x) => x.stream).map((x) => x.subject), [s.status()]);
  const imports = await runCli(['acl', 'print', '--imports', 'NODES', '--cluster', 'prod']);
  t.is(imports.code, 0, imports.stderr);
  t.is(imports.stdout.match(/\{ service: \{ account: NODES, subject: "/g)?.length, services.length);
  const bad = await runCli(['acl', 'print', '--exports', '--user', 'alice']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--exports and --imports stand alone/);
});
