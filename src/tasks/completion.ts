/**
 * Finishing a task: two writes, in this order.
 *
 *   1. compare-and-set the registry entry to its terminal state (the decision: exactly one writer
 *      wins; a loser re-reads and is told who finished it and how);
 *   2. store the `task.complete` event in the requester's inbox, under the deterministic envelope
 *      id `tc-<taskId>`, then mark the entry `notified` (another compare-and-set).
 *
 * A crash after 1 and before 2 leaves a terminal entry with `notified: false`: never a pingback
 * without a decision, never a contradiction. Recovery (`recoverTasks`, run by the assignee's
 * instance at start and on demand) republishes the event for such entries; the fixed envelope id
 * makes a republish a no-op for the server (inside its window) and for the requester's surfaced-id
 * log (after it). A requester that awaits the task reads the registry too, so it is never held up
 * by a missing event.
 */
import type { SessionAddress } from "../address/index.js";
import { sameSession, sessionKeyOf } from "../address/index.js";
import { MeshError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { deliver } from "../inbox/index.js";
import { Kinds, TERMINAL_STATES, type Action, type AnnounceBody, type DeliveryTarget, type Envelope, type TaskCompleteBody, type TaskRecord, type TaskState } from "../wire/index.js";
import { targetOf } from "../handoff/index.js";
import type { StoredTask, TaskRegistry } from "./registry.js";

export type FinishState = Extract<TaskState, "completed" | "failed" | "canceled">;

export interface FinishInput {
  readonly taskId: string;
  readonly state: FinishState;
  readonly result?: TaskRecord["result"];
  readonly error?: string;
  /** What to do with the result (default reply). */
  readonly action?: Action;
  /** A policy-checked announce target replacing the task's origin. */
  readonly announceTarget?: DeliveryTarget;
  /** The session declaring the outcome. */
  readonly by: SessionAddress;
}

export type FinishOutcome =
  /** This call decided the task. */
  | { readonly outcome: "finished"; readonly record: TaskRecord }
  /** The task already had this same outcome: nothing changed (idempotent repeat). */
  | { readonly outcome: "already"; readonly record: TaskRecord }
  /** Another writer finished it differently first; this call's outcome was not recorded. */
  | { readonly outcome: "conflict"; readonly record: TaskRecord };

export interface FinishHooks {
  /** Instrumentation: runs after the registry write and before the event is published. */
  readonly afterDecision?: () => void | Promise<void>;
}

export function completionEnvelopeId(taskId: string): string {
  return `tc-${taskId}`;
}

export async function finishTask(ctx: MeshContext, registry: TaskRegistry, input: FinishInput, hooks: FinishHooks = {}, known?: StoredTask): Promise<FinishOutcome> {
  let read: StoredTask | undefined = known;
  for (;;) {
    const current = read ?? (await registry.require(input.taskId));
    read = undefined;
    const r = current.record;
    if (TERMINAL_STATES.has(r.state)) {
      // Help a crashed finisher: the decision stands, the event may be missing.
      if (!r.notified) await notifyRequester(ctx, registry, current);
      const same = r.state === input.state && JSON.stringify(r.result ?? null) === JSON.stringify(input.result ?? null) && (r.error ?? "") === (input.error ?? "");
      return { outcome: same ? "already" : "conflict", record: r };
    }
    const now = new Date().toISOString();
    const next: TaskRecord = {
      ...r,
      state: input.state,
      ...(input.result !== undefined && { result: input.result }),
      ...(input.error !== undefined && { error: input.error }),
      ...(input.action !== undefined && { action: input.action }),
      ...(input.announceTarget !== undefined && { announceTarget: input.announceTarget }),
      finishedBy: sessionKeyOf(input.by),
      updatedAt: now,
      notified: false,
    };
    const stored = await registry.replace(current, next);
    if (!stored) continue; // lost the race: re-read and report what won
    await hooks.afterDecision?.();
    await notifyRequester(ctx, registry, stored);
    return { outcome: "finished", record: next };
  }
}

export class NotAssigneeError extends MeshError {
  constructor(taskId: string, assignee: string, by: string) {
    super("not_assignee", `task ${taskId} is assigned to ${assignee}, not to ${by}; only its assignee can finish it`);
  }
}

/** finishTask, refused unless `by` is the task's assignee session. */
export async function finishAsAssignee(ctx: MeshContext, registry: TaskRegistry, input: FinishInput, hooks?: FinishHooks, known?: StoredTask): Promise<FinishOutcome> {
  const task = known ?? (await registry.require(input.taskId));
  if (!sameSession(task.record.assignee, input.by)) throw new NotAssigneeError(input.taskId, sessionKeyOf(task.record.assignee), sessionKeyOf(input.by));
  return finishTask(ctx, registry, input, hooks, task);
}

/** Store the task.complete event for a decided task, then mark the entry notified. */
export async function notifyRequester(ctx: MeshContext, registry: TaskRegistry, task: StoredTask): Promise<void> {
  const r = task.record;
  const body: TaskCompleteBody = {
    taskId: r.taskId,
    state: r.state,
    ...(r.result !== undefined && { result: r.result }),
    ...(r.error !== undefined && { error: r.error }),
    assignee: sessionKeyOf(r.assignee),
    ...(r.action !== undefined && { action: r.action }),
  };
  const envelope: Envelope = {
    v: 1,
    id: completionEnvelopeId(r.taskId),
    kind: Kinds.taskComplete,
    from: r.assignee,
    to: r.requester,
    taskId: r.taskId,
    ...(r.origin !== undefined && { origin: r.origin }),
    ...(r.action !== undefined && { action: r.action }),
    body,
    sentAt: r.updatedAt,
  };
  await deliver(ctx, envelope);
  if (r.action === "announce") await announce(ctx, r);
  // Watches fire before the task counts as notified, so recovery re-fires them after a crash.
  await registry.watches.fireTaskFinished(r);
  let current: StoredTask | undefined = task;
  while (current && !current.record.notified) {
    if (await registry.replace(current, { ...current.record, notified: true })) return;
    current = await registry.get(r.taskId);
  }
}

/**
 * Deliver an announce to the session that owns the conversation (the origin's session; the
 * requester when there is no origin), with the resolved target as an explicit field.
 */
async function announce(ctx: MeshContext, r: TaskRecord): Promise<void> {
  const deliveryTarget = r.announceTarget ?? (r.origin && targetOf(r.origin));
  if (!deliveryTarget) {
    ctx.logger.warn({ taskId: r.taskId }, "announce requested but the task has no origin or target; delivered as a reply only");
    return;
  }
  const text = r.state === "completed" ? bodyText(r.result ?? "") : `${r.state}: ${r.error ?? ""}`;
  const body: AnnounceBody = { deliveryTarget, text, taskId: r.taskId, by: sessionKeyOf(r.assignee) };
  await deliver(ctx, { v: 1, id: `an-${r.taskId}`, kind: Kinds.announce, from: r.assignee, to: r.origin?.session ?? r.requester, taskId: r.taskId, ...(r.origin && { origin: r.origin }), action: "announce", body, sentAt: r.updatedAt });
}

function bodyText(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

/**
 * Republish the completion event of every decided but unnotified task assigned to `instance`.
 * Returns the task ids it repaired.
 */
export async function recoverTasks(ctx: MeshContext, registry: TaskRegistry, instance: string): Promise<string[]> {
  const repaired: string[] = [];
  for (const key of await registry.keys(`*.${instance}.*`)) {
    const task = await registry.getByKey(key);
    if (!task || !TERMINAL_STATES.has(task.record.state) || task.record.notified) continue;
    await notifyRequester(ctx, registry, task);
    repaired.push(task.record.taskId);
    ctx.logger.info({ taskId: task.record.taskId }, "republished a task completion left unpublished by a crash");
  }
  return repaired;
}
