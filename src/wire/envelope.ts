/**
 * The wire envelope: the single source of truth for what travels on an inbox subject. Version 1.
 * Unknown top-level fields are kept (loose object) so later minor additions pass through older
 * readers; a different `v` is an incompatible envelope and is parked, never guessed at.
 */
import { z } from "zod";

export const ENVELOPE_VERSION = 1 as const;
export const KIND_RE = /^[a-z][a-z0-9_-]{0,31}(\.[a-z][a-z0-9_-]{0,31}){0,3}$/;
export const ENVELOPE_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** An instance id, and an agent id (OpenClaw's rule, lowercased). */
export const ADDRESS_ID_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;

export const AddressSchema = z.object({
  instance: z.string().regex(ADDRESS_ID_RE, "instance id: 1-64 of a-z 0-9 _ -"),
  agent: z.string().regex(ADDRESS_ID_RE, "agent id: 1-64 of a-z 0-9 _ -, lowercase"),
  channel: z.string().min(1).max(256),
  session: z.string().max(256),
  run: z.string().min(1).max(256).optional(),
  thread: z.string().min(1).max(256).optional(),
});

/**
 * Where a conversation lives, so results find their way back to it: the platform (`channel`), the
 * chat (`to`), and the thread within it. Produced from the host's own context, never by a model.
 */
export const DeliveryTargetSchema = z.object({
  channel: z.string().min(1).max(32),
  to: z.string().min(1).max(200),
  accountId: z.string().min(1).max(200).optional(),
  /** Slack thread_ts, Discord thread channel id. */
  threadId: z.string().min(1).max(200).optional(),
  /** The message a reply should attach to (Telegram DM reply chains). */
  replyToMessageId: z.string().min(1).max(200).optional(),
  /** Telegram forum topic (message_thread_id). */
  topicId: z.string().min(1).max(200).optional(),
});
export type DeliveryTarget = z.infer<typeof DeliveryTargetSchema>;

/** A delivery target plus the session whose user it belongs to (its host delivers announces). */
export const OriginSchema = DeliveryTargetSchema.extend({ session: AddressSchema });
export type Origin = z.infer<typeof OriginSchema>;

/**
 * What a reply or completion asks the mesh to do with its text:
 * - `reply`: give it to the requesting session's model (the default);
 * - `skip`: record it, tell nobody (the structured form of REPLY_SKIP / NO_REPLY);
 * - `announce`: also deliver it to the user where the conversation lives (the origin's thread).
 */
export const ActionSchema = z.enum(["reply", "skip", "announce"]);
export type Action = z.infer<typeof ActionSchema>;

/** Message kinds the mesh itself defines; hosts may add their own dotted kinds. */
export const Kinds = {
  /** A plain message to a session. */
  message: "msg",
  /** A reply to a message; `correlationId` is the id of the message answered. */
  reply: "reply",
  /** Work delegated to a session; `taskId` names the registry entry. */
  taskRequest: "task.request",
  /** A task reached a terminal state; lands in the requester's inbox. */
  taskComplete: "task.complete",
  /** Something a session watches happened (a task finished, a session closed). */
  watchEvent: "watch.event",
  /** Text for the origin session's host to deliver to a user's channel/thread. */
  announce: "announce",
} as const;

export const EnvelopeSchema = z.looseObject({
  v: z.literal(ENVELOPE_VERSION),
  id: z.string().regex(ENVELOPE_ID_RE, "envelope id: 1-64 of A-Z a-z 0-9 _ -"),
  kind: z.string().regex(KIND_RE, "kind: 1-4 dot-separated lowercase words"),
  from: AddressSchema,
  to: AddressSchema,
  correlationId: z.string().min(1).max(128).optional(),
  taskId: z.string().min(1).max(128).optional(),
  /** Where the conversation this message belongs to lives; carried through every hop. */
  origin: OriginSchema.optional(),
  action: ActionSchema.optional(),
  body: z.json(),
  sentAt: z.iso.datetime({ offset: true }),
});

export type Envelope = z.infer<typeof EnvelopeSchema>;
export type WireAddress = z.infer<typeof AddressSchema>;
