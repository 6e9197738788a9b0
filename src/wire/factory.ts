/**
 * The one way an envelope is made, and the ids the mesh reserves for its own facts. Every sender
 * (plain sends, replies, task requests, completions, announces, watch notices) builds its envelope
 * here, so version, id and timestamp rules live in one place.
 */
import { createHash, randomUUID } from "node:crypto";
import { ENVELOPE_VERSION, Kinds, type Action, type Envelope, type Origin, type WireAddress } from "./envelope.js";

export interface EnvelopeInput {
  readonly kind: string;
  readonly from: WireAddress;
  readonly to: WireAddress;
  readonly body: Envelope["body"];
  /** Default: a fresh random id. Retries of the same message must reuse its id. */
  readonly id?: string;
  readonly correlationId?: string;
  readonly taskId?: string;
  readonly origin?: Origin;
  readonly action?: Action;
  /** Default: now. */
  readonly sentAt?: string;
}

export function createEnvelope(input: EnvelopeInput): Envelope {
  // Assignments rather than conditional spreads: this runs once per message sent, and each spread
  // allocates a throwaway object. Fields are added in wire order.
  const envelope: Partial<Envelope> = { v: ENVELOPE_VERSION, id: input.id ?? randomUUID(), kind: input.kind, from: input.from, to: input.to };
  if (input.correlationId !== undefined) envelope.correlationId = input.correlationId;
  if (input.taskId !== undefined) envelope.taskId = input.taskId;
  if (input.origin !== undefined) envelope.origin = input.origin;
  if (input.action !== undefined) envelope.action = input.action;
  envelope.body = input.body;
  envelope.sentAt = input.sentAt ?? nowIso();
  return envelope as Envelope;
}

let lastMs = 0;
let lastIso = new Date(0).toISOString();
/** The current time as ISO text; formatted once per millisecond, however many envelopes it stamps. */
function nowIso(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/**
 * Deterministic ids of the mesh's own facts: a republish after a crash carries the same id, so the
 * stream's duplicate window and the reader's surfaced-id log both recognise it.
 */
export const ReservedIds = {
  /** The task.request of a task. */
  taskRequest: (taskId: string) => `tr-${taskId}`,
  /** The task.complete of a task. */
  taskComplete: (taskId: string) => `tc-${taskId}`,
  /** The announce of a task's result. */
  announce: (taskId: string) => `an-${taskId}`,
  /** One watch's notice of one event on one subject. */
  watchEvent: (watchId: string, event: string, discriminator: string) => `we-${createHash("sha256").update(`${watchId}|${event}|${discriminator}`).digest("hex").slice(0, 40)}`,
  /** The copy of message `id` of session `source` (instance/session key) that a redirect stores at its new session. */
  redirect: (source: string, id: string) => `rd-${createHash("sha256").update(`${source}|${id}`).digest("hex").slice(0, 40)}`,
  /**
   * The kind an id's reserved prefix belongs to, if it has one: such an id counts only on a message
   * of that kind (a plain message named `tc-<taskId>` is parked, never taken for the completion).
   */
  kindOf: (id: string): string | undefined => (id.charCodeAt(2) === DASH ? RESERVED_PREFIX_KINDS[id.slice(0, 3)] : undefined),
} as const;

/** Every reserved prefix is two letters and a dash: other ids (random UUIDs) are told apart without a lookup. */
const DASH = "-".charCodeAt(0);
const RESERVED_PREFIX_KINDS: Readonly<Record<string, string>> = {
  "tr-": Kinds.taskRequest,
  "tc-": Kinds.taskComplete,
  "an-": Kinds.announce,
  "we-": Kinds.watchEvent,
};
