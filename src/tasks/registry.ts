/**
 * The task registry: one KV entry per task in the bucket `<prefix>_tasks`, keyed
 * `<requesterInstance>.<assigneeInstance>.<taskId>` so the broker can later allow each instance to
 * write only the tasks it takes part in. Every change is a compare-and-set at the revision read:
 * two writers never silently overwrite each other; the loser re-reads and decides again.
 *
 * A delegation creates its record with `delivered: false` before it publishes the task.request,
 * and sets `delivered: true` once the stream acknowledged the request. A record still undelivered
 * after the delivery grace (`tasks.deliveryGraceMs`) is not alive: its delegation failed or its
 * process died before the request was stored (subjects.md, "Tasks").
 */
import { sameSession } from "../address/index.js";
import { MeshError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { TaskRecordSchema, type TaskRecord } from "../wire/index.js";
import { KvStore, UnreadableRecordError, ensureBucket, type Names } from "../topology/index.js";
import type { Watches } from "../registry/index.js";

export interface StoredTask {
  readonly record: TaskRecord;
  readonly revision: number;
  readonly key: string;
}

export class TaskNotFoundError extends MeshError {
  constructor(taskId: string) {
    super("task_not_found", `no task ${taskId} in the registry (it may have expired, or the id is wrong)`);
  }
}

export async function ensureTaskBucket(ctx: MeshContext): Promise<void> {
  await ensureBucket(ctx.nc, ctx.jsm, ctx.names.taskBucket(), { ttlMs: ctx.config.retention.taskMaxAgeMs, replicas: ctx.config.retention.replicas, description: "clawmesh task registry" });
}

const stored = (s: { key: string; value: TaskRecord; revision: number }): StoredTask => ({ record: s.value, revision: s.revision, key: s.key });

/**
 * Where a task's request stands: `delivered` (stored in the assignee's inbox, or the assignee has
 * acted on the task), `sending` (not confirmed yet, within the delivery grace: a delegation may
 * still be publishing it), `undelivered` (not confirmed after the grace: nobody received it).
 */
export type Delivery = "delivered" | "sending" | "undelivered";

/** True when the task's request is known to be in the assignee's inbox (or the assignee acted on it). */
export function requestDelivered(r: TaskRecord): boolean {
  return r.delivered !== false || r.state !== "submitted";
}

export class TaskRegistry {
  /** Task id -> registry key, for ids this process has seen (the key names both instances). */
  private readonly keyCache = new Map<string, string>();

  private constructor(
    private readonly names: Names,
    private readonly store: KvStore<typeof TaskRecordSchema>,
    /** Fired when a task finishes (before it counts as notified). */
    readonly watches: Watches,
    /** How long an unconfirmed request counts as still being sent. */
    readonly deliveryGraceMs: number,
  ) {}

  static async open(ctx: MeshContext, watches: Watches): Promise<TaskRegistry> {
    return new TaskRegistry(ctx.names, await KvStore.open(ctx, ctx.names.taskBucket(), TaskRecordSchema), watches, ctx.config.tasks.deliveryGraceMs);
  }

  /** Where a record's request stands (by the record's last change and this process's clock). */
  delivery(r: TaskRecord, now = Date.now()): Delivery {
    if (requestDelivered(r)) return "delivered";
    return this.graceLeftMs(r, now) > 0 ? "sending" : "undelivered";
  }

  /**
   * Milliseconds until an unconfirmed record's grace is over (0 when it is). The grace runs from
   * the record's last write (`updatedAt`): its creation, or a retry or takeover of the delegation.
   */
  graceLeftMs(r: TaskRecord, now = Date.now()): number {
    const written = Date.parse(r.updatedAt);
    return Number.isNaN(written) ? 0 : Math.max(0, written + this.deliveryGraceMs - now);
  }

  /** Create a new task; undefined when a task with its key exists already. */
  async create(record: TaskRecord): Promise<StoredTask | undefined> {
    const key = this.names.taskRecordKey(record);
    const written = await this.store.create(key, record);
    if (!written) return undefined;
    this.remember(record.taskId, key);
    return stored(written);
  }

  /**
   * The task with this id; undefined when there is none. Throws UnreadableRecordError for a record
   * it cannot read. One read: by exact key when this process knows the task's key, otherwise the
   * last entry on `*.*.<taskId>` (a direct get; no server consumer).
   */
  async get(taskId: string): Promise<StoredTask | undefined> {
    const cached = this.keyCache.get(taskId);
    let read = cached !== undefined ? await this.store.read(cached) : await this.store.findLatest(this.names.tasksWithId(taskId));
    // The cached key was removed (e.g. a failed delegation retried towards another instance): look again by id.
    if (cached !== undefined && read.status === "absent") {
      this.keyCache.delete(taskId);
      read = await this.store.findLatest(this.names.tasksWithId(taskId));
    }
    if (read.status === "unreadable") throw new UnreadableRecordError(this.store.name, read.key, read.reason);
    if (read.status === "absent") return undefined;
    this.remember(taskId, read.key);
    return stored(read);
  }

  async require(taskId: string): Promise<StoredTask> {
    const t = await this.get(taskId);
    if (!t) throw new TaskNotFoundError(taskId);
    return t;
  }

  /**
   * Compare-and-set: write `next` only if the entry is still at `current.revision`.
   * Returns undefined when another writer got there first.
   */
  async replace(current: StoredTask, next: TaskRecord): Promise<StoredTask | undefined> {
    const written = await this.store.replace(current, next);
    return written && stored(written);
  }

  /**
   * Record that the task's request was stored in the assignee's inbox (compare-and-set, re-read on
   * a lost race). Returns the record as stored, or undefined when the task was removed or taken
   * over by a delegation to another assignee meanwhile.
   */
  async markDelivered(task: StoredTask): Promise<StoredTask | undefined> {
    let current: StoredTask | undefined = task;
    for (let attempt = 0; attempt < 32 && current; attempt++) {
      if (current.record.delivered !== false) return current;
      if (!sameSession(current.record.assignee, task.record.assignee)) return undefined;
      const written = await this.replace(current, { ...current.record, delivered: true });
      if (written) return written;
      current = await this.get(task.record.taskId);
    }
    return current?.record.delivered !== false ? current : undefined;
  }

  /** Delete a task at the revision read (a task whose creation could not be completed). */
  async remove(current: StoredTask): Promise<boolean> {
    this.keyCache.delete(current.record.taskId);
    return this.store.delete(current.key, current.revision);
  }

  /** Tasks assigned to `instance` (a listing: recovery, operators). Unreadable records are skipped. */
  async assignedTo(instance: string): Promise<StoredTask[]> {
    return (await this.store.values(this.names.tasksAssignedTo(instance))).map(stored);
  }

  /** Every task in the registry, or those whose key matches `filter` (`<requester>.<assignee>.<id>`). */
  async list(filter = ">"): Promise<StoredTask[]> {
    return (await this.store.values(filter)).map(stored);
  }

  private remember(taskId: string, key: string): void {
    if (this.keyCache.size >= 10_000) this.keyCache.clear();
    this.keyCache.set(taskId, key);
  }

}
