/**
 * The notifier: completions of decided tasks that could not be delivered yet (the requester's inbox
 * is full, its instance unreachable) are retried here in the background, with delays that double
 * from `tasks.notifyRetryMinMs` up to `tasks.notifyRetryMaxMs`, until the task.complete event is
 * stored and the record marked notified. It also runs recovery (republishing what a crash or
 * another process left unnotified) after connect, task by task, off the connect path.
 *
 * One per Mesh, stopped by `mesh.close()`. Every attempt is caught: nothing here ever becomes an
 * unhandled rejection. What is waiting is visible (`mesh.tasks.pendingNotifications()`). Retrying
 * is safe: the event's id is fixed (`tc-<taskId>`), so a repeat is a duplicate for the server and
 * for the requester's surfaced-id log.
 */
import { sessionKeyOf } from "../address/index.js";
import { MeshError, describe } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { TERMINAL_STATES, type TaskState } from "../wire/index.js";
import { notifyRequester, recoverTasks, type DeferredNotifications } from "./completion.js";
import type { StoredTask, TaskRegistry } from "./registry.js";

/** A decided task of this instance whose requester has not been told yet, as this process knows it. */
export interface PendingNotification {
  readonly taskId: string;
  readonly state: TaskState;
  /** The requester's session key and instance. */
  readonly requester: string;
  readonly requesterInstance: string;
  readonly attempts: number;
  /** The last failure: an error code and its message. */
  readonly lastError: string;
  /** When the next attempt is due (ISO 8601). */
  readonly nextAttemptAt: string;
}

interface Entry {
  readonly taskId: string;
  state: TaskState;
  requester: string;
  requesterInstance: string;
  attempts: number;
  lastError: string;
  dueAt: number;
}

const errorText = (err: unknown) => (err instanceof MeshError ? `${err.code}: ${err.message}` : describe(err));

export class CompletionNotifier implements DeferredNotifications {
  private readonly waiting = new Map<string, Entry>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private stopped = false;
  /** A recovery pass is wanted (at start; again after one whose listing failed). */
  private recoveryDueAt: number | undefined;
  private recoveryAttempts = 0;
  private recoveryDone: Promise<void> = Promise.resolve();
  private resolveRecovery: (() => void) | undefined;

  constructor(
    private readonly ctx: MeshContext,
    private readonly registry: () => Promise<TaskRegistry>,
  ) {}

  private get minMs(): number {
    return this.ctx.config.tasks.notifyRetryMinMs;
  }

  private get maxMs(): number {
    return Math.max(this.minMs, this.ctx.config.tasks.notifyRetryMaxMs);
  }

  private delay(attempts: number): number {
    return Math.min(this.maxMs, this.minMs * 2 ** Math.min(30, Math.max(0, attempts - 1)));
  }

  /** Run recovery in the background now (at connect). Never throws, never blocks the caller. */
  startRecovery(): void {
    if (this.stopped) return;
    if (!this.resolveRecovery) this.recoveryDone = new Promise((resolve) => (this.resolveRecovery = resolve));
    this.recoveryDueAt = Date.now();
    this.schedule();
  }

  /**
   * One recovery pass now (after the first background pass has run). Returns the task ids it
   * republished; tasks that still fail are left to the background retries.
   */
  async recover(): Promise<string[]> {
    await this.recoveryDone;
    const tasks = await this.registry();
    return recoverTasks(this.ctx, tasks, (task, err) => this.defer(task, err), { retryForMs: 0 });
  }

  /** A decided task whose completion could not be delivered: retry it in the background. */
  defer(task: StoredTask, err: unknown): void {
    if (this.stopped) return;
    const r = task.record;
    const existing = this.waiting.get(r.taskId);
    const attempts = (existing?.attempts ?? 0) + 1;
    this.waiting.set(r.taskId, {
      taskId: r.taskId,
      state: r.state,
      requester: sessionKeyOf(r.requester),
      requesterInstance: r.requester.instance,
      attempts,
      lastError: errorText(err),
      dueAt: Date.now() + this.delay(attempts),
    });
    this.schedule();
  }

  /** The requester of this task was told by someone else (e.g. an explicit renotify). */
  delivered(taskId: string): void {
    this.waiting.delete(taskId);
  }

  /** Decided tasks whose completion is waiting for a retry, oldest first. */
  pending(): PendingNotification[] {
    return [...this.waiting.values()].map((e) => ({
      taskId: e.taskId,
      state: e.state,
      requester: e.requester,
      requesterInstance: e.requesterInstance,
      attempts: e.attempts,
      lastError: e.lastError,
      nextAttemptAt: new Date(e.dueAt).toISOString(),
    }));
  }

  /** Stop retrying (what is left is found again by the next connect's recovery); waits for an attempt under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.round;
    this.finishRecovery();
  }

  private schedule(): void {
    if (this.stopped || this.round) return;
    const dues = [...this.waiting.values()].map((e) => e.dueAt);
    if (this.recoveryDueAt !== undefined) dues.push(this.recoveryDueAt);
    if (dues.length === 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), Math.max(0, Math.min(...dues) - Date.now()));
    this.timer.unref();
  }

  private run(): void {
    this.timer = undefined;
    if (this.stopped || this.round) return;
    // A connection closed without `mesh.close()` (e.g. a failed connect): nothing more can be done here.
    if (this.ctx.nc.isClosed()) {
      this.stopped = true;
      this.finishRecovery();
      return;
    }
    this.round = this.attemptDue()
      .catch((err: unknown) => this.ctx.logger.warn({ err }, "completion retry round failed; trying again later"))
      .finally(() => {
        this.round = undefined;
        this.schedule();
      });
  }

  private async attemptDue(): Promise<void> {
    const now = Date.now();
    if (this.recoveryDueAt !== undefined && this.recoveryDueAt <= now) await this.recoveryPass();
    for (const e of [...this.waiting.values()]) {
      if (this.stopped) return;
      if (e.dueAt > Date.now()) continue;
      await this.attempt(e);
    }
  }

  private async recoveryPass(): Promise<void> {
    try {
      const tasks = await this.registry();
      // Tasks this process is already retrying keep their own schedule.
      const repaired = await recoverTasks(
        this.ctx,
        tasks,
        (task, err) => {
          if (!this.waiting.has(task.record.taskId)) this.defer(task, err);
        },
        { retryForMs: 0, stopped: () => this.stopped },
      );
      if (repaired.length > 0) this.ctx.logger.info({ taskIds: repaired }, "recovery republished task completions");
      this.recoveryDueAt = undefined;
      this.recoveryAttempts = 0;
    } catch (err) {
      if (this.stopped) return;
      this.recoveryAttempts++;
      this.recoveryDueAt = Date.now() + this.delay(this.recoveryAttempts);
      this.ctx.logger.warn({ err, attempt: this.recoveryAttempts }, "could not list this instance's tasks for recovery; trying again later");
    } finally {
      // An explicit recover() waits for the first background pass only, not for it to succeed.
      this.finishRecovery();
    }
  }

  private finishRecovery(): void {
    this.resolveRecovery?.();
    this.resolveRecovery = undefined;
  }

  private async attempt(e: Entry): Promise<void> {
    try {
      const tasks = await this.registry();
      const task = await tasks.get(e.taskId, { as: "assignee", peer: e.requesterInstance });
      // Gone (expired), not decided, or someone else told the requester: nothing left to do.
      if (!task || !TERMINAL_STATES.has(task.record.state) || task.record.notified) {
        this.waiting.delete(e.taskId);
        return;
      }
      await notifyRequester(this.ctx, tasks, task, { retryForMs: 0 });
      this.waiting.delete(e.taskId);
      this.ctx.logger.info({ taskId: e.taskId, attempts: e.attempts }, "delivered a task completion that had been waiting for its requester");
    } catch (err) {
      if (this.stopped) return;
      e.attempts++;
      e.lastError = errorText(err);
      e.dueAt = Date.now() + this.delay(e.attempts);
      this.ctx.logger.debug({ taskId: e.taskId, attempts: e.attempts, err }, "task completion still undeliverable");
    }
  }
}
