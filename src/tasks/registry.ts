/**
 * The task registry: one KV entry per task in the bucket `<prefix>_tasks`, keyed
 * `<requesterInstance>.<assigneeInstance>.<taskId>` so the broker can later allow each instance to
 * write only the tasks it takes part in. Every change is a compare-and-set at the revision read:
 * two writers never silently overwrite each other; the loser re-reads and decides again.
 */
import { Kvm, type KV } from "@nats-io/kv";
import { MeshError } from "../errors.js";
import type { MeshContext } from "../mesh-context.js";
import { TaskRecordSchema, type TaskRecord } from "../wire/index.js";
import { ensureBucket } from "../topology/index.js";
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

export function taskKey(record: Pick<TaskRecord, "taskId" | "requester" | "assignee">): string {
  return `${record.requester.instance}.${record.assignee.instance}.${record.taskId}`;
}

export async function ensureTaskBucket(ctx: MeshContext): Promise<void> {
  await ensureBucket(ctx.nc, ctx.jsm, ctx.names.taskBucket(), { ttlMs: ctx.config.retention.taskMaxAgeMs, replicas: ctx.config.retention.replicas, description: "clawmesh task registry" });
}

export class TaskRegistry {
  private readonly keyCache = new Map<string, string>();

  private constructor(
    private readonly kv: KV,
    /** Fired when a task finishes (before it counts as notified). */
    readonly watches: Watches,
  ) {}

  static async open(ctx: MeshContext, watches: Watches): Promise<TaskRegistry> {
    return new TaskRegistry(await new Kvm(ctx.nc).open(ctx.names.taskBucket(), { bindOnly: true }), watches);
  }

  /** Create a new task; fails if the id exists. */
  async create(record: TaskRecord): Promise<StoredTask> {
    const key = taskKey(record);
    const revision = await this.kv.create(key, JSON.stringify(record));
    this.keyCache.set(record.taskId, key);
    return { record, revision, key };
  }

  async get(taskId: string): Promise<StoredTask | undefined> {
    const key = await this.findKey(taskId);
    if (key === undefined) return undefined;
    const entry = await this.kv.get(key);
    if (entry === null || entry.operation !== "PUT") return undefined;
    const parsed = TaskRecordSchema.safeParse(entry.json());
    if (!parsed.success) throw new MeshError("task_unreadable", `task ${taskId} has an unreadable registry entry`);
    return { record: parsed.data, revision: entry.revision, key };
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
    try {
      const revision = await this.kv.update(current.key, JSON.stringify(next), current.revision);
      return { record: next, revision, key: current.key };
    } catch (err) {
      if (/wrong last sequence/i.test(String(err))) return undefined;
      throw err;
    }
  }

  /** Keys of tasks matching a filter such as `*.<instance>.*` (tasks assigned to an instance). */
  async keys(filter: string): Promise<string[]> {
    const out: string[] = [];
    for await (const k of await this.kv.keys(filter)) out.push(k);
    return out;
  }

  async getByKey(key: string): Promise<StoredTask | undefined> {
    const entry = await this.kv.get(key);
    if (entry === null || entry.operation !== "PUT") return undefined;
    const parsed = TaskRecordSchema.safeParse(entry.json());
    return parsed.success ? { record: parsed.data, revision: entry.revision, key } : undefined;
  }

  private async findKey(taskId: string): Promise<string | undefined> {
    const cached = this.keyCache.get(taskId);
    if (cached) return cached;
    const found = await this.keys(`*.*.${taskId}`);
    const key = found[0];
    if (key) this.keyCache.set(taskId, key);
    return key;
  }
}
