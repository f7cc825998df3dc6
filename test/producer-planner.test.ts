/**
 * The producer-access planner (issue 12): an exclusive grant raises the topic's producer epoch and
 * names the owner, a fencing one also moves fencedEpoch, a release keeps the epoch; a grant planned
 * on an older image fails retriably; the image and its snapshot records keep the result.
 */
import test from 'ava';
import { applyRecords, emptyImage, imageRecords, topicByName, type MetadataImage } from '../src/metadata/image.js';
import { planCreateTopic } from '../src/metadata/planner.js';
import { planProducerGrant, planProducerRelease, type ProducerGrant } from '../src/metadata/producer-planner.js';
import { decodeEntry, encodeEntry, type MetadataRecord } from '../src/metadata/records.js';
import { TidemarkError } from '../src/protocol/errors.js';

function commit(image: MetadataImage, records: MetadataRecord[]): MetadataImage {
  return applyRecords(image, decodeEntry(encodeEntry(records)), image.offset + 1);
}

const TOPIC_ID = 'ab'.repeat(16);
function withTopic(): MetadataImage {
  const brokers = commit(emptyImage, [{ type: 'RegisterBroker', brokerId: 1, brokerEpoch: 1, rack: '', fenced: false, incarnation: 'a' }]);
  return commit(brokers, planCreateTopic(brokers, { name: 'orders', partitions: 2, replicationFactor: 1, config: {} }, TOPIC_ID, 0));
}

const grant = (sessionId: string, expectEpoch: number, accessMode: ProducerGrant['owner']['accessMode'] = 'Exclusive'): ProducerGrant => ({
  topicId: TOPIC_ID,
  owner: { name: `p-${sessionId}`, sessionId, accessMode },
  fencing: accessMode === 'ExclusiveWithFencing',
  expectEpoch,
});

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return e instanceof TidemarkError ? e.code : `not typed: ${String(e)}`;
  }
  return 'no error';
};

test('an exclusive grant raises the epoch and names the owner; fencedEpoch stays', (t) => {
  const image = commit(withTopic(), planProducerGrant(withTopic(), grant('s1', 0)));
  t.deepEqual(topicByName(image, 'orders')!.producerAccess, { epoch: 1, fencedEpoch: 0, owner: { name: 'p-s1', sessionId: 's1', accessMode: 'Exclusive' } });
});

test('a grant to the owner again plans nothing (a retried attach)', (t) => {
  const image = commit(withTopic(), planProducerGrant(withTopic(), grant('s1', 0)));
  t.deepEqual(planProducerGrant(image, grant('s1', 0)), []);
});

test('a grant planned on an older epoch, or while another owns the topic, fails retriably (BUSY)', (t) => {
  const image = commit(withTopic(), planProducerGrant(withTopic(), grant('s1', 0)));
  t.is(code(() => planProducerGrant(image, grant('s2', 0))), 'BUSY', 'stale epoch');
  t.is(code(() => planProducerGrant(image, grant('s2', 1))), 'BUSY', 'owned by another');
  const released = commit(image, planProducerRelease(image, TOPIC_ID, 's1'));
  t.is(code(() => planProducerGrant(released, grant('s2', 0))), 'BUSY', 'released, but the epoch moved since the plan');
  t.is(planProducerGrant(released, grant('s2', 1))[0]!.epoch, 2);
});

test('a fencing grant takes the topic from its owner and moves fencedEpoch to the new epoch', (t) => {
  const owned = commit(withTopic(), planProducerGrant(withTopic(), grant('s1', 0)));
  const fenced = commit(owned, planProducerGrant(owned, grant('s2', 0, 'ExclusiveWithFencing')));
  t.deepEqual(topicByName(fenced, 'orders')!.producerAccess, { epoch: 2, fencedEpoch: 2, owner: { name: 'p-s2', sessionId: 's2', accessMode: 'ExclusiveWithFencing' } });
});

test('a release keeps the epoch and drops the owner; releasing a non-owner plans nothing', (t) => {
  const owned = commit(withTopic(), planProducerGrant(withTopic(), grant('s1', 0)));
  t.deepEqual(planProducerRelease(owned, TOPIC_ID, 'other'), []);
  t.deepEqual(planProducerRelease(owned, 'cd'.repeat(16), 's1'), [], 'unknown topic');
  const released = commit(owned, planProducerRelease(owned, TOPIC_ID, 's1'));
  t.deepEqual(topicByName(released, 'orders')!.producerAccess, { epoch: 1, fencedEpoch: 0 });
});

test('a grant on a deleted topic is UNKNOWN_TOPIC; the snapshot records keep the epoch and owner', (t) => {
  t.is(code(() => planProducerGrant(withTopic(), { ...grant('s1', 0), topicId: 'ef'.repeat(16) })), 'UNKNOWN_TOPIC');
  const owned = commit(withTopic(), planProducerGrant(withTopic(), grant('s1', 0)));
  const rebuilt = applyRecords(emptyImage, imageRecords(owned), owned.offset);
  t.deepEqual(topicByName(rebuilt, 'orders')!.producerAccess, topicByName(owned, 'orders')!.producerAccess);
});
