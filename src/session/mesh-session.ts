/**
 * A session's handle for one run: what a host holds between run start and run end. It owns the
 * session's inbox lease and a live watcher, and offers the session's verbs:
 *
 * - `take()`: the boundary call (run start, after each tool result): what arrived meanwhile;
 * - `send()` / `reply()`: messages; a send can wait (bounded) for its reply inline;
 * - `delegate()` / `complete()` / `setTaskState()`: tasks and their `task.complete` pingbacks;
 * - `await()`: blocking fan-in over task ids and child session keys.
 *
 * Every send resolves on its own correlation id: parallel sends never wait on one another.
 */
import { randomUUID } from "node:crypto";
import { sameSession, sessionKeyOf, type SessionAddress } from "../address/index.js";
import { MeshError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { sendEnvelope, type Delivered, type Inbox, type InboxBatch, type SessionWatcher, type TakeOptions } from "../inbox/index.js";
import { Kinds, ReservedIds, TERMINAL_STATES, createEnvelope, type Action, type Envelope, type TaskRecord, type TaskRequestBody, type TaskState, type TurnOutcome } from "../wire/index.js";
import type { MeshServices } from "./services.js";
import { resolveDeliveryTarget, type RouteOverrides } from "../handoff/index.js";
import type { Origin } from "../wire/index.js";
import { TaskKeys } from "./spawn.js";
import { awaitTasks, finishTask, type AwaitResult, type AwaitTarget, type FinishHooks, type FinishOutcome, type FinishState, type FinishedItem, type TaskRegistry } from "../tasks/index.js";

export type JsonBody = Envelope["body"];

export interface SendOptions extends RouteOverrides {
  readonly to: SessionAddress;
  readonly body: JsonBody;
  readonly kind?: string;
  /** Where the conversation lives, from the host's context (`originFromHostContext`). */
  readonly origin?: Origin;
  /** Wait this long for a reply inline (0: do not wait). */
  readonly waitMs?: number;
  readonly signal?: AbortSignal;
}

export type SendOutcome =
  | { readonly status: "replied"; readonly id: string; readonly reply: JsonBody; readonly from: SessionAddress }
  | { readonly status: "sent"; readonly id: string; readonly seq: number };

export interface DelegateOptions extends RouteOverrides {
  /** Where the conversation lives, from the host's context (`originFromHostContext`). */
  readonly origin?: Origin;
  /** The task assigned to this session that this delegation serves: its origin is inherited. */
  readonly parentTaskId?: string;
  /** The session to give the task to. With `taskKey` it is only the session to use if a new one is needed. */
  readonly to?: SessionAddress;
  /**
   * Idempotency key of the work: a delegation whose key already has a resumable session gets that
   * session and its task back (`reused: true`) instead of a duplicate.
   */
  readonly taskKey?: { readonly key: string; readonly agent: string; readonly instance: string; readonly forceNew?: boolean };
  readonly message: string;
  /** Caller-chosen id (makes a retried delegation idempotent); generated when absent. */
  readonly taskId?: string;
  /** Wait this long for the task to finish inline (0: do not wait). */
  readonly waitMs?: number;
  readonly signal?: AbortSignal;
}

export interface DelegateOutcome {
  readonly taskId: string;
  readonly assignee: SessionAddress;
  /** True when a task key matched a live session: nothing new was created or sent. */
  readonly reused: boolean;
  /** Set when the task finished within the wait. */
  readonly finished?: FinishedItem;
  readonly state: TaskState;
}

export class InvalidTaskActionError extends MeshError {
  constructor(message: string) {
    super("invalid_task_action", message);
  }
}

export class MeshSession {
  /** Aborted at close: a run that ends stops every wait it started (what arrives later stays in the inbox). */
  private readonly running = new AbortController();
  /** Origins of task requests this run has taken and not finished: what its delegations inherit. */
  private readonly openTaskOrigins = new Map<string, Origin>();
  /** Senders of messages this run surfaced, so a reply can name just the message it answers. */
  private readonly recentSenders = new Map<string, Envelope["from"]>();

  private readonly registry: TaskRegistry;

  constructor(
    private readonly ctx: MeshContext,
    readonly inbox: Inbox,
    private readonly watcher: SessionWatcher,
    readonly services: MeshServices,
  ) {
    this.registry = services.tasks;
  }

  get address(): SessionAddress {
    return this.inbox.session;
  }

  get sessionKey(): string {
    return sessionKeyOf(this.address);
  }

  /** False while the mesh's connection is down (it reconnects by itself). */
  get connected(): boolean {
    return this.ctx.connection.connected;
  }

  /** The boundary call: messages that arrived since the last take, oldest first. Confirm after showing them. */
  async take(opts?: TakeOptions): Promise<InboxBatch> {
    const batch = await this.inbox.take(opts);
    for (const m of batch.messages) {
      this.recentSenders.set(m.id, m.from);
      if (this.recentSenders.size > 1000) this.recentSenders.delete(this.recentSenders.keys().next().value!);
      if (m.kind === Kinds.taskRequest && m.taskId && m.envelope.origin) this.openTaskOrigins.set(m.taskId, m.envelope.origin);
    }
    return batch;
  }

  /**
   * The origin a message or delegation carries. Work done for a task keeps that task's origin (the
   * named parent task, or the only open task this run took), so a result finds the user's thread
   * through any number of hops; otherwise the host's own context. Overrides are applied after the
   * channel policy allowed them.
   */
  private async effectiveOrigin(opts: { origin?: Origin; parentTaskId?: string } & RouteOverrides): Promise<Origin | undefined> {
    let origin: Origin | undefined;
    if (opts.parentTaskId !== undefined) {
      const parent = await this.registry.require(opts.parentTaskId);
      if (!sameSession(parent.record.assignee, this.address)) throw new InvalidTaskActionError(`task ${opts.parentTaskId} is not assigned to this session`);
      origin = parent.record.origin;
    } else if (this.openTaskOrigins.size === 1) {
      origin = [...this.openTaskOrigins.values()][0];
    }
    origin ??= opts.origin;
    if (opts.announceTarget === undefined && opts.announceThreadId === undefined) return origin;
    const target = resolveDeliveryTarget(origin, opts, this.ctx.channelPolicy)!;
    const { run: _run, ...me } = this.address;
    return { ...target, session: origin?.session ?? me };
  }

  /**
   * Resolves when anything new lands in this session's inbox, or when the signal (or the run)
   * ends. Call it before `take()` and wait on it only if the take came back empty.
   */
  async nextArrival(signal?: AbortSignal): Promise<void> {
    await this.watcher.waitFor(() => true, this.signalFor(signal));
  }

  async send(opts: SendOptions): Promise<SendOutcome> {
    const id = randomUUID();
    const origin = await this.effectiveOrigin(opts);
    const envelope = createEnvelope({ id, kind: opts.kind ?? Kinds.message, from: this.address, to: opts.to, correlationId: id, ...(origin && { origin }), body: opts.body });
    const waitMs = opts.waitMs ?? 0;
    if (waitMs <= 0) {
      const d = await sendEnvelope(this.ctx, envelope);
      return { status: "sent", id, seq: d.seq };
    }
    // Listen before sending so a fast reply cannot slip past.
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), waitMs);
    const onAbort = () => stop.abort();
    const outer = this.signalFor(opts.signal);
    outer.addEventListener("abort", onAbort, { once: true });
    const replied = this.watcher.waitFor((e) => e.kind === Kinds.reply && e.correlationId === id, stop.signal);
    try {
      const d = await sendEnvelope(this.ctx, envelope);
      const reply = await replied;
      if (reply && (await this.inbox.claim(reply.id))) return { status: "replied", id, reply: reply.body, from: reply.from };
      return { status: "sent", id, seq: d.seq };
    } finally {
      stop.abort();
      clearTimeout(timer);
      outer.removeEventListener("abort", onAbort);
    }
  }

  private signalFor(signal: AbortSignal | undefined): AbortSignal {
    return signal ? AbortSignal.any([signal, this.running.signal]) : this.running.signal;
  }

  /** The sender of a message this run surfaced (undefined when this run has not seen it). */
  senderOf(messageId: string): Envelope["from"] | undefined {
    return this.recentSenders.get(messageId);
  }

  /** Answer a message: lands in the asker's inbox (or inline, if it is still waiting). */
  async reply(to: Pick<Envelope, "id" | "from">, body: JsonBody): Promise<Delivered> {
    return sendEnvelope(this.ctx, createEnvelope({ kind: Kinds.reply, from: this.address, to: to.from, correlationId: to.id, body }));
  }

  /** Create a task for another session and send it the request. */
  async delegate(opts: DelegateOptions): Promise<DelegateOutcome> {
    let to = opts.to;
    let taskId = opts.taskId ?? randomUUID();
    if (opts.taskKey) {
      const k = opts.taskKey;
      const r = await new TaskKeys(this.ctx.names, this.services).resolve({ taskKey: k.key, agent: k.agent, instance: k.instance, ...(k.forceNew && { forceNew: true }), ...(to && { session: to }) });
      if (r.reused) {
        const existing = await this.registry.get(r.taskId);
        return { taskId: r.taskId, assignee: r.session, reused: true, state: existing?.record.state ?? "submitted" };
      }
      to = r.session;
      taskId = r.taskId;
    }
    if (!to) throw new InvalidTaskActionError("delegate needs a target session (or a task key with an agent)");
    return this.delegateTo(to, taskId, opts);
  }

  private async delegateTo(to: SessionAddress, taskId: string, opts: DelegateOptions): Promise<DelegateOutcome> {
    const origin = await this.effectiveOrigin(opts);
    const now = new Date().toISOString();
    const record: TaskRecord = {
      v: 1,
      taskId,
      requester: this.address,
      assignee: to,
      state: "submitted",
      title: opts.message.slice(0, 500),
      createdAt: now,
      updatedAt: now,
      notified: false,
      ...(origin && { origin }),
    };
    const existing = await this.registry.get(taskId);
    if (existing && !(sameSession(existing.record.requester, this.address) && sameSession(existing.record.assignee, to))) {
      throw new InvalidTaskActionError(`task id ${taskId} is already used by another delegation`);
    }
    if (!existing && !(await this.registry.create(record))) throw new InvalidTaskActionError(`task id ${taskId} was taken by another delegation just now`);
    const body: TaskRequestBody = { taskId, message: opts.message };
    await sendEnvelope(this.ctx, createEnvelope({ id: ReservedIds.taskRequest(taskId), kind: Kinds.taskRequest, from: this.address, to, taskId, ...(origin && { origin }), body, sentAt: now }));
    const base = { taskId, assignee: to, reused: false };
    const waitMs = opts.waitMs ?? 0;
    if (waitMs <= 0) return { ...base, state: existing?.record.state ?? "submitted" };
    const r = await this.await([{ taskId }], { timeoutMs: waitMs, ...(opts.signal && { signal: opts.signal }) });
    const finished = r.done[0];
    return finished ? { ...base, finished, state: finished.state } : { ...base, state: r.pending[0]?.state === "unknown" ? "submitted" : (r.pending[0]?.state ?? "submitted") };
  }

  /**
   * Declare a task assigned to this session finished (completed or failed) with its result and
   * what to do with it (`action`: reply, skip, announce), through the mesh's one finishing path.
   */
  async complete(
    input: { taskId: string; state: FinishState; result?: JsonBody; error?: string; action?: Action } & RouteOverrides,
    hooks?: FinishHooks,
  ): Promise<FinishOutcome> {
    const out = await finishTask({ ctx: this.ctx, tasks: this.registry, sessions: this.services.sessions }, { ...input, by: this.address }, hooks);
    this.openTaskOrigins.delete(input.taskId);
    return out;
  }

  /** Move a task assigned to this session to `working` or `input-required`. */
  async setTaskState(taskId: string, state: "working" | "input-required"): Promise<TaskRecord> {
    for (;;) {
      const task = await this.registry.require(taskId);
      if (!sameSession(task.record.assignee, this.address)) throw new InvalidTaskActionError(`task ${taskId} is not assigned to this session`);
      if (TERMINAL_STATES.has(task.record.state)) throw new InvalidTaskActionError(`task ${taskId} is already ${task.record.state}`);
      const next = { ...task.record, state, updatedAt: new Date().toISOString() };
      if (await this.registry.replace(task, next)) {
        await this.services.sessions.declareTask(this.address, state, taskId);
        return next;
      }
    }
  }

  /** Wait for tasks and/or child sessions (by key) to finish. */
  await(targets: readonly AwaitTarget[], opts: { mode?: "all" | "any"; timeoutMs: number; signal?: AbortSignal; onResult?: (i: FinishedItem) => void }): Promise<AwaitResult> {
    return awaitTasks({ registry: this.registry, inbox: this.inbox, watcher: this.watcher }, targets, { ...opts, signal: this.signalFor(opts.signal) });
  }

  /**
   * End the run: waits stop, the lease is released, the registry says `idle` (with how the turn
   * went, when given). What was not surfaced stays for the next run.
   */
  async close(turn?: { outcome: TurnOutcome; error?: string }): Promise<void> {
    if (!this.inbox.isOpen) return;
    this.running.abort();
    this.watcher.stop();
    await this.inbox.close();
    await this.services.sessions.runEnded(this.address, turn).catch((err: unknown) => this.ctx.logger.warn({ err, session: this.sessionKey }, "could not record the run's end"));
  }
}
