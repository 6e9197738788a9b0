/**
 * How the mesh recognises what went wrong in a NATS or JetStream call: by the server's API error
 * code or by the client's error class, never by matching message text (texts change between
 * server and client versions; codes and classes do not).
 */
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import {
  AuthorizationError,
  ClosedConnectionError,
  ConnectionError,
  DrainingConnectionError,
  NoRespondersError,
  PermissionViolationError,
  RequestError,
  TimeoutError,
  UserAuthenticationExpiredError,
} from "@nats-io/transport-node";
import { SendFailedError } from "../errors.js";

/** JetStream API error codes the mesh branches on (nats-server `server/errors.json`). */
export const ApiCodes = {
  streamNotFound: JetStreamApiCodes.StreamNotFound,
  consumerNotFound: JetStreamApiCodes.ConsumerNotFound,
  noMessageFound: JetStreamApiCodes.NoMessageFound,
  wrongLastSequence: JetStreamApiCodes.StreamWrongLastSequence,
  wrongLastSequenceUnknown: JetStreamApiCodes.StreamWrongLastSequenceUnknown,
  /** A stream with that name exists with a different configuration. */
  streamNameInUse: 10058,
  /** Stream store is full: `maximum bytes exceeded` / `maximum messages exceeded`. */
  streamStoreFailed: 10077,
  /** `Nats-Expected-Stream` did not match the stream that stored the subject. */
  streamNotMatch: 10060,
  /**
   * The server could not create a consumer's store: seen when a durable is created again while
   * the server is still removing the one it reaped for inactivity (same name, same directory).
   */
  consumerStoreFailed: 10104,
} as const;

/** The JetStream API error code carried by `err` (or its cause), if any. */
export function apiCode(err: unknown): number | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof JetStreamApiError) return e.code;
  }
  return undefined;
}

/** A stream, consumer or stored message that does not exist. */
export function isNotFound(err: unknown): boolean {
  const code = apiCode(err);
  return code === ApiCodes.streamNotFound || code === ApiCodes.consumerNotFound || code === ApiCodes.noMessageFound;
}

/** A compare-and-set that lost: the key is not at the revision the writer expected. */
export function isRevisionConflict(err: unknown): boolean {
  const code = apiCode(err);
  return code === ApiCodes.wrongLastSequence || code === ApiCodes.wrongLastSequenceUnknown;
}

/** Nobody subscribes to the subject a request went to (for a liveness probe: the process is gone). */
export function isNoResponders(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof NoRespondersError) return true;
    if (e instanceof RequestError && e.isNoResponders()) return true;
  }
  return false;
}

export function isTimeout(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof TimeoutError) return true;
  }
  return false;
}

/** The server refused a publish or subscription under this connection's permissions. */
export function isPermissionDenied(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof PermissionViolationError) return true;
  }
  return false;
}

/** Each error along `err`'s cause chain (a few levels: the client and the mesh wrap errors). */
function* causes(err: unknown): Generator<Error> {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) yield e;
}

/**
 * The server or the connection to it is unreachable right now, and trying again once it is back
 * can succeed: a request that timed out, a connection that is closed, draining or failed, a
 * publish the server never acknowledged (SendFailedError), or "no responders" while the
 * connection is down (nothing can answer a request that never left). Nothing already stored is
 * lost by any of these. Permission and authorization refusals are not among them: see
 * `isNotPermitted`.
 */
export function isBusUnreachable(err: unknown, opts: { connected?: boolean } = {}): boolean {
  if (isNotPermitted(err)) return false;
  for (const e of causes(err)) {
    if (e instanceof TimeoutError || e instanceof ConnectionError || e instanceof ClosedConnectionError || e instanceof DrainingConnectionError) return true;
    if (e instanceof SendFailedError) return true;
    if (opts.connected === false && (e instanceof NoRespondersError || (e instanceof RequestError && e.isNoResponders()))) return true;
  }
  return false;
}

/**
 * The server refused this connection's identity or what it asked to do: a configuration problem
 * (credentials, generated authorization, wrong instance), never fixed by waiting.
 */
export function isNotPermitted(err: unknown): boolean {
  for (const e of causes(err)) {
    if (e instanceof PermissionViolationError || e instanceof AuthorizationError || e instanceof UserAuthenticationExpiredError) return true;
  }
  return false;
}
