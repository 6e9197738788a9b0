/**
 * The one send path: every envelope that leaves this process (a plain send, a reply, a task
 * request, a completion, an announce, a watch notice) is stored in its recipient session's inbox
 * through `sendEnvelope`. It refuses to send as another instance (the broker refuses it too, under
 * the generated authorization), refuses oversize envelopes before publishing, and retries an
 * unacknowledged publish under the same envelope id.
 */
import { ConnectionError } from "@nats-io/transport-node";
import { createHash } from "node:crypto";
import { sessionKeyOf } from "../address/index.js";
import { InvalidAddressError, SendFailedError, UnknownInstanceError } from "../errors.js";
import { NoStreamError, StreamRefusedError } from "../transport/ingest.js";
import { isNotFound } from "../transport/js-errors.js";
import type { MeshContext } from "../mesh-context.js";
import { encodeEnvelope, type Envelope } from "../wire/index.js";

export interface Delivered {
  readonly id: string;
  readonly seq: number;
  readonly stream: string;
  /** True when the server recognised the id as a retry and stored nothing new. */
  readonly duplicate: boolean;
}

export interface SendEnvelopeOptions {
  /** Keep retrying an unacknowledged publish this long (default: the mesh's `sendRetryMs`; 0: one try). */
  readonly retryForMs?: number;
}

/**
 * Store `envelope` in its recipient's inbox; resolves when the server acknowledged it. Retries a
 * publish whose acknowledgement did not come (server down, connection lost) under the same id
 * until the retry time has passed: the stream's duplicate window and the reader's surfaced-id log
 * make a retry of a message that was in fact stored harmless. A refusal (stream full, no stream)
 * is final at once. Still unacknowledged at the deadline: SendFailedError, so the caller knows and
 * can retry with the same id later.
 */
export async function sendEnvelope(ctx: MeshContext, envelope: Envelope, opts: SendEnvelopeOptions = {}): Promise<Delivered> {
  if (envelope.from.instance !== ctx.config.instance) {
    throw new InvalidAddressError(sessionKeyOf(envelope.from), `a mesh client of instance '${ctx.config.instance}' cannot send as instance '${envelope.from.instance}'`);
  }
  const deadline = Date.now() + (opts.retryForMs ?? ctx.config.sendRetryMs);
  for (let attempt = 0; ; attempt++) {
    // Written while disconnected, a publish is discarded by the client: wait for the connection.
    if (!(await ctx.connection.whenConnected(deadline - Date.now()))) {
      throw new SendFailedError(envelope.id, new ConnectionError("not connected to the server"));
    }
    try {
      return await publishOnce(ctx, envelope);
    } catch (err) {
      if (!(err instanceof SendFailedError) || Date.now() >= deadline) throw err;
      ctx.logger.info({ id: envelope.id, attempt }, "send not acknowledged; retrying under the same id");
      // Lost with the connection: retry as soon as it is back. Otherwise back off.
      if (ctx.connection.connected) await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
    }
  }
}

/**
 * The `Nats-Msg-Id` a publish carries: the envelope id keyed with the sending instance's secret.
 * Retries and crash recovery by any process of the instance map to the same value, so the stream
 * still drops a repeat inside its window; but a neighbour that publishes first with a guessed id
 * (say `tc-<taskId>`) cannot make the server drop the real message as a duplicate.
 */
export function publishDedupId(ctx: MeshContext, envelopeId: string): string {
  const secret = ctx.dedup.secret;
  return secret === undefined ? envelopeId : createHash("sha256").update(secret).update("\0").update(envelopeId).digest("base64url");
}

async function publishOnce(ctx: MeshContext, envelope: Envelope): Promise<Delivered> {
  const subject = ctx.names.inboxSubject(envelope.to, envelope.from.instance, envelope.kind);
  const bytes = encodeEnvelope(envelope, ctx.messageLimit, ctx.serverMaxPayload);
  const stream = ctx.names.inboxStream(envelope.to.instance);
  try {
    const ack = await ctx.ingest.publish(subject, bytes, publishDedupId(ctx, envelope.id), stream);
    return { id: envelope.id, seq: ack.seq, stream: ack.stream, duplicate: ack.duplicate };
  } catch (err) {
    // "No responders" is final only when the stream really does not exist; a clustered stream
    // between leaders answers nothing for a few seconds, and that is worth a retry.
    if (err instanceof NoStreamError) {
      const exists = await ctx.jsm.streams.info(stream).then(
        () => true,
        (e: unknown) => (isNotFound(e) ? false : undefined),
      );
      if (exists === false) throw new UnknownInstanceError(envelope.to.instance);
      throw new SendFailedError(envelope.id, err);
    }
    // A refusal (stream full, wrong stream) is definite: nothing was stored.
    if (err instanceof StreamRefusedError) throw err;
    throw new SendFailedError(envelope.id, err);
  }
}
