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
import { InvalidAddressError, MeshError, PayloadTooLargeError, SessionClosedError, UnknownInstanceError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { sendEnvelope, type Delivered, type Inbox, type InboxBatch, type SessionWatcher, type TakeOptions } from "../inbox/index.js";
import { Kinds, ReservedIds, TERMINAL_STATES, createEnvelope, type Action, type Envelope, type TaskRecord, type TaskRequestBody, type TaskState, type TurnOutcome } from "../wire/index.js";
import type { MeshServices } from "./services.js";
import { receivedReply, resolveDeliveryTarget, resolveHandoff, type RouteOverrides } from "../handoff/index.js";
import type { Origin } from "../wire/index.js";
import { TaskKeys } from "./spawn.js";
import { StoreContentionError } from "../topology/index.js";
import { StreamRefusedError } from "../transport/ingest.js";
import { awaitTasks, finishTask, type AwaitResult, type AwaitTarget, type FinishHooks, type FinishOutcome, type FinishState, type FinishedItem, type StoredTask, type TaskRegistry } from "../tasks/index.js";

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

/** What a reply asks of its receiver: show it (`reply`), or nothing at all (`skip`). */
export type ReplyAction = Extract<Action, "reply" | "skip">;

export type SendOutcome =
  /** A reply arrived within the wait, tokens stripped; `skip`: the other side chose to say nothing. */
  | { readonly status: "replied"; readonly id: string; readonly action: "reply"; readonly reply: JsonBody; readonly from: SessionAddress }
  | { readonly status: "replied"; readonly id: string; readonly action: "skip"; readonly from: SessionAddress }
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

/** A point in a delegation's writes (instrumentation, e.g. for crash tests). */
export type DelegateStep =
  /** The task record exists (`delivered: false`): created, or taken over from a delegation that never delivered. */
  | "record-created"
  /** The task-key entry points at the new task. */
  | "key-written"
  /** The stream acknowledged the task.request in the assignee's inbox. */
  | "request-delivered"
  /** The record says `delivered: true`. */
  | "marked-delivered"
  /** A task key matched a live, delivered task: nothing was written or sent. */
  | "reused";

export interface DelegateHooks {
  /** Instrumentation: runs after each step of a delegation. */
  readonly onStep?: (step: DelegateStep, at: { readonly taskId: string }) => void | Promise<void>;
}

/** How a delegation holds its task record: ours to send, ours and delivered already, or another delegation's. */
type Claim = { readonly kind: "claimed" | "existing" | "in-use"; readonly stored: StoredTask };

/** Errors after which the assignee's inbox certainly holds nothing: the request was refused or never published. */
function nothingStored(err: unknown): boolean {
  return err instanceof UnknownInstanceError || err instanceof PayloadTooLargeError || err instanceof StreamRefusedError || err instanceof InvalidAddressError;
}

const MAX_CLAIM_ATTEMPTS = 32;

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
  /** The origin of the one task taken in an earlier turn and still open, read once per run (reset when a task is finished). */
  private earlierOrigin: Promise<Origin | undefined> | undefined;
  /** Writes of taken tasks into the session record still under way (finishing one waits for its write). */
  private readonly takenTasks = new Map<string, Promise<unknown>>();
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
    // What lands while the run is open: a take then fetches without first asking what is pending.
    watcher.on((_envelope, seq) => inbox.noteArrival(seq));
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
      if (m.kind === Kinds.taskRequest && m.taskId) {
        // Task ids are scoped by requester: finishing it later reads one exact key.
        this.registry.noteAssigned(m.taskId, m.from.instance);
        if (m.envelope.origin) this.openTaskOrigins.set(m.taskId, m.envelope.origin);
        // Remembered in the session's record, so work done in a later turn (or after a restart)
        // keeps the task's origin. Off the take's path: the session's record of finishing it, and closing the run, wait for it.
        const taskId = m.taskId;
        const noted = this.services.sessions
          .taskTaken(this.address, taskId, m.from.instance)
          .catch((err: unknown) => this.ctx.logger.warn({ err, taskId }, "could not record the task the session took; a later turn may not inherit its origin"))
          .finally(() => this.takenTasks.delete(taskId));
        this.takenTasks.set(taskId, noted);
      }
    }
    return batch;
  }

  /**
   * The origin of the one task this session took in an earlier turn and has not finished (from
   * its registry record), if there is exactly one.
   */
  private originOfOpenTask(): Promise<Origin | undefined> {
    // Read once per run, not on every send: this run's own takes and finishes are tracked in memory.
    this.earlierOrigin ??= this.readOriginOfOpenTask().catch((err: unknown) => {
      this.earlierOrigin = undefined;
      throw err;
    });
    return this.earlierOrigin;
  }

  private async readOriginOfOpenTask(): Promise<Origin | undefined> {
    const open = (await this.services.sessions.get(this.address))?.openTasks ?? [];
    if (open.length !== 1) return undefined;
    const task = await this.registry.get(open[0]!.taskId, { as: "assignee", peer: open[0]!.requester }).catch(() => undefined);
    return task && !TERMINAL_STATES.has(task.record.state) ? task.record.origin : undefined;
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
      const parent = await this.registry.require(opts.parentTaskId, { as: "assignee" });
      if (!sameSession(parent.record.assignee, this.address)) throw new InvalidTaskActionError(`task ${opts.parentTaskId} is not assigned to this session`);
      origin = parent.record.origin;
    } else if (this.openTaskOrigins.size === 1) {
      origin = [...this.openTaskOrigins.values()][0];
    } else if (this.openTaskOrigins.size === 0) {
      origin = await this.originOfOpenTask();
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

  /** Throws SessionClosedError when `to` is closed for good: checked before anything is written. */
  private async assertOpen(to: SessionAddress): Promise<void> {
    const record = await this.services.sessions.get(to);
    if (record?.lifecycle === "closed") throw new SessionClosedError(sessionKeyOf(to), to.instance);
  }

  /**
   * Send a message (optionally waiting, bounded, for its reply inline). A recipient whose session
   * is closed is refused with SessionClosedError before anything is written.
   */
  async send(opts: SendOptions): Promise<SendOutcome> {
    await this.assertOpen(opts.to);
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
      if (reply && (await this.inbox.claim(reply.from.instance, reply.id))) {
        // The same rule as everywhere: a sender that predates actions is read by its text.
        const h = receivedReply(reply.body, reply.action);
        if (h.action === "skip") return { status: "replied", id, action: "skip", from: reply.from };
        return { status: "replied", id, action: "reply", reply: h.body, from: reply.from };
      }
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

  /**
   * Answer a message: lands in the asker's inbox (or inline, if it is still waiting). A text body
   * goes through the one handoff rule (subjects.md, "Legacy tokens"): tokens are stripped and the
   * envelope carries the action, `reply` or `skip` (a skip is recorded by the asker, never shown).
   */
  async reply(to: Pick<Envelope, "id" | "from">, body: JsonBody, opts: { readonly action?: ReplyAction } = {}): Promise<Delivered & { readonly action: ReplyAction }> {
    const h = resolveHandoff(body, opts.action ?? "reply");
    const action: ReplyAction = h.action === "skip" ? "skip" : "reply";
    const d = await sendEnvelope(this.ctx, createEnvelope({ kind: Kinds.reply, from: this.address, to: to.from, correlationId: to.id, action, body: h.body }));
    return { ...d, action };
  }

  /**
   * Create a task for another session and send it the request. The task record is written first
   * (`delivered: false`), the request next, then the record is marked delivered: a delegation whose
   * request was refused (unknown instance, oversize, full inbox) removes its record again, so a
   * retry with the same task id starts afresh; one whose request may or may not have been stored
   * (no acknowledgement) leaves it undelivered, and a retry with the same id sends it again.
   */
  async delegate(opts: DelegateOptions, hooks: DelegateHooks = {}): Promise<DelegateOutcome> {
    if (opts.taskKey) return this.delegateByKey(opts.taskKey, opts, hooks);
    if (!opts.to) throw new InvalidTaskActionError("delegate needs a target session (or a task key with an agent)");
    await this.assertOpen(opts.to);
    const taskId = opts.taskId ?? randomUUID();
    // An id made here is new: create first, and read only if that finds one (it never should).
    const claim = await this.claimRecord(await this.newRecord(opts.to, taskId, opts), opts.taskId === undefined);
    if (claim.kind === "in-use") {
      const sending = this.registry.delivery(claim.stored.record) === "sending";
      throw new InvalidTaskActionError(`task id ${taskId} is ${sending ? "being delegated by another session right now" : "already used by another delegation"}`);
    }
    if (claim.kind === "existing") return this.outcome(taskId, opts.to, claim.stored.record.state, opts);
    await hooks.onStep?.("record-created", { taskId });
    return this.deliver(claim.stored, opts.to, opts, hooks);
  }

  /** A delegation with a task key: reuse the live task of the key, or create one and point the key at it. */
  private async delegateByKey(k: NonNullable<DelegateOptions["taskKey"]>, opts: DelegateOptions, hooks: DelegateHooks): Promise<DelegateOutcome> {
    const keys = new TaskKeys(this.ctx, this.services);
    const key = keys.entryKey({ taskKey: k.key, agent: k.agent, instance: k.instance });
    let forceNew = k.forceNew === true;
    for (let attempt = 1; attempt <= MAX_CLAIM_ATTEMPTS; attempt++) {
      const entry = await keys.entry(key);
      let session: SessionAddress | undefined;
      if (entry && !forceNew) {
        const v = await keys.settle(entry, this.signalFor(opts.signal));
        if (v.kind === "reuse") return this.reused(v.session, v.taskId, hooks);
        if (v.kind === "takeover") {
          // Its request never reached the session: send it again under the same task id.
          const claim = await this.claimRecord(await this.newRecord(v.session, v.taskId, opts));
          if (claim.kind === "existing") return this.reused(v.session, v.taskId, hooks);
          if (claim.kind === "in-use") continue; // another delegation took it over first: look again
          await hooks.onStep?.("record-created", { taskId: v.taskId });
          return this.deliver(claim.stored, v.session, opts, hooks, () => keys.remove(entry));
        }
        // The entry's task record is gone: a new task for its (live) session. Closed: a new session.
        session = v.session;
      }
      if (session === undefined && opts.to !== undefined) await this.assertOpen(opts.to);
      session ??= opts.to ?? keys.newSession(k.agent, k.instance);
      const taskId = randomUUID();
      // The record first: an entry never points at a task that was not created.
      const claim = await this.claimRecord(await this.newRecord(session, taskId, opts), true);
      if (claim.kind !== "claimed") continue;
      await hooks.onStep?.("record-created", { taskId });
      const written = await keys.write(key, entry, session, k.key, taskId);
      if (!written) {
        // Another delegation won the entry: drop this record (its request was never sent) and use theirs.
        await this.removeRecord(claim.stored);
        forceNew = false;
        continue;
      }
      await hooks.onStep?.("key-written", { taskId });
      return this.deliver(claim.stored, session, opts, hooks, () => keys.remove(written));
    }
    throw new StoreContentionError(this.ctx.names.taskKeyBucket(), key, MAX_CLAIM_ATTEMPTS);
  }

  private async newRecord(to: SessionAddress, taskId: string, opts: DelegateOptions): Promise<TaskRecord> {
    const origin = await this.effectiveOrigin(opts);
    const now = new Date().toISOString();
    return {
      v: 1,
      taskId,
      requester: this.address,
      assignee: to,
      state: "submitted",
      title: opts.message.slice(0, 500),
      createdAt: now,
      updatedAt: now,
      notified: false,
      delivered: false,
      ...(origin && { origin }),
    };
  }

  /**
   * Hold the task record for this delegation: create it; or, when the id exists, tell whether it is
   * this same delegation (delivered: `existing`; not confirmed: a retry, sent again), another
   * delegation's (`in-use`), or one whose request never arrived after the grace (taken over).
   */
  private async claimRecord(record: TaskRecord, freshId = false): Promise<Claim> {
    if (freshId) {
      const created = await this.registry.create(record);
      if (created) return { kind: "claimed", stored: created };
    }
    for (let attempt = 1; attempt <= MAX_CLAIM_ATTEMPTS; attempt++) {
      const existing = await this.registry.get(record.taskId, { as: "requester" });
      if (!existing) {
        const created = await this.registry.create(record);
        if (created) return { kind: "claimed", stored: created };
        continue;
      }
      const r = existing.record;
      const mine = sameSession(r.requester, record.requester) && sameSession(r.assignee, record.assignee);
      const delivery = this.registry.delivery(r);
      if (delivery === "delivered") return { kind: mine ? "existing" : "in-use", stored: existing };
      if (!mine && delivery === "sending") return { kind: "in-use", stored: existing };
      // This delegation's own unconfirmed attempt (a retry), or anyone's that never arrived: send
      // it again under the same id. The write restarts the grace, so nobody takes it over meanwhile.
      const next: TaskRecord = mine ? { ...r, updatedAt: record.updatedAt } : record;
      if (existing.key === this.ctx.names.taskRecordKey(record)) {
        const written = await this.registry.replace(existing, next);
        if (written) return { kind: "claimed", stored: written };
        continue;
      }
      // Held under another key (a delegation between other instances): remove it, then create ours.
      if (await this.registry.remove(existing)) {
        const created = await this.registry.create(record);
        if (created) return { kind: "claimed", stored: created };
      }
    }
    throw new StoreContentionError(this.ctx.names.taskBucket(), record.taskId, MAX_CLAIM_ATTEMPTS);
  }

  /**
   * Send the task.request of a claimed record (envelope id `tr-<taskId>`, so a repeat is a
   * duplicate), then mark the record delivered. A refused request removes the record (and, through
   * `onRefused`, the task-key entry pointing at it) at the revision this delegation wrote.
   */
  private async deliver(stored: StoredTask, to: SessionAddress, opts: DelegateOptions, hooks: DelegateHooks, onRefused?: () => Promise<unknown>): Promise<DelegateOutcome> {
    const r = stored.record;
    const taskId = r.taskId;
    const body: TaskRequestBody = { taskId, message: opts.message };
    // Stop retrying while the grace still covers the attempt, so nobody takes over a live delegation.
    const retryForMs = Math.min(this.ctx.config.sendRetryMs, Math.floor(this.registry.deliveryGraceMs / 2));
    try {
      await sendEnvelope(this.ctx, createEnvelope({ id: ReservedIds.taskRequest(taskId), kind: Kinds.taskRequest, from: this.address, to, taskId, ...(r.origin && { origin: r.origin }), body, sentAt: r.updatedAt }), { retryForMs });
    } catch (err) {
      if (nothingStored(err)) {
        await onRefused?.().catch((e: unknown) => this.ctx.logger.warn({ err: e, taskId }, "could not remove the task key entry of a refused delegation"));
        await this.removeRecord(stored);
      }
      throw err;
    }
    await hooks.onStep?.("request-delivered", { taskId });
    try {
      await this.registry.markDelivered(stored);
    } catch (err) {
      // The request is stored: the assignee acts on it either way; a retry with the same id is a duplicate.
      this.ctx.logger.warn({ err, taskId }, "task request delivered but the record could not be marked so");
    }
    await hooks.onStep?.("marked-delivered", { taskId });
    return this.outcome(taskId, to, r.state, opts);
  }

  private async removeRecord(stored: StoredTask): Promise<void> {
    await this.registry.remove(stored).catch((err: unknown) => this.ctx.logger.warn({ err, taskId: stored.record.taskId }, "could not remove the record of a task whose request was never sent; it stays marked undelivered"));
  }

  private async reused(session: SessionAddress, taskId: string, hooks: DelegateHooks): Promise<DelegateOutcome> {
    const existing = await this.registry.get(taskId, { as: "requester", peer: session.instance });
    await hooks.onStep?.("reused", { taskId });
    return { taskId, assignee: session, reused: true, state: existing?.record.state ?? "submitted" };
  }

  /** The outcome of a delegation that holds a delivered task, after the optional inline wait. */
  private async outcome(taskId: string, to: SessionAddress, state: TaskState, opts: DelegateOptions): Promise<DelegateOutcome> {
    const base = { taskId, assignee: to, reused: false };
    const waitMs = opts.waitMs ?? 0;
    if (waitMs <= 0) return { ...base, state };
    const r = await this.await([{ taskId }], { timeoutMs: waitMs, ...(opts.signal && { signal: opts.signal }) });
    const finished = r.done[0];
    return finished ? { ...base, finished, state: finished.state } : { ...base, state: r.pending[0]?.state === "unknown" ? "submitted" : (r.pending[0]?.state ?? "submitted") };
  }

  /**
   * Declare a task assigned to this session finished (completed or failed) with its result and
   * what to do with it (`action`: reply, skip, announce), through the mesh's one finishing path.
   */
  async complete(
    input: { taskId: string; state: FinishState; result?: JsonBody; error?: string; action?: Action; requester?: string } & RouteOverrides,
    hooks?: FinishHooks,
  ): Promise<FinishOutcome> {
    const taken = this.takenTasks.get(input.taskId);
    const out = await finishTask({ ctx: this.ctx, tasks: this.registry, sessions: this.services.sessions, directory: this.services.directory, notifier: this.services.notifier, ...(taken && { sessionWrite: taken }) }, { ...input, by: this.address }, hooks);
    this.openTaskOrigins.delete(input.taskId);
    this.earlierOrigin = undefined;
    return out;
  }

  /** Move a task assigned to this session to `working` or `input-required`. */
  async setTaskState(taskId: string, state: "working" | "input-required"): Promise<TaskRecord> {
    for (;;) {
      const task = await this.registry.require(taskId, { as: "assignee" });
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
    await Promise.all(this.takenTasks.values());
    // The end is recorded while the lease is still held: a crash in between leaves an idle record
    // and a dead lease (which the janitor finds by its lease), never an active record with no lease.
    await this.services.sessions.runEnded(this.address, turn).catch((err: unknown) => this.ctx.logger.warn({ err, session: this.sessionKey }, "could not record the run's end"));
    await this.inbox.close();
  }
}
