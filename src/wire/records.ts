/** Records the mesh stores for itself (not envelopes): the surfaced-id log. */
import { z } from "zod";
import { ActionSchema, DeliveryTargetSchema, OriginSchema } from "./envelope.js";
import { isPlainJson } from "./json.js";

/** Envelope ids surfaced together, and when (epoch ms): the unit the seen log prunes by age. */
export const SeenGroupSchema = z.object({ at: z.number().int().nonnegative(), ids: z.array(z.string()) });
export type SeenGroup = z.infer<typeof SeenGroupSchema>;

/**
 * One record of a session's surfaced-id log. A `delta` adds the ids of one confirmed surfacing (or
 * one claim) and may raise `through`, the highest inbox stream sequence fully handled (shown,
 * skipped as already shown, or parked). A `snapshot` (`part` of `of`) holds the whole state, pruned
 * of ids older than the inbox can hold their messages: one part is written with a subject rollup;
 * several are appended, every part but the last naming the previous complete snapshot as `base`
 * and the last naming the new one's first part. `base` is where a reader whose last record this is
 * starts (a delta's: the snapshot it builds on). Records of the first version (`ids` + ISO `at`)
 * read as deltas.
 */
export const SeenRecordSchema = z
  .object({
    v: z.literal(1),
    kind: z.enum(["delta", "snapshot"]).default("delta"),
    groups: z.array(SeenGroupSchema).default([]),
    through: z.number().int().nonnegative().optional(),
    base: z.number().int().positive().optional(),
    part: z.number().int().nonnegative().optional(),
    of: z.number().int().positive().optional(),
    /** The writing holder (random per opened log): a writer whose acknowledgement was lost recognises its own record. */
    w: z.string().optional(),
    /** First-version form. */
    ids: z.array(z.string()).optional(),
    at: z.string().optional(),
  })
  .transform((r) => (r.ids === undefined ? r : { ...r, groups: [...r.groups, { at: r.at ? Date.parse(r.at) || 0 : 0, ids: r.ids }] }));
export type SeenRecord = z.infer<typeof SeenRecordSchema>;

const optionalCount = (v: unknown, min: number) => v === undefined || (Number.isSafeInteger(v) && (v as number) >= min);

/**
 * A parsed JSON value the seen-record schema accepts as it is (a snapshot part holds thousands of
 * ids: zod's walk of them cost opening a long-lived session more than reading it). Conservative:
 * a first-version record, a missing `kind` or `groups`, anything unusual is left to the schema.
 * Accepting only what the schema accepts is property-tested against it (`test/wire.test.ts`).
 */
export function isPlainSeenRecord(json: unknown): json is SeenRecord {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return false;
  const r = json as Record<string, unknown>;
  if (r.v !== 1 || (r.kind !== "delta" && r.kind !== "snapshot") || !Array.isArray(r.groups) || r.ids !== undefined || r.at !== undefined) return false;
  if (!optionalCount(r.through, 0) || !optionalCount(r.base, 1) || !optionalCount(r.part, 0) || !optionalCount(r.of, 1) || (r.w !== undefined && typeof r.w !== "string")) return false;
  for (const g of r.groups as unknown[]) {
    if (typeof g !== "object" || g === null || Array.isArray(g)) return false;
    const { at, ids } = g as Record<string, unknown>;
    if (!Number.isSafeInteger(at) || (at as number) < 0 || !Array.isArray(ids)) return false;
    for (const id of ids) if (typeof id !== "string") return false;
  }
  return true;
}

/** A2A task states. `completed`, `failed` and `canceled` are terminal. */
export const TaskStateSchema = z.enum(["submitted", "working", "input-required", "completed", "failed", "canceled"]);
export type TaskState = z.infer<typeof TaskStateSchema>;
export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set(["completed", "failed", "canceled"]);

export const TASK_ID_RE = /^[A-Za-z0-9_-]{1,60}$/;

const RecordAddressSchema = z.object({
  instance: z.string(),
  agent: z.string(),
  channel: z.string(),
  session: z.string(),
  run: z.string().optional(),
  thread: z.string().optional(),
});

/** One task in the registry (KV). Updated only by compare-and-set. */
export const TaskRecordSchema = z.looseObject({
  v: z.literal(1),
  taskId: z.string().regex(TASK_ID_RE),
  requester: RecordAddressSchema,
  assignee: RecordAddressSchema,
  state: TaskStateSchema,
  /** What was asked (kept short in listings; the full request travelled in the envelope). */
  title: z.string().max(500).optional(),
  result: z.json().optional(),
  error: z.string().max(4000).optional(),
  createdAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
  /** Who moved the task to its terminal state (a session key). */
  finishedBy: z.string().optional(),
  /** True once the task.complete event is stored in the requester's inbox. */
  notified: z.boolean().default(false),
  /**
   * False from the record's creation until the stream acknowledged the task.request in the
   * assignee's inbox (then true). Absent on records that have no request (child sessions) and on
   * records written before the field existed: both count as delivered.
   */
  delivered: z.boolean().optional(),
  /** Set for tasks that stand for a child session started outside the mesh. */
  childSession: z.boolean().optional(),
  /** Where the conversation that asked for this work lives (inherited through every hop). */
  origin: OriginSchema.optional(),
  /** The assignee's action for its result (reply, skip, announce). */
  action: ActionSchema.optional(),
  /** The resolved announce target when it differs from the origin (an allowed override). */
  announceTarget: DeliveryTargetSchema.optional(),
  /** For an override on another platform: the session of a gateway that delivers there (it gets the announce). */
  announceVia: RecordAddressSchema.optional(),
});
export type TaskRecord = z.output<typeof TaskRecordSchema>;

const TASK_STATES: ReadonlySet<unknown> = new Set(TaskStateSchema.options);
const ACTIONS: ReadonlySet<unknown> = new Set(ActionSchema.options);
/** The schema's own timestamp pattern, so both checks accept the same times. */
const RECORDED_AT_RE = TaskRecordSchema.shape.createdAt._zod.pattern;
const RECORD_ADDRESS_KEYS: ReadonlySet<string> = new Set(Object.keys(RecordAddressSchema.shape));

const maxText = (v: unknown, max: number) => typeof v === "string" && v.length <= max;
const optional = (v: unknown, check: (v: unknown) => boolean) => v === undefined || check(v);

/** A record address exactly as the schema outputs it (its fields only: the schema drops any other). */
function isPlainRecordAddress(v: unknown): boolean {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  for (const key in v) if (!RECORD_ADDRESS_KEYS.has(key)) return false;
  const a = v as Record<string, unknown>;
  return typeof a.instance === "string" && typeof a.agent === "string" && typeof a.channel === "string" && typeof a.session === "string" && optional(a.run, (x) => typeof x === "string") && optional(a.thread, (x) => typeof x === "string");
}

/**
 * A parsed JSON value the task-record schema accepts and outputs unchanged: every task read goes
 * through it (an awaiting requester decodes the decision on its critical path, where zod cost
 * several times the rest of the read). Conservative: a record with an origin or an announce target,
 * without `notified` (which the schema defaults), or anything unusual, is left to the schema.
 * Accepting only what the schema accepts is property-tested against it (`test/wire.test.ts`).
 */
export function isPlainTaskRecord(json: unknown): json is TaskRecord {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return false;
  const r = json as Record<string, unknown>;
  return (
    r.v === 1 &&
    // An own `__proto__` key (JSON.parse makes one) is not copied as it is by the schema.
    !Object.hasOwn(r, "__proto__") &&
    typeof r.taskId === "string" &&
    TASK_ID_RE.test(r.taskId) &&
    isPlainRecordAddress(r.requester) &&
    isPlainRecordAddress(r.assignee) &&
    TASK_STATES.has(r.state) &&
    optional(r.title, (x) => maxText(x, 500)) &&
    (!Object.hasOwn(r, "result") || (r.result !== undefined && isPlainJson(r.result))) &&
    optional(r.error, (x) => maxText(x, 4000)) &&
    typeof r.createdAt === "string" &&
    RECORDED_AT_RE.test(r.createdAt) &&
    typeof r.updatedAt === "string" &&
    RECORDED_AT_RE.test(r.updatedAt) &&
    optional(r.finishedBy, (x) => typeof x === "string") &&
    typeof r.notified === "boolean" &&
    optional(r.delivered, (x) => typeof x === "boolean") &&
    optional(r.childSession, (x) => typeof x === "boolean") &&
    r.origin === undefined &&
    optional(r.action, (x) => ACTIONS.has(x)) &&
    r.announceTarget === undefined &&
    optional(r.announceVia, isPlainRecordAddress)
  );
}

/** Body of a `task.complete` envelope. */
export const TaskCompleteBodySchema = z.object({
  taskId: z.string().regex(TASK_ID_RE),
  state: TaskStateSchema,
  result: z.json().optional(),
  error: z.string().optional(),
  assignee: z.string(),
  action: ActionSchema.optional(),
});

/** Body of an `announce` envelope: what the origin session's host delivers, and exactly where. */
export const AnnounceBodySchema = z.object({
  deliveryTarget: DeliveryTargetSchema,
  text: z.string(),
  taskId: z.string().optional(),
  /** Session key of the session whose result this is. */
  by: z.string(),
});
export type AnnounceBody = z.infer<typeof AnnounceBodySchema>;
export type TaskCompleteBody = z.infer<typeof TaskCompleteBodySchema>;

/** Body of a `task.request` envelope. */
export const TaskRequestBodySchema = z.object({
  taskId: z.string().regex(TASK_ID_RE),
  message: z.string(),
});
export type TaskRequestBody = z.infer<typeof TaskRequestBodySchema>;

/** Session lifecycle, kept apart from how the last turn went (incident 002). */
export const LifecycleSchema = z.enum(["active", "idle", "closed"]);
export type Lifecycle = z.infer<typeof LifecycleSchema>;
export const TurnOutcomeSchema = z.enum(["ok", "error", "timeout", "interrupted"]);
export type TurnOutcome = z.infer<typeof TurnOutcomeSchema>;

/** One durable session in the session registry. */
export const SessionRecordSchema = z.looseObject({
  v: z.literal(1),
  address: RecordAddressSchema,
  sessionKey: z.string(),
  lifecycle: LifecycleSchema,
  /** True unless closed: the session can take more messages and continue. */
  resumable: z.boolean(),
  lastTurn: z.object({ outcome: TurnOutcomeSchema, at: z.iso.datetime(), error: z.string().max(2000).optional() }).optional(),
  /** A2A task state, only ever set by an explicit declaration, never inferred from a turn. */
  task: z.object({ state: TaskStateSchema, taskId: z.string().optional(), at: z.iso.datetime() }).optional(),
  /** Instance that owns (runs) the session. */
  owner: z.string(),
  /** Channel address the session serves, if bound. */
  channel: z.string().optional(),
  /** Lease holder of the run in progress while active (probed by the janitor). */
  holder: z.string().optional(),
  idleReason: z.string().optional(),
  taskKey: z.string().optional(),
  createdAt: z.iso.datetime(),
  lastActivity: z.iso.datetime(),
  /** For closed sessions: the "closed" watches have fired. */
  closeNotified: z.boolean().optional(),
  /**
   * Tasks this session took and has not finished (ids and requesters only, most recent last,
   * bounded): work it does in a later turn, or after a restart, keeps that task's origin.
   */
  openTasks: z.array(z.object({ taskId: z.string(), requester: z.string() })).max(16).optional(),
});
export type SessionRecord = z.output<typeof SessionRecordSchema>;

export const DirectoryEntrySchema = z.object({
  v: z.literal(1),
  channel: z.string(),
  sessionKey: z.string(),
  instance: z.string(),
  agent: z.string(),
  boundAt: z.iso.datetime(),
});
export type DirectoryEntry = z.infer<typeof DirectoryEntrySchema>;

export const WatchEventSchema = z.enum(["completed", "failed", "closed"]);
export type WatchEvent = z.infer<typeof WatchEventSchema>;

export const WatchRecordSchema = z.object({
  v: z.literal(1),
  watchId: z.string(),
  watcher: RecordAddressSchema,
  /** A task names both instances (task ids are scoped by requester). */
  target: z.union([z.object({ taskId: z.string(), requester: z.string(), assignee: z.string() }), z.object({ session: RecordAddressSchema })]),
  events: z.array(WatchEventSchema).min(1),
  createdAt: z.iso.datetime(),
});
export type WatchRecord = z.infer<typeof WatchRecordSchema>;

/** Body of a `watch.event` envelope. */
export const WatchNoticeBodySchema = z.object({
  watchId: z.string(),
  event: WatchEventSchema,
  target: z.string(),
  taskId: z.string().optional(),
  state: TaskStateSchema.optional(),
  result: z.json().optional(),
  error: z.string().optional(),
  at: z.iso.datetime(),
});
export type WatchNoticeBody = z.infer<typeof WatchNoticeBodySchema>;

export const TaskKeyEntrySchema = z.object({
  v: z.literal(1),
  taskKey: z.string(),
  sessionKey: z.string(),
  instance: z.string(),
  taskId: z.string(),
  createdAt: z.iso.datetime(),
});
export type TaskKeyEntry = z.infer<typeof TaskKeyEntrySchema>;
