import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Mesh, parseSessionKey } from "../src/index.js";
import { Kinds } from "../src/wire/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { inspect, openMesh, uniquePrefix, removeTestStreams } from "./harness/mesh.js";
import { Latch, scriptedAgent, type ScriptedAgent } from "./harness/agents.js";
import { until } from "./harness/wait.js";

let server: TestServer;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await removeTestStreams(server);
  await server.dispose();
});

async function mesh(prefix: string, instance: string): Promise<Mesh> {
  const m = await openMesh(server, { prefix, instance });
  cleanups.push(() => m.close());
  return m;
}
async function agent(...args: Parameters<typeof scriptedAgent>): Promise<ScriptedAgent> {
  const a = await scriptedAgent(...args);
  cleanups.push(() => a.stop());
  return a;
}

/** Count of stored task.complete events on a session's inbox subjects. */
async function storedCompletions(prefix: string, instance: string, sessionKey: string): Promise<number> {
  const ins = await inspect(server, prefix);
  const address = parseSessionKey(sessionKey, instance);
  return ins.storedInbox(instance, ins.names.inboxSubject(address, "*", Kinds.taskComplete).replace(/\.\*\./, ".*."));
}

describe("independent sends and pingbacks (incident 000)", () => {
  it("returns a fast callee's result while a slow sibling is held, and shows the slow pingback once in the caller's next run", async () => {
    const prefix = uniquePrefix();
    const ops = await mesh(prefix, "gw-ops");
    const tg = await mesh(prefix, "gw-tg");
    const slowGate = new Latch();
    await agent(tg, "agent:re-portal:telegram:direct:8035547811", async () => ({ state: "completed", result: { occupancy: 0.93 } }));
    const slow = await agent(tg, "agent:web-research:telegram:direct:8035547811", async () => {
      await slowGate.opened;
      return { state: "completed", result: { ordinance: "found" } };
    });

    const caller = "agent:leasing-ops:cron:8babbec2:run:e08e19ff";
    const run1 = await ops.sessions.open(caller);
    const fastP = run1.delegate({ to: parseSessionKey("agent:re-portal:telegram:direct:8035547811", "gw-tg"), message: "April occupancy", waitMs: 30_000 });
    const slowP = run1.delegate({ to: parseSessionKey("agent:web-research:telegram:direct:8035547811", "gw-tg"), message: "municode lookup", waitMs: 30_000 });

    // The fast result arrives inline while the slow sibling is still held on its latch.
    const fast = await fastP;
    expect(fast.finished).toMatchObject({ state: "completed", result: { occupancy: 0.93 }, surfaced: "await" });

    // The caller's run ends before the slow pingback exists: its wait ends, nothing is lost.
    await run1.close();
    const slowAtRunEnd = await slowP;
    expect(slowAtRunEnd.finished).toBeUndefined();

    slowGate.open();
    await slow.nextFinish();

    const run2 = await ops.sessions.open("agent:leasing-ops:cron:8babbec2:run:f19a2b00");
    const batch = await run2.take();
    expect(batch.messages.map((m) => [m.kind, m.taskId])).toEqual([[Kinds.taskComplete, slowAtRunEnd.taskId]]);
    expect(batch.messages[0]!.body).toMatchObject({ state: "completed", result: { ordinance: "found" } });
    await batch.confirm();
    expect((await run2.take()).messages).toEqual([]);
    await run2.close();
  });

  it("resolves parallel sends with inline replies on their own correlation ids", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const gate = new Latch();
    // Two responders answer plain messages; the second only when the test opens its gate.
    const responders = ["agent:fast:main", "agent:slow:main"].map(async (key, i) => {
      const s = await m.sessions.open(key);
      cleanups.push(() => s.close());
      const arrival = s.nextArrival();
      let batch = await s.take();
      if (batch.messages.length === 0) {
        await arrival;
        batch = await s.take();
      }
      await batch.confirm();
      if (i === 1) await gate.opened;
      for (const msg of batch.messages) await s.reply(msg, { echo: msg.body });
    });
    const caller = await m.sessions.open("agent:caller:main");
    const toFast = caller.send({ to: parseSessionKey("agent:fast:main", "gw1"), body: "ping fast", waitMs: 30_000 });
    const toSlow = caller.send({ to: parseSessionKey("agent:slow:main", "gw1"), body: "ping slow", waitMs: 30_000 });
    expect(await toFast).toMatchObject({ status: "replied", reply: { echo: "ping fast" } });
    gate.open();
    expect(await toSlow).toMatchObject({ status: "replied", reply: { echo: "ping slow" } });
    await Promise.all(responders);
    // Replies returned inline are not shown again by the inbox.
    expect((await caller.take()).messages).toEqual([]);
    await caller.close();
  });

  it("returns at once when the wait ends first, and the reply lands in the caller's inbox later", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const caller = await m.sessions.open("agent:caller:main");
    const out = await caller.send({ to: parseSessionKey("agent:quiet:main", "gw1"), body: "anyone?", waitMs: 1 });
    expect(out.status).toBe("sent");
    const quiet = await m.sessions.open("agent:quiet:main");
    const batch = await quiet.take();
    await quiet.reply(batch.messages[0]!, "late answer");
    await batch.confirm();
    await quiet.close();
    const arrived = await caller.take();
    expect(arrived.messages.map((x) => [x.kind, x.correlationId, x.body])).toEqual([[Kinds.reply, out.id, "late answer"]]);
    await arrived.confirm();
    await caller.close();
  });
});

describe("run boundaries", () => {
  it("returns a pingback that landed mid-run at the next boundary, while the run is still going", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const run = await m.sessions.open("agent:caller:main");
    expect((await run.take()).messages).toEqual([]); // run start: nothing yet
    const worker = await agent(m, "agent:w:main", async () => ({ state: "completed", result: "mid-run result" }));
    const t = await run.delegate({ to: parseSessionKey("agent:w:main", "gw1"), message: "go" });
    await worker.nextFinish();
    // After the next tool result, the host calls the boundary again: the pingback is there.
    const boundary = await run.take();
    expect(boundary.messages.map((x) => [x.kind, x.taskId, (x.body as { result: unknown }).result])).toEqual([[Kinds.taskComplete, t.taskId, "mid-run result"]]);
    await boundary.confirm();
    expect((await run.take()).messages).toEqual([]);
    await run.close();
  });
});

describe("await (incident 001)", () => {
  it("stores five completions while the parent is blocked, then returns all five from await and never shows them again", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const parentKey = "agent:arcimun:main";
    const parent = await m.sessions.open(parentKey);
    const children = await Promise.all([1, 2, 3, 4, 5].map((i) => agent(m, `agent:worker${i}:main`, async (req) => ({ state: "completed", result: `done ${req.message}` }))));
    const delegated = await Promise.all(children.map((_, i) => parent.delegate({ to: parseSessionKey(`agent:worker${i + 1}:main`, "gw1"), message: `part ${i + 1}` })));

    // The parent is "inside a long tool call": it does nothing until every child has finished.
    await Promise.all(children.map((c) => c.nextFinish()));
    expect(await storedCompletions(prefix, "gw1", parentKey)).toBe(5);

    const r = await parent.await(delegated.map((d) => ({ taskId: d.taskId })), { mode: "all", timeoutMs: 30_000 });
    expect(r.timedOut).toBe(false);
    expect(r.done.map((d) => d.taskId).sort()).toEqual(delegated.map((d) => d.taskId).sort());
    expect(r.done.every((d) => d.surfaced === "await" && d.state === "completed")).toBe(true);
    expect((await parent.take()).messages).toEqual([]);
    await parent.close();
  });

  it("returns what is done plus each pending item's state on timeout, and leaves the pending ones to the inbox", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const parent = await m.sessions.open("agent:boss:main");
    const gate = new Latch();
    await agent(m, "agent:quick:main", async () => ({ state: "completed", result: "quick" }));
    await agent(m, "agent:busy:main", async (req, s) => {
      await s.setTaskState(req.taskId, "working");
      await gate.opened;
      return { state: "completed", result: "busy" };
    });
    const quick = await parent.delegate({ to: parseSessionKey("agent:quick:main", "gw1"), message: "q", waitMs: 30_000 });
    expect(quick.finished?.state).toBe("completed");
    const busy = await parent.delegate({ to: parseSessionKey("agent:busy:main", "gw1"), message: "b" });
    const idle = await parent.delegate({ to: parseSessionKey("agent:nobody-home:main", "gw1"), message: "i" });
    // Wait on the event: the busy agent declares itself working.
    await until(async () => ((await m.tasks.get(busy.taskId))?.state === "working" ? true : undefined), "the busy agent to declare itself working");

    const r = await parent.await([{ taskId: quick.taskId }, { taskId: busy.taskId }, { taskId: idle.taskId }], { mode: "all", timeoutMs: 500 });
    expect(r.timedOut).toBe(true);
    expect(r.done.map((d) => [d.taskId, d.surfaced])).toEqual([[quick.taskId, "earlier"]]);
    expect(r.pending).toEqual([
      { taskId: busy.taskId, state: "working", assignee: "agent:busy:main" },
      { taskId: idle.taskId, state: "submitted", assignee: "agent:nobody-home:main" },
    ]);

    gate.open();
    const late = await parent.await([{ taskId: busy.taskId }], { timeoutMs: 30_000 });
    expect(late.done[0]).toMatchObject({ taskId: busy.taskId, result: "busy", surfaced: "await" });
    // Nothing returned by an await is shown by the inbox; the idle task's request is still out.
    expect((await parent.take()).messages).toEqual([]);
    await parent.close();
  });

  it("returns at once for a task completed before the await began", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const parent = await m.sessions.open("agent:boss:main");
    const worker = await agent(m, "agent:w:main", async () => ({ state: "failed", error: "no data for April" }));
    const t = await parent.delegate({ to: parseSessionKey("agent:w:main", "gw1"), message: "x" });
    await worker.nextFinish();
    const r = await parent.await([{ taskId: t.taskId }], { timeoutMs: 60_000 });
    expect(r).toMatchObject({ timedOut: false, pending: [], done: [{ taskId: t.taskId, state: "failed", error: "no data for April", surfaced: "await" }] });
    expect((await parent.take()).messages).toEqual([]);
    await parent.close();
  });

  it("learns of a decision from its registry write, before the assignee has stored the completion event", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const parent = await m.sessions.open("agent:boss:main");
    const worker = await m.sessions.open("agent:w:main");
    const t = await parent.delegate({ to: worker.address, message: "x" });
    const waiting = parent.await([{ taskId: t.taskId }], { timeoutMs: 30_000 });
    // The first await of a process starts the feed of its instance's requested tasks.
    expect(await parent.services.tasks.feedReady()).toBe(true);
    const eventHeld = new Latch();
    const finishing = worker.complete({ taskId: t.taskId, state: "completed", result: "early" }, { afterDecision: () => eventHeld.opened });
    const r = await waiting;
    expect(r.done).toEqual([{ taskId: t.taskId, state: "completed", result: "early", assignee: "agent:w:main", surfaced: "await" }]);
    // Returned while the assignee still holds its task.complete event back.
    expect(await storedCompletions(prefix, "gw1", "agent:boss:main")).toBe(0);
    eventHeld.open();
    expect((await finishing).notification).toBe("delivered");
    expect(await storedCompletions(prefix, "gw1", "agent:boss:main")).toBe(1);
    // Claimed by the await: the inbox never shows it.
    expect((await parent.take()).messages).toEqual([]);
    await Promise.all([parent.close(), worker.close()]);
  });

  it("awaits a child session started outside the mesh by its key, completed by the event its host publishes", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const parent = await m.sessions.open("agent:main:main");
    const childKey = "agent:main:subagent:3f2a9c";
    await m.tasks.registerChild({ parent: "agent:main:main", child: childKey, title: "analyze file A" });
    const { childTaskId } = await import("../src/session/index.js");
    const taskId = childTaskId(parseSessionKey(childKey, "gw1"));
    const results: string[] = [];
    const waiting = parent.await([{ taskId, sessionKey: childKey }], { timeoutMs: 30_000, onResult: (i) => results.push(i.taskId) });
    const out = await m.tasks.finishChild({ parent: "agent:main:main", child: childKey, state: "completed", result: "file A: 3 issues" });
    expect(out.outcome).toBe("finished");
    const r = await waiting;
    expect(r.done).toEqual([{ taskId, sessionKey: childKey, state: "completed", result: "file A: 3 issues", assignee: childKey, surfaced: "await" }]);
    expect(results).toEqual([taskId]);
    expect((await parent.take()).messages).toEqual([]);
    await parent.close();
  });
});

describe("finishing a task", () => {
  it("lets exactly one of two processes finish a task; the other is told, and the requester gets the winner's result once", async () => {
    const { SessionProcess } = await import("./harness/child.js");
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const requester = await m.sessions.open("agent:boss:main");
    const t = await requester.delegate({ to: parseSessionKey("agent:worker:main", "gw1"), message: "x" });
    const procs = await Promise.all([0, 1].map(() => SessionProcess.start({ url: server.url, prefix, instance: "gw1" })));
    cleanups.push(() => Promise.all(procs.map((p) => p.sigkill())));
    procs.forEach((p, i) => p.send({ op: "finish-task", taskId: t.taskId, by: "agent:worker:main", result: `writer ${i}` }));
    const outcomes = await Promise.all(procs.map((p) => p.expect("finished")));
    expect(outcomes.map((o) => o.outcome).sort()).toEqual(["conflict", "finished"]);
    const winner = outcomes.find((o) => o.outcome === "finished")!;
    expect(outcomes.find((o) => o.outcome === "conflict")!.winner).toEqual(winner.winner);

    const batch = await requester.take();
    expect(batch.messages.map((x) => [x.kind, x.taskId, (x.body as { result: unknown }).result])).toEqual([[Kinds.taskComplete, t.taskId, winner.winner]]);
    await batch.confirm();
    const again = await m.tasks.finish({ taskId: t.taskId, by: "agent:worker:main", state: "completed", result: winner.winner as string });
    expect(again.outcome).toBe("already");
    expect((await requester.take()).messages).toEqual([]);
    await requester.close();
  });

  it("leaves no orphan when the finisher is killed between the registry write and the event, once recovery runs", async () => {
    const { SessionProcess } = await import("./harness/child.js");
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const requester = await m.sessions.open("agent:boss:main");
    const t = await requester.delegate({ to: parseSessionKey("agent:worker:main", "gw1"), message: "x" });

    const doomed = await SessionProcess.start({ url: server.url, prefix, instance: "gw1" });
    doomed.send({ op: "finish-task", taskId: t.taskId, by: "agent:worker:main", result: "the answer", hangAfterDecision: true });
    await doomed.expect("decided");
    await doomed.sigkill();

    expect(await m.tasks.get(t.taskId)).toMatchObject({ state: "completed", notified: false });
    expect(await storedCompletions(prefix, "gw1", "agent:boss:main")).toBe(0);

    const recovering = await SessionProcess.start({ url: server.url, prefix, instance: "gw1" });
    recovering.send({ op: "recover-tasks" });
    expect((await recovering.expect("recovered")).taskIds).toEqual([]); // the recovery its connect started already repaired it
    await recovering.close();
    expect(await m.tasks.get(t.taskId)).toMatchObject({ state: "completed", notified: true });
    expect(await m.tasks.recover()).toEqual([]);

    const batch = await requester.take();
    expect(batch.messages.map((x) => [x.taskId, (x.body as { result: unknown }).result])).toEqual([[t.taskId, "the answer"]]);
    await batch.confirm();
    expect(await storedCompletions(prefix, "gw1", "agent:boss:main")).toBe(1);
    await requester.close();
  });

  it("refuses a finish from a session the task is not assigned to", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const requester = await m.sessions.open("agent:boss:main");
    const t = await requester.delegate({ to: parseSessionKey("agent:worker:main", "gw1"), message: "x" });
    await expect(m.tasks.finish({ taskId: t.taskId, by: "agent:intruder:main", state: "completed" })).rejects.toThrow(/assigned to agent:worker:main, not to agent:intruder:main/);
    await requester.close();
  });
});
