import { codecs, Tidemark, TidemarkError } from 'tidemark';

interface Order {
  id: string;
  amount: number;
}

const client = await Tidemark.connect({ servers: process.env['TIDEMARK_NATS'] ?? 'nats://127.0.0.1:4222', cluster: 'tidemark' });
try {
  await client.admin().createTopic({ name: 'orders-sdk', partitions: 3, replicationFactor: 1, config: {} });
} catch (error) {
  if (!(error instanceof TidemarkError && error.code === 'TOPIC_ALREADY_EXISTS')) throw error;
}

const codec = codecs.json<Order>();
const producer = client.producer<Order>({ topic: 'orders-sdk', codec, acks: 'all', lingerMs: 5, batchBytesMax: 1 << 20 });
const { partition, offset } = await producer.send({ key: 'o-1', value: { id: 'o-1', amount: 42 }, headers: { source: 'web' } });
await producer.flush();
console.log(`o-1 is at partition ${partition}, offset ${offset}`);

const reader = client.reader<Order>({ topic: 'orders-sdk', partition, from: { offset }, codec });
for await (const rec of reader) {
  console.log(rec.offset, rec.keyString, rec.value?.amount, rec.headerString('source'), new Date(rec.timestamp).toISOString());
  break; // one record is enough here; breaking out closes the reader
}

// A durable, named subscription: consumers share it (Exclusive, Failover, Shared, Key_Shared) and
// acknowledge what they processed; the cluster remembers the position across restarts and failovers.
await using consumer = await client.consumer<Order>({ topic: 'orders-sdk', subscription: 'billing', type: 'Shared', initialPosition: 'earliest', codec });
for await (const msg of consumer) {
  console.log(`billing got ${msg.keyString} (partition ${msg.partition}, offset ${msg.offset}, redelivered ${msg.redeliveryCount} times)`);
  await msg.ack(); // resolves once the acknowledgement is durable
  break;
}

// One writer at a time (Pulsar's producer access modes): an ExclusiveWithFencing producer takes the
// topic and fences every other producer of it; 'Exclusive' is refused while another is attached,
// 'WaitForExclusive' queues for its turn. (`producer` above is fenced now: its sends would fail.)
const writer = await client.createProducer<Order>({ topic: 'orders-sdk', codec, accessMode: 'ExclusiveWithFencing', producerName: 'order-writer' });
const written = await writer.send({ key: 'o-2', value: { id: 'o-2', amount: 7 } });
console.log(`o-2 written by ${writer.producerName} at producer epoch ${writer.epoch}, partition ${written.partition}`);
await client.close();
