/**
 * The session registry: one record per durable session in `<prefix>_sessions`, keyed
 * `<instance>.<agent>.<channel>.<session>` (so an instance can be allowed to write only its own),
 * watchable, every change a compare-and-set.
 *
 * Fields are kept apart on purpose (incident 002): `lifecycle` says whether a run is going
 * (`active`), the session waits for work (`idle`) or is finished for good (`closed`);
 * `resumable` is true unless closed; `lastTurn` says how the last turn went; `task` is an A2A task
 * state set only by an explicit declaration. A timed-out or failed turn leaves a session idle and
 * resumable: send it a follow-up instead of spawning a duplicate.
 */
import { sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { KvStore, ensureBucket, type KvView, type Stored } from "../topology/index.js";
import { SessionRecordSchema, TERMINAL_STATES, type Lifecycle, type SessionRecord, type TaskState, type TurnOutcome } from "../wire/index.js";

/** Open tasks a session record keeps (the most recent). */
const MAX_OPEN_TASKS = 16;
import type { Watches } from "./watches.js";

/** How OpenClaw's run outcomes map onto `lastTurn.outcome`. */
export const OPENCLAW_RUN_OUTCOMES = { done: "ok", failed: "error", timeout: "timeout", killed: "interrupted" } as const satisfies Record<string, TurnOutcome>;

export interface SessionFilter {
  readonly agent?: string;
  readonly channel?: string;
  readonly lifecycle?: Lifecycle;
  readonly instance?: string;
}

/**
 * Newest `lastActivity` first: each timestamp parsed once, then numbers compared (`localeCompare`
 * costs a collator call per comparison, seconds for 100k records; and text order is not time order
 * when one timestamp has milliseconds and another has none).
 */
function newestActivityFirst(records: readonly SessionRecord[]): SessionRecord[] {
  return records
    .map((r) => ({ r, at: Date.parse(r.lastActivity) }))
    .sort((a, b) => b.at - a.at)
    .map((x) => x.r);
}

export async function ensureSessionBucket(ctx: MeshContext): Promise<void> {
  await ensureBucket(ctx.nc, ctx.jsm, ctx.names.sessionBucket(), { ttlMs: ctx.config.retention.taskMaxAgeMs, replicas: ctx.config.retention.replicas, description: "clawmesh session registry" });
}

export class SessionRegistry {
  /** The whole registry as this process last read it, for listings (made on the first list). */
  private view: KvView<typeof SessionRecordSchema> | undefined;

  private constructor(
    private readonly ctx: MeshContext,
    readonly bucket: KvStore<typeof SessionRecordSchema>,
    private readonly watches: Watches,
  ) {}

  static async open(ctx: MeshContext, watches: Watches): Promise<SessionRegistry> {
    // The key names the owning instance and the session; a body naming anyone else is a forgery.
    const agrees = (key: string, r: SessionRecord) => r.owner === r.address.instance && ctx.names.sessionRecordKey(r.address) === key;
    return new SessionRegistry(ctx, await KvStore.open(ctx, ctx.names.sessionBucket(), SessionRecordSchema, { agrees }), watches);
  }

  key(session: SessionAddress): string {
    return this.ctx.names.sessionRecordKey(session);
  }

  async get(session: SessionAddress): Promise<SessionRecord | undefined> {
    return (await this.bucket.get(this.key(session)))?.value;
  }

  private fresh(session: SessionAddress, now: string): SessionRecord {
    const { run: _run, ...address } = session;
    return { v: 1, address, sessionKey: sessionKeyOf(session), lifecycle: "idle", resumable: true, owner: session.instance, createdAt: now, lastActivity: now };
  }

  private change(session: SessionAddress, fn: (r: SessionRecord, now: string) => SessionRecord | undefined): Promise<Stored<SessionRecord> | undefined> {
    return this.bucket.update(this.key(session), (current) => {
      const now = new Date().toISOString();
      return fn(current ?? this.fresh(session, now), now);
    });
  }

  /** Make sure a record exists (e.g. for a session just spawned); an existing one is left as it is. */
  async ensure(session: SessionAddress, extra: Partial<Pick<SessionRecord, "taskKey" | "channel">> = {}): Promise<SessionRecord> {
    const stored = await this.bucket.update(this.key(session), (current) => (current ? undefined : { ...this.fresh(session, new Date().toISOString()), ...extra }));
    return stored!.value;
  }

  /** A run started: `active`, with the run's lease holder for the janitor to probe. A closed session stays closed. */
  async runStarted(session: SessionAddress, holder: string): Promise<void> {
    await this.change(session, (r, now) => {
      if (r.lifecycle === "closed") return undefined;
      const { idleReason: _i, ...rest } = r;
      return { ...rest, lifecycle: "active", resumable: true, holder, lastActivity: now };
    });
  }

  /** A run ended: `idle` (still resumable), with how its turn went when the host says so. */
  async runEnded(session: SessionAddress, turn?: { outcome: TurnOutcome; error?: string }, reason?: string): Promise<void> {
    await this.change(session, (r, now) => {
      const { holder: _h, ...rest } = r;
      return {
        ...rest,
        lifecycle: r.lifecycle === "closed" ? "closed" : "idle",
        lastActivity: now,
        ...(turn && { lastTurn: { outcome: turn.outcome, at: now, ...(turn.error !== undefined && { error: turn.error.slice(0, 2000) }) } }),
        ...(reason !== undefined && { idleReason: reason }),
      };
    });
  }

  /** Record a turn outcome without changing the lifecycle (a turn ended inside a longer run). */
  async turnEnded(session: SessionAddress, outcome: TurnOutcome, error?: string): Promise<void> {
    await this.change(session, (r, now) => ({ ...r, lastActivity: now, lastTurn: { outcome, at: now, ...(error !== undefined && { error: error.slice(0, 2000) }) } }));
  }

  /** An explicit task-state declaration by the session (never inferred from a turn). A finished task leaves `openTasks`. */
  async declareTask(session: SessionAddress, state: TaskState, taskId?: string): Promise<void> {
    await this.change(session, (r, now) => {
      const open = TERMINAL_STATES.has(state) && taskId !== undefined ? r.openTasks?.filter((t) => t.taskId !== taskId) : r.openTasks;
      const { openTasks: _o, ...rest } = r;
      return { ...rest, ...(open?.length && { openTasks: open }), lastActivity: now, task: { state, at: now, ...(taskId !== undefined && { taskId }) } };
    });
  }

  /** The session took a task's request: remember it (ids only) until the session finishes it. */
  async taskTaken(session: SessionAddress, taskId: string, requester: string): Promise<void> {
    await this.change(session, (r) => {
      if (r.openTasks?.some((t) => t.taskId === taskId && t.requester === requester)) return undefined;
      return { ...r, openTasks: [...(r.openTasks ?? []), { taskId, requester }].slice(-MAX_OPEN_TASKS) };
    });
  }

  async bindChannel(session: SessionAddress, channel: string): Promise<void> {
    await this.change(session, (r) => (r.channel === channel ? undefined : { ...r, channel }));
  }

  /** Close for good: not resumable any more. Fires "closed" watches, then records that it did. */
  async close(session: SessionAddress): Promise<void> {
    await this.change(session, (r, now) => (r.lifecycle === "closed" ? undefined : { ...r, lifecycle: "closed", resumable: false, closeNotified: false, lastActivity: now }));
    await this.notifyClosed(session);
  }

  /** Fire the close watches of a closed session not yet notified (also the janitor's repair). */
  async notifyClosed(session: SessionAddress): Promise<void> {
    const r = await this.get(session);
    if (!r || r.lifecycle !== "closed" || r.closeNotified) return;
    await this.watches.fireSessionClosed(session);
    await this.change(session, (cur) => (cur.closeNotified ? undefined : { ...cur, closeNotified: true }));
  }

  /**
   * Sessions matching `filter`, newest activity first. Read from this process's view of the
   * registry, brought up to date first: the first listing reads every record, later ones only what
   * was written since (see `KvView`), so listing 100k sessions does not cost 100k reads each time.
   */
  async list(filter: SessionFilter = {}): Promise<SessionRecord[]> {
    this.view ??= this.bucket.view();
    await this.view.refresh();
    return newestActivityFirst(
      this.view
        .values(filter.instance ? `${filter.instance}.` : "")
        .map((s) => s.value)
        .filter((r) => (!filter.agent || r.address.agent === filter.agent) && (!filter.lifecycle || r.lifecycle === filter.lifecycle) && (!filter.channel || r.channel === filter.channel || r.address.channel === filter.channel)),
    );
  }
}
