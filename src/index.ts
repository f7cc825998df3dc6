/** Tidemark's public SDK surface. Everything else under src/ is internal. */
export { Tidemark, type ClientOptions, type ConnectOptions, type FromTransportOptions } from './client/client.js';
export { codecs, type Codec } from './client/codecs.js';
export type {
  Admin,
  ClusterDescription,
  ConsumerInfo,
  CreateSubscriptionOptions,
  CreateTopicOptions,
  ElectionType,
  ElectLeadersOptions,
  ElectLeadersResult,
  PartitionDescription,
  PartitionMetadata,
  ReplicaState,
  ResetTarget,
  SubscriptionDescription,
  SubscriptionMetadata,
  SubscriptionPartitionDescription,
  TopicDescription,
  TopicMetadata,
} from './client/admin.js';
export type { Acks, Producer, ProducerOptions, ProducerRecord, RecordMetadata } from './client/producer.js';
export type { AccessMode } from './client/producer-access.js';
export type { Reader, ReaderOptions, ReaderRecord, StartFrom } from './client/reader.js';
export type { Consumer, ConsumerMessage, ConsumerOptions, DeadLetterPolicy, InitialPosition, SubscriptionType } from './client/consumer.js';
export type { RetryOptions } from './runtime/retry.js';
export type { NatsSecurity, NatsTls } from './runtime/nats-security.js';
export { murmur2, partitionForKey, toPositive } from './client/partitioner.js';
export { ErrorCodes, TidemarkError, type ErrorCode } from './protocol/errors.js';
export type { RecordHeaders } from './protocol/batch.js';
export type { Clock, Random, Transport } from './runtime/ports.js';
