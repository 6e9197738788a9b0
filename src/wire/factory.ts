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
  return {
    v: ENVELOPE_VERSION,
    id: input.id ?? randomUUID(),
    kind: input.kind,
    from: input.from,
    to: input.to,
    ...(input.correlationId !== undefined && { correlationId: input.correlationId }),
    ...(input.taskId !== undefined && { taskId: input.taskId }),
    ...(input.origin !== undefined && { origin: input.origin }),
    ...(input.action !== undefined && { action: input.action }),
    body: input.body,
    sentAt: input.sentAt ?? new Date().toISOString(),
  };
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
  kindOf: (id: string): string | undefined => RESERVED_PREFIX_KINDS[id.slice(0, 3)],
} as const;

const RESERVED_PREFIX_KINDS: Readonly<Record<string, string>> = {
  "tr-": Kinds.taskRequest,
  "tc-": Kinds.taskComplete,
  "an-": Kinds.announce,
  "we-": Kinds.watchEvent,
};
