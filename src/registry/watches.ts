/**
 * Watches: "tell my session when session/task X completes, fails or closes". A watch is a KV entry
 * in `<prefix>_watches` keyed by what it watches (`t.<taskId>.<watchId>` or
 * `s.<instance>.<agent>.<channel>.<session>.<watchId>`). The instance that makes the change fires
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

export type WatchTarget = WatchTargetRef;

export function describeTarget(target: WatchTarget): string {
  return "taskId" in target ? `task ${target.taskId}` : `session ${target.session.instance}/${sessionKeyOf(target.session)}`;
}

export async function ensureWatchBucket(ctx: MeshContext): Promise<void> {
  await ensureBucket(ctx.nc, ctx.jsm, ctx.names.watchBucket(), { ttlMs: ctx.config.retention.taskMaxAgeMs, replicas: ctx.config.retention.replicas, description: "clawmesh watches" });
}

export class Watches {
  private constructor(
    private readonly ctx: MeshContext,
    private readonly bucket: KvStore<typeof WatchRecordSchema>,
  ) {}

  static async open(ctx: MeshContext): Promise<Watches> {
    return new Watches(ctx, await KvStore.open(ctx, ctx.names.watchBucket(), WatchRecordSchema));
  }

  async add(watcher: SessionAddress, target: WatchTarget, events: readonly WatchEvent[]): Promise<WatchRecord> {
    const record: WatchRecord = { v: 1, watchId: randomUUID(), watcher, target, events: [...events], createdAt: new Date().toISOString() };
    await this.bucket.create(this.ctx.names.watchKey(target, record.watchId), record);
    return record;
  }

  /** Watches set by `watcher` (all watches when omitted). */
  async list(watcher?: SessionAddress): Promise<WatchRecord[]> {
    const all = await this.bucket.values();
    return all
      .map((s) => s.value)
      .filter((w) => !watcher || sameSession(w.watcher, watcher));
  }

  /** Remove a watch of `watcher`; false when there is none with that id. */
  async remove(watcher: SessionAddress, watchId: string): Promise<boolean> {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(watchId)) return false;
    // One direct get per key shape the id can end (a task watch, a session watch): no listing.
    for (const filter of this.ctx.names.watchIdFilters(watchId)) {
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
    await this.fire({ taskId: task.taskId }, event, task.assignee, task.taskId, detail);
    await this.fire({ session: task.assignee }, event, task.assignee, task.taskId, detail);
  }

  async fireSessionClosed(session: SessionAddress): Promise<void> {
    await this.fire({ session }, "closed", session, "closed", {});
  }

  private async fire(target: WatchTarget, event: WatchEvent, from: SessionAddress, discriminator: string, detail: Partial<WatchNoticeBody>): Promise<void> {
    for (const { value: w } of await this.bucket.values(`${this.ctx.names.watchTargetKey(target)}.*`)) {
      if (!w.events.includes(event)) continue;
      const body: WatchNoticeBody = { watchId: w.watchId, event, target: describeTarget(target), ...detail, at: new Date().toISOString() };
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
