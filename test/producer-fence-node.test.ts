/**
 * Producer access on a real node (issue 12): raw fence and produce requests over NATS. A fence at
 * epoch 2 makes the partition leaders refuse PRODUCER_FENCED every produce with a lower accessEpoch
 * (none at all included), and a restarted node learns the fence from its log.
 */
import test from 'ava';
import { encodeBatch } from '../src/protocol/batch.js';
import { TidemarkError, type ErrorCode } from '../src/protocol/errors.js';
import { createTopicReply, decodeReply, encodeMessage, produceResponse, type ProduceResponse } from '../src/protocol/messages.js';
import { Subjects } from '../src/protocol/subjects.js';
import { connectNats, type NatsTransport } from '../src/runtime/nats-transport.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { startTestNode, tempDir, type TestNode } from './helpers/node.js';

const s = new Subjects('tidemark');
const enc = new TextEncoder();
const TOPIC = 'fenced';

let nats: NatsServer;
let t0: NatsTransport;
const nodes: TestNode[] = [];

const batch = (value: string) => encodeBatch([{ key: null, value: enc.encode(value), headers: {}, timestamp: 1_700_000_000_000 }]);

async function produce(accessEpoch: number | undefined, partitions: number[], value = 'x'): Promise<ProduceResponse['partitions']> {
  const body = { timeoutMs: 5000, acks: -1, ...(accessEpoch === undefined ? {} : { accessEpoch }), partitions: partitions.map((partition) => ({ partition, batch: batch(value) })) };
  return decodeReply(await t0.request(s.produce(1, TOPIC), encodeMessage(body), 6000), produceResponse).partitions;
}

async function fence(accessEpoch: number, partitions: number[]): Promise<ProduceResponse['partitions']> {
  const body = { timeoutMs: 5000, accessEpoch, partitions: partitions.map((partition) => ({ partition })) };
  return decodeReply(await t0.request(s.fence(1, TOPIC), encodeMessage(body), 6000), produceResponse).partitions;
}

const codes = (outcomes: ProduceResponse['partitions']) => outcomes.map((o) => o.error?.code ?? 'ok');
const offsets = (outcomes: ProduceResponse['partitions']) => outcomes.map((o) => (o.error === undefined ? o.baseOffset : -1));

/** Produces (unversioned, epoch 0) until the topic's leaders answer: they start a moment after the commit. Bounded. */
async function untilServing(accessEpoch: number | undefined, expect: ErrorCode | 'ok'): Promise<ProduceResponse['partitions']> {
  for (let attempt = 0; ; attempt++) {
    if (attempt > 200) throw new Error('partitions never became available');
    const outcomes = await produce(accessEpoch, [0, 1], 'probe');
    const retriable = outcomes.some((o) => o.error !== undefined && ['LEADER_NOT_AVAILABLE', 'UNKNOWN_TOPIC', 'NOT_LEADER'].includes(o.error.code));
    if (!retriable) {
      if (outcomes.some((o) => (o.error?.code ?? 'ok') !== expect)) throw new Error(`unexpected outcomes ${codes(outcomes).join(',')}`);
      return outcomes;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test.before(async () => {
  nats = await startNatsServer();
  nodes.push(await startTestNode(nats.url, { dataDir: await tempDir() }));
  t0 = await connectNats({ servers: nats.url });
  const created = await t0.request(s.admin('create-topic', TOPIC), encodeMessage({ timeoutMs: 5000, name: TOPIC, partitions: 2, replicationFactor: 1, config: {} }), 6000);
  decodeReply(created, createTopicReply);
  await untilServing(undefined, 'ok');
});

test.after.always(async () => {
  await t0?.close();
  for (const node of nodes) await node.destroy().catch(() => undefined);
  await nats?.stop();
});

test.serial('after a fence at epoch 2, a produce at epoch 1 or without an epoch is refused PRODUCER_FENCED; epoch 2 is written after the fence', async (t) => {
  const fenced = await fence(2, [0, 1]);
  t.deepEqual(codes(fenced), ['ok', 'ok'], 'answered once committed');
  const fenceOffsets = offsets(fenced);

  const old = await produce(1, [0, 1]);
  t.deepEqual(codes(old), ['PRODUCER_FENCED', 'PRODUCER_FENCED']);
  t.regex(old[0]!.error!.message ?? '', /producer epoch 1 < 2/);
  t.false(TidemarkError.fromWire(old[0]!.error!).retriable, 'a fenced producer must not retry');
  t.deepEqual(codes(await produce(undefined, [0])), ['PRODUCER_FENCED'], 'a producer that never attached writes at epoch 0');

  const current = await produce(2, [0, 1]);
  t.deepEqual(codes(current), ['ok', 'ok']);
  t.deepEqual(
    offsets(current),
    fenceOffsets.map((o) => o + 1),
    'the refused ones wrote nothing',
  );
  t.deepEqual(codes(await fence(1, [0])), ['PRODUCER_FENCED'], 'an older fence is refused too');
});

test.serial('a restarted node learns the fence from its log, with metadata that knows no producer epoch', async (t) => {
  const node = nodes[0]!;
  await node.close();
  nodes.push(await startTestNode(nats.url, { dataDir: node.dataDir }));
  const refused = await untilServing(1, 'PRODUCER_FENCED');
  t.deepEqual(codes(refused), ['PRODUCER_FENCED', 'PRODUCER_FENCED']);
  t.deepEqual(codes(await produce(2, [0, 1])), ['ok', 'ok']);
});
