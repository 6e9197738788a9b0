/**
 * Parking: a message the inbox cannot or must not show (undecodable, forged sender, wrong recipient,
 * delivered too often) is copied, bytes untouched, to the instance's parked stream with headers
 * saying why, and then acknowledged in its inbox. Parking is done by the consumer itself as it
 * reads, never by an advisory listener (advisories are fire-and-forget). Operators list parked
 * messages and redrive them to their original subject.
 */
import { headers } from "@nats-io/transport-node";
import type { JsMsg } from "@nats-io/jetstream";
import type { SessionAddress } from "../address/index.js";
import { sessionKeyOf } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { MeshError } from "../errors.js";
import { readStored } from "./read-stored.js";

export const ParkHeaders = {
  reason: "Mesh-Park-Reason",
  detail: "Mesh-Park-Detail",
  subject: "Mesh-Park-Subject",
  stream: "Mesh-Park-Stream",
  seq: "Mesh-Park-Seq",
  deliveries: "Mesh-Park-Deliveries",
  at: "Mesh-Park-At",
  session: "Mesh-Park-Session",
} as const;

export type ParkReason =
  | "too_large"
  | "invalid_utf8"
  | "invalid_json"
  | "unsupported_version"
  | "invalid_envelope"
  | "bad_subject"
  | "sender_mismatch"
  | "recipient_mismatch"
  | "kind_mismatch"
  | "reserved_id"
  | "max_deliveries";

export interface ParkedMessage {
  /** Sequence in the parked stream: the handle for redrive. */
  readonly parkedSeq: number;
  readonly reason: string;
  readonly detail: string;
  /** The inbox subject it was published on. */
  readonly subject: string;
  readonly originalStream: string;
  readonly originalSeq: number;
  readonly deliveries: number;
  readonly parkedAt: string;
  readonly sessionKey: string;
  readonly size: number;
}

export async function park(ctx: MeshContext, session: SessionAddress, msg: JsMsg, reason: ParkReason, detail: string): Promise<void> {
  const h = headers();
  h.set(ParkHeaders.reason, reason);
  // Details describe the failure, never the body (logs and listings must not leak content).
  h.set(ParkHeaders.detail, detail.replace(/[\r\n]+/g, " ").slice(0, 300));
  h.set(ParkHeaders.subject, msg.subject);
  h.set(ParkHeaders.stream, msg.info.stream);
  h.set(ParkHeaders.seq, String(msg.seq));
  h.set(ParkHeaders.deliveries, String(msg.info.deliveryCount));
  h.set(ParkHeaders.at, new Date().toISOString());
  h.set(ParkHeaders.session, sessionKeyOf(session));
  await ctx.js.publish(ctx.names.parkedSubject(session), msg.data, {
    headers: h,
    // A batch released and taken again parks the same stored message once.
    msgID: `park-${msg.info.stream}-${msg.seq}`,
    expect: { streamName: ctx.names.parkedStream(session.instance) },
  });
  ctx.logger.warn({ session: sessionKeyOf(session), seq: msg.seq, reason }, "message parked");
}

export async function listParked(ctx: MeshContext, instance: string, session?: SessionAddress): Promise<ParkedMessage[]> {
  const subject = session ? ctx.names.parkedSubject(session) : ctx.names.parkedWildcard(instance);
  const out: ParkedMessage[] = [];
  for await (const m of readStored(ctx, ctx.names.parkedStream(instance), subject)) {
    const h = m.header;
    out.push({
      parkedSeq: m.seq,
      reason: h?.get(ParkHeaders.reason) ?? "",
      detail: h?.get(ParkHeaders.detail) ?? "",
      subject: h?.get(ParkHeaders.subject) ?? "",
      originalStream: h?.get(ParkHeaders.stream) ?? "",
      originalSeq: Number(h?.get(ParkHeaders.seq) ?? 0),
      deliveries: Number(h?.get(ParkHeaders.deliveries) ?? 0),
      parkedAt: h?.get(ParkHeaders.at) ?? "",
      sessionKey: h?.get(ParkHeaders.session) ?? "",
      size: m.data.length,
    });
  }
  return out;
}

/**
 * Put a parked message back on its original inbox subject, then remove it from the parked stream.
 * The republish carries its own dedup id, and the session's surfaced-id log stops a message that was
 * already shown from being shown again, so a redrive retried after a crash is safe.
 */
export async function redriveParked(ctx: MeshContext, instance: string, parkedSeq: number): Promise<{ subject: string; seq: number }> {
  const stream = ctx.names.parkedStream(instance);
  const stored = await ctx.jsm.streams.getMessage(stream, { seq: parkedSeq });
  if (stored === null) throw new MeshError("not_found", `no parked message ${parkedSeq} in ${stream}`);
  const subject = stored.header.get(ParkHeaders.subject);
  if (!subject) throw new MeshError("not_found", `parked message ${parkedSeq} does not record its original subject`);
  const ack = await ctx.js.publish(subject, stored.data, {
    msgID: `redrive-${stream}-${parkedSeq}`,
    expect: { streamName: ctx.names.inboxStream(instance) },
  });
  await ctx.jsm.streams.deleteMessage(stream, parkedSeq, false);
  return { subject, seq: ack.seq };
}

export interface ParkedDetail {
  readonly parkedSeq: number;
  readonly headers: Record<string, string>;
  /** The stored bytes as text (not decoded as an envelope: it may not be one). */
  readonly body: string;
  readonly size: number;
}

/** One parked message with its headers and body. */
export async function showParked(ctx: MeshContext, instance: string, parkedSeq: number): Promise<ParkedDetail> {
  const stream = ctx.names.parkedStream(instance);
  const stored = await ctx.jsm.direct.getMessage(stream, { seq: parkedSeq });
  if (stored === null || !stored.subject.startsWith(`${ctx.names.prefix}.parked.${instance}.`)) throw new MeshError("not_found", `no parked message ${parkedSeq} in ${stream}`);
  const h: Record<string, string> = {};
  for (const [k, v] of stored.header ?? []) h[k] = v.join(", ");
  return { parkedSeq, headers: h, body: new TextDecoder().decode(stored.data), size: stored.data.length };
}

/** Remove a parked message for good. */
export async function dropParked(ctx: MeshContext, instance: string, parkedSeq: number): Promise<void> {
  const stream = ctx.names.parkedStream(instance);
  const stored = await ctx.jsm.direct.getMessage(stream, { seq: parkedSeq });
  if (stored === null) throw new MeshError("not_found", `no parked message ${parkedSeq} in ${stream}`);
  await ctx.jsm.streams.deleteMessage(stream, parkedSeq, false);
}
