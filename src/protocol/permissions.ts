/**
 * The NATS permissions that go with the subject layout (subjects.ts): what a client must be allowed
 * to publish to produce to a topic, consume a subscription, read a topic or administer it, and what
 * a node needs. Built from the Subjects class with `'*'` for "any broker" (and "any topic" /
 * "any subscription" where asked), so the allow lists cannot drift from the subjects the SDK uses.
 * `tidemark acl print` renders them in nats-server configuration syntax (docs/security.md).
 */
import { INBOX_PREFIX } from '../runtime/nats-security.js';
import { tidemarkError } from './errors.js';
import { isValidSubscriptionName, isValidTopicName, type Subjects } from './subjects.js';

/** What one client may do; `'*'` as a topic or subscription means any. */
export interface ClientGrant {
  /** Topics it produces to (any access mode: attach, heartbeat, detach, fence, produce). */
  produce?: readonly string[];
  /** Subscriptions it consumes (created on first use, as the SDK's consumer does). */
  consume?: readonly { topic: string; subscription: string }[];
  /** Topics it reads with a plain reader (fetch, and the offsets every reader asks). */
  read?: readonly string[];
  /** Topics it administers: create, delete, add partitions, alter config, and their subscriptions. */
  admin?: readonly string[];
  /** Cluster-wide admin: leader elections over any topic. */
  clusterAdmin?: boolean;
}

export interface Permissions {
  publish: string[];
  subscribe: string[];
  /** nats-server `allow_responses`: may answer requests it received, whatever their reply subject. */
  allowResponses?: { max: number; expires: string };
}

/** Longer than any request may wait for its answer (REQUEST_TIMEOUT_MS_MAX is 5 minutes). */
const NODE_RESPONSE_EXPIRES = '6m';

const USER_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** The inbox prefix a client named `user` connects with: its replies arrive under `<prefix>.>`. */
export function inboxPrefixFor(user: string): string {
  if (!USER_NAME.test(user)) throw tidemarkError('INVALID_REQUEST', `user name "${user}" must be 1-64 of [A-Za-z0-9_-] (it names the reply inbox)`);
  return `${INBOX_PREFIX}_${user}`;
}

/**
 * A client's allow lists. Every client may ask for metadata and status (the SDK's `connect` proves
 * the cluster is there on the status subject; every call starts from metadata) and subscribe to
 * its own inbox; nothing else unless granted.
 */
export function clientPermissions(subjects: Subjects, inboxPrefix: string, grant: ClientGrant): Permissions {
  const publish: string[] = [subjects.metadata(), subjects.status()];
  for (const topic of grant.produce ?? []) {
    checkName(topic, 'topic');
    publish.push(
      subjects.admin('producer-attach', topic),
      subjects.admin('producer-heartbeat', topic),
      subjects.admin('producer-detach', topic),
      subjects.produce('*', topic),
      subjects.fence('*', topic),
    );
  }
  for (const { topic, subscription } of grant.consume ?? []) {
    checkName(topic, 'topic');
    checkName(subscription, 'subscription');
    publish.push(subjects.admin('create-subscription', topic, subscription), subjects.consumer('consume', '*', topic, subscription), subjects.consumer('ack', '*', topic, subscription));
  }
  for (const topic of grant.read ?? []) {
    checkName(topic, 'topic');
    publish.push(subjects.partition('fetch', '*', topic, '*'), subjects.offsets('*'));
  }
  for (const topic of grant.admin ?? []) {
    checkName(topic, 'topic');
    publish.push(
      subjects.admin('create-topic', topic),
      subjects.admin('delete-topic', topic),
      subjects.admin('create-partitions', topic),
      subjects.admin('alter-config', topic),
      subjects.admin('create-subscription', topic, '*'),
      subjects.admin('delete-subscription', topic, '*'),
      subjects.subscriptionAdmin('*', topic),
      subjects.offsets('*'),
    );
  }
  if (grant.clusterAdmin === true) publish.push(subjects.admin('elect-leaders'));
  return { publish: [...new Set(publish)], subscribe: [`${inboxPrefix}.>`] };
}

/**
 * A node's: everything under the cluster prefix, the default inbox (nodes' requests to each
 * other), and answers to whoever asked (clients' replies go to their own inboxes).
 */
export function nodePermissions(subjects: Subjects): Permissions {
  const all = `${subjects.prefix}.>`;
  const inbox = `${INBOX_PREFIX}.>`;
  return { publish: [all, inbox], subscribe: [all, inbox], allowResponses: { max: 1, expires: NODE_RESPONSE_EXPIRES } };
}

/** Everything a client may be granted: the subjects the nodes' account exports when clients live in another account. */
const EVERYTHING: ClientGrant = { produce: ['*'], consume: [{ topic: '*', subscription: '*' }], read: ['*'], admin: ['*'], clusterAdmin: true };

/**
 * The client-facing subjects, as services: what a nodes' account exports and a clients' account
 * imports (docs/security.md, two accounts). No node-to-node subject is among them, so a client in
 * the other account cannot even address one. `stream`: every node answers (status), so the import
 * must pass several replies.
 */
export function clientServices(subjects: Subjects): Array<{ subject: string; stream: boolean }> {
  return clientPermissions(subjects, INBOX_PREFIX, EVERYTHING).publish.map((subject) => ({ subject, stream: subject === subjects.status() }));
}

/** The nodes' account's `exports` list, in nats-server configuration syntax. */
export function renderExports(services: ReadonlyArray<{ subject: string; stream: boolean }>): string {
  return ['exports: [', ...services.map((s) => `  { service: "${s.subject}"${s.stream ? ', response: stream' : ''} }`), ']'].join('\n');
}

/** A clients' account's `imports` list of the nodes' account's services. */
export function renderImports(account: string, services: ReadonlyArray<{ subject: string }>): string {
  return ['imports: [', ...services.map((s) => `  { service: { account: ${account}, subject: "${s.subject}" } }`), ']'].join('\n');
}

/** The `permissions` block of a nats-server user, in its configuration syntax. */
export function renderPermissions(permissions: Permissions): string {
  const list = (subjects: string[]) => ['[', ...subjects.map((s, i) => `      "${s}"${i < subjects.length - 1 ? ',' : ''}`), '    ]'].join('\n');
  const lines = ['permissions: {', '  publish: {', `    allow: ${list(permissions.publish)}`, '  }', '  subscribe: {', `    allow: ${list(permissions.subscribe)}`, '  }'];
  if (permissions.allowResponses !== undefined) lines.push(`  allow_responses: { max: ${permissions.allowResponses.max}, expires: "${permissions.allowResponses.expires}" }`);
  lines.push('}');
  return lines.join('\n');
}

function checkName(name: string, what: 'topic' | 'subscription'): void {
  if (name === '*') return;
  const ok = what === 'topic' ? isValidTopicName(name) : isValidSubscriptionName(name);
  if (!ok) throw tidemarkError(what === 'topic' ? 'INVALID_TOPIC' : 'INVALID_REQUEST', `invalid ${what} name "${name}"`);
}
