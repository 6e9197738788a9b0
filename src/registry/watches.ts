/**
 * Watches: "tell my session when session/task X completes, fails or closes". A watch is a KV entry
 * in `<prefix>_watches` keyed by what it watches, then by the watching instance and the watch id
 * (`t.<requester>.<assignee>.<taskId>.<watcher>.<watchId>` or
 * `s.<instance>.<agent>.<channel>.<session>.<watcher>.<watchId>`; `Names.watchKey`). The instance that makes the change fires
 * the matching watches as durable `watch.event` messages in each watcher's inbox, so a watcher whose
 * instance is down meanwhile gets them when it comes back. Notice ids are derived from (watch,
 * event, subject), so a repeated firing (retry, recovery) is a duplicate, never a second notice.
 */
import { randomUUID } from "node:crypto";
import { sameSession, sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { MeshContext } from "../mesh-context.js";
import { sendEnvelope } from "../inbox/index.js";
import { KvStore, ensureBucket, type WatchTargetRef } from "../topology/index.js";
import { Kinds, ReservedIds, WatchRecordSchema, createEnvelope, type TaskRecord, type WatchEvent, type WatchNoticeBody, type WatchRecord } from "../wire/index.js";

/**
 * What a caller asks to watch: a session, or a task by id (task ids are scoped by requester:
 * `requester` says whose, when the id alone is ambiguous).
 */
export type WatchTarget = { readonly taskId: string; readonly requester?: string } | { readonly session: SessionAddress };

/** Finds the instances of a task by id (the task registry). */
export interface TaskLocator {
  locate(taskId: string, requester?: string): Promise<{ readonly requester: string; readonly assignee: string }>;
}

export function describeTarget(target: WatchTarget | WatchRecord["target"]): string {
  return "taskId" in target ? `task ${target.taskId}` : `session ${target.session.instance}/${sessionKeyOf(target.session)}`;
}

export async function ensureWatchBucket(ctx: MeshContext): Promise<void> {
  await ensureBucket(ctx.nc, ctx.jsm, ctx.names.watchBucket(), { ttlMs: ctx.config.retention.taskMaxAgeMs, replicas: ctx.config.retention.replicas, description: "clawmesh watches" });
}

export class Watches {
  private constructor(
    private readonly ctx: MeshContext,
    private readonly bucket: KvStore<typeof WatchRecordSchema>,
    private readonly tasks: TaskLocator,
  ) {}

  static async open(ctx: MeshContext, tasks: TaskLocator): Promise<Watches> {
    // The key names target and watching instance; a body naming anyone else is a forgery.
    const agrees = (key: string, w: WatchRecord) => ctx.names.watchKey(w.target, w.watcher.instance, w.watchId) === key;
    return new Watches(ctx, await KvStore.open(ctx, ctx.names.watchBucket(), WatchRecordSchema, { agrees }), tasks);
  }

  async add(watcher: SessionAddress, target: WatchTarget, events: readonly WatchEvent[]): Promise<WatchRecord> {
    const resolved: WatchRecord["target"] = "taskId" in target ? { taskId: target.taskId, ...(await this.tasks.locate(target.taskId, target.requester)) } : target;
    const record: WatchRecord = { v: 1, watchId: randomUUID(), watcher, target: resolved, events: [...events], createdAt: new Date().toISOString() };
    await this.bucket.create(this.ctx.names.watchKey(resolved, watcher.instance, record.watchId), record);
    return record;
  }

  /** Watches set by `watcher` (by every session of this instance when omitted). */
  async list(watcher?: SessionAddress): Promise<WatchRecord[]> {
    const instance = watcher?.instance ?? this.ctx.config.instance;
    const found: WatchRecord[] = [];
    for (const filter of this.ctx.names.watchIdFilters(instance, "*")) found.push(...(await this.bucket.values(filter)).map((s) => s.value));
    return found.filter((w) => !watcher || sameSession(w.watcher, watcher));
  }

  /** Remove a watch of `watcher`; false when there is none with that id. */
  async remove(watcher: SessionAddress, watchId: string): Promise<boolean> {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(watchId)) return false;
    // One direct get per key shape the id can end (a task watch, a session watch): no listing.
    for (const filter of this.ctx.names.watchIdFilters(watcher.instance, watchId)) {
      const w = await this.bucket.findLatest(filter);
      if (w.status !== "value" || !sameSession(w.value.watcher, watcher)) continue;
      await this.bucket.delete(w.key);
      return true;
    }
    return false;
  }

  /** Fire the watches on a finished task and on its assignee session. */
  async fireTaskFinished(task: TaskRecord): Promise<void> {
    const event: WatchEvent | undefined = task.state === "completed" ? "completed" : task.state === "failed" || task.state === "canceled" ? "failed" : undefined;
    if (!event) return;
    const detail = {
      taskId: task.taskId,
      state: task.state,
      ...(task.result !== undefined && { result: task.result }),
      ...(task.error !== undefined && { error: task.error }),
    };
    const parties = new Set([task.requester.instance, task.assignee.instance]);
    const target = { taskId: task.taskId, requester: task.requester.instance, assignee: task.assignee.instance };
    await this.fire(target, event, task.assignee, task.taskId, detail, parties);
    await this.fire({ session: task.assignee }, event, task.assignee, task.taskId, detail, parties);
  }

  async fireSessionClosed(session: SessionAddress): Promise<void> {
    await this.fire({ session }, "closed", session, "closed", {});
  }

  /**
   * Send a notice to every watcher of `target`. A task's result and error go only to instances that
   * take part in it (`parties`); any other watcher learns the state, never the content.
   */
  private async fire(target: WatchTargetRef, event: WatchEvent, from: SessionAddress, discriminator: string, detail: Partial<WatchNoticeBody>, parties?: ReadonlySet<string>): Promise<void> {
    const filter = this.ctx.names.watchesOn(target);
    // Most targets have no watch: one direct get says so, without listing the bucket's subjects.
    if ((await this.bucket.findLatest(filter)).status === "absent") return;
    for (const { value: w } of await this.bucket.values(filter)) {
      if (!w.events.includes(event)) continue;
      const { result: _result, error: _error, ...stateOnly } = detail;
      const shown = !parties || parties.has(w.watcher.instance) ? detail : stateOnly;
      const body: WatchNoticeBody = { watchId: w.watchId, event, target: describeTarget(target), ...shown, at: new Date().toISOString() };
      await sendEnvelope(
        this.ctx,
        createEnvelope({
          id: ReservedIds.watchEvent(w.watchId, event, discriminator),
          kind: Kinds.watchEvent,
          from,
          to: w.watcher,
          ...(detail.taskId !== undefined && { taskId: detail.taskId }),
          body,
          sentAt: body.at,
        }),
      );
    }
  }
}
