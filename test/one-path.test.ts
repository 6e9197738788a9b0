/**
 * Each rule lives in one place, so every caller gets the same behaviour: finishing a task by any
 * path, task keys by any spelling of the agent, records the code cannot read.
 */
import { describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import { UnreadableRecordError, type InboxMessage } from "../src/index.js";
import { Kinds, ReservedIds } from "../src/wire/index.js";
import { childTaskId } from "../src/session/index.js";
import { inspect, uniquePrefix } from "./harness/mesh.js";
import { useServer } from "./harness/suite.js";

const suite = useServer();
const mesh = (prefix: string) => suite.mesh(prefix);

const completion = (messages: readonly InboxMessage[]) => messages.filter((m) => m.kind === Kinds.taskComplete).map((m) => ({ action: m.envelope.action, body: m.body }));

describe("one task-finishing path", () => {
  it("turns a child session's trailing REPLY_SKIP into action skip with the token stripped, as a session's own complete does", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const parent = await m.sessions.open("agent:boss:main");
    await m.tasks.finishChild({ parent: "agent:boss:main", child: "agent:boss:subagent:c1", state: "completed", result: "Done. REPLY_SKIP" });

    const worker = await m.sessions.open("agent:worker:main");
    const t = await parent.delegate({ to: worker.address, message: "x" });
    await worker.complete({ taskId: t.taskId, state: "completed", result: "Done. REPLY_SKIP" });
    await worker.close();

    // Both are skips: recorded, stripped, and never shown to the parent's model.
    for (const taskId of [childTaskId(m.address("agent:boss:subagent:c1")), t.taskId]) {
      expect(await m.tasks.get(taskId)).toMatchObject({ action: "skip", result: "Done." });
    }
    const batch = await parent.take();
    expect(completion(batch.messages)).toEqual([]);
    for (const taskId of [childTaskId(m.address("agent:boss:subagent:c1")), t.taskId]) expect(parent.inbox.surfaced("gw1", ReservedIds.taskComplete(taskId))).toBe(true);
    await parent.close();
  });

  it("refuses mesh.tasks.finish from a session that is not the assignee, and from another instance", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const boss = await m.sessions.open("agent:boss:main");
    const t = await boss.delegate({ to: m.address("agent:worker:main"), message: "x" });
    await expect(m.tasks.finish({ taskId: t.taskId, by: "agent:intruder:main", state: "completed", result: "mine" })).rejects.toMatchObject({ code: "not_assignee" });
    await expect(m.tasks.finish({ taskId: t.taskId, by: { sessionKey: "agent:worker:main", instance: "gw2" }, state: "completed", result: "x" })).rejects.toMatchObject({ code: "invalid_address" });
    expect(await m.tasks.get(t.taskId)).toMatchObject({ state: "submitted" });
    await boss.close();
  });
});

describe("finishing from a known version", () => {
  it("re-reads after a stale version and refuses a finisher that is no longer the assignee, leaving the record as it is", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const other = await suite.mesh(prefix);
    const boss = await m.sessions.open("agent:boss:main");
    const first = m.address("agent:first:main");
    const t = await boss.delegate({ to: first, message: "x" });
    // Another process of the instance moves the task to another session (as a takeover would):
    // this process still holds the old version, which names `first`.
    const services = await other.sessions.open("agent:ops:main").then((s) => s.services);
    const current = (await services.tasks.get(t.taskId, { as: "requester" }))!;
    await services.tasks.replace(current, { ...current.record, assignee: m.address("agent:second:main") });
    await expect(m.tasks.finish({ taskId: t.taskId, by: "agent:first:main", state: "completed", result: "late" })).rejects.toMatchObject({ code: "not_assignee" });
    expect(await other.tasks.get(t.taskId)).toMatchObject({ state: "submitted", assignee: { agent: "second" } });
    await boss.close();
  });
});

describe("one task-key rule", () => {
  it("finds a task key created for agent 'Analyst' when asked for 'analyst' or 'ANALYST'", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const boss = await m.sessions.open("agent:boss:main");
    const first = await boss.delegate({ message: "report", taskKey: { key: "april-report", agent: "Analyst", instance: "gw1" } });
    expect(first.reused).toBe(false);
    expect(await m.tasks.sessionForKey("april-report", "analyst")).toMatchObject({ agent: "analyst", session: first.assignee.session });
    expect(await m.tasks.sessionForKey("april-report", "ANALYST")).toMatchObject({ session: first.assignee.session });
    const again = await boss.delegate({ message: "report", taskKey: { key: "april-report", agent: "analyst", instance: "gw1" } });
    expect(again).toMatchObject({ reused: true, taskId: first.taskId });
    await boss.close();
  });
});

describe("records the code cannot read", () => {
  it("reports an unreadable task record with a typed error after one read, and leaves it unchanged", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const boss = await m.sessions.open("agent:boss:main");
    const t = await boss.delegate({ to: m.address("agent:worker:main"), message: "x" });
    const ins = await inspect(suite.server, prefix);
    const kv = await new Kvm(ins.nc).open(ins.names.taskBucket());
    const key = ins.names.taskRecordKey({ requester: { instance: "gw1" }, assignee: { instance: "gw1" }, taskId: t.taskId });
    // A record from a later schema version.
    const revision = await kv.put(key, JSON.stringify({ v: 2, taskId: t.taskId, shape: "unknown to this version" }));
    let reads = 0;
    const sub = ins.nc.subscribe(`$JS.API.DIRECT.GET.KV_${ins.names.taskBucket()}.>`, { callback: () => void reads++ });
    const subMsg = ins.nc.subscribe(`$JS.API.STREAM.MSG.GET.KV_${ins.names.taskBucket()}`, { callback: () => void reads++ });
    await ins.nc.flush();

    const err = await m.tasks.finish({ taskId: t.taskId, by: "agent:worker:main", state: "completed", result: "x" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnreadableRecordError);
    expect((err as UnreadableRecordError).code).toBe("record_unreadable");
    await ins.nc.flush();
    expect(reads).toBeGreaterThanOrEqual(1);
    expect(reads).toBeLessThanOrEqual(2);
    expect((await kv.get(key))?.revision).toBe(revision);
    sub.unsubscribe();
    subMsg.unsubscribe();
    await boss.close();
  });
});

describe("watches by id", () => {
  it("removes a session's own task or session watch by its id, and nobody else's", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix);
    const owner = await m.sessions.open("agent:owner:main");
    const other = await m.sessions.open("agent:other:main");
    const task = await owner.delegate({ to: m.address("agent:worker:main"), message: "x" });
    const onTask = await owner.services.watches.add(owner.address, { taskId: task.taskId }, ["completed"]);
    const onSession = await owner.services.watches.add(owner.address, { session: m.address("agent:worker:main") }, ["closed"]);
    expect(await other.services.watches.remove(other.address, onTask.watchId)).toBe(false);
    expect(await owner.services.watches.remove(owner.address, onSession.watchId)).toBe(true);
    expect(await owner.services.watches.remove(owner.address, onSession.watchId)).toBe(false);
    expect((await owner.services.watches.list(owner.address)).map((w) => w.watchId)).toEqual([onTask.watchId]);
    expect(await owner.services.watches.remove(owner.address, onTask.watchId)).toBe(true);
    expect(await owner.services.watches.remove(owner.address, "not.a*token")).toBe(false);
    await owner.close();
    await other.close();
  });
});
