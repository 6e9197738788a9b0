/**
 * Finishing a task: the one path every caller takes (a session's `complete`, `mesh.tasks.finish`
 * from any process of the assignee's instance, a host reporting a child session's end).
 *
 * Before anything is written, the request is normalised: only the assignee may finish its task;
 * legacy tokens in a text result are recognised and stripped into a structured `action`; an
 * announce override is checked against the channel policy. Then two writes, in this order:
 *
 *   1. compare-and-set the registry entry to its terminal state (the decision: exactly one writer
 *      wins; a loser re-reads and is told who finished it and how);
 *   2. store the `task.complete` event in the requester's inbox, under the deterministic envelope
 *      id `tc-<taskId>`, then mark the entry `notified` (another compare-and-set).
 *
 * A crash after 1 and before 2 leaves a terminal entry with `notified: false`: never a pingback
 * without a decision, never a contradiction. Recovery (`recoverTasks`, run by the assignee's
 * instance in the background after connect and on demand) republishes the event for such entries;
 * the fixed envelope id makes a republish a no-op for the server (inside its window) and for the
 * requester's surfaced-id log (after it). A requester that awaits the task reads the registry too,
 * so it is never held up by a missing event.
 *
 * Step 2 failing (the requester's inbox is full, its instance unreachable) does not undo or hide
 * the decision: the caller gets its outcome with `notification: "pending"`, and the task is handed
 * to the mesh's notifier, which retries it in the background with growing delays. A completion
 * that could never be delivered (bigger than the mesh's message limit) is refused before step 1.
 */
import type { SessionAddress } from "../address/index.js";
import { parseSessionKey, sameSession, sessionKeyOf } from "../address/index.js";
import { InvalidAddressError, MeshError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { sendEnvelope, type SendEnvelopeOptions } from "../inbox/index.js";
import type { Directory, SessionRegistry } from "../registry/index.js";
import { Kinds, ReservedIds, TERMINAL_STATES, createEnvelope, encodeEnvelope, type Action, type AnnounceBody, type DeliveryTarget, type Envelope, type TaskCompleteBody, type TaskRecord, type TaskState } from "../wire/index.js";
import { resolveDeliveryTarget, resolveHandoff, targetOf, type RouteOverrides } from "../handoff/index.js";
import type { StoredTask, TaskLookup, TaskRegistry } from "./registry.js";

export type FinishState = Extract<TaskState, "completed" | "failed" | "canceled">;

/** What a caller asks for when it declares a task finished. */
export interface FinishRequest extends RouteOverrides {
  readonly taskId: string;
  /** The session declaring the outcome: must be the task's assignee. */
  readonly by: SessionAddress;
  readonly state: FinishState;
  readonly result?: TaskRecord["result"];
  readonly error?: string;
  /** What to do with the result (default reply; a legacy token in a text result decides too). */
  readonly action?: Action;
  /**
   * The requester's instance. Task ids are scoped by requester, so it is needed only when two
   * requesters gave this instance tasks with the same id (AmbiguousTaskError otherwise).
   */
  readonly requester?: string;
}

const finishLookup = (req: FinishRequest): TaskLookup => ({ as: "assignee", ...(req.requester !== undefined && { peer: req.requester }) });

export type FinishOutcome = (
  /** This call decided the task. */
  | { readonly outcome: "finished"; readonly record: TaskRecord }
  /** The task already had this same outcome: nothing changed (idempotent repeat). */
  | { readonly outcome: "already"; readonly record: TaskRecord }
  /** Another writer finished it differently first; this call's outcome was not recorded. */
  | { readonly outcome: "conflict"; readonly record: TaskRecord }
) & {
  /** True once the task.complete event is stored in the requester's inbox. */
  readonly notified: boolean;
  /**
   * `delivered`: the requester's inbox holds the completion. `pending`: the decision stands but
   * the completion could not be stored yet (requester inbox full, requester unreachable); the
   * mesh retries it in the background (`mesh.tasks.pendingNotifications()`).
   */
  readonly notification: "delivered" | "pending";
};

/** Where a decided task whose completion could not be delivered yet is handed for background retries. */
export interface DeferredNotifications {
  defer(task: StoredTask, err: unknown): void;
}

export interface FinishHooks {
  /** Instrumentation: runs after the registry write and before the event is published. */
  readonly afterDecision?: () => void | Promise<void>;
}

export interface FinishDeps {
  readonly ctx: MeshContext;
  readonly tasks: TaskRegistry;
  readonly sessions: SessionRegistry;
  /** Where an announce on another platform than the conversation's finds a gateway that delivers there. */
  readonly directory: Directory;
  readonly notifier: DeferredNotifications;
  /**
   * A write to the finishing session's record still under way (its take noting the task as open):
   * the decision does not wait for it, the session's own record of the outcome comes after it.
   */
  readonly sessionWrite?: Promise<unknown>;
}

export class NotAssigneeError extends MeshError {
  constructor(taskId: string, assignee: string, by: string) {
    super("not_assignee", `task ${taskId} is assigned to ${assignee}, not to ${by}; only its assignee can finish it`);
  }
}

/** The one task-finishing path. */
export async function finishTask(deps: FinishDeps, req: FinishRequest, hooks: FinishHooks = {}, known?: StoredTask): Promise<FinishOutcome> {
  const { ctx, tasks } = deps;
  if (req.by.instance !== ctx.config.instance) {
    throw new InvalidAddressError(sessionKeyOf(req.by), `instance '${ctx.config.instance}' cannot act for instance '${req.by.instance}'`);
  }
  // From the version this process last saw when it has one (a stale one only costs a failed compare-and-set).
  const task = known ?? tasks.lastKnown(req.taskId, finishLookup(req)) ?? (await tasks.require(req.taskId, finishLookup(req)));
  if (!sameSession(task.record.assignee, req.by)) throw new NotAssigneeError(req.taskId, sessionKeyOf(task.record.assignee), sessionKeyOf(req.by));

  // The one handoff rule, as for replies: tokens in a text result become the action, never text.
  let { result, action } = req;
  if (result !== undefined) {
    const h = resolveHandoff(result, action ?? "reply");
    result = h.body;
    action = h.rewritten || action !== undefined ? h.action : undefined;
  }
  const overridden = req.announceTarget !== undefined || req.announceThreadId !== undefined;
  const announceTarget = overridden ? resolveDeliveryTarget(task.record.origin, req, ctx.channelPolicy) : undefined;
  const announceVia = announceTarget && (await deliveringSession(deps.directory, task.record, announceTarget));
  if (!TERMINAL_STATES.has(task.record.state)) {
    // A completion the requester's inbox could never take is refused before anything is decided.
    assertDeliverable(ctx, { ...task.record, state: req.state, ...(result !== undefined && { result }), ...(req.error !== undefined && { error: req.error }), ...(action !== undefined && { action }), ...(announceTarget !== undefined && { announceTarget }), ...(announceVia && { announceVia }) });
  }
  const out = await decide(deps, { ...req, ...(result !== undefined && { result }), ...(action !== undefined && { action }) }, announceTarget && { announceTarget, ...(announceVia && { announceVia }) }, hooks, task);
  if (out.outcome === "finished") {
    await deps.sessionWrite;
    await deps.sessions.declareTask(req.by, req.state, req.taskId);
  }
  return out;
}

/** Step 1 (the decision), then step 2 (the notification). */
async function decide(deps: FinishDeps, req: FinishRequest, route: Pick<TaskRecord, "announceTarget" | "announceVia"> | undefined, hooks: FinishHooks, known: StoredTask): Promise<FinishOutcome> {
  const { tasks } = deps;
  let read: StoredTask | undefined = known;
  for (;;) {
    const current = read ?? (await tasks.require(req.taskId, finishLookup(req)));
    read = undefined;
    const r = current.record;
    // A record re-read after a lost race may belong to another delegation under the same key now.
    if (!sameSession(r.assignee, req.by)) throw new NotAssigneeError(req.taskId, sessionKeyOf(r.assignee), sessionKeyOf(req.by));
    if (TERMINAL_STATES.has(r.state)) {
      // Help a crashed finisher: the decision stands, the event may be missing.
      const notified = r.notified || (await notifyOrDefer(deps, current));
      const same = r.state === req.state && JSON.stringify(r.result ?? null) === JSON.stringify(req.result ?? null) && (r.error ?? "") === (req.error ?? "");
      return { outcome: same ? "already" : "conflict", record: r, ...notification(notified) };
    }
    const next: TaskRecord = {
      ...r,
      state: req.state,
      ...(req.result !== undefined && { result: req.result }),
      ...(req.error !== undefined && { error: req.error }),
      ...(req.action !== undefined && { action: req.action }),
      ...route,
      finishedBy: sessionKeyOf(req.by),
      updatedAt: new Date().toISOString(),
      notified: false,
    };
    const stored = await tasks.replace(current, next);
    if (!stored) continue; // lost the race: re-read and report what won
    await hooks.afterDecision?.();
    // The decision is stored and an awaiting requester in this process learns of it from its
    // feed: let that delivery (often in the socket already) run before the follow-up writes.
    await new Promise<void>((resolve) => setImmediate(resolve));
    return { outcome: "finished", record: next, ...notification(await notifyOrDefer(deps, stored)) };
  }
}

const notification = (notified: boolean) => ({ notified, notification: notified ? ("delivered" as const) : ("pending" as const) });

/**
 * Step 2 for a decided task; true once the requester was told. A failure never undoes or hides the
 * decision: the task goes to the notifier, which retries it in the background.
 */
async function notifyOrDefer(deps: FinishDeps, task: StoredTask): Promise<boolean> {
  try {
    await notifyRequester(deps.ctx, deps.tasks, task);
    return true;
  } catch (err) {
    deps.ctx.logger.warn({ err, taskId: task.record.taskId }, "task decided; its completion could not be delivered yet and will be retried in the background");
    deps.notifier.defer(task, err);
    return false;
  }
}

/** The task.complete envelope of a decided task (fixed id `tc-<taskId>`). */
function completionEnvelope(r: TaskRecord): Envelope {
  const body: TaskCompleteBody = {
    taskId: r.taskId,
    state: r.state,
    ...(r.result !== undefined && { result: r.result }),
    ...(r.error !== undefined && { error: r.error }),
    assignee: sessionKeyOf(r.assignee),
    ...(r.action !== undefined && { action: r.action }),
  };
  return createEnvelope({
    id: ReservedIds.taskComplete(r.taskId),
    kind: Kinds.taskComplete,
    from: r.assignee,
    to: r.requester,
    taskId: r.taskId,
    ...(r.origin !== undefined && { origin: r.origin }),
    ...(r.action !== undefined && { action: r.action }),
    body,
    sentAt: r.updatedAt,
  });
}

/** Throws PayloadTooLargeError when the completion (or its announce) of `r` would exceed the mesh's message limit. */
function assertDeliverable(ctx: MeshContext, r: TaskRecord): void {
  encodeEnvelope(completionEnvelope(r), ctx.messageLimit, ctx.serverMaxPayload);
  const a = r.action === "announce" ? announceEnvelope(ctx, r, false) : undefined;
  if (a) encodeEnvelope(a, ctx.messageLimit, ctx.serverMaxPayload);
}

/**
 * Store the task.complete event for a decided task, then mark the entry notified. Throws when the
 * event could not be stored (the entry stays unnotified).
 */
export async function notifyRequester(ctx: MeshContext, tasks: TaskRegistry, task: StoredTask, opts: SendEnvelopeOptions = {}): Promise<void> {
  const r = task.record;
  await sendEnvelope(ctx, completionEnvelope(r), opts);
  if (r.action === "announce") await announce(ctx, r, opts);
  // Watches fire before the task counts as notified, so recovery re-fires them after a crash.
  await tasks.watches.fireTaskFinished(r);
  let current: StoredTask | undefined = task;
  while (current && !current.record.notified) {
    if (await tasks.replace(current, { ...current.record, notified: true })) return;
    current = await tasks.get(r.taskId, { as: "assignee", peer: r.requester.instance });
  }
}

/**
 * Deliver an announce to the session that owns the conversation (the origin's session; the
 * requester when there is no origin), with the resolved target as an explicit field.
 */
async function announce(ctx: MeshContext, r: TaskRecord, opts: SendEnvelopeOptions): Promise<void> {
  const envelope = announceEnvelope(ctx, r, true);
  if (envelope) await sendEnvelope(ctx, envelope, opts);
}

function announceEnvelope(ctx: MeshContext, r: TaskRecord, warn: boolean): Envelope | undefined {
  const deliveryTarget = r.announceTarget ?? (r.origin && targetOf(r.origin));
  if (!deliveryTarget) {
    if (warn) ctx.logger.warn({ taskId: r.taskId }, "announce requested but the task has no origin or target; delivered as a reply only");
    return undefined;
  }
  const text = r.state === "completed" ? bodyText(r.result ?? "") : `${r.state}: ${r.error ?? ""}`;
  const body: AnnounceBody = { deliveryTarget, text, taskId: r.taskId, by: sessionKeyOf(r.assignee) };
  return createEnvelope({
    id: ReservedIds.announce(r.taskId),
    kind: Kinds.announce,
    from: r.assignee,
    to: r.announceVia ?? r.origin?.session ?? r.requester,
    taskId: r.taskId,
    ...(r.origin && { origin: r.origin }),
    action: "announce",
    body,
    sentAt: r.updatedAt,
  });
}

/**
 * The session whose gateway delivers an announce on `target`'s platform when that is not the
 * conversation's own platform: a session bound to the target chat itself, else one bound to any
 * chat of that platform (undefined for the conversation's own platform: its session delivers).
 * Throws NoDeliveryRouteError when no gateway in the mesh delivers on that platform.
 */
async function deliveringSession(directory: Directory, r: TaskRecord, target: DeliveryTarget): Promise<SessionAddress | undefined> {
  if (r.origin?.channel === target.channel) return undefined;
  const exact = await directory.lookup(`${target.channel}:${target.to}`).catch(() => []);
  const candidates = exact.length > 0 ? exact : (await directory.list()).filter((e) => e.channel.startsWith(`${target.channel}:`));
  const chosen = [...candidates].sort((x, y) => `${x.instance}/${x.sessionKey}`.localeCompare(`${y.instance}/${y.sessionKey}`))[0];
  if (!chosen) throw new NoDeliveryRouteError(`${target.channel}:${target.to}`, target.channel);
  const { run: _run, ...session } = parseSessionKey(chosen.sessionKey, chosen.instance);
  return session;
}

/** An announce for a platform no gateway of the mesh delivers on. */
export class NoDeliveryRouteError extends MeshError {
  constructor(target: string, platform: string) {
    super("no_delivery_route", `announcing to ${target} is not possible: no gateway of the mesh delivers on ${platform} (no session is bound to a ${platform}: channel). Nothing was sent; omit announceTarget to answer where the conversation lives.`);
  }
}

function bodyText(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

/**
 * Republish the completion event of every decided but unnotified task assigned to this instance,
 * task by task: one that fails is handed to `onFailure` and the pass goes on. Returns the task ids
 * it repaired.
 */
export async function recoverTasks(
  ctx: MeshContext,
  tasks: TaskRegistry,
  onFailure: (task: StoredTask, err: unknown) => void,
  opts: SendEnvelopeOptions & { readonly stopped?: () => boolean } = {},
): Promise<string[]> {
  const repaired: string[] = [];
  for (const task of await tasks.assignedTo(ctx.config.instance)) {
    if (opts.stopped?.()) break;
    if (!TERMINAL_STATES.has(task.record.state) || task.record.notified) continue;
    try {
      await notifyRequester(ctx, tasks, task, opts);
    } catch (err) {
      onFailure(task, err);
      continue;
    }
    repaired.push(task.record.taskId);
    ctx.logger.info({ taskId: task.record.taskId }, "republished a task completion left unpublished");
  }
  return repaired;
}
