/**
 * Blocking fan-in: wait for tasks (or child sessions) to finish, all or any, with a timeout.
 *
 * The watcher is attached before the registry is read, and a completion is written to the
 * registry before its event is published, so no completion can slip between the two: a task
 * finished before the await began is found in the registry and returned at once; one finished
 * later arrives through the watcher as soon as its event is stored.
 *
 * A completion this await returns is claimed (recorded as surfaced) in the requester's inbox, so
 * the inbox never shows it again; one it does not return (still pending at the timeout) stays in
 * the inbox. Never both, never neither.
 */
import { sameSession, sessionKeyOf } from "../address/index.js";
import type { Inbox, SessionWatcher } from "../inbox/index.js";
import { Kinds, ReservedIds, TERMINAL_STATES, TaskCompleteBodySchema, type TaskRecord, type TaskState } from "../wire/index.js";
import type { TaskRegistry } from "./registry.js";

export interface AwaitTarget {
  readonly taskId: string;
  /** Set when the target was named by a child session key. */
  readonly sessionKey?: string;
}

export interface FinishedItem {
  readonly taskId: string;
  readonly sessionKey?: string;
  readonly state: TaskState;
  readonly result?: TaskRecord["result"];
  readonly error?: string;
  readonly assignee: string;
  /**
   * `await`: returned here and recorded as surfaced; `earlier`: it had already been surfaced
   * (shown by the inbox or an earlier await); `inbox`: a batch the host holds shows it.
   */
  readonly surfaced: "await" | "earlier" | "inbox" | "not-requester";
}

export interface PendingItem {
  readonly taskId: string;
  readonly sessionKey?: string;
  /** The task's state now, or `unknown` when the registry has no entry (yet). */
  readonly state: TaskState | "unknown";
  readonly assignee?: string;
  /** Set while the task's request is not confirmed in the assignee's inbox: `undelivered` means nobody received it. */
  readonly delivery?: "sending" | "undelivered";
}

export interface AwaitResult {
  readonly done: readonly FinishedItem[];
  readonly pending: readonly PendingItem[];
  readonly timedOut: boolean;
}

export interface AwaitOptions {
  readonly mode?: "all" | "any";
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Called for each result as it lands, before the await returns. */
  readonly onResult?: (item: FinishedItem) => void;
}

export interface AwaitDeps {
  readonly registry: TaskRegistry;
  readonly inbox: Inbox;
  readonly watcher: SessionWatcher;
}

export async function awaitTasks(deps: AwaitDeps, targets: readonly AwaitTarget[], opts: AwaitOptions): Promise<AwaitResult> {
  const mode = opts.mode ?? "all";
  const pending = new Map(targets.map((t) => [t.taskId, t]));
  const done: FinishedItem[] = [];
  const arrivals: { taskId: string; record: Pick<TaskRecord, "state" | "result" | "error"> & { assignee: string } }[] = [];
  let wake: () => void = () => {};

  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), Math.max(0, opts.timeoutMs));
  const onOuterAbort = () => stop.abort();
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  stop.signal.addEventListener("abort", () => wake(), { once: true });

  const off = deps.watcher.on((env) => {
    if (env.kind !== Kinds.taskComplete || env.taskId === undefined || !pending.has(env.taskId)) return;
    const body = TaskCompleteBodySchema.safeParse(env.body);
    if (!body.success) return;
    arrivals.push({ taskId: env.taskId, record: body.data });
    wake();
  });

  const settle = async (taskId: string, r: Pick<TaskRecord, "state" | "result" | "error"> & { assignee: string }, requesterIsMe: boolean) => {
    const target = pending.get(taskId);
    if (!target) return;
    pending.delete(taskId);
    let surfaced: FinishedItem["surfaced"] = "not-requester";
    if (requesterIsMe) {
      const id = ReservedIds.taskComplete(taskId);
      if (await deps.inbox.claim(id)) surfaced = "await";
      else surfaced = deps.inbox.surfaced(id) ? "earlier" : "inbox";
    }
    const item: FinishedItem = {
      taskId,
      ...(target.sessionKey !== undefined && { sessionKey: target.sessionKey }),
      state: r.state,
      ...(r.result !== undefined && surfaced !== "inbox" && { result: r.result }),
      ...(r.error !== undefined && { error: r.error }),
      assignee: r.assignee,
      surfaced,
    };
    done.push(item);
    opts.onResult?.(item);
  };
  const satisfied = () => (mode === "all" ? pending.size === 0 : done.length > 0 || pending.size === 0);

  try {
    for (const t of [...pending.values()]) {
      const stored = await deps.registry.get(t.taskId);
      if (stored && TERMINAL_STATES.has(stored.record.state)) {
        const r = stored.record;
        await settle(t.taskId, { state: r.state, result: r.result, error: r.error, assignee: sessionKeyOf(r.assignee) }, sameSession(r.requester, deps.inbox.session));
      }
    }
    while (!satisfied() && !stop.signal.aborted) {
      if (arrivals.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      for (const a of arrivals.splice(0)) await settle(a.taskId, a.record, true);
    }
    const still: PendingItem[] = [];
    for (const t of [...pending.values()]) {
      const stored = await deps.registry.get(t.taskId);
      // Decided in the registry but its event not seen yet: return it rather than call it pending.
      if (stored && TERMINAL_STATES.has(stored.record.state) && deps.inbox.isOpen) {
        const r = stored.record;
        await settle(t.taskId, { state: r.state, result: r.result, error: r.error, assignee: sessionKeyOf(r.assignee) }, sameSession(r.requester, deps.inbox.session));
        continue;
      }
      const delivery = stored && deps.registry.delivery(stored.record);
      still.push({
        taskId: t.taskId,
        ...(t.sessionKey !== undefined && { sessionKey: t.sessionKey }),
        state: stored?.record.state ?? "unknown",
        ...(stored && { assignee: sessionKeyOf(stored.record.assignee) }),
        ...(delivery !== undefined && delivery !== "delivered" && { delivery }),
      });
    }
    return { done, pending: still, timedOut: !satisfied() };
  } finally {
    off();
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", onOuterAbort);
  }
}
