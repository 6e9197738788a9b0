/**
 * A session's durable pull consumer. One per session that is being read; the server reaps it after
 * `inactiveThresholdMs` without reads, so idle sessions hold no server state beyond their stored
 * messages and their surfaced-id log. Recreating it resumes after the last fully handled sequence
 * recorded in that log; anything between that point and the reaped consumer's ack floor comes back
 * and is recognised as already shown.
 *
 * Ack policy is `all`: a batch is handled in stream order and confirmed by one confirmed ack of its
 * last message, which acknowledges everything before it.
 */
import { nanos } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, type Consumer, type ConsumerConfig } from "@nats-io/jetstream";
import type { SessionAddress } from "../address/index.js";
import { sessionKeyOf } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { ApiCodes, apiCode, isNotFound } from "../transport/js-errors.js";

/** Attempts to create a session consumer while the server still removes a reaped one of the same name. */
const STORE_RETRIES = 6;

/** Messages one session may have delivered and unacknowledged at once (bounds a batch). */
export const MAX_BATCH = 1000;

export async function ensureSessionConsumer(
  ctx: MeshContext,
  session: SessionAddress,
  resumeAfter: number,
  recreate: boolean,
): Promise<Consumer> {
  const stream = ctx.names.inboxStream(session.instance);
  const name = ctx.names.sessionConsumer(session);
  if (recreate) {
    // The previous reader died holding a batch: start over from the durable record instead of
    // waiting out its ack deadline. Messages it already showed are in the surfaced-id log.
    try {
      await ctx.jsm.consumers.delete(stream, name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  } else {
    try {
      await ctx.jsm.consumers.info(stream, name);
      return await ctx.js.consumers.get(stream, name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  const key = sessionKeyOf(session);
  const config: Partial<ConsumerConfig> = {
    durable_name: name,
    description: `clawmesh inbox of ${session.instance}/${key}`.slice(0, 4096),
    filter_subject: ctx.names.sessionFilter(session),
    ack_policy: AckPolicy.All,
    ack_wait: nanos(ctx.config.inbox.ackWaitMs),
    // The mesh parks a message itself after maxDeliveries; the server must never stop delivering.
    max_deliver: -1,
    max_ack_pending: MAX_BATCH,
    inactive_threshold: nanos(ctx.config.inbox.inactiveThresholdMs),
    ...(resumeAfter > 0
      ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: resumeAfter + 1 }
      : { deliver_policy: DeliverPolicy.All }),
    ...(ctx.features.supports("metadata") && { metadata: { "clawmesh.session": key.slice(0, 1024), "clawmesh.instance": session.instance } }),
  };
  for (let attempt = 1; ; attempt++) {
    try {
      await ctx.jsm.consumers.add(stream, config);
      break;
    } catch (err) {
      // The server is still removing the consumer it reaped (or we deleted) under this name: a
      // moment later the name is free. Bounded: anything else, or a store that keeps failing, throws.
      if (apiCode(err) !== ApiCodes.consumerStoreFailed || attempt >= STORE_RETRIES) throw err;
      await new Promise((r) => setTimeout(r, 20 * 2 ** attempt));
    }
  }
  ctx.logger.debug({ session: key, consumer: name, resumeAfter }, "session consumer created");
  return ctx.js.consumers.get(stream, name);
}
