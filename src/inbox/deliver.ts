/** Store an envelope in its recipient session's inbox; resolves when the server acknowledged it. */
import { MeshError, SendFailedError, UnknownInstanceError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { encodeEnvelope, type Envelope } from "../wire/index.js";

export interface Delivered {
  readonly id: string;
  readonly seq: number;
  readonly stream: string;
  /** True when the server recognised the id as a retry and stored nothing new. */
  readonly duplicate: boolean;
}

export async function deliver(ctx: MeshContext, envelope: Envelope): Promise<Delivered> {
  const subject = ctx.names.inboxSubject(envelope.to, envelope.from.instance, envelope.kind);
  const bytes = encodeEnvelope(envelope, ctx.messageLimit, ctx.serverMaxPayload);
  const stream = ctx.names.inboxStream(envelope.to.instance);
  try {
    const ack = await ctx.js.publish(subject, bytes, { msgID: envelope.id, expect: { streamName: stream } });
    return { id: envelope.id, seq: ack.seq, stream: ack.stream, duplicate: ack.duplicate };
  } catch (err) {
    // No stream listens on the subject: the client reports it as "no responders" (v3 wraps it).
    if (/no responders/i.test(`${String(err)} ${String((err as { cause?: unknown }).cause)}`)) {
      throw new UnknownInstanceError(envelope.to.instance);
    }
    if (err instanceof MeshError) throw err;
    throw new SendFailedError(envelope.id, err);
  }
}
