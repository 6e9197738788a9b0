/**
 * Idempotent spawn by task key (incident 002): the first delegation with a task key creates a
 * session for it; every later one, from any process, gets that same session back (`reused: true`)
 * while it is resumable. The task-key entry in `<prefix>_taskkeys` (key
 * `<instance>.<agent>.<sha-256 of the task key>`) is written by create-if-absent, so racing callers
 * agree on one winner. `forceNew` replaces the entry by compare-and-set.
 */
import { createHash, randomUUID } from "node:crypto";
import { parseSessionKey, sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { TaskKeyEntry } from "../wire/index.js";
import type { MeshServices } from "./services.js";

export interface TaskKeyRequest {
  readonly taskKey: string;
  readonly agent: string;
  readonly instance: string;
  readonly forceNew?: boolean;
  /** Use this session when a new one is needed (default: a fresh `agent:<agent>:subagent:<uuid>`). */
  readonly session?: SessionAddress;
}

export interface TaskKeyResolution {
  readonly session: SessionAddress;
  readonly taskId: string;
  readonly reused: boolean;
}

export function taskKeyEntryKey(r: Pick<TaskKeyRequest, "taskKey" | "agent" | "instance">): string {
  return `${r.instance}.${r.agent}.${createHash("sha256").update(r.taskKey).digest("hex").slice(0, 32)}`;
}

export async function resolveTaskKey(services: MeshServices, req: TaskKeyRequest): Promise<TaskKeyResolution> {
  const key = taskKeyEntryKey(req);
  let forceNew = req.forceNew === true;
  for (;;) {
    const current = await services.taskKeys.get(key);
    if (current && !forceNew) {
      const session = parseSessionKey(current.value.sessionKey, current.value.instance);
      const record = await services.sessions.get(session);
      if (!record || record.resumable) return { session, taskId: current.value.taskId, reused: true };
    }
    const session = req.session ?? parseSessionKey(`agent:${req.agent}:subagent:${randomUUID()}`, req.instance);
    const entry: TaskKeyEntry = { v: 1, taskKey: req.taskKey, sessionKey: sessionKeyOf(session), instance: session.instance, taskId: randomUUID(), createdAt: new Date().toISOString() };
    const written = current ? await services.taskKeys.replace(current, entry) : await services.taskKeys.create(key, entry);
    if (written) {
      await services.sessions.ensure(session, { taskKey: req.taskKey });
      return { session, taskId: entry.taskId, reused: false };
    }
    // Someone else won the race: use what they created.
    forceNew = false;
  }
}
