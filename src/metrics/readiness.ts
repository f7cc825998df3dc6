/**
 * Readiness (`GET /readyz`), decided from what the node's actors show. A broker is ready when it is
 * registered, unfenced, has heard from the controller recently and holds at least the metadata the
 * controller had committed one heartbeat before its last answer (a broker follows the metadata log
 * within milliseconds, so comparing with the latest answer would flap to 503 after every change,
 * while one heartbeat back a broker that stopped following shows within two heartbeats); a
 * controller-only node when it knows the quorum's leader. Anything missing is named, so an operator
 * sees why a node is held out. Pure.
 */

/** A broker whose last answered heartbeat is older than this is not ready (it cannot reach a controller), ms. */
export const READY_HEARTBEAT_AGE_MS_MAX = 3_000;

export interface BrokerReadiness {
  /** -1 until registered. */
  brokerEpoch: number;
  fenced: boolean;
  /** The offset of the metadata this broker has applied. */
  metadataOffset: number;
  /** The controller's committed metadata offset in the heartbeat answer before its last; undefined: none yet. */
  controllerOffset: number | undefined;
  /** Since the last answered heartbeat, ms; undefined: none answered yet. */
  heartbeatAgeMs: number | undefined;
}

export interface VoterReadiness {
  /** The quorum leader this voter knows; undefined or negative: none. */
  leaderId: number | undefined;
}

export interface Readiness {
  ready: boolean;
  /** What keeps the node from being ready, as short phrases; empty when ready. */
  missing: string[];
}

export function readiness(state: { broker?: BrokerReadiness; voter?: VoterReadiness }, heartbeatAgeMsMax = READY_HEARTBEAT_AGE_MS_MAX): Readiness {
  const missing: string[] = [];
  const b = state.broker;
  if (b !== undefined) {
    if (b.brokerEpoch < 0) missing.push('not registered with a controller');
    else if (b.fenced) missing.push('fenced by the controller');
    if (b.heartbeatAgeMs === undefined) missing.push('no heartbeat answered by a controller yet');
    else if (b.heartbeatAgeMs > heartbeatAgeMsMax) missing.push(`no heartbeat answered by a controller for ${b.heartbeatAgeMs} ms`);
    if (b.controllerOffset !== undefined && b.metadataOffset < b.controllerOffset) {
      missing.push(`metadata behind the controller (offset ${b.metadataOffset} of ${b.controllerOffset})`);
    }
  } else if (state.voter !== undefined) {
    if (state.voter.leaderId === undefined || state.voter.leaderId < 0) missing.push('no controller quorum leader known');
  }
  return { ready: missing.length === 0, missing };
}
