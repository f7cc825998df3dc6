/**
 * Subscriptions when consumers come and go, against a real nats-server and a real node:
 * - Key_Shared keeps per-key order while a consumer joins and another leaves (PIP-379: a key that
 *   changes owner waits until what the old owner holds of it is acknowledged or given back);
 * - Failover hands a partition over when the active consumer, a `tidemark consume` process, is
 *   killed -9: the standby takes over after the session timeout, and nothing is lost.
 * Every wait is bounded and awaits an event or polls with a deadline.
 */
import test from 'ava';
import { codecs, Tidemark, type Consumer, type ConsumerMessage } from '../src/index.js';
import { killAllCliProcesses, spawnCli } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { startTestNode, type TestNode } from './helpers/node.js';

let nats: NatsServer;
let node: TestNode;
let client: Tidemark;

test.before(async () => {
  nats = await startNatsServer();
  node = await startTestNode(nats.url);
  client = await Tidemark.connect({ servers: nats.url, cluster: node.cluster });
});

test.after.always(async () => {
  await killAllCliProcesses();
  await client?.close();
  await node?.destroy();
  await nats?.stop();
});

/** Resolves when `done()` holds, polling every 20 ms; rejects after `timeoutMs`. */
async function until(what: string, done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test.serial('Key_Shared keeps per-key order while a consumer joins and another leaves; every message arrives', async (t) => {
  t.timeout(60_000);
  const topic = 'ks-order';
  const KEYS = 24;
  const PER_KEY = 60;
  await client.admin().createTopic({ name: topic, partitions: 2, replicationFactor: 1 });
  const producer = client.producer<string>({ topic, codec: codecs.string(), acks: 'all' });
  /** key -> the sequence numbers in the order they were first handed to the application. */
  const firsts = new Map<string, number[]>();
  const seen = new Set<string>();
  const owners = new Map<string, Set<string>>();
  const run = async (name: string, c: Consumer<string>) => {
    for await (const m of c) {
      const [key, seq] = m.value!.split('#') as [string, string];
      if (!seen.has(m.value!)) {
        seen.add(m.value!);
        firsts.set(key, [...(firsts.get(key) ?? []), Number(seq)]);
      }
      owners.set(key, (owners.get(key) ?? new Set()).add(name));
      await m.ack();
    }
  };
  const open = (name: string) => client.consumer<string>({ topic, subscription: 'ks', type: 'Key_Shared', codec: codecs.string(), initialPosition: 'earliest', consumerName: name, receiverQueueSize: 50 });
  const a = await open('a');
  const b = await open('b');
  const loops = [run('a', a), run('b', b)];
  let sent = 0;
  const send = async (rounds: number) => {
    for (let r = 0; r < rounds; r++) {
      const seq = sent / KEYS;
      await Promise.all(Array.from({ length: KEYS }, (_, k) => producer.send({ key: `k${k}`, value: `k${k}#${seq}` })));
      sent += KEYS;
    }
  };
  const t0 = Date.now();
  await send(PER_KEY / 3);
  const t1 = Date.now();
  const c = await open('c'); // joins: about a third of the keys move to it
  loops.push(run('c', c));
  await send(PER_KEY / 3);
  await a.close(); // leaves: its keys, and what it held of them, move on
  await send(PER_KEY / 3);
  const t2 = Date.now();
  await until('every message received', () => seen.size === sent, 30_000);
  t.log(`phase 1 ${t1 - t0} ms, phases 2-3 ${t2 - t1} ms, drain ${Date.now() - t2} ms`);
  await Promise.all([b.close(), c.close()]);
  await Promise.all(loops);
  await producer.close();

  t.is(seen.size, KEYS * PER_KEY);
  for (const [key, seqs] of firsts) t.deepEqual(seqs, [...seqs].sort((x, y) => x - y), `key ${key} first arrived in send order`);
  t.true([...owners.values()].some((o) => o.size > 1), 'some key changed owner (the test exercised a handover)');
});

test.serial('Failover: the active consumer process is killed -9; the standby takes over from the last acknowledged position, losing nothing', async (t) => {
  t.timeout(60_000);
  const topic = 'fo-kill';
  const COUNT = 400;
  await client.admin().createTopic({ name: topic, partitions: 1, replicationFactor: 1 });
  const producer = client.producer<string>({ topic, codec: codecs.string(), acks: 'all' });
  const values = Array.from({ length: COUNT }, (_, i) => `v${i}`);
  await Promise.all(values.slice(0, COUNT / 2).map((value) => producer.send({ value })));
  // The process runs at priority 0 (the CLI's), so it is the active one; the standby has priority 1.
  const active = spawnCli(['consume', topic, '--subscription', 'f', '--type', 'failover', '--initial-position', 'earliest', '--json'], { nats: nats.url });
  await active.waitForLine('stdout', (l) => l.includes('"v0"'), 20_000);
  const standby = await client.consumer<string>({ topic, subscription: 'f', type: 'Failover', codec: codecs.string(), priorityLevel: 1, consumerName: 'standby', sessionTimeoutMs: 3000 });
  const fromStandby: ConsumerMessage<string>[] = [];
  const loop = (async () => {
    for await (const m of standby) {
      fromStandby.push(m);
      await m.ack();
    }
  })();
  await until('the active process printed every record', () => active.stdoutLines.length >= COUNT / 2, 20_000);
  t.is(fromStandby.length, 0, 'the standby gets nothing while the active one lives');
  await active.kill('SIGKILL');
  await Promise.all(values.slice(COUNT / 2).map((value) => producer.send({ value })));
  await producer.close();
  const printed = new Set(active.stdoutLines.map((l) => (JSON.parse(l) as { value: string }).value));
  const received = () => new Set([...printed, ...fromStandby.map((m) => m.value!)]);
  // The process's consumer had the default 10 s session timeout: the leader notices it within it.
  await until('the standby has everything', () => received().size === COUNT, 30_000);
  t.deepEqual([...received()].sort(), [...values].sort(), 'nothing lost');
  const redelivered = fromStandby.filter((m) => printed.has(m.value!)).length;
  t.log(`${printed.size} printed by the killed process; the standby received ${fromStandby.length}, ${redelivered} of them printed before (acks in flight at the kill)`);
  t.true(fromStandby.every((m, i) => i === 0 || m.offset > fromStandby[i - 1]!.offset), 'the standby reads the partition in order');
  await standby.close();
  await loop;
});
