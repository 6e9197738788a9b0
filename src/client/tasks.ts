/** `mesh.tasks`: the task registry as a caller outside a session's run sees it. */
import { TERMINAL_STATES, type Envelope, type TaskRecord } from "../wire/index.js";
import type { SessionAddress } from "../address/index.js";
import { childTaskId } from "../session/index.js";
import { finishTask, notifyRequester, type FinishHooks, type FinishOutcome, type FinishRequest, type FinishState, type PendingNotification } from "../tasks/index.js";
import type { MeshCore, SessionRef } from "./core.js";

export type FinishInput = Omit<FinishRequest, "by"> & { readonly by: SessionRef };

export class TasksClient {
  /** @internal */
  constructor(private readonly core: MeshCore) {}

  /** A task's registry record; undefined when there is none. */
  async get(taskId: string): Promise<TaskRecord | undefined> {
    return (await (await this.core.services()).tasks.get(taskId))?.record;
  }

  /**
   * Declare a task finished on behalf of its assignee session (no lease needed: the registry's
   * compare-and-set decides between concurrent writers). The same path as a session's `complete`.
   * Returns the decision even when the requester could not be told yet (`notification: "pending"`:
   * the completion is retried in the background, see `pendingNotifications()`).
   */
  async finish(input: FinishInput, hooks?: FinishHooks): Promise<FinishOutcome> {
    return finishTask(await this.core.finishDeps(), { ...input, by: this.core.address(input.by) }, hooks);
  }

  /**
   * Record that a child session started outside the mesh (e.g. by OpenClaw's sessions_spawn) works
   * for `parent`, so awaiting the child's key reports it as working. Returns the child's task id.
   */
  async registerChild(input: { parent: SessionRef; child: SessionRef; title?: string }): Promise<string> {
    const parent = this.core.address(input.parent);
    const child = this.core.address(input.child);
    const taskId = childTaskId(child);
    const tasks = (await this.core.services()).tasks;
    if (await tasks.get(taskId)) return taskId;
    const now = new Date().toISOString();
    // A concurrent registration of the same child wrote the same record: either write will do.
    await tasks.create({ v: 1, taskId, requester: parent, assignee: child, state: "working", ...(input.title && { title: input.title.slice(0, 500) }), createdAt: now, updatedAt: now, notified: false, childSession: true });
    return taskId;
  }

  /**
   * Publish the end of a child session started outside the mesh: its result lands in the parent's
   * inbox as a task.complete and resolves awaits on the child's session key. Goes through the same
   * finishing path as any task (legacy tokens become an action, never text).
   */
  async finishChild(input: { parent: SessionRef; child: SessionRef; state: FinishState; result?: Envelope["body"]; error?: string }): Promise<FinishOutcome> {
    const child = this.core.address(input.child);
    const taskId = await this.registerChild({ parent: input.parent, child });
    return this.finish({
      taskId,
      by: child,
      state: input.state,
      ...(input.result !== undefined && { result: input.result }),
      ...(input.error !== undefined && { error: input.error }),
    });
  }

  /**
   * Republish completions of tasks assigned to this instance that a crash left unpublished, task by
   * task (after the background pass run at connect). Returns the task ids republished now; tasks
   * whose requester still cannot take them are retried in the background (`pendingNotifications()`).
   */
  async recover(): Promise<string[]> {
    return this.core.notifier.recover();
  }

  /**
   * Decided tasks of this instance whose completion could not be delivered yet (requester inbox
   * full, requester unreachable), as this process knows them (its own finishes, and what its
   * recovery found): each with its last error and when it is tried next. Retried in the background
   * until delivered or this mesh is closed.
   */
  pendingNotifications(): PendingNotification[] {
    return this.core.notifier.pending();
  }

  /**
   * Tasks this instance takes part in, or with `all` every task in the registry (needs the
   * operator's credential: an instance may not read another pair's task), optionally only those a
   * given instance asked for (`requester`) or works on (`assignee`). Unreadable records are skipped.
   */
  async list(filter: { readonly requester?: string; readonly assignee?: string; readonly all?: boolean } = {}): Promise<TaskRecord[]> {
    const tasks = (await this.core.services()).tasks;
    return (await tasks.list(`${filter.requester ?? "*"}.${filter.assignee ?? "*"}.*`, { all: filter.all === true })).map((t) => t.record);
  }

  /** Make sure a decided task's requester was told (help a finisher that crashed between the writes). */
  async renotify(taskId: string): Promise<boolean> {
    const tasks = (await this.core.services()).tasks;
    const task = await tasks.get(taskId, { as: "assignee" });
    if (!task || !TERMINAL_STATES.has(task.record.state) || task.record.notified) return false;
    await notifyRequester(this.core.ctx, tasks, task);
    this.core.notifier.delivered(taskId);
    return true;
  }

  /**
   * The live session already working on a task key for an agent of this instance, if any (a
   * closed session does not count). Used to stop a host's own spawn from duplicating work.
   */
  async sessionForKey(taskKey: string, agent: string): Promise<SessionAddress | undefined> {
    return (await this.core.taskKeys()).sessionFor(taskKey, agent, this.core.instance);
  }

  /** Record that `session` (e.g. a child a host spawned) works on `taskKey`; false if another live one already does. */
  async claimKey(taskKey: string, session: SessionRef): Promise<boolean> {
    return (await this.core.taskKeys()).claim(taskKey, this.core.address(session));
  }
}
