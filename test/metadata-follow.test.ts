/**
 * Brokers following metadata (metadata-server.ts + metadata-fetcher.ts over an in-memory transport):
 * a transaction arrives whole, a snapshot larger than one entry comes in bounded chunks, and lost
 * replies only cost retries. The controller's entries are bounded small (ENTRY_BYTES) so a topic of
 * a few hundred partitions needs both.
 */
import test from 'ava';
import { decode } from '@msgpack/msgpack';
import { pino } from 'pino';
import { createActor } from 'xstate';
import { metadataFetcher } from '../src/actors/broker/metadata-fetcher.js';
import { metadataServer } from '../src/actors/controller/metadata-server.js';
import { createFollowedView } from '../src/metadata/followed-view.js';
import { topicByName } from '../src/metadata/image.js';
import { createMemoryMetadataStore } from '../src/metadata/metadata-store.js';
import { planCreateTopic } from '../src/metadata/planner.js';
import type { MetadataRecord } from '../src/metadata/records.js';
import { Subjects } from '../src/protocol/subjects.js';
import { systemClock, systemRandom } from '../src/runtime/ports.js';
import { LoopbackTransport } from './helpers/loopback-transport.js';

const ENTRY_BYTES = 2048;
const logger = pino({ level: 'silent' });

function setup(options: { drop?: (bytes: Uint8Array) => boolean } = {}) {
  const transport = new LoopbackTransport(systemClock);
  const sent: Uint8Array[] = [];
  const publish = transport.publish.bind(transport);
  transport.publish = (subject, data, reply) => {
    if (subject.startsWith('_INBOX') || !subject.includes('metadata-fetch')) {
      sent.push(data);
      if (options.drop?.(data) === true) return;
    }
    publish(subject, data, reply);
  };
  const subjects = new Subjects('mf');
  const metadata = createMemoryMetadataStore(ENTRY_BYTES);
  const server = createActor(metadataServer, { input: { subjects, transport, metadata, clock: systemClock, logger, waitersMax: 16 } }).start();
  const view = createFollowedView();
  const startFetcher = () =>
    createActor(metadataFetcher, {
      input: { brokerId: 1, subjects, transport, view, clock: systemClock, random: systemRandom, logger, fetchWaitMs: 100, backoff: { backoffMsInitial: 10, backoffMsMax: 50 } },
    }).start();
  return { metadata, server, view, sent, startFetcher };
}

const brokers: MetadataRecord[] = [1, 2, 3].map((id) => ({ type: 'RegisterBroker', brokerId: id, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'x' }));

async function until(what: string, done: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('a broker following by entries sees a transaction only whole, and ends where the controller is', async (t) => {
  const { metadata, server, view, startFetcher } = setup();
  await metadata.propose(brokers);
  const fetcher = startFetcher();
  t.teardown(() => {
    fetcher.stop();
    server.stop();
  });
  await until('brokers', () => view.image().brokers.size === 3);
  const sizes: number[] = [];
  view.subscribe((image) => sizes.push(topicByName(image, 'wide')?.partitions.length ?? 0));
  await metadata.propose(planCreateTopic(metadata.image(), { name: 'wide', partitions: 300, replicationFactor: 3, config: {} }, 'a'.repeat(32), 0));
  t.true(metadata.image().offset >= 4, 'several entries');
  await until('the topic', () => view.image().offset === metadata.image().offset);
  t.deepEqual(sizes, [300], 'the view changed once, with every partition');
  t.deepEqual(view.image(), metadata.image());
});

test('a broker too far behind gets the snapshot in chunks of at most one entry, and survives lost chunks', async (t) => {
  let chunkReplies = 0;
  let dropped = 0;
  const { metadata, server, view, sent, startFetcher } = setup({
    drop: (bytes) => {
      const body = decode(bytes) as { chunk?: { index: number } };
      if (body.chunk === undefined) return false;
      chunkReplies++;
      // Lose the second chunk once.
      if (body.chunk.index === 1 && dropped === 0) {
        dropped++;
        return true;
      }
      return false;
    },
  });
  await metadata.propose(brokers);
  await metadata.propose(planCreateTopic(metadata.image(), { name: 'wide', partitions: 300, replicationFactor: 3, config: {} }, 'b'.repeat(32), 0));
  // The controller restarts from its own snapshot: no entries are kept, brokers get the snapshot.
  const snap = metadata.snapshot();
  metadata.install(snap.index, snap.data);
  t.true(snap.data.length > 4 * ENTRY_BYTES);
  const fetcher = startFetcher();
  t.teardown(() => {
    fetcher.stop();
    server.stop();
  });
  await until('the snapshot', () => view.image().offset === metadata.image().offset);
  t.deepEqual(view.image(), metadata.image());
  t.is(dropped, 1);
  t.true(chunkReplies > 4, `${chunkReplies} chunk replies`);
  for (const bytes of sent) t.true(bytes.length <= ENTRY_BYTES + 512, `a reply of ${bytes.length} bytes`);
});
