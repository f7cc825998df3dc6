/**
 * Produce requests (`tm.<c>.b.<broker>.produce.<topic>`): one request carries batches for many of
 * the topic's partitions this broker leads, as Kafka's ProduceRequest does, so a producer spread
 * over many partitions sends one request per leader broker instead of one per partition.
 *
 * Each entry is checked where it enters (batch header and CRC, size, leadership) and handed to its
 * partition actor as the same PRODUCE event a single-partition request used to be, with a local
 * reply subject (runtime/local-replies.ts); the answers are gathered and sent back as one reply,
 * one outcome per entry, in the request's order. An entry refused here (not the leader, bad batch)
 * fails alone. Entries still unanswered at the request's deadline (plus a little, so the
 * partitions' own REQUEST_TIMED_OUT answers normally come first) are answered REQUEST_TIMED_OUT
 * (retriable; the batch may still be committed, and the idempotent producer's retry finds it).
 *
 * Every PRODUCE carries the producer access to check (issue 12): the request's accessEpoch and the
 * topic's producer epoch in this broker's metadata. Fence requests (`tm.<c>.b.<broker>.fence.<topic>`)
 * go the same way and are answered the same way: each entry becomes a PRODUCE of one fence record
 * (partition/fence-records.ts) at acks=all, so a new exclusive producer hears back once its fence
 * is committed.
 */
import { topicByName } from '../../metadata/image.js';
import type { MetadataView } from '../../metadata/metadata-store.js';
import { isControlBatch, verifyBatch } from '../../protocol/batch.js';
import { TidemarkError, type WireError } from '../../protocol/errors.js';
import { decodeReply, decodeRequest, encodeMessage, produceReply, produceRequest, type ProduceResponse } from '../../protocol/messages.js';
import { fenceRequest } from '../../protocol/producer-messages.js';
import type { Subjects } from '../../protocol/subjects.js';
import type { LocalReplies } from '../../runtime/local-replies.js';
import type { Clock, InboundMessage, Logger, Transport } from '../../runtime/ports.js';
import { encodeFenceBatch } from '../partition/fence-records.js';
import { FETCH_REPLY_ENVELOPE_BYTES } from '../partition/log-reader.js';
import type { PartitionEvent } from '../partition/types.js';
import { leaderActorOf, type ActorLookup } from './metadata-view.js';
import { noMetrics, type NodeMetrics } from '../../metrics/port.js';
import { OTHER_LABEL } from '../../metrics/topic-labels.js';

/** Produce requests a node holds open while their partitions answer. Beyond it: BUSY. */
export const PRODUCE_REQUESTS_OPEN_MAX = 4096;

export interface ProduceHandlerDeps {
  brokerId: number;
  subjects: Subjects;
  transport: Transport;
  local: LocalReplies;
  metadata: MetadataView;
  system: ActorLookup;
  clock: Clock;
  logger: Logger;
  /** @default noMetrics */
  metrics?: NodeMetrics;
}

type Outcome = ProduceResponse['partitions'][number];

/** How long past the request's own deadline the gathered reply waits for the partitions' answers, ms. */
function gatherSlackMs(timeoutMs: number): number {
  return Math.min(500, Math.max(20, Math.ceil(timeoutMs / 20)));
}

function wireOf(error: unknown): WireError {
  return (error instanceof TidemarkError ? error : new TidemarkError('INTERNAL', 'internal error', { cause: error })).toWire();
}

type Handler = (msg: InboundMessage) => void;
type ProduceEvent = Extract<PartitionEvent, { type: 'PRODUCE' }>;

export interface ProduceHandlers {
  /** `tm.<c>.b.<broker>.produce.<topic>` (produceRequest). */
  produce: Handler;
  /** `tm.<c>.b.<broker>.fence.<topic>` (producer-messages.ts, fenceRequest): a fence record per entry, acks=all. */
  fence: Handler;
}

/** The produce and fence handlers of a broker; they share one bound on requests held open. */
export function createProduceHandlers(deps: ProduceHandlerDeps): ProduceHandlers {
  const { subjects, transport, local, metadata, system, clock, logger, brokerId } = deps;
  const metrics = deps.metrics ?? noMetrics;
  let open = 0;

  /**
   * Sends each entry's PRODUCE (`prepare` makes it, or throws to refuse the entry here) to the
   * partition actor leading it and, when `answer`, answers `msg` with one ProduceResponse: one
   * outcome per entry, in order, the unanswered ones REQUEST_TIMED_OUT once the deadline passes.
   * `answered` is called once the answer went out (at once when there is none to send).
   */
  const dispatch = <E extends { partition: number }>(
    msg: InboundMessage,
    topic: string,
    entries: readonly E[],
    request: { timeoutMs: number; answer: boolean },
    prepare: (entry: E) => Omit<ProduceEvent, 'type' | 'replyTo'>,
    answered?: () => void,
  ) => {
    const { timeoutMs, answer } = request;
    if (answer && open >= PRODUCE_REQUESTS_OPEN_MAX) {
      throw new TidemarkError('BUSY', `broker ${brokerId} holds ${open} produce requests open (PRODUCE_REQUESTS_OPEN_MAX)`);
    }
    const image = metadata.image();
    const outcomes: Array<Outcome | undefined> = new Array(entries.length);
    const replySubjects: Array<string | undefined> = new Array(entries.length);
    let missing = entries.length;
    let finished = false;
    let timer: unknown;
    const finish = () => {
      if (finished) return;
      finished = true;
      if (timer !== undefined) clock.clearTimeout(timer);
      for (const s of replySubjects) if (s !== undefined) local.close(s);
      open--;
      // Not outcomes.map: it skips the holes of entries never answered.
      const body: ProduceResponse = { partitions: entries.map((e, i) => outcomes[i] ?? { partition: e.partition, error: timedOut(timeoutMs) }) };
      msg.respond(encodeMessage(body));
      answered?.();
    };
    const settle = (i: number, outcome: Outcome) => {
      if (finished || outcomes[i] !== undefined) return;
      outcomes[i] = outcome;
      replySubjects[i] = undefined;
      if (--missing === 0) finish();
    };
    if (answer) open++;

    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      try {
        const actor = leaderActorOf(image, system, brokerId, topic, entry.partition);
        const event = prepare(entry);
        let replyTo: string | undefined;
        if (answer) {
          replyTo = local.open((data) => settle(i, outcomeOf(entry.partition, data)));
          replySubjects[i] = replyTo;
        }
        actor.send({ type: 'PRODUCE', replyTo, ...event } satisfies PartitionEvent);
      } catch (error) {
        if (answer) settle(i, { partition: entry.partition, error: wireOf(error) });
        else logger.debug({ err: error, topic, partition: entry.partition }, 'acks=0 batch refused');
      }
    }
    if (!answer) {
      answered?.();
      return;
    }
    if (entries.length === 0) {
      finish();
      return;
    }
    if (!finished) timer = clock.setTimeout(finish, timeoutMs + gatherSlackMs(timeoutMs));
  };

  /** The topic's producer epoch in this broker's metadata: a leader refuses produce below it (issue 12). */
  const knownEpoch = (topic: string) => topicByName(metadata.image(), topic)?.producerAccess.epoch ?? 0;

  const produce: Handler = (msg) => {
    const topic = subjects.parseProduce(msg.subject);
    if (topic === undefined) throw new TidemarkError('INVALID_REQUEST', `malformed subject ${msg.subject}`);
    const request = decodeRequest(msg.data, produceRequest);
    const nowMs = clock.now();
    // A batch must fit a fetch reply (one NATS message) or it could be written and never read.
    const batchBytesMax = transport.maxPayloadBytes - FETCH_REPLY_ENVELOPE_BYTES;
    const access = { epoch: request.accessEpoch ?? 0, known: knownEpoch(topic) };
    const answer = request.acks !== 0 && msg.reply !== undefined;
    let bytes = 0;
    for (const entry of request.partitions) bytes += entry.batch.length;
    // A topic this broker does not know gets no series of its own (anyone may name any topic).
    const done = metrics.produceStarted(topicByName(metadata.image(), topic) === undefined ? OTHER_LABEL : topic, request.acks, bytes);
    dispatch(msg, topic, request.partitions, { timeoutMs: request.timeoutMs, answer }, (entry) => {
      const header = verifyBatch(entry.batch);
      if (isControlBatch(entry.batch)) throw new TidemarkError('INVALID_RECORD', 'control batches are the broker\'s own; a client may not write one');
      if (entry.batch.length > batchBytesMax) {
        throw new TidemarkError('RECORD_TOO_LARGE', `batch of ${entry.batch.length} bytes is over ${batchBytesMax} (NATS max_payload minus the reply envelope)`);
      }
      return {
        acks: request.acks,
        batch: entry.batch,
        recordCount: header.recordCount,
        producer: header.producerId < 0 ? undefined : { producerId: header.producerId, producerEpoch: header.producerEpoch, baseSequence: header.baseSequence },
        nowMs,
        timeoutMs: request.timeoutMs,
        leaderEpoch: entry.leaderEpoch,
        access,
      };
    }, done);
  };

  const fence: Handler = (msg) => {
    const topic = subjects.parseFence(msg.subject);
    if (topic === undefined) throw new TidemarkError('INVALID_REQUEST', `malformed subject ${msg.subject}`);
    const request = decodeRequest(msg.data, fenceRequest);
    // A fence nobody hears the outcome of is of no use to the producer that must wait for it.
    if (msg.reply === undefined) throw new TidemarkError('INVALID_REQUEST', 'fence needs a reply subject');
    const nowMs = clock.now();
    const access = { epoch: request.accessEpoch, known: knownEpoch(topic) };
    dispatch(msg, topic, request.partitions, { timeoutMs: request.timeoutMs, answer: true }, (entry) => ({
      acks: -1,
      batch: encodeFenceBatch(request.accessEpoch, nowMs),
      recordCount: 1,
      producer: undefined,
      nowMs,
      timeoutMs: request.timeoutMs,
      leaderEpoch: entry.leaderEpoch,
      access,
    }));
  };

  return { produce, fence };
}

function outcomeOf(partition: number, data: Uint8Array): Outcome {
  try {
    const reply = decodeReply(data, produceReply);
    return { partition, baseOffset: reply.baseOffset, logStartOffset: reply.logStartOffset };
  } catch (error) {
    return { partition, error: wireOf(error) };
  }
}

function timedOut(timeoutMs: number): WireError {
  return { code: 'REQUEST_TIMED_OUT', message: `no answer from the partition within the request's ${timeoutMs} ms; the batch may still be committed` };
}
