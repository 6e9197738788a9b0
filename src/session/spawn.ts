/**
 * Idempotent spawn by task key (incident 002), in one place: the first delegation with a task key
 * creates a session for it; every later one from the same instance, in any process, gets that same session back
 * (`reused: true`) while it is resumable and its task is alive. The task-key entry in
 * `<prefix>_taskkeys` (key layout in `Names.taskKeyEntryKey`, which lowercases the agent) is
 * written by create-if-absent, so racing callers agree on one winner. Entries are the delegating
 * instance's own (the key starts with it; the broker lets no one else write there), so a
 * neighbour cannot point another instance's task key at a session of its choosing.
 *
 * Crash consistency: a delegation writes its task record (`delivered: false`) before the entry
 * that points at it, so an entry never names a task that was not created. An entry is reused only
 * when its task is alive: the record exists and its request was delivered. An entry whose record
 * is gone (phantom), whose session was closed, or `forceNew` is replaced by compare-and-set; one
 * whose request is still being sent is waited for (at most the delivery grace); one never
 * delivered after the grace is taken over (the request is sent again under the same task id).
 */
import { createHash, randomUUID } from "node:crypto";
import { parseSessionKey, sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { MeshConfig } from "../config.js";
import type { Names, Stored } from "../topology/index.js";
import type { TaskKeyEntry } from "../wire/index.js";
import type { MeshServices } from "./services.js";

/** The synthetic task id that stands for a child session started outside the mesh. */
export function childTaskId(child: SessionAddress): string {
  return `s-${createHash("sha256").update(`${child.instance}/${sessionKeyOf(child)}`).digest("hex").slice(0, 40)}`;
}

/**
 * Whether an entry's body agrees with its key: the key's first token is the delegating instance
 * (checked by the broker); the rest must be what the body names.
 */
export function taskKeyEntryAgrees(names: Names, key: string, e: TaskKeyEntry): boolean {
  try {
    const session = parseSessionKey(e.sessionKey, e.instance);
    return key === names.taskKeyEntryKey({ owner: key.split(".")[0]!, taskKey: e.taskKey, agent: session.agent, instance: e.instance });
  } catch {
    return false;
  }
}

/** What a task-key entry is good for. */
export type KeyVerdict =
  /** A live session with a live, delivered task: use it, create nothing. */
  | { readonly kind: "reuse"; readonly session: SessionAddress; readonly taskId: string }
  /** Its task's request is still being sent (within the grace): wait for it. */
  | { readonly kind: "sending"; readonly session: SessionAddress; readonly taskId: string }
  /** Its task was never delivered (past the grace): send it again under the same id. */
  | { readonly kind: "takeover"; readonly session: SessionAddress; readonly taskId: string }
  /** Replace the entry: a new task on `session` (its task record is gone), or on a new session (it was closed). */
  | { readonly kind: "replace"; readonly session?: SessionAddress };

const MAX_POLL_MS = 500;

export class TaskKeys {
  constructor(
    private readonly ctx: { readonly names: Names; readonly config: MeshConfig },
    private readonly services: MeshServices,
  ) {}

  /** The entry's key for a task key and agent of an instance, as this instance delegates it. */
  entryKey(r: { readonly taskKey: string; readonly agent: string; readonly instance: string }): string {
    return this.ctx.names.taskKeyEntryKey({ ...r, owner: this.ctx.config.instance });
  }

  entry(key: string): Promise<Stored<TaskKeyEntry> | undefined> {
    return this.services.taskKeys.get(key);
  }

  /** A fresh session for an agent's task key work. */
  newSession(agent: string, instance: string): SessionAddress {
    return parseSessionKey(`agent:${agent.toLowerCase()}:subagent:${randomUUID()}`, instance);
  }

  private async sessionLive(session: SessionAddress): Promise<boolean> {
    const record = await this.services.sessions.get(session);
    return !record || record.resumable;
  }

  /** What an entry is good for now (one read of the session and the task). */
  async judge(entry: Stored<TaskKeyEntry>): Promise<KeyVerdict> {
    const session = parseSessionKey(entry.value.sessionKey, entry.value.instance);
    if (!(await this.sessionLive(session))) return { kind: "replace" };
    const taskId = entry.value.taskId;
    // A child session a host spawned and claimed: the session is the work, there is no request.
    if (taskId === childTaskId(session)) return { kind: "reuse", session, taskId };
    const task = await this.services.tasks.get(taskId, { as: "requester", peer: session.instance });
    if (!task) return { kind: "replace", session };
    const delivery = this.services.tasks.delivery(task.record);
    if (delivery === "delivered") return { kind: "reuse", session, taskId };
    return { kind: delivery === "sending" ? "sending" : "takeover", session, taskId };
  }

  /**
   * Like `judge`, but waits while the entry's request is being sent by another delegation (until it
   * is delivered or its grace is over), so the answer is reuse, takeover or replace.
   */
  async settle(entry: Stored<TaskKeyEntry>, signal?: AbortSignal): Promise<Exclude<KeyVerdict, { kind: "sending" }>> {
    for (let pollMs = 25; ; pollMs = Math.min(MAX_POLL_MS, pollMs * 2)) {
      const v = await this.judge(entry);
      if (v.kind !== "sending") return v;
      signal?.throwIfAborted();
      // Nothing announces a record's change without a server consumer: read it again shortly.
      const task = await this.services.tasks.get(v.taskId, { as: "requester", peer: v.session.instance });
      const left = task ? this.services.tasks.graceLeftMs(task.record) : 0;
      await new Promise((r) => setTimeout(r, Math.max(1, Math.min(pollMs, left))));
    }
  }

  /** The live session already working on a task key for an agent, if any. */
  async sessionFor(taskKey: string, agent: string, instance: string): Promise<SessionAddress | undefined> {
    const entry = await this.entry(this.entryKey({ taskKey, agent, instance }));
    if (!entry) return undefined;
    const v = await this.judge(entry);
    return v.kind === "reuse" || v.kind === "sending" ? v.session : undefined;
  }

  /** Record that `session` (e.g. a child a host spawned) works on `taskKey`; false if another live one already does. */
  async claim(taskKey: string, session: SessionAddress): Promise<boolean> {
    const key = this.entryKey({ taskKey, agent: session.agent, instance: session.instance });
    for (;;) {
      const current = await this.entry(key);
      if (current) {
        const v = await this.judge(current);
        if (v.kind === "reuse" || v.kind === "sending") return sessionKeyOf(v.session) === sessionKeyOf(session);
      }
      if (await this.write(key, current, session, taskKey, childTaskId(session))) return true;
    }
  }

  /**
   * Point the entry at `taskId` on `session`: create-if-absent, or compare-and-set over `current`.
   * Undefined when another writer got there first. The task record must exist already.
   */
  async write(key: string, current: Stored<TaskKeyEntry> | undefined, session: SessionAddress, taskKey: string, taskId: string): Promise<Stored<TaskKeyEntry> | undefined> {
    const entry: TaskKeyEntry = { v: 1, taskKey, sessionKey: sessionKeyOf(session), instance: session.instance, taskId, createdAt: new Date().toISOString() };
    const written = current ? await this.services.taskKeys.replace(current, entry) : await this.services.taskKeys.create(key, entry);
    if (!written) return undefined;
    await this.services.sessions.ensure(session, { taskKey });
    return written;
  }

  /** Remove an entry this process wrote, at the revision it wrote (a delegation that was refused). */
  async remove(written: Stored<TaskKeyEntry>): Promise<boolean> {
    return this.services.taskKeys.delete(written.key, written.revision);
  }
}
