/** Records the mesh stores for itself (not envelopes): the surfaced-id log. */
import { z } from "zod";

/**
 * One confirmed surfacing: the envelope ids the model was shown, and the highest inbox stream
 * sequence whose handling is complete (shown, skipped as already shown, or parked).
 */
export const SeenRecordSchema = z.object({
  v: z.literal(1),
  ids: z.array(z.string()),
  through: z.number().int().nonnegative().optional(),
  at: z.iso.datetime(),
});
export type SeenRecord = z.infer<typeof SeenRecordSchema>;

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
  /** Set for tasks that stand for a child session started outside the mesh. */
  childSession: z.boolean().optional(),
});
export type TaskRecord = z.output<typeof TaskRecordSchema>;

/** Body of a `task.complete` envelope. */
export const TaskCompleteBodySchema = z.object({
  taskId: z.string().regex(TASK_ID_RE),
  state: TaskStateSchema,
  result: z.json().optional(),
  error: z.string().optional(),
  assignee: z.string(),
});
export type TaskCompleteBody = z.infer<typeof TaskCompleteBodySchema>;

/** Body of a `task.request` envelope. */
export const TaskRequestBodySchema = z.object({
  taskId: z.string().regex(TASK_ID_RE),
  message: z.string(),
});
export type TaskRequestBody = z.infer<typeof TaskRequestBodySchema>;
