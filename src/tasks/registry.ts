/**
 * The task registry: one KV entry per task in the bucket `<prefix>_tasks`, keyed
 * `<requesterInstance>.<assigneeInstance>.<taskId>` so the broker lets each instance write and read
 * only the tasks it takes part in. Task ids are scoped by requester. Every change is a compare-and-set at the revision read:
 * two writers never silently overwrite each other; the loser re-reads and decides again.
 *
 * A delegation creates its record with `delivered: false` before it publishes the task.request,
 * and sets `delivered: true` once the stream acknowledged the request. A record still undelivered
 * after the delivery grace (`tasks.deliveryGraceMs`) is not alive: its delegation failed or its
 * process died before the request was stored (subjects.md, "Tasks").
 */
import type { Msg } from "@nats-io/transport-node";
import { sameSession } from "../address/index.js";
import { MeshError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { TaskRecordSchema, isPlainTaskRecord, type TaskRecord } from "../wire/index.js";
import { BucketFeed, KvStore, UnreadableRecordError, ensureBucket, type BucketFeedConnection, type Names, type StoreRead, type TaskRole } from "../topology/index.js";
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

/** Two requesters used the same task id for tasks assigned to this instance; say which one. */
export class AmbiguousTaskError extends MeshError {
  readonly requesters: readonly string[];
  constructor(taskId: string, requesters: readonly string[]) {
    super("ambiguous_task", `task id ${taskId} is assigned to this instance by ${requesters.length} requesters (${requesters.join(", ")}); say which requester instance is meant`);
    this.requesters = requesters;
  }
}

/** How to find a task by id: which side this instance is on, and the other instance when known. */
export interface TaskLookup {
  /** This instance's role; requester first, then assignee, when omitted. */
  readonly as?: TaskRole;
  /** The instance on the other side: the lookup is then one read of the exact key. */
  readonly peer?: string;
}

export class TaskRegistry {
  /** `<role>|<task id>` -> registry key, for tasks this process has seen (the key names both instances). */
  private readonly keyCache = new Map<string, string>();
  /**
   * The last version of each task this process read or wrote (bounded): a writer that starts from
   * it saves a read, and a compare-and-set at a stale revision simply fails and re-reads.
   */
  private readonly lastSeen = new Map<string, StoredTask>();
  /** Who follows which of this instance's requested tasks (`onChange`), by task id. */
  private readonly followers = new Map<string, Set<(task: StoredTask) => void>>();
  /** The writes to this instance's requested tasks, pushed to this process (started by the first follower). */
  private feed: BucketFeed | undefined;

  private constructor(
    private readonly conn: BucketFeedConnection,
    private readonly names: Names,
    /** This instance: task ids are scoped by requester, and an instance reads only its own tasks. */
    private readonly self: string,
    private readonly store: KvStore<typeof TaskRecordSchema>,
    /** Fired when a task finishes (before it counts as notified). */
    readonly watches: Watches,
    /** How long an unconfirmed request counts as still being sent. */
    readonly deliveryGraceMs: number,
  ) {}

  static async open(ctx: MeshContext, watches: Watches): Promise<TaskRegistry> {
    // The key names requester and assignee; a body naming anyone else is a forgery.
    const store = await KvStore.open(ctx, ctx.names.taskBucket(), TaskRecordSchema, { agrees: (key, r) => ctx.names.taskRecordKey(r) === key, plain: isPlainTaskRecord });
    return new TaskRegistry(ctx, ctx.names, ctx.config.instance, store, watches, ctx.config.tasks.deliveryGraceMs);
  }

  /**
   * Call `listener` with each write to these tasks of this instance (as requester) as soon as it
   * is stored, decoded and checked like any read; returns an unsubscribe. Best effort, never the
   * only way to learn a change: the feed behind it starts with the first follower and may miss
   * writes (starting, reconnecting, refused by an older authorization), so a follower also reads.
   * It is what lets an awaiting requester learn of a decision from the decision's own write.
   */
  onChange(taskIds: readonly string[], listener: (task: StoredTask) => void): () => void {
    this.feed ??= new BucketFeed(this.conn, `KV_${this.store.name}`, `$KV.${this.store.name}.${this.names.tasksRequestedBy(this.self)}`, (m, seq) => this.changed(m, seq));
    for (const id of taskIds) {
      let set = this.followers.get(id);
      if (set === undefined) this.followers.set(id, (set = new Set()));
      set.add(listener);
    }
    return () => {
      for (const id of taskIds) {
        const set = this.followers.get(id);
        set?.delete(listener);
        if (set?.size === 0) this.followers.delete(id);
      }
    };
  }

  /** Whether the feed behind `onChange` delivers, once its start (by the first follower) has ended. */
  async feedReady(): Promise<boolean> {
    return (await this.feed?.ready()) ?? false;
  }

  /** Stop the feed behind `onChange` (mesh close). */
  close(): void {
    this.feed?.stop();
    this.feed = undefined;
    this.followers.clear();
  }

  private changed(m: Msg, seq: number): void {
    const k = this.names.parseTaskKey(m.subject.slice(`$KV.${this.store.name}.`.length));
    // Only followed tasks are decoded: the feed carries every write to this instance's requests.
    const listeners = k && k.requester === this.self ? this.followers.get(k.taskId) : undefined;
    if (listeners === undefined) return;
    const read = this.store.decodeDelivered(m, seq);
    if (read.status !== "value") return;
    const task = stored(read);
    if ((this.lastSeen.get(task.key)?.revision ?? 0) < task.revision) this.seen(task);
    for (const l of [...listeners]) l(task);
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
    this.remember(record, key);
    return this.seen(stored(written));
  }

  /**
   * The task with this id that this instance takes part in; undefined when there is none. Throws
   * UnreadableRecordError for a record it cannot read, AmbiguousTaskError when two requesters gave
   * this instance tasks with the id and `peer` does not say which. No server consumer: a read by
   * exact key when the key is known (`peer`, or seen by this process); otherwise, as requester, the
   * last entry on `<self>.*.<taskId>` (one direct get: a requester never holds an id twice), and as
   * assignee the keys on `*.<self>.<taskId>` from the stream's subject list.
   */
  async get(taskId: string, lookup: TaskLookup = {}): Promise<StoredTask | undefined> {
    for (const role of lookup.as ? [lookup.as] : (["requester", "assignee"] as const)) {
      const found = await this.lookup(taskId, role, lookup.peer);
      if (found) return found;
    }
    return undefined;
  }

  private async lookup(taskId: string, role: TaskRole, peer: string | undefined): Promise<StoredTask | undefined> {
    const exact = peer !== undefined ? this.keyFor(role, peer, taskId) : this.keyCache.get(`${role}|${taskId}`);
    let read = exact !== undefined ? await this.store.read(exact) : undefined;
    if (read === undefined || (read.status === "absent" && peer === undefined)) {
      // Not known, or the cached key was removed (a failed delegation retried towards another instance).
      this.keyCache.delete(`${role}|${taskId}`);
      read = role === "requester" ? await this.store.findLatest(this.names.taskIdFilter(this.self, role, taskId)) : await this.findAssigned(taskId);
    }
    if (read.status === "unreadable") throw new UnreadableRecordError(this.store.name, read.key, read.reason);
    if (read.status === "absent") return undefined;
    this.remember(read.value, read.key);
    return this.seen(stored(read));
  }

  private async findAssigned(taskId: string): Promise<StoreRead<TaskRecord>> {
    const found = await this.store.values(this.names.taskIdFilter(this.self, "assignee", taskId));
    if (found.length > 1) throw new AmbiguousTaskError(taskId, found.map((t) => t.value.requester.instance));
    const only = found[0];
    return only ? { status: "value", ...only } : { status: "absent", key: this.names.taskIdFilter(this.self, "assignee", taskId) };
  }

  private keyFor(role: TaskRole, peer: string, taskId: string): string {
    return role === "requester" ? `${this.self}.${peer}.${taskId}` : `${peer}.${this.self}.${taskId}`;
  }

  /**
   * The two instances of the task with this id, for a watch: a task this instance takes part in
   * (read), else the one task key with the id (`requester` narrows it), from the key list alone:
   * another pair's record is not readable here, its key is.
   */
  async locate(taskId: string, requester?: string): Promise<{ readonly requester: string; readonly assignee: string }> {
    const own = requester === undefined || requester === this.self ? await this.get(taskId, requester === this.self ? { as: "requester" } : {}) : undefined;
    if (own) return { requester: own.record.requester.instance, assignee: own.record.assignee.instance };
    const keys = (await this.store.keys(`${requester ?? "*"}.*.${taskId}`)).flatMap((k) => this.names.parseTaskKey(k) ?? []);
    if (keys.length > 1) throw new AmbiguousTaskError(taskId, keys.map((k) => k.requester));
    if (!keys[0]) throw new TaskNotFoundError(taskId);
    return keys[0];
  }

  /** Remember that a task.request with this id came from `requester` (so finishing it reads one exact key). */
  noteAssigned(taskId: string, requester: string): void {
    const key = this.keyFor("assignee", requester, taskId);
    const known = this.keyCache.get(`assignee|${taskId}`);
    // A second requester with the same id: forget both, so a lookup without `peer` finds them and says it is ambiguous.
    if (known !== undefined && known !== key) this.keyCache.delete(`assignee|${taskId}`);
    else this.cache(`assignee|${taskId}`, key);
  }

  async require(taskId: string, lookup: TaskLookup = {}): Promise<StoredTask> {
    const t = await this.get(taskId, lookup);
    if (!t) throw new TaskNotFoundError(taskId);
    return t;
  }

  /**
   * Compare-and-set: write `next` only if the entry is still at `current.revision`.
   * Returns undefined when another writer got there first.
   */
  async replace(current: StoredTask, next: TaskRecord): Promise<StoredTask | undefined> {
    const written = await this.store.replace(current, next);
    return written && this.seen(stored(written));
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
      current = await this.get(task.record.taskId, { as: "requester", peer: task.record.assignee.instance });
      if (current && current.key !== task.key) return undefined;
    }
    return current?.record.delivered !== false ? current : undefined;
  }

  /** Delete a task at the revision read (a task whose creation could not be completed). */
  async remove(current: StoredTask): Promise<boolean> {
    this.lastSeen.delete(current.key);
    this.keyCache.delete(`requester|${current.record.taskId}`);
    this.keyCache.delete(`assignee|${current.record.taskId}`);
    return this.store.delete(current.key, current.revision);
  }

  /** Tasks assigned to `instance` (a listing: recovery, operators). Unreadable records are skipped. */
  async assignedTo(instance: string): Promise<StoredTask[]> {
    return (await this.store.values(this.names.tasksAssignedTo(instance))).map(stored);
  }

  /**
   * Tasks whose key matches `filter` (`<requester>.<assignee>.<id>`): those this instance takes
   * part in, or with `all` every one (an operator's credential; an instance may not read another
   * pair's task). Key names come from the stream's subject list; records by pipelined direct gets.
   */
  async list(filter = ">", opts: { readonly all?: boolean } = {}): Promise<StoredTask[]> {
    const keys = (await this.store.keys(filter)).filter((key) => {
      const k = this.names.parseTaskKey(key);
      return k !== undefined && (opts.all === true || k.requester === this.self || k.assignee === this.self);
    });
    return (await this.store.readMany(keys)).flatMap((r) => (r.status === "value" ? [stored(r)] : []));
  }

  private remember(r: TaskRecord, key: string): void {
    if (r.requester.instance === this.self) this.cache(`requester|${r.taskId}`, key);
    if (r.assignee.instance === this.self) this.cache(`assignee|${r.taskId}`, key);
  }

  /**
   * The task as this process last saw it, without a read (undefined when it has not seen it):
   * for a writer that can start from a known revision (its compare-and-set re-reads if stale).
   */
  lastKnown(taskId: string, lookup: TaskLookup): StoredTask | undefined {
    const role = lookup.as ?? "requester";
    const key = lookup.peer !== undefined ? this.keyFor(role, lookup.peer, taskId) : this.keyCache.get(`${role}|${taskId}`);
    return key === undefined ? undefined : this.lastSeen.get(key);
  }

  private seen(t: StoredTask): StoredTask {
    if (this.lastSeen.size >= 10_000) this.lastSeen.clear();
    this.lastSeen.set(t.key, t);
    return t;
  }

  private cache(k: string, key: string): void {
    if (this.keyCache.size >= 10_000) this.keyCache.clear();
    this.keyCache.set(k, key);
  }
}
