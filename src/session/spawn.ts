/**
 * Idempotent spawn by task key (incident 002), in one place: the first delegation with a task key
 * creates a session for it; every later one, from any process, gets that same session back
 * (`reused: true`) while it is resumable. The task-key entry in `<prefix>_taskkeys` (key layout in
 * `Names.taskKeyEntryKey`, which lowercases the agent) is written by create-if-absent, so racing
 * callers agree on one winner. `forceNew`, or a session that was closed, replaces the entry by
 * compare-and-set.
 */
import { createHash, randomUUID } from "node:crypto";
import { parseSessionKey, sessionKeyOf, type SessionAddress } from "../address/index.js";
import type { Names, Stored } from "../topology/index.js";
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

/** The synthetic task id that stands for a child session started outside the mesh. */
export function childTaskId(child: SessionAddress): string {
  return `s-${createHash("sha256").update(`${child.instance}/${sessionKeyOf(child)}`).digest("hex").slice(0, 40)}`;
}

export class TaskKeys {
  constructor(
    private readonly names: Names,
    private readonly services: MeshServices,
  ) {}

  /** The session an entry names, if that session can still take work (a closed one cannot). */
  private async live(entry: Stored<TaskKeyEntry>): Promise<SessionAddress | undefined> {
    const session = parseSessionKey(entry.value.sessionKey, entry.value.instance);
    const record = await this.services.sessions.get(session);
    return !record || record.resumable ? session : undefined;
  }

  /** The live session already working on a task key for an agent, if any. */
  async sessionFor(taskKey: string, agent: string, instance: string): Promise<SessionAddress | undefined> {
    const entry = await this.services.taskKeys.get(this.names.taskKeyEntryKey({ taskKey, agent, instance }));
    return entry && this.live(entry);
  }

  /** The session for a task key: the live one that has it, or a new one recorded as having it. */
  async resolve(req: TaskKeyRequest): Promise<TaskKeyResolution> {
    const key = this.names.taskKeyEntryKey(req);
    let forceNew = req.forceNew === true;
    for (;;) {
      const current = await this.services.taskKeys.get(key);
      if (current && !forceNew) {
        const session = await this.live(current);
        if (session) return { session, taskId: current.value.taskId, reused: true };
      }
      const session = req.session ?? parseSessionKey(`agent:${req.agent.toLowerCase()}:subagent:${randomUUID()}`, req.instance);
      const written = await this.write(key, current, session, req.taskKey, randomUUID());
      if (written) return { session, taskId: written.taskId, reused: false };
      // Someone else won the race: use what they created.
      forceNew = false;
    }
  }

  /** Record that `session` (e.g. a child a host spawned) works on `taskKey`; false if another live one already does. */
  async claim(taskKey: string, session: SessionAddress): Promise<boolean> {
    const key = this.names.taskKeyEntryKey({ taskKey, agent: session.agent, instance: session.instance });
    for (;;) {
      const current = await this.services.taskKeys.get(key);
      if (current && (await this.live(current)) !== undefined) return sessionKeyOf(parseSessionKey(current.value.sessionKey, current.value.instance)) === sessionKeyOf(session);
      if (await this.write(key, current, session, taskKey, childTaskId(session))) return true;
    }
  }

  private async write(key: string, current: Stored<TaskKeyEntry> | undefined, session: SessionAddress, taskKey: string, taskId: string): Promise<TaskKeyEntry | undefined> {
    const entry: TaskKeyEntry = { v: 1, taskKey, sessionKey: sessionKeyOf(session), instance: session.instance, taskId, createdAt: new Date().toISOString() };
    const written = current ? await this.services.taskKeys.replace(current, entry) : await this.services.taskKeys.create(key, entry);
    if (!written) return undefined;
    await this.services.sessions.ensure(session, { taskKey });
    return entry;
  }
}
