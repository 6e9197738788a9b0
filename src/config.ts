/**
 * Mesh configuration: one zod schema gives defaults, validation and the documented shape.
 * Durations are milliseconds.
 */
import { z } from "zod";
import { ValidationError } from "./errors.js";

const DAY = 24 * 60 * 60 * 1000;
const MIB = 1024 * 1024;

export const RetentionSchema = z.object({
  /** How long an undelivered message stays in a session inbox. */
  maxAgeMs: z.number().int().positive().default(7 * DAY),
  /**
   * Size cap of one instance's inbox stream; when full, sends are refused (discard: new). File
   * streams reserve their max_bytes on the server, so caps are modest and per stream.
   */
  maxBytes: z.number().int().positive().default(256 * MIB),
  /** Size cap of the parked stream. */
  parkedMaxBytes: z.number().int().positive().default(64 * MIB),
  /** Size cap of the surfaced-id log. */
  seenMaxBytes: z.number().int().positive().default(64 * MIB),
  /**
   * Message-count caps, the limits that hold on every server version. Byte caps are applied only
   * where the server refuses at them exactly (2.10.6+); below that a byte cap can evict an
   * acknowledged message, so the count cap alone bounds the stream (subjects.md, "Limits").
   */
  maxMessages: z.number().int().positive().default(100_000),
  parkedMaxMessages: z.number().int().positive().default(100_000),
  seenMaxMessages: z.number().int().positive().default(1_000_000),
  /** Server-side publish dedup window (`Nats-Msg-Id`). Consumer-side dedup covers retries after it. */
  duplicateWindowMs: z.number().int().positive().default(2 * 60 * 1000),
  /** How long parked (undeliverable) messages are kept for an operator. */
  parkedMaxAgeMs: z.number().int().positive().default(30 * DAY),
  /** How long the record of surfaced envelope ids is kept: the consumer-side dedup horizon. */
  seenMaxAgeMs: z.number().int().positive().default(14 * DAY),
  /** How long a task registry entry lives after its last change. */
  taskMaxAgeMs: z.number().int().positive().default(30 * DAY),
  /** Stream and bucket replicas (3 on a cluster). */
  replicas: z.number().int().min(1).max(5).default(1),
});

export const InboxTuningSchema = z.object({
  /** Redelivery deadline for a taken message; extended with `working()` while a batch is held. */
  ackWaitMs: z.number().int().min(1000).default(30_000),
  /** Deliveries after which a message is parked instead of shown again. */
  maxDeliveries: z.number().int().min(1).default(5),
  /**
   * An idle session's durable consumer is reaped by the server after this long. Short on purpose:
   * a live consumer costs the server ~48 KB and restart time, a reaped one costs its next take one
   * recreation (a few ms), and exactly-once does not depend on it (the seen log does).
   */
  inactiveThresholdMs: z.number().int().min(1000).default(5 * 60 * 1000),
  /** A reader that stops renewing loses its lease after this long. */
  leaseTtlMs: z.number().int().min(500).default(15_000),
  /** Longest wait for messages the server reported pending to arrive in one take. */
  fetchExpiresMs: z.number().int().min(1000).default(2_000),
});

export const RegistryTuningSchema = z.object({
  /** How often this client checks active sessions for runs that went away (0: never). */
  janitorIntervalMs: z.number().int().min(0).default(5_000),
});

/**
 * How the mesh's own connection (`Mesh.connect`) rides out a server that goes away. A long-lived
 * host never gives up by default: the client keeps dialling every `timeWaitMs` (plus up to
 * `jitterMs`) until the server is back, and live waits resume as soon as it is.
 */
export const ReconnectSchema = z.object({
  /** Dial attempts per server before the connection closes for good; -1: never give up. */
  maxAttempts: z
    .number()
    .int()
    .refine((n) => n === -1 || n >= 1, "-1 (never give up) or at least 1")
    .default(-1),
  /** Wait between attempts on one server. */
  timeWaitMs: z.number().int().min(10).max(60_000).default(250),
  /** Random extra wait added to each attempt, up to this, so many clients do not dial at once. */
  jitterMs: z.number().int().min(0).max(60_000).default(100),
});

export const TaskTuningSchema = z.object({
  /**
   * How long a delegation's request may take to be acknowledged by the assignee's inbox. A task
   * still marked undelivered after this long is not alive: its delegation failed or its process
   * died, and a retry with the same task id (or task key) takes it over. A delegation gives up
   * retrying its publish after half of it.
   */
  deliveryGraceMs: z.number().int().min(100).default(20_000),
  /** First delay before a completion that could not be delivered (requester inbox full or unreachable) is retried. */
  notifyRetryMinMs: z.number().int().min(10).default(1_000),
  /** Longest delay between retries of an undelivered completion (the delay doubles up to it). */
  notifyRetryMaxMs: z.number().int().min(10).default(60_000),
});

export const MeshConfigSchema = z.object({
  instance: z.string(),
  prefix: z.string().default("mesh"),
  /** Largest encoded envelope accepted; never above the server's max_payload. */
  maxMessageBytes: z.number().int().min(1024).default(256 * 1024),
  retention: RetentionSchema.prefault({}),
  inbox: InboxTuningSchema.prefault({}),
  registry: RegistryTuningSchema.prefault({}),
  reconnect: ReconnectSchema.prefault({}),
  tasks: TaskTuningSchema.prefault({}),
  /** How long a send keeps retrying an unacknowledged publish (same envelope id) before failing. */
  sendRetryMs: z.number().int().min(0).default(30_000),
  /** JSON channel policy for announce overrides (default: $CLAWMESH_CHANNEL_POLICY; none: no overrides). */
  channelPolicyFile: z.string().optional(),
});

export type MeshConfigInput = z.input<typeof MeshConfigSchema>;
export type MeshConfig = z.output<typeof MeshConfigSchema>;
export type Retention = z.output<typeof RetentionSchema>;
export type InboxTuning = z.output<typeof InboxTuningSchema>;
export type ReconnectPolicy = z.output<typeof ReconnectSchema>;
export type TaskTuning = z.output<typeof TaskTuningSchema>;

/** Parse input with a zod schema, turning failures into one ValidationError naming each field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) {
    throw new ValidationError(
      what,
      result.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message })),
    );
  }
  return result.data;
}
