import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { meshTools, type Mesh, type MeshTool, type ToolContext } from "../src/index.js";
import { startTestServer, type TestServer } from "./harness/server.js";
import { openMesh, uniquePrefix, removeTestStreams } from "./harness/mesh.js";

let server: TestServer;
let mesh: Mesh;
const contexts: ToolContext[] = [];

beforeAll(async () => {
  server = await startTestServer();
  mesh = await openMesh(server, { prefix: uniquePrefix(), instance: "gw1" });
});
afterAll(async () => {
  for (const c of contexts) await c.session.close();
  await mesh.close();
  await removeTestStreams(server);
  await server.dispose();
});

const tool = (name: string): MeshTool => meshTools.find((t) => t.name === name)!;

async function as(sessionKey: string): Promise<ToolContext> {
  const ctx = { session: await mesh.sessions.open(sessionKey) };
  contexts.push(ctx);
  return ctx;
}

describe("tool adapter", () => {
  it("publishes JSON Schema parameters generated from the zod schemas, with OpenClaw's names", () => {
    expect(meshTools.map((t) => t.name)).toEqual(["mesh_send", "mesh_delegate", "mesh_complete", "mesh_await", "mesh_inbox", "mesh_sessions", "mesh_watch"]);
    const send = tool("mesh_send").parameters as { type: string; properties: Record<string, { type: string }>; required: string[] };
    expect(send.type).toBe("object");
    expect(Object.keys(send.properties)).toEqual(["sessionKey", "channel", "agentId", "instance", "message", "replyTo", "timeoutSeconds", "announceTarget", "announceThreadId"]);
    const complete = tool("mesh_complete").parameters as { properties: Record<string, { enum?: string[]; description?: string }> };
    expect(complete.properties.action!.enum).toEqual(["reply", "skip", "announce"]);
    expect(complete.properties.announceTarget!.description).toContain("channel policy");
    expect(send.required).toEqual(["message"]);
    expect((tool("mesh_complete").parameters as { properties: Record<string, { enum?: string[] }> }).properties.status!.enum).toEqual(["completed", "failed"]);
  });

  it.each([
    ["mesh_send", { message: "hi" }, "`sessionKey`: give sessionKey, channel or agentId"],
    ["mesh_send", { sessionKey: "agent:b:main", channel: "discord:#x", message: "hi" }, "`channel`: give sessionKey or channel, not both"],
    ["mesh_delegate", { taskKey: "k", message: "do it" }, "`sessionKey`: give sessionKey, channel or agentId"],
    ["mesh_delegate", { channel: "discord:#x", taskKey: "k", message: "do it" }, "`agentId`: a taskKey needs agentId"],
    ["mesh_sessions", { lifecycle: "dead" }, "`lifecycle`:"],
    ["mesh_watch", { events: ["completed"] }, "`sessionKey`: add needs exactly one of sessionKey or taskId"],
    ["mesh_watch", { action: "remove" }, "`watchId`: remove needs watchId"],
    ["mesh_send", { sessionKey: "agent:b:main" }, "`message`:"],
    ["mesh_send", { sessionKey: "agent:b:main", message: "hi", timeoutSeconds: -5 }, "`timeoutSeconds`:"],
    ["mesh_send", { sessionKey: "agent:b:main", message: "hi", mode: "steer" }, "Unrecognized key"],
    ["mesh_send", { sessionKey: "agent:b:main", message: 42 }, "`message`: Invalid input: expected string"],
    ["mesh_delegate", { agentId: "b", message: "do it", taskId: "has space" }, "`taskId`:"],
    ["mesh_complete", { taskId: "t1", status: "done" }, "`status`:"],
    ["mesh_complete", { taskId: "t1", status: "completed" }, "`result`: a completed task needs a result"],
    ["mesh_complete", { taskId: "t1", status: "failed" }, "`error`: a failed task needs an error"],
    ["mesh_await", {}, "`taskIds`: give at least one task id or session key"],
    ["mesh_await", { taskIds: ["t1"], timeoutSeconds: 99999 }, "`timeoutSeconds`:"],
    ["mesh_inbox", { max: 0 }, "`max`:"],
  ])("%s rejects %j naming the field", async (name, params, fragment) => {
    const ctx = await as("agent:caller:main");
    const r = await tool(name).execute(params, ctx);
    expect(r.ok).toBe(false);
    expect(r.text).toContain(`${name} was not run: invalid parameters.`);
    expect(r.text).toContain(fragment);
    expect(r.details.error).toBe("invalid_parameters");
    await ctx.session.close();
    contexts.pop();
  });

  it("turns a bad session key into a plain error result instead of throwing", async () => {
    const ctx = await as("agent:caller2:main");
    const r = await tool("mesh_send").execute({ sessionKey: "main", message: "hi" }, ctx);
    expect(r).toMatchObject({ ok: false, details: { error: "invalid_address" } });
    expect(r.text).toContain("starts with 'agent:");
  });

  it("accepts OpenClaw-shaped parameters and runs a delegate -> inbox -> complete -> await round trip", async () => {
    const boss = await as("agent:boss:telegram:direct:8035547811");
    const worker = await as("agent:worker:main");

    const sent = await tool("mesh_send").execute({ agentId: "worker", message: "heads up", timeoutSeconds: 0 }, boss);
    expect(sent.ok).toBe(true);
    expect(sent.text).toContain("delivered to the inbox of gw1/agent:worker:main");
    expect(sent.text).toContain("you do not need to wait or poll");

    const delegated = await tool("mesh_delegate").execute({ sessionKey: "agent:worker:main", message: "count the units", taskId: "units-april" }, boss);
    expect(delegated.text).toContain('call mesh_await with taskIds ["units-april"]');

    const inbox = await tool("mesh_inbox").execute({}, worker);
    expect(inbox.text).toContain("2 new message(s)");
    expect(inbox.text).toContain("[message from agent:boss:telegram:direct:8035547811 @gw1] heads up");
    expect(inbox.text).toContain("[task units-april requested by agent:boss:telegram:direct:8035547811 @gw1; when done call mesh_complete with this taskId] count the units");
    expect((await tool("mesh_inbox").execute({}, worker)).text).toBe("No new messages.");

    const done = await tool("mesh_complete").execute({ taskId: "units-april", status: "completed", result: "42 units" }, worker);
    expect(done.text).toContain("is now completed; the requester (agent:boss:telegram:direct:8035547811) has been notified");
    const twice = await tool("mesh_complete").execute({ taskId: "units-april", status: "completed", result: "42 units" }, worker);
    expect(twice.text).toContain("already completed with this same outcome; nothing changed");
    const other = await tool("mesh_complete").execute({ taskId: "units-april", status: "failed", error: "oops" }, worker);
    expect(other).toMatchObject({ ok: false });
    expect(other.text).toContain("your outcome was NOT recorded");

    const awaited = await tool("mesh_await").execute({ taskIds: ["units-april"], timeoutSeconds: 30 }, boss);
    expect(awaited.text).toContain("1 finished.");
    expect(awaited.text).toContain("- units-april: completed by agent:worker:main: 42 units");
    expect((await tool("mesh_inbox").execute({}, boss)).text).toBe("No new messages.");
  });

  it("reports pending items with their state and tells the model not to start a duplicate", async () => {
    const boss = await as("agent:boss2:main");
    await tool("mesh_delegate").execute({ agentId: "sleepy", message: "later", taskId: "sleepy-1" }, boss);
    const r = await tool("mesh_await").execute({ taskIds: ["sleepy-1"], timeoutSeconds: 0.2 }, boss);
    expect(r.text).toContain("0 finished, 1 still pending");
    expect(r.text).toContain("- sleepy-1: still submitted at agent:sleepy:main");
    expect(r.text).toContain("do not start a duplicate");
  });
});
