import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import { Mesh, meshTools, parseSessionKey } from "../src/index.js";
import { AmbiguousChannelError, UnknownChannelError } from "../src/registry/index.js";
import { Kinds, SessionRecordSchema } from "../src/wire/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { inspect, openMesh, uniquePrefix, removeTestStreams } from "./harness/mesh.js";
import { SessionProcess } from "./harness/child.js";

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

async function mesh(prefix: string, instance: string, extra: Partial<Parameters<typeof openMesh>[1]> = {}): Promise<Mesh> {
  const m = await openMesh(server, { prefix, instance, ...extra });
  cleanups.push(() => m.close());
  return m;
}
async function child(prefix: string, instance: string): Promise<SessionProcess> {
  const p = await SessionProcess.start({ url: server.url, prefix, instance });
  cleanups.push(() => p.sigkill());
  return p;
}
const tool = (name: string) => meshTools.find((t) => t.name === name)!;

describe("session registry: honest status (incident 002)", () => {
  it("lists a session whose last turn timed out as idle and resumable; a follow-up reaches it and it continues", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const worker = "agent:researcher:telegram:direct:42";
    const run1 = await m.sessions.open(worker);
    expect((await m.sessions.list({ agent: "researcher" }))[0]).toMatchObject({ lifecycle: "active", resumable: true });
    await run1.close({ outcome: "timeout", error: "model call exceeded 600 s" });

    const [row] = await m.sessions.list({ agent: "researcher" });
    expect(row).toMatchObject({ sessionKey: worker, owner: "gw1", lifecycle: "idle", resumable: true, lastTurn: { outcome: "timeout", error: "model call exceeded 600 s" } });
    expect(row!.task).toBeUndefined();

    const boss = await m.sessions.open("agent:boss:main");
    const listed = await tool("mesh_sessions").execute({ agentId: "researcher" }, { session: boss });
    expect(listed.text).toContain(`- ${worker} @gw1: idle, resumable, last turn timeout (model call exceeded 600 s)`);
    expect(listed.text).toContain("a last turn of timeout or error does not mean the session is gone");
    const sent = await boss.send({ to: parseSessionKey(worker, "gw1"), body: "please continue where you stopped" });

    const run2 = await m.sessions.open(worker);
    expect((await m.sessions.list({ agent: "researcher" }))[0]).toMatchObject({ lifecycle: "active", resumable: true });
    const batch = await run2.take();
    expect(batch.messages.map((x) => [x.id, x.body])).toEqual([[sent.id, "please continue where you stopped"]]);
    await batch.confirm();
    await run2.close({ outcome: "ok" });
    expect((await m.sessions.list({ agent: "researcher" }))[0]).toMatchObject({ lifecycle: "idle", lastTurn: { outcome: "ok" } });
    await boss.close();
  });

  it("sets the task field only by explicit declaration, never from a turn", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const boss = await m.sessions.open("agent:boss:main");
    const w = await m.sessions.open("agent:w:main");
    const t = await boss.delegate({ to: w.address, message: "x" });
    await w.close({ outcome: "error", error: "tool crashed" });
    expect((await m.sessions.list({ agent: "w" }))[0]!.task).toBeUndefined();
    const w2 = await m.sessions.open("agent:w:main");
    await w2.setTaskState(t.taskId, "working");
    expect((await m.sessions.list({ agent: "w" }))[0]).toMatchObject({ task: { state: "working", taskId: t.taskId }, lastTurn: { outcome: "error" } });
    await w2.complete({ taskId: t.taskId, state: "completed", result: "ok" });
    expect((await m.sessions.list({ agent: "w" }))[0]!.task).toMatchObject({ state: "completed" });
    await Promise.all([w2.close(), boss.close()]);
  });
});

describe("idempotent spawn by task key", () => {
  it("gives ten racing delegations with one task key, from two processes, one session and nine reuses", async () => {
    const prefix = uniquePrefix();
    await mesh(prefix, "gw1");
    const [p1, p2] = await Promise.all([child(prefix, "gw1"), child(prefix, "gw1")]);
    p1.send({ op: "open-run", sessionKey: "agent:orchestrator1:main" });
    p2.send({ op: "open-run", sessionKey: "agent:orchestrator2:main" });
    await Promise.all([p1.expect("run-open"), p2.expect("run-open")]);
    p1.send({ op: "delegate-key", taskKey: "april-billing-report", agent: "analyst", count: 5 });
    p2.send({ op: "delegate-key", taskKey: "april-billing-report", agent: "analyst", count: 5 });
    const outcomes = (await Promise.all([p1.expect("delegated"), p2.expect("delegated")])).flatMap((e) => e.outcomes);
    expect(outcomes).toHaveLength(10);
    expect(outcomes.filter((o) => !o.reused)).toHaveLength(1);
    expect(outcomes.filter((o) => o.reused)).toHaveLength(9);
    expect(new Set(outcomes.map((o) => o.sessionKey)).size).toBe(1);
    expect(new Set(outcomes.map((o) => o.taskId)).size).toBe(1);
    expect(outcomes[0]!.sessionKey).toMatch(/^agent:analyst:subagent:/);
  });

  it("starts a new session with forceNew, and after the old one closed", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    const boss = await m.sessions.open("agent:boss:main");
    const key = { key: "weekly-digest", agent: "writer", instance: "gw1" };
    const first = await boss.delegate({ message: "digest", taskKey: key });
    const again = await boss.delegate({ message: "digest", taskKey: key });
    expect(again).toMatchObject({ reused: true, taskId: first.taskId });
    const forced = await boss.delegate({ message: "digest", taskKey: { ...key, forceNew: true } });
    expect(forced.reused).toBe(false);
    expect(forced.assignee.session).not.toBe(first.assignee.session);
    await m.sessions.close(forced.assignee);
    const afterClose = await boss.delegate({ message: "digest", taskKey: key });
    expect(afterClose.reused).toBe(false);
    expect(afterClose.assignee.session).not.toBe(forced.assignee.session);
    await boss.close();
  });
});

describe("channel directory and cross-instance watches (incident 003)", () => {
  it("sends to discord:#product-chat served by another instance's process, and the watch notice arrives, also after the watcher's instance was down", async () => {
    const prefix = uniquePrefix();
    const leaderKey = "agent:leader:discord:channel:product-chat";
    const b = await child(prefix, "gw-b");
    b.send({ op: "bind", channel: "discord:#product-chat", sessionKey: leaderKey });
    await b.expect("bound");
    b.send({ op: "open-run", sessionKey: leaderKey });
    await b.expect("run-open");

    // Instance A, up: delegates by channel address and watches the task.
    let a = await mesh(prefix, "gw-a");
    let luna = await a.sessions.open("agent:luna:discord:channel:dispatch");
    const to = await a.channels.resolve("discord:#product-chat");
    expect(to).toMatchObject({ instance: "gw-b", agent: "leader" });
    const t1 = await luna.delegate({ to, message: "ship the pricing page" });
    const watched1 = await tool("mesh_watch").execute({ taskId: t1.taskId, events: ["completed", "failed"] }, { session: luna });
    expect(watched1.text).toContain(`Watching task ${t1.taskId} for completed/failed`);
    b.send({ op: "serve-once" });
    const served1 = await b.expect("served");
    expect(served1.messages).toEqual([{ kind: Kinds.taskRequest, taskId: t1.taskId, body: { taskId: t1.taskId, message: "ship the pricing page" } }]);
    const notices1 = await luna.await([{ taskId: t1.taskId }], { timeoutMs: 30_000 });
    expect(notices1.done[0]).toMatchObject({ state: "completed", result: "done: ship the pricing page" });
    const inbox1 = await luna.take();
    expect(inbox1.messages.map((x) => [x.kind, (x.body as { event?: string }).event])).toEqual([[Kinds.watchEvent, "completed"]]);
    await inbox1.confirm();

    // Second task; then A stops before B finishes it.
    const t2 = await luna.delegate({ to, message: "write the changelog" });
    await luna.services.watches.add(luna.address, { taskId: t2.taskId }, ["completed"]);
    await luna.close();
    await a.close();
    b.send({ op: "serve-once" });
    await b.expect("served");

    a = await mesh(prefix, "gw-a");
    luna = await a.sessions.open("agent:luna:discord:channel:dispatch");
    const arrived = await luna.take();
    expect(arrived.messages.map((x) => [x.kind, x.taskId])).toEqual([
      [Kinds.taskComplete, t2.taskId],
      [Kinds.watchEvent, t2.taskId],
    ]);
    expect(arrived.messages[1]!.body).toMatchObject({ event: "completed", result: "done: write the changelog", target: `task ${t2.taskId}` });
    await arrived.confirm();
    await luna.close();
  });

  it("names the candidates when a channel address is unknown or ambiguous", async () => {
    const prefix = uniquePrefix();
    const m = await mesh(prefix, "gw1");
    await m.channels.bind("discord:#product-chat", "agent:leader:discord:channel:product-chat");
    await m.channels.bind("discord:#product-chat", "agent:pm:discord:channel:product-chat");
    await m.channels.bind("telegram:-100123/topic/42", "agent:ops:telegram:group:-100123:topic:42");

    const unknown = await m.channels.resolve("discord:#product-chta").catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(UnknownChannelError);
    expect((unknown as Error).message).toBe("no session serves discord:#product-chta. Known channel addresses: discord:#product-chat.");

    const ambiguous = await m.channels.resolve("discord:#product-chat").catch((e: unknown) => e);
    expect(ambiguous).toBeInstanceOf(AmbiguousChannelError);
    expect((ambiguous as Error).message).toContain("agent:leader:discord:channel:product-chat @gw1 (agent leader)");
    expect((ambiguous as Error).message).toContain("agent:pm:discord:channel:product-chat @gw1 (agent pm)");
    expect((ambiguous as Error).message).toContain("Say which with agentId");
    expect(await m.channels.resolve("discord:#product-chat", { agent: "pm" })).toMatchObject({ agent: "pm", instance: "gw1" });
    expect(await m.channels.resolve("TELEGRAM:-100123/topic/42")).toMatchObject({ agent: "ops" });

    const boss = await m.sessions.open("agent:boss:main");
    const viaTool = await tool("mesh_send").execute({ channel: "discord:#product-chat", message: "hi" }, { session: boss });
    expect(viaTool).toMatchObject({ ok: false, details: { error: "ambiguous_channel" } });
    const wrongAgent = await tool("mesh_send").execute({ channel: "discord:#product-chat", agentId: "qa", message: "hi" }, { session: boss });
    expect(wrongAgent.text).toContain("no session serves discord:#product-chat for agent qa");
    expect(wrongAgent.text).toContain("discord:#product-chat -> agent leader @gw1");
    const ok = await tool("mesh_send").execute({ channel: "discord:#product-chat", agentId: "pm", message: "hi" }, { session: boss });
    expect(ok.text).toContain("delivered to the inbox of gw1/agent:pm:discord:channel:product-chat");
    await boss.close();
  });
});

describe("crashed instances", () => {
  it("moves a SIGKILLed instance's active session to idle (seen as a KV watch event), resumable, never closed", async () => {
    const prefix = uniquePrefix();
    // The janitor of the victim's own instance, in another process of it, notices.
    await mesh(prefix, "gw-b", { janitor: true, registry: { janitorIntervalMs: 100 } });
    const victimKey = "agent:leader:discord:channel:product-chat";
    const ins = await inspect(server, prefix);
    const kv = await new Kvm(ins.nc).open(ins.names.sessionBucket());
    const lifecycles: string[] = [];
    const key = ins.names.sessionRecordKey(parseSessionKey(victimKey, "gw-b"));
    const watch = await kv.watch({ key });
    const sawIdle = (async () => {
      for await (const e of watch) {
        if (e.operation !== "PUT") continue;
        const r = SessionRecordSchema.parse(e.json());
        lifecycles.push(r.lifecycle);
        expect(r.resumable).toBe(r.lifecycle !== "closed");
        if (r.lifecycle === "idle" && lifecycles.includes("active")) return r;
      }
      return undefined;
    })();

    const b = await child(prefix, "gw-b");
    b.send({ op: "open-run", sessionKey: victimKey });
    await b.expect("run-open");
    await b.sigkill();

    const idle = await sawIdle;
    watch.stop();
    expect(idle).toMatchObject({ lifecycle: "idle", resumable: true, lastTurn: { outcome: "interrupted" }, owner: "gw-b" });
    expect(lifecycles).not.toContain("closed");
    expect(lifecycles.slice(-2)).toEqual(["active", "idle"]);
  });
});
