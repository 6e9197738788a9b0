/**
 * Blocking fan-in: wait for tasks (or child sessions) to finish, all or any, with a timeout.
 *
 * The watcher is attached before the registry is read, and a completion is written to the
 * registry before its event is published, so no completion can slip between the two: a task
 * finished before the await began is found in the registry and returned at once; one finished
 * later arrives through the watcher as soon as its event is stored. Sooner still, for the
 * requester's own tasks: the registry's feed of this instance's requests delivers the decision
 * itself one delivery after it is stored (`TaskRegistry.onChange`), before the assignee has
 * written the event. The feed only hastens; the registry and the watcher alone are complete.
 *
 * A completion this await returns is claimed (recorded as surfaced) in the requester's inbox, so
 * the inbox never shows it again; one it does not return (still pending at the timeout) stays in
 * the inbox. Never both, never neither.
 */
import { sameSession, sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { Inbox, SessionWatcher } from "../inbox/index.js";
import { Kinds, ReservedIds, TERMINAL_STATES, TaskCompleteBodySchema, type Action, type Envelope, type TaskRecord, type TaskState } from "../wire/index.js";
import type { StoredTask, TaskRegistry } from "./registry.js";

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
   * The assignee's action for its result. `skip`: it chose to tell nobody; the result is not
   * returned (nothing for the model), and the inbox never shows the completion either.
   */
  readonly action?: Action;
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

type Outcome = Pick<TaskRecord, "state" | "result" | "error" | "action"> & { assignee: string; assigneeInstance: string };

export function awaitTasks(deps: AwaitDeps, targets: readonly AwaitTarget[], opts: AwaitOptions): Promise<AwaitResult> {
  return new FanIn(deps, targets, opts).run();
}

/** One await: its targets, what has finished, and the wake-ups that move it on. */
class FanIn {
  private readonly mode: "all" | "any";
  private readonly pending: Map<string, AwaitTarget>;
  private readonly done: FinishedItem[] = [];
  private readonly arrivals: { taskId: string; outcome: Outcome; from: SessionAddress }[] = [];
  /** Decisions of this session's own tasks as the registry stored them (the feed). */
  private readonly decided: StoredTask[] = [];
  /** Each target's assignee, as the registry says: only its completion event is believed. */
  private readonly assignees = new Map<string, SessionAddress>();
  private readonly stop = new AbortController();
  private wake: () => void = () => {};
  /** Back after a lost connection: re-read the registry for what is still pending. */
  private recheck = false;

  constructor(
    private readonly deps: AwaitDeps,
    targets: readonly AwaitTarget[],
    private readonly opts: AwaitOptions,
  ) {
    this.mode = opts.mode ?? "all";
    this.pending = new Map(targets.map((t) => [t.taskId, t]));
  }

  async run(): Promise<AwaitResult> {
    const timer = setTimeout(() => this.stop.abort(), Math.max(0, this.opts.timeoutMs));
    const onOuterAbort = () => this.stop.abort();
    this.opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
    this.stop.signal.addEventListener("abort", () => this.wake(), { once: true });
    // The watcher is attached before the registry is read, so no completion slips between them.
    const off = this.deps.watcher.on((env) => this.onEnvelope(env));
    const offStored = this.deps.registry.onChange([...this.pending.keys()], (t) => this.onStored(t));
    // The watcher replays what was stored while disconnected; decisions made meanwhile are re-read.
    const offResume = this.deps.watcher.onResume(() => {
      this.recheck = true;
      this.wake();
    });
    try {
      await this.settleDecided();
      await this.waitForArrivals();
      return { done: this.done, pending: await this.remaining(), timedOut: !this.satisfied() };
    } finally {
      off();
      offStored();
      offResume();
      clearTimeout(timer);
      this.opts.signal?.removeEventListener("abort", onOuterAbort);
    }
  }

  private onEnvelope(env: Envelope): void {
    if (env.kind !== Kinds.taskComplete || env.taskId === undefined || !this.pending.has(env.taskId)) return;
    const body = TaskCompleteBodySchema.safeParse(env.body);
    if (!body.success) return;
    this.arrivals.push({ taskId: env.taskId, outcome: { ...body.data, assigneeInstance: env.from.instance }, from: env.from });
    this.wake();
  }

  /** A stored write to a target: a decision of a task this session requested settles it (no event needed). */
  private onStored(t: StoredTask): void {
    const r = t.record;
    if (!this.pending.has(r.taskId) || !TERMINAL_STATES.has(r.state) || !sameSession(r.requester, this.deps.inbox.session)) return;
    this.decided.push(t);
    this.wake();
  }

  private satisfied(): boolean {
    return this.mode === "all" ? this.pending.size === 0 : this.done.length > 0 || this.pending.size === 0;
  }

  private async waitForArrivals(): Promise<void> {
    while (!this.satisfied() && !this.stop.signal.aborted) {
      if (this.arrivals.length === 0 && this.decided.length === 0 && !this.recheck) await new Promise<void>((resolve) => (this.wake = resolve));
      for (const t of this.decided.splice(0)) await this.settleStored(t);
      for (const a of this.arrivals.splice(0)) {
        // An event from the known assignee is believed at once; anything else (a task this await
        // has not read yet, or an instance claiming a task that is not its own) is decided by the
        // registry, never by the event's body.
        const expected = this.assignees.get(a.taskId);
        if (expected !== undefined && sameSession(expected, a.from)) await this.settle(a.taskId, a.outcome, true);
        else await this.settleIfDecided(a.taskId);
      }
      if (this.recheck && !this.satisfied()) {
        this.recheck = false;
        await this.settleDecided();
      }
    }
  }

  /** Settle every pending target the registry already shows decided. */
  private async settleDecided(): Promise<void> {
    for (const t of [...this.pending.values()]) await this.settleIfDecided(t.taskId);
  }

  private async settleIfDecided(taskId: string): Promise<StoredTask | undefined> {
    const stored = await this.deps.registry.get(taskId);
    if (stored) this.assignees.set(taskId, stored.record.assignee);
    if (!stored || !(await this.settleStored(stored))) return stored;
    return undefined;
  }

  /** Settle a target from its registry record when that is decided; false when it is not. */
  private async settleStored(stored: StoredTask): Promise<boolean> {
    const r = stored.record;
    if (!TERMINAL_STATES.has(r.state)) return false;
    await this.settle(r.taskId, { state: r.state, result: r.result, error: r.error, action: r.action, assignee: sessionKeyOf(r.assignee), assigneeInstance: r.assignee.instance }, sameSession(r.requester, this.deps.inbox.session));
    return true;
  }

  /** What is still pending at the end; one decided in the registry whose event was not seen yet is returned, not called pending. */
  private async remaining(): Promise<PendingItem[]> {
    const still: PendingItem[] = [];
    for (const t of [...this.pending.values()]) {
      const stored = this.deps.inbox.isOpen ? await this.settleIfDecided(t.taskId) : await this.deps.registry.get(t.taskId);
      if (!this.pending.has(t.taskId)) continue;
      const delivery = stored && this.deps.registry.delivery(stored.record);
      still.push({
        taskId: t.taskId,
        ...(t.sessionKey !== undefined && { sessionKey: t.sessionKey }),
        state: stored?.record.state ?? "unknown",
        ...(stored && { assignee: sessionKeyOf(stored.record.assignee) }),
        ...(delivery !== undefined && delivery !== "delivered" && { delivery }),
      });
    }
    return still;
  }

  /** Record one finished target; a completion for this session is claimed so the inbox never shows it too. */
  private async settle(taskId: string, r: Outcome, requesterIsMe: boolean): Promise<void> {
    const target = this.pending.get(taskId);
    if (!target) return;
    this.pending.delete(taskId);
    let surfaced: FinishedItem["surfaced"] = "not-requester";
    if (requesterIsMe) {
      const id = ReservedIds.taskComplete(taskId);
      if (await this.deps.inbox.claim(r.assigneeInstance, id)) surfaced = "await";
      else surfaced = this.deps.inbox.surfaced(r.assigneeInstance, id) ? "earlier" : "inbox";
    }
    const item: FinishedItem = {
      taskId,
      ...(target.sessionKey !== undefined && { sessionKey: target.sessionKey }),
      state: r.state,
      ...(r.result !== undefined && surfaced !== "inbox" && r.action !== "skip" && { result: r.result }),
      ...(r.error !== undefined && r.action !== "skip" && { error: r.error }),
      assignee: r.assignee,
      ...(r.action !== undefined && { action: r.action }),
      surfaced,
    };
    this.done.push(item);
    this.opts.onResult?.(item);
  }
}
